#!/usr/bin/env bash
# Every file reports/<machine>/ needs from one GPU run, in one command:
#
#     bench/gpu_run.sh OUT_DIR
#
# Run from the repository root with the stages importable (here: a checkout with git; a machine
# without git: `make bench-prepare` first, carry build/, and export NSA_USE_BUILD=1; the upstream
# peers need NSA_UPSTREAM_WHEEL, an sglang>=0.5.23 wheel). Each step is independent and has its own
# time limit: a failing step is logged and the next one runs. The exit status is the number of failed
# steps. Writes verdicts.json, record.json (every stage's whole replay, interleaved: the run of record),
# modes.json, graph_demo.json, benchmarks/ (the sequential pytest-benchmark run, numbered after the saved
# ones), bench.log and gpu_run.log into OUT_DIR; copy them into reports/<machine>/ and `make report
# MACHINE=<machine>`. Each file carries the hash of the series it measured.
# GPU wall time: at most 10 minutes (the steps' limits add up to 580 s); about 7 on an H200.
set -u
out=${1:?usage: bench/gpu_run.sh OUT_DIR}
mkdir -p "$out"
log="$out/gpu_run.log"
failed=0

step() {  # step SECONDS NAME COMMAND...
    local limit=$1 name=$2
    shift 2
    echo "== $name ($(date -u +%T), limit ${limit}s): $*" | tee -a "$log"
    local start=$SECONDS
    if timeout "$limit" "$@" >>"$log" 2>&1; then
        echo "== $name ok in $((SECONDS - start)) s" | tee -a "$log"
    else
        echo "== $name FAILED (status $?) after $((SECONDS - start)) s: see $log" | tee -a "$log"
        failed=$((failed + 1))
    fi
}

python3 -c 'import torch, triton; print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)' | tee -a "$log"
machine=$(python3 -m bench.machine)
# The saved sequential runs first, so this run is numbered after them (copying OUT back overwrites nothing).
if [ -d "reports/$machine/benchmarks" ]; then cp -r "reports/$machine/benchmarks" "$out/"; fi
step 90  verdicts    python3 -m bench.gpu_verdicts "$out/verdicts.json"
step 200 record      python3 -m bench.record "$out/record.json"
step 40  modes       python3 -m bench.modes "$out/modes.json"
step 70  graph_demo  python3 -m bench.graph_demo "$out/graph_demo.json"
step 180 bench       sh -c "python3 -m pytest bench -q -p no:cacheprovider --benchmark-enable --benchmark-only \
    --benchmark-group-by=group --benchmark-columns=median,iqr,rounds --benchmark-storage='$out/benchmarks' \
    --benchmark-save='$machine' > '$out/bench.log' 2>&1"
echo "== done: $failed step(s) failed" | tee -a "$log"
exit "$failed"
