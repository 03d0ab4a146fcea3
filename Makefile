# make demo: the embedded default end to end.  make test: every check CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint samples bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/recon demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python bench/run_bench.py
	$(BIN)/python bench/hostile_files.py

samples: $(STAMP)
	$(BIN)/python -m recon.app.samples sample_reports
	@# The README's picture of the Summary sheet (needs LibreOffice and poppler-utils).
	@if command -v soffice >/dev/null && command -v pdftoppm >/dev/null; then \
	  tmp=$$(mktemp -d); \
	  HOME=$$tmp soffice --headless --norestore --convert-to pdf --outdir $$tmp \
	    sample_reports/M001/2026-11-30/recon_M001_20261130.xlsx >/dev/null && \
	  pdftoppm -png -r 110 -f 1 -l 1 -x 0 -y 60 -W 1180 -H 520 -singlefile \
	    $$tmp/recon_M001_20261130.pdf sample_reports/summary_sheet && rm -rf $$tmp; \
	else echo "soffice or pdftoppm missing: sample_reports/summary_sheet.png not redrawn"; fi

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .hypothesis
