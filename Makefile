# Two commands do everything on a fresh machine (see README):
#   make demo    builds a virtual environment, installs minicp and runs the tour
#   make test    the same environment plus the test extras, then lint and every test (tests/test_notebooks.py
#                executes every notebook and compares it with the committed one)
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

.PHONY: install demo test lint test-gpu figures notebooks lab bench
install: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'

demo: install
	$(BIN)/minicp tour

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	$(BIN)/python -m pytest -q -n 2 tests

# On a machine with an NVIDIA GPU and CuPy: the GPU tests only
test-gpu:
	$(BIN)/python -m pytest -q -m gpu tests

figures: install
	$(BIN)/minicp figures

# The .py files in notebooks/ are the sources (jupytext percent format); this writes each paired .ipynb
# from its source and executes it exactly as tests/test_notebooks.py does (same kernel, working directory
# notebooks/, the default run), so the committed notebooks carry the outputs that the test compares with.
notebooks: install
	$(BIN)/jupytext --sync notebooks/[0-9][0-9]_*.py
	$(BIN)/python tests/test_notebooks.py notebooks/[0-9][0-9]_*.ipynb

# Jupyter Lab with the notebook extras (widgets, matplotlib)
lab: install
	$(BIN)/python -m pip install -q -e '.[notebooks]'
	$(BIN)/jupyter lab notebooks/

bench: install
	$(BIN)/python benchmarks/attention.py
