# Two set-up commands (README.md): `make demo` runs the main job, `make test` runs the test suite.
# Each creates .venv if there is none and installs the pinned dependencies and cnbert into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# TensorFlow: tf-cpu, or tf-gpu on a machine with NVIDIA GPUs (`make install TF_EXTRA=tf-gpu`).
# The stamp names the extra, so a switch reinstalls; the two ship the same `tensorflow` module, so
# the other one is removed first (with it whatever it overwrote: the chosen one is then installed whole).
TF_EXTRA ?= tf-cpu
STAMP := $(VENV)/.cnbert-installed-$(TF_EXTRA)
OTHER_TF := $(if $(filter tf-gpu,$(TF_EXTRA)),tensorflow-cpu,tensorflow)

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*)
	rm -f $(VENV)/.cnbert-installed*
	$(BIN)/python tools/pins.py $(TF_EXTRA) test build > $(VENV)/pins.txt
	if $(BIN)/python -m pip show --quiet $(OTHER_TF) 2>/dev/null; then \
	  $(BIN)/python -m pip uninstall --quiet --yes tensorflow tensorflow-cpu; fi
	$(BIN)/python -m pip install --quiet -r $(VENV)/pins.txt
	$(BIN)/python -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cnbert-mrc --flagfile=flags/demo.flags

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf build *.egg-info cnbert/*.so
