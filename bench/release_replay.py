"""Host µs per replay call and device syncs per mode on sglang releases' REAL nsa_backend.py: the
release's own file unpatched against the same file with the series derived for it (GPU).

    python -m bench.release_replay prepare [VERSION ...]     here (git, the wheels): build/releases/
    NSA_USE_BUILD=1 python3 -m bench.release_replay run OUT.json [VERSION ...]    the GPU host, build/ carried

`prepare` writes, per release (default: RELEASES), the files the series touches unpatched and with the
whole derived series (harness.releases) to build/releases/<version>/{unpatched,series}/, and the
wheel's sglang sources, which harness.upstream_exec cuts the stand-ins' definitions from, to
build/releases/wheels/sglang-<version>.whl; the stub's baseline comes from `make bench-prepare`.
Nothing on the GPU host needs git, the network or a wheel.

`run`: per release, mode and bs (bench.replay_operator's "modes" inputs, target verify included:
bs 1-256, D=4, page 64, the 163840-wide table, lengths uniform up to 64k; draft extend's accept
lengths uniform in [1, D]), both sides' graph-runner stand-ins over the same batch:
  host_us  one replay call (the runner's own prepare outside it), the queue drained before it, both
           sides interleaved in a fresh order every round (bench.timing.interleaved_host_us)
  syncs    device syncs in one replay call: torch.cuda.set_sync_debug_mode("warn"), warnings counted
  exact    after the timing, every captured buffer of the two sides compared whole (harness.compare)
DeepGEMM: where the host has deep_gemm, the replay refreshes its paged-MQA schedule as on a server (on
these releases the series leaves that refresh in the replay call; in draft extend it reads the live
row count, one sync). Without it, on CUDA, a stand-in returns a preallocated schedule (sglang's own
ImportError path assigns to a frozen dataclass there), on both sides alike. The JSON says which.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
import zipfile
from pathlib import Path

from bench import replay_operator as op  # first: sets up the interpreter where there is no GPU

import torch  # noqa: E402

from bench.inputs import Config, prepared_runner  # noqa: E402
from bench.machine import environment  # noqa: E402
from bench.timing import interleaved_host_us  # noqa: E402
from harness import stages, upstream_exec  # noqa: E402
from harness.compare import captured_state, first_mismatch  # noqa: E402
from harness.loader import REPO_ROOT  # noqa: E402

RELEASES = ("0.5.10", "0.5.14")  # the first release with upstream's Triton expansion; the last before the fused kernels
SIDES = ("unpatched", "series")
BUILT = REPO_ROOT / "build" / "releases"
MODES = (op.TARGET_VERIFY, op.DECODE, op.DRAFT_EXTEND)
BS = (1, 32, 128, 256)
HOST_ROUNDS, WARMUP = 200, 10


def configs() -> list[Config]:
    if op.GPU:
        return [Config(bs, 4, 64, 65536, context_len=op.WIDE, profile="uniform", mode=m) for m in MODES for bs in BS]
    return [Config(2, 2, 64, 256, context_len=320, profile="uniform", mode=m) for m in MODES]  # the interpreter


# -- here: what the GPU host needs ------------------------------------------------------------------


def prepare(versions) -> list[Path]:
    from harness.releases import Derivation, fetch_wheel

    written = []
    with Derivation() as derivation:
        index = {}
        for version in versions:
            release = derivation.table.release(version)
            trees = {"unpatched": derivation.files(derivation.base_commit(version)),
                     "series": derivation.files(derivation.derive(version)[-1].commit)}
            for side, files in trees.items():
                folder = BUILT / version / side
                shutil.rmtree(folder, ignore_errors=True)
                for rel, data in files.items():
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    (folder / rel).write_bytes(data)
                written.append(folder)
            wheel = upstream_exec.BUILT_WHEELS / f"sglang-{version}.whl"
            wheel.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(fetch_wheel(version)) as src, zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as dst:
                for name in src.namelist():
                    if name.startswith("sglang/") and name.endswith(".py"):
                        dst.writestr(name, src.read(name))
            written.append(wheel)
            index[version] = {"model_runner": release.model_runner}
    (BUILT / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return written


# -- the GPU host ---------------------------------------------------------------------------------


def load(version: str, side: str, stub, model_runner: dict):
    folder = BUILT / version / side
    if not folder.is_dir():
        raise SystemExit(f"error: no {folder}: run `python -m bench.release_replay prepare "
                         f"{version}` where git and the wheels are, and carry build/")
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return upstream_exec.load_release(version, files, stub, model_runner, f"bench-{side}")


def device_syncs(call) -> int:
    """Device syncs in one call: the warnings torch's sync debug mode raises for each."""
    if not op.GPU:
        return 0  # no device to sync with
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            call()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def measure(modules: dict, config: Config) -> dict:
    runners = {side: prepared_runner(module, config, op.DEVICE) for side, module in modules.items()}
    bs = config.bs
    calls = {side: (lambda r=runner: r.replay_metadata(bs)) for side, runner in runners.items()}
    syncs = {side: device_syncs(call) for side, call in calls.items()}
    rounds, warmup = (HOST_ROUNDS, WARMUP) if op.GPU else (3, 1)
    host = interleaved_host_us(calls, rounds, warmup=warmup)
    for call in calls.values():  # both sides' buffers as one replay of this batch leaves them
        call()
    if op.GPU:
        torch.cuda.synchronize()
    mismatch = first_mismatch(*(captured_state(r.backend) for r in runners.values()))
    return {"mode": config.mode, "bs": bs, "D": config.D, "page_size": config.page_size, "width": config.context_len,
            "maxlen": config.maxlen, "profile": config.profile, "host_us": host, "syncs": syncs,
            "exact": mismatch is None, "mismatch": None if mismatch is None else str(mismatch)}


