# The two set-up commands: `make demo` (main job on the cpu device) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test docs install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,examples]'
	# PyTorch (CPU) for the tests that compare with it; they skip where it cannot be installed
	$(PY) -m pip install --quiet torch==2.13.0 || echo "torch 2.13.0 not installed: PyTorch comparisons will skip"
	# Ray Data for graphrt.distributed.Predictor's test; it skips where Ray cannot be installed
	$(PY) -m pip install --quiet 'ray[data]>=2.9' || echo "ray[data] not installed: the Ray Data test will skip"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/demo.py

# the run ends with the optional tools (chromium, Graphviz, ...) it skipped tests for, and how to get them
test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# the README's pictures and plan table, regenerated from the code (the page screenshot needs chromium)
docs: $(VENV)/.installed
	$(PY) tools/docs_images.py
	$(PY) bench/plan_table.py --update README.md

clean:
	rm -rf $(VENV) build *.egg-info
