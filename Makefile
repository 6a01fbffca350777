# nsa-verify-patches: stub -> series -> stages -> verdicts -> report
VENV    ?= .venv
PY      := $(VENV)/bin/python
# CPU machines run the Triton stages through the interpreter (must be set before triton imports).
export TRITON_INTERPRET ?= 1
STAGES  := $(shell $(PY) -m harness stages 2>/dev/null)

.PHONY: setup test status unapply refresh verify ops upstream-check bench-prepare bench-gpu report $(addprefix apply-,$(STAGES))

setup: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: setup
	$(PY) -m pytest -q

status:
	@$(PY) -m harness status

apply-%:
	@$(PY) -m harness apply $*

unapply:
	@$(PY) -m harness unapply

refresh:
	@$(PY) -m harness refresh

verify:
	$(PY) -m harness verify

ops:
	$(PY) -m harness ops

upstream-check:
	$(PY) -m harness upstream-check

# GPU run: `make bench-prepare` here, then on a GPU machine (see README) `make bench-gpu OUT=...`.
bench-prepare:
	$(PY) -m bench.gpu_run prepare

bench-gpu:
	TRITON_INTERPRET= python3 -m bench.gpu_run run $(OUT)

report:
	$(PY) -m bench.report reports/h100
