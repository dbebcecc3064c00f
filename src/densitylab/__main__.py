from densitylab.cli import main

raise SystemExit(main())
