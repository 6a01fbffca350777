#!/usr/bin/env bash
# Every file reports/<machine>/ needs from one GPU run, in one command (issue 11 "Done when"):
#
#     bench/gpu_run.sh OUT_DIR
#
# Run from the repository root with the stages importable (here: a checkout with git; a machine
# without git: `make bench-prepare` first, carry build/, and export NSA_USE_BUILD=1; the upstream
# peer needs NSA_UPSTREAM_WHEEL). Each step is independent and has its own time limit: a failing
# step is logged and the next one runs. The exit status is the number of failed steps. Writes at
# most 7 files into OUT_DIR, no folders (the device machine returns 8 files, 2 folders deep).
# GPU wall time: at most 10 minutes (the steps' limits add up to 570 s); about 4-5 minutes expected on an H100.
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
step 150 verdicts      python3 -m bench.gpu_verdicts "$out/verdicts.json"
step 160 record        python3 -m bench.record "$out/record.json"
step 90  graph_demo    python3 -m bench.graph_demo "$out/graph_demo.json"
step 70  modes         python3 -m bench.modes "$out/modes.json"
step 60  startup       python3 -m notebook.startup "$out/startup.json"
step 40  bound_launch  python3 -m notebook.bound_launch "$out/bound_launch.json"
echo "== done: $failed step(s) failed" | tee -a "$log"
exit "$failed"
