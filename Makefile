# The README's commands. Each target creates .venv and installs requirements.txt when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench install clean

install: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m ssd_keras demo --out demo_output

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) bench/bench_forward.py
	$(PY) bench/bench_bbox.py
	$(PY) bench/bench_data.py
	$(PY) bench/bench_gradcam.py
	$(PY) bench/bench_video.py
	$(PY) bench/bench_export.py
	$(PY) bench/bench_backends.py

clean:
	rm -rf $(VENV) demo_output build *.egg-info .pytest_cache .hypothesis
