# `make demo` and `make test` each set up .venv when it is missing or out of date
# (the stamp file carries a hash of pyproject.toml, so a changed pin reinstalls).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test,fidelity]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(PY) run_all.py --grid smoke --figures

test: $(STAMP)
	$(PY) -m pytest

# speed and memory benchmarks (perf/README.md); appends to perf/RESULTS.md
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m perf.run

clean:
	rm -rf $(VENV)
	git clean -fdX results/  # generated output only: the committed CamVid results stay
