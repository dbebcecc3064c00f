#!/usr/bin/env bash
# Creates the separate virtual environment that benchmarks/peers.py runs in: torch, densitylab
# (editable) and the peer libraries zuko, nflows and normflows. The peers are benchmark tools,
# not project dependencies, so they never go into the project's own .venv.
#
#     bash benchmarks/peers_env.sh [VENV]        # VENV defaults to .peers-venv in the repo root
#     .peers-venv/bin/python benchmarks/peers.py
#
# torch is installed first, at exactly PEERS_TORCH (default torch==2.13.0, the project's version;
# pip finds the CPU wheel through its configured find-links where there is one), and every later
# install is constrained to that same version, so nothing can replace it: pip either keeps it or
# stops with an error. The peers are installed with --no-deps: their requirements (numpy, torch,
# matplotlib, tqdm) all come with densitylab's own; nflows also declares tensorboard, which none
# of its modules imports, so it is left out (`pip check` reports it, harmlessly).
#
# Environment: PYTHON (interpreter for the venv, default python3), PEERS_TORCH (torch
# requirement), PEERS_PACKAGES (peer requirements, default the versions the benchmark was written
# against).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/.peers-venv}"
python="${PYTHON:-python3}"
torch_spec="${PEERS_TORCH:-torch==2.13.0}"
read -r -a peers <<< "${PEERS_PACKAGES:-zuko==1.6.0 nflows==0.14 normflows==1.7.3}"

if ! command -v "$python" > /dev/null; then
    echo "peers_env.sh: no interpreter '$python'; set PYTHON to a Python >= 3.11" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "$torch_spec" > "$constraints"

"${pip[@]}" install "$torch_spec"
"${pip[@]}" install -c "$constraints" -e "$root"
"${pip[@]}" install -c "$constraints" --no-deps "${peers[@]}"

"$venv/bin/python" - "$torch_spec" <<'EOF'
import sys

import torch

import densitylab  # noqa: F401
import nflows  # noqa: F401
import normflows  # noqa: F401
import zuko  # noqa: F401

wanted = sys.argv[1].partition("==")[2]
if wanted and torch.__version__.split("+")[0] != wanted:
    sys.exit(f"peers_env.sh: torch {torch.__version__} got in instead of {wanted}; remove the venv and rerun")
print(f"peers venv ready: torch {torch.__version__}, {sys.executable}")
EOF
