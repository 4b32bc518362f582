# The two commands of the README: `make demo` (the main job) and `make test`.
# Both create .venv and install what they need on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export DS_BUILD_OPS := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install test test-fast demo bench

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	# torch first: deepspeed's sdist then builds against it instead of pulling another.
	$(PY) -m pip install -q torch==2.13.0+cpu
	$(PY) -m pip install -q -e '.[test]'
	bash cluster/install_system_deps.sh
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

demo: install
	$(PY) pipelines/demo.py

bench: install
	for f in bench/*.py; do $(PY) $$f || exit 1; done