def run(out: Path, versions) -> dict:
    # The release's own `import deep_gemm`: the host's, or sglang's ImportError path where it has none.
    roots = upstream_exec.STANDIN_ROOTS
    upstream_exec.STANDIN_ROOTS = tuple(r for r in roots if r != "deep_gemm")
    try:
        return _run(out, versions)
    finally:
        upstream_exec.STANDIN_ROOTS = roots


def _deep_gemm_standin():
    """deep_gemm as the replay calls it: the SM count, and a schedule tensor of the real one's shape
    (num_sms + 1, 2), allocated once."""
    import types

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    schedule = torch.zeros((sms + 1, 2), dtype=torch.int32, device="cuda")
    return types.SimpleNamespace(get_num_sms=lambda: sms,
                                 get_paged_mqa_logits_metadata=lambda seqlens, block, num_sms: schedule)


def _run(out: Path, versions) -> dict:
    try:
        import deep_gemm  # noqa: F401

        deepgemm = "installed: the replay call refreshes its schedule, on both sides"
    except ImportError:
        if torch.cuda.is_available():
            # On CUDA 0.5.10+'s replay cannot take sglang's ImportError path: it assigns to a frozen
            # NSAMetadata there (FrozenInstanceError). Its refresh runs around a stand-in instead.
            sys.modules["deep_gemm"] = _deep_gemm_standin()
            deepgemm = ("absent: a stand-in returns one preallocated schedule tensor (no kernel), so the refresh's "
                        "copy and draft extend's sync are measured, DeepGEMM's schedule kernel is not; both sides alike")
        else:
            deepgemm = "absent: sglang skips the schedule refresh, on both sides"
    index = json.loads((BUILT / "index.json").read_text()) if (BUILT / "index.json").exists() else {}
    stub = stages.load(stages.BASELINE)
    result = {"environment": {**environment(op.DEVICE), "deep_gemm": deepgemm}, "releases": {}}
    for version in versions:
        if version not in index:
            raise SystemExit(f"error: sglang {version} is not prepared in {BUILT}: run "
                             f"`python -m bench.release_replay prepare {version}` and carry build/")
        modules = {side: load(version, side, stub, index[version]["model_runner"]) for side in SIDES}
        rows = []
        for config in configs():
            row = measure(modules, config)
            rows.append(row)
            host = ", ".join(f"{s} {row['host_us'][s]['us']:.1f} µs ({row['syncs'][s]} syncs)" for s in SIDES)
            print(f"{version} {config.mode} bs {config.bs}: {host}; exact: {row['exact']}", flush=True)
            if op.GPU:
                torch.cuda.empty_cache()
        result["releases"][version] = rows
        out.write_text(json.dumps(result, indent=2) + "\n")  # a release at a time: a late failure keeps the rest
    failed = [f"{v} {r['mode']} bs {r['bs']}: {r['mismatch']}" for v, rows in result["releases"].items()
              for r in rows if not r["exact"]]
    if failed:
        raise SystemExit("error: the series differs from the unpatched release: " + "; ".join(failed))
    return result


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["prepare"]:
        for path in prepare(argv[1:] or RELEASES):
            print(path.relative_to(REPO_ROOT))
        return 0
    if argv[:1] == ["run"] and len(argv) >= 2:
        run(Path(argv[1]), argv[2:] or RELEASES)
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
