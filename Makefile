# Two commands do everything on a fresh machine (see README):
#   make demo    builds a virtual environment, installs minicp and runs the tour
#   make test    the same environment plus the test extras, then every test and notebook
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

.PHONY: install demo test test-gpu figures bench
install: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'

demo: install
	$(BIN)/minicp tour

test: install
	$(BIN)/python -m pytest -q -n 2 tests notebooks --nbmake --nbmake-timeout=300

# On a machine with an NVIDIA GPU and CuPy: the GPU tests only
test-gpu:
	$(BIN)/python -m pytest -q -m gpu tests

figures: install
	$(BIN)/minicp figures

bench: install
	$(BIN)/python benchmarks/attention.py
