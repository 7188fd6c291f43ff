# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ncd-installed
SPEC   ?= specs/transformer_encoder.ncd

.PHONY: demo test install bench clean dot

$(STAMP): pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# torch first, pinned to the CPU wheel on disk where there is one; the range in
	# pyproject.toml admits it, so the editable install below adds nothing heavy.
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.4,<2.15"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The Graphviz `dot` binary renders diagrams; `.dot` output works without it.
dot:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq graphviz >/dev/null 2>&1 || (apt-get update -qq >/dev/null && apt-get install -y -qq graphviz >/dev/null)) \
	      || echo "note: could not install graphviz; rendering to svg/pdf/png needs the dot binary"; \
	  else echo "note: install graphviz (the dot binary) to render svg/pdf/png"; fi; }

demo: $(STAMP)
	$(VENV)/bin/ncd check $(SPEC)
	$(VENV)/bin/ncd compile $(SPEC) --set D=64 H=4 F=128 --emit python -o /tmp/ncd_demo_module.py
	$(VENV)/bin/ncd run $(SPEC) --set B=2 T=16 D=64 H=4 F=128 --backward

test: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest -q -n 2 -m "not slow and not gpu"

bench: $(STAMP)
	$(PY) bench/frontend.py

clean:
	rm -rf $(VENV) build *.egg-info
