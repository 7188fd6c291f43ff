# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
NCD    := $(VENV)/bin/ncd
STAMP  := $(VENV)/.ncd-installed
TESTS  := $(VENV)/.ncd-test-installed
# A second venv with the default install only (torch + `pip install -e .`, no extras: no triton,
# no scipy): `make smoke-default` runs every library spec in it, as a user without extras would.
BARE   ?= .venv-default
BARE_STAMP := $(BARE)/.ncd-installed
SPEC   ?= specs/transformer_encoder.ncd
SIZES  ?= D=64 H=4 F=128
OUT    ?= out

.PHONY: demo test test-slow install bench diagrams clean dot tex kernel-report smoke-default

$(STAMP): pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# torch first, pinned to the CPU wheel on disk where there is one; the range in
	# pyproject.toml admits it, so the editable install below adds nothing heavy.
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.4,<2.15"
	$(PY) -m pip install -q -e .
	touch $(STAMP)

$(TESTS): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps "pararnn-torch==0.17.4"
	touch $(TESTS)

install: $(STAMP)

$(BARE_STAMP): pyproject.toml setup.py
	python3 -m venv $(BARE)
	$(BARE)/bin/python -m pip install -q --no-compile "torch==2.13.0" || $(BARE)/bin/python -m pip install -q --no-compile "torch>=2.4,<2.15"
	$(BARE)/bin/python -m pip install -q -e .
	touch $(BARE_STAMP)

# `ncd run --backward` on every library spec without the optional extras (about a minute).
smoke-default: $(BARE_STAMP)
	$(BARE)/bin/python .ci/default_install_smoke.py

# The Graphviz `dot` binary renders diagrams; `.dot` output works without it.
dot:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq graphviz >/dev/null 2>&1 || (apt-get update -qq >/dev/null && apt-get install -y -qq graphviz >/dev/null)) \
	      || echo "note: could not install graphviz; rendering to svg/pdf/png needs the dot binary"; \
	  else echo "note: install graphviz (the dot binary) to render svg/pdf/png"; fi; }

# Optional: a small TeX set (pdflatex, TikZ, the standalone class) so the TikZ figures of
# `ncd render -o fig.tex` compile and their test runs; `make test` never needs it.
tex:
	@command -v pdflatex >/dev/null 2>&1 && kpsewhich standalone.cls >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq --no-install-recommends texlive-latex-base texlive-pictures texlive-latex-extra >/dev/null 2>&1 \
	      || (apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends texlive-latex-base \
	          texlive-pictures texlive-latex-extra >/dev/null)) \
	      || echo "note: could not install TeX; the TikZ compile tests will be skipped"; \
	  else echo "note: install pdflatex with TikZ and standalone (e.g. texlive-latex-base texlive-pictures texlive-latex-extra)"; fi; }

demo: $(STAMP) dot
	mkdir -p $(OUT)
	$(NCD) check $(SPEC)
	$(NCD) render $(SPEC) --set $(SIZES) -o $(OUT)/demo.svg || $(NCD) render $(SPEC) --set $(SIZES) -o $(OUT)/demo.dot
	$(NCD) cost $(SPEC) --set B=8 T=512 $(SIZES) --formula
	$(NCD) compile $(SPEC) --set $(SIZES) --emit python -o $(OUT)/demo_module.py
	$(NCD) run $(SPEC) --set B=2 T=16 $(SIZES) --backward

test: $(TESTS) dot smoke-default
	TRITON_INTERPRET=1 $(PY) -m pytest -q -n 2 -m "not slow and not gpu"

# The tests marked slow (torch.export traces, long fuzz runs): minutes each on a small CPU.
test-slow: $(TESTS) dot
	TRITON_INTERPRET=1 $(PY) -m pytest -q -n 2 -m "slow and not gpu"

bench: $(TESTS)
	$(PY) bench/frontend.py
	$(PY) bench/transformer.py
	$(PY) bench/cost_bench.py

# Registers, spills, shared memory and occupancy of every Triton launch at the benchmark
# shapes, compiled here for an H100 (sm_90) by Triton's own LLVM + ptxas: no GPU needed.
kernel-report: $(STAMP)
	env -u TRITON_INTERPRET TRITON_DEFAULT_FP_FUSION=1 $(PY) -m ncd.backends.triton.aot

diagrams: $(STAMP) dot
	$(PY) bench/render_all.py

clean:
	rm -rf $(VENV) $(BARE) build *.egg-info $(OUT)
