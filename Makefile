# Two commands a user needs: `make demo` (set up + main job) and `make test` (set up + tests).
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup demo test lint bench docs results clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/densitylab demo --out demo_runs

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/fixed_budget.py

docs: $(STAMP)
	$(BIN)/python scripts/gen_docs.py

# Every experiment at the small budget (under 90 minutes on 2 cores), its HTML report, and the
# committed record: docs/results/NAME/results.json and the Markdown summary generated from them.
results: $(STAMP)
	$(BIN)/densitylab experiment all --budget small --out results
	$(BIN)/densitylab report results -o results/report.html
	for f in results/*/results.json; do d=docs/results/$$(basename $$(dirname $$f)); \
		mkdir -p $$d && cp $$f $$d/; done
	cp results/experiment_all.json docs/results/
	$(BIN)/densitylab report docs/results -o docs/results/summary.md

clean:
	rm -rf demo_runs .pytest_cache
