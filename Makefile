# nsa-verify-patches: stub -> series -> stages -> verdicts -> report
VENV    ?= .venv
PY      := $(VENV)/bin/python
# TRITON_INTERPRET is set by each entry point (tests/conftest.py, bench/conftest.py, harness, report)
# only when there is no GPU: exporting it here would push a GPU machine's `make bench` through the
# interpreter.
STAGES  := $(shell $(PY) -m harness stages 2>/dev/null)

.PHONY: setup test status unapply refresh verify ops upstream-check bench bench-compare bench-smoke bench-prepare report $(addprefix apply-,$(STAGES))

setup: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: setup
	$(PY) -m pytest -q

status:
	@$(PY) -m harness status

# One explicit rule per stage: make skips pattern rules for .PHONY targets, so a phony apply-<stage>
# served by `apply-%` would silently do nothing. The pattern rule stays for names not in the series
# (the harness then says which stages exist).
define apply_stage
apply-$(1):
	@$$(PY) -m harness apply $(1)
endef
$(foreach stage,$(STAGES),$(eval $(call apply_stage,$(stage))))

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

# Benchmarks: pytest-benchmark, saved under reports/$(MACHINE)/benchmarks (h100, h200, ... or cpu).
MACHINE ?= $(shell $(PY) -m bench.machine 2>/dev/null)
BENCH_ARGS := -p no:cacheprovider --benchmark-enable --benchmark-only --benchmark-group-by=group \
	--benchmark-columns=median,iqr,rounds --benchmark-storage=reports/$(MACHINE)/benchmarks

bench: setup
	$(PY) -m pytest bench $(BENCH_ARGS) --benchmark-save=$(MACHINE)

# The saved runs side by side, one table per input, baseline and the stages in each.
bench-compare:
	$(VENV)/bin/pytest-benchmark compare --group-by=group --columns=median,iqr --sort=name \
		reports/$(MACHINE)/benchmarks/*/*.json

# Every benchmark body once, no timing: keeps the suite runnable (CI).
bench-smoke: setup
	$(PY) -m pytest bench -q -p no:cacheprovider --benchmark-disable

# Stages materialized for a machine without git (the GPU machine): carry build/ there.
bench-prepare:
	$(PY) -m harness build

report: setup
	@test -n "$$(ls reports/$(MACHINE)/benchmarks/*/*.json 2>/dev/null)" || $(MAKE) bench
	$(PY) -m bench.report
