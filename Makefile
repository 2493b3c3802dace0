# Two commands on a fresh machine:  `make demo` (the whole study on generated data) and `make test`
# (every test; what CI runs). `make check`: the fast tests (not marked slow), for daily work.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test check venv clean

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) scripts/run_study.py $(ARGS)

# Two pytest workers (pytest-xdist), one test file each at a time: most tests keep one core busy.
test: venv
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -n 2 --dist loadfile tests $(ARGS)

check: venv
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" tests $(ARGS)

clean:
	rm -rf $(VENV) out
