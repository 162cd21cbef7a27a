# Set-up and the two jobs of README.md. Everything installs into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel that lies on the build machines; any torch in pyproject's range works.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test train lint bench clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	WANDB_MODE=disabled WANDB_SILENT=true $(BIN)/python -m pytest -q

train: $(STAMP)
	$(BIN)/ebrl train --algo sql --env-id ebrl/MultiGoal-v0 --config experiments/configs/sql.yaml --seed 0

# The documentation site into site/ (mkdocs.yml; --strict: a broken link or reference fails).
docs: $(STAMP)
	$(BIN)/python -c "import mkdocstrings" 2>/dev/null || $(BIN)/pip install -q -e ".[docs]"
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs wandb site
