# Two commands on a fresh machine:  `make demo` (the whole study on generated data) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test venv clean

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) scripts/run_study.py $(ARGS)

test: venv
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q tests $(ARGS)

clean:
	rm -rf $(VENV) out
