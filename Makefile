# Two commands do all set-up on a fresh machine with Python 3.10+:
#   make demo   create .venv, install, train + sample + evaluate the toy text-to-image model on a CPU
#   make test   create .venv, install with test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# torch is pinned to the machine's CPU build; see constraints.txt.
PIP_INSTALL := $(PIP) install --disable-pip-version-check --no-compile -q -c constraints.txt

.PHONY: demo test install install-test clean help

help:
	@echo "make demo  - train, sample and evaluate the toy text-to-image model (outputs/demo/)"
	@echo "make test  - run the test suite (set PYTEST_ARGS='-m \"not slow\"' to skip the learning tests)"
	@echo "make clean - remove .venv, outputs/ and caches"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.py constraints.txt
	$(PIP_INSTALL) -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test]'
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/crossflow demo --out outputs/demo --overwrite

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) outputs .cache .pytest_cache
