# nsa-verify-patches: stub -> series -> stages -> verdicts -> report
# Every target is a valid first command in a fresh clone: each one that runs Python depends on
# the virtualenv, which `setup` creates from requirements.txt.
VENV    ?= .venv
PY      := $(VENV)/bin/python
# TRITON_INTERPRET is set by each entry point (tests/conftest.py, bench/conftest.py, harness, report)
# only when there is no GPU: exporting it here would push a GPU machine's `make bench` through the
# interpreter.
# Stage names straight from each track's series (no Python needed before setup): NNNN-name.patch -> name.
# Two tracks (harness/tracks.py), stage names unique across them, so apply-<stage> needs no TRACK:
# the 0.5.6 track (vendor_stub/, patches/series) and the fused one (fused/base/, fused/patches/series).
series_stages = $(shell sed -e 's/\#.*//' $(1) 2>/dev/null | sed -n 's/^ *[0-9]*-\(.*\)\.patch *$$/\1/p')
STAGES  := baseline $(call series_stages,patches/series) fused-baseline $(call series_stages,fused/patches/series)
# status, unapply, refresh and verify take TRACK=fused; without it they work on the 0.5.6 track
# (status: one line per track).
TRACK   ?=
ON_TRACK = $(if $(TRACK),--track $(TRACK))

.PHONY: setup test test-slow test-all status unapply refresh verify ops upstream-check upstream-report export bench bench-compare \
	bench-smoke bench-prepare bench-record bench-gpu report fused-report $(addprefix apply-,$(STAGES))

setup: $(VENV)/.installed
# The editable install makes `python -m harness` work from any directory of the checkout. pip is not
# silenced: the install takes minutes (torch, triton), and its progress is what shows it is working.
$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $@

# Test tiers (markers in pyproject.toml). `make test` is the fast tier, the usage line: every stage x
# mode on a representative matrix, the kernel, the machinery. `make test-slow` is the rest (the whole
# matrix, the fuzz, every release's real file, the planted bugs). `make test-all` is both, each test
# once; CI runs `make test` then `make test-slow`.
test: setup
	$(PY) -m pytest -q -m "not slow"

test-slow: setup
	$(PY) -m pytest -q -m slow

test-all: test test-slow

status: setup
	@$(PY) -m harness status $(ON_TRACK)

# One explicit rule per stage: make skips pattern rules for .PHONY targets, so a phony apply-<stage>
# served by `apply-%` would silently do nothing. The pattern rule stays for names not in the series
# (the harness then says which stages exist).
define apply_stage
apply-$(1): setup
	@$$(PY) -m harness apply $(1)
endef
$(foreach stage,$(STAGES),$(eval $(call apply_stage,$(stage))))

apply-%: setup
	@$(PY) -m harness apply $*

unapply: setup
	@$(PY) -m harness unapply $(ON_TRACK)

refresh: setup
	@$(PY) -m harness refresh $(ON_TRACK)

verify: setup
	$(PY) -m harness verify $(ON_TRACK)

ops: setup
	$(PY) -m harness ops

# VERSION=<release> checks one release on its track (harness/tracks.py): 0.5.5-0.5.9 on the 0.5.6
# track, 0.5.15-0.5.23 on the fused track; without VERSION, every release of both.
upstream-check: setup
	$(PY) -m harness upstream-check $(if $(VERSION),--version $(VERSION))

# reports/upstream/MATRIX.md and matrix.json: every release x patch, both tracks (about 7 min a release on
# one core for the 0.5.6 track, 18 releases: two processes of --version lists halve it; a few minutes for
# the fused one). Each run merges its own track into matrix.json.
upstream-report: setup
	$(PY) -m harness.upstream --track 0.5.6 --trace --write reports/upstream
	$(PY) -m harness.upstream --track fused --write reports/upstream

# dist/sglang-<version>/: the series for every served release of both tracks (or VERSION's), as
# `git am` / `quilt push -a` take it.
export: setup
	$(PY) -m harness export $(if $(VERSION),--version $(VERSION))

# Benchmarks: pytest-benchmark, saved under reports/$(MACHINE)/benchmarks (h100, h200, ... or cpu).
# Recursive (=) on purpose: MACHINE is asked of the venv when a recipe runs, after setup.
MACHINE ?= $(shell $(PY) -m bench.machine 2>/dev/null)
BENCH_ARGS = -p no:cacheprovider --benchmark-enable --benchmark-only --benchmark-group-by=group \
	--benchmark-columns=median,iqr,rounds --benchmark-storage=reports/$(MACHINE)/benchmarks

bench: setup
	$(PY) -m pytest bench $(BENCH_ARGS) --benchmark-save=$(MACHINE)

# The saved runs side by side, one table per input, baseline and the stages in each.
bench-compare: setup
	$(VENV)/bin/pytest-benchmark compare --group-by=group --columns=median,iqr --sort=name \
		reports/$(MACHINE)/benchmarks/*/*.json

# Every benchmark body once, no timing, and the lab notebook's CPU checks: keeps both runnable (CI).
bench-smoke: setup
	$(PY) -m pytest bench notebook -q -p no:cacheprovider --benchmark-disable

# The benchmark of record (interleaved, like for like; what REPORT.md judges the targets on): one machine's
# record.json. On CPU it runs two smoke inputs, host timings only, marked not comparable.
bench-record: setup
	$(PY) -m bench.record reports/$(MACHINE)/record.json

# Every file reports/<machine>/ needs from one GPU run (at most 9 minutes: the steps' limits), into OUT (default
# gpu-out/); copy them into reports/<machine>/ and run `make report`.
OUT ?= gpu-out
bench-gpu: setup
	PATH=$(abspath $(VENV))/bin:$$PATH bench/gpu_run.sh $(OUT)

# Stages materialized for a machine without git (the GPU machine): carry build/ there.
bench-prepare: setup
	$(PY) -m harness build

# reports/$(MACHINE)/REPORT.md from its saved runs (MACHINE=h100: the committed H100 data, from any machine).
# Saved runs carry the series' hash: data of another series is reported stale with the command that
# refreshes it, and on the machine this runs on it is measured again, never reused.
report: setup
	$(PY) -m bench.report $(MACHINE)

# reports/$(MACHINE)/FUSED.md from its fused.json (the fused-era track's GPU run, fused.gpu_check): equality per
# release, the benchmark tables and the targets of fused/targets.toml, MET or MISSED.
fused-report: setup
	$(PY) -m fused.report reports/$(MACHINE)
