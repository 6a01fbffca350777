"""python -m harness {stages,status,apply,unapply,refresh,build,verify,ops,upstream-check,export,mutations} [--json]

Two tracks (harness.tracks): the 0.5.6 one (vendor_stub/, patches/) and the fused one (fused/base/,
fused/patches/). `apply <stage>` finds the track from the stage's name; `stages`, `unapply`,
`refresh` and `verify` take `--track fused` and otherwise work on the 0.5.6 track; `status`
without `--track` prints a line per track (with `--json`, a list of one object per track).

`verify` with no stage checks every stage of the committed series, and also the track's base as
it stands (the `worktree` pseudo-stage) when it holds edits not refreshed into a patch;
`verify worktree` checks only the base as it stands. The 0.5.6 track's stages are compared with
baseline's replay, the fused track's with the eager reference (fused/verify.py).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys

INTERRUPTED = (
    "interrupted: each track's base and patches (vendor_stub/ and patches/, fused/base/ and fused/patches/) "
    "are as before or as after, never between (`make status` says where)"
)


def _interrupted_in_one_line(kind, value, traceback):
    """Ctrl-C, wherever it lands (imports included), is one line, not a traceback. The exception has
    already unwound through the rollbacks of apply and refresh; Python then exits by SIGINT, as a
    shell expects of an interrupted command."""
    if issubclass(kind, KeyboardInterrupt):
        print(INTERRUPTED, file=sys.stderr)
    else:
        sys.__excepthook__(kind, value, traceback)


if __name__ == "__main__":
    sys.excepthook = _interrupted_in_one_line
    # An interrupt inside torch's import can be swallowed there, or come out as numpy's "cannot load
    # module more than once per process": Ctrl-C during the imports below is held until they are
    # done, then raised as KeyboardInterrupt (one line, nothing written yet).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

from .env import triton_device  # noqa: E402

triton_device("cpu")  # before triton is imported: the CLI runs on CPU unless NSA_DEVICE=cuda

from . import stages  # noqa: E402
from .runner import MODES, ReplayInputError  # noqa: E402
from .series import SeriesError, Series  # noqa: E402
from .tracks import DEFAULT, TrackError, present, track, track_for_stage  # noqa: E402

if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _emit(args, data, table: str) -> None:
    print(json.dumps(data, indent=2) if args.json else table)


def _series(args) -> Series:
    """The series of `--track` (one line naming the tracks for an unknown one), else the 0.5.6 track's."""
    return Series(track=track(args.track) if args.track else DEFAULT)


def cmd_stages(args):
    names = _series(args).names() if args.track else stages.names()  # stages.names(): NSA_USE_BUILD too
    _emit(args, names, "\n".join(names))


def cmd_status(args):
    tracks = [track(args.track)] if args.track else present()
    found = [(t, Series(track=t).status()) for t in tracks]
    data = [
        {"track": t.name, "stage": st.stage, "clean": st.clean, "kind": st.kind, "edited": list(st.edited),
         "broken": st.broken}
        for t, st in found
    ]
    _emit(args, data[0] if args.track else data, "\n".join(st.describe() for _, st in found))


def cmd_apply(args):
    st = Series(track=track_for_stage(args.stage)).apply(args.stage, reauthor=args.reauthor)
    _emit(args, {"stage": st.stage}, st.describe())


def cmd_unapply(args):
    st = _series(args).unapply()
    _emit(args, {"stage": st.stage}, st.describe())


def cmd_refresh(args):
    try:
        msg = _series(args).refresh()
    except SeriesError as e:
        raise SeriesError(f"{e}{_other_track_hint(args, 'refresh')}") from None
    _emit(args, {"message": msg}, msg)


def _other_track_hint(args, target: str) -> str:
    """Where a command without --track refused and another track's base is off its baseline: the
    command the user most likely meant (the 0.5.6 track is only the default)."""
    if args.track:
        return ""
    hints = []
    for other in present():
        try:
            status = Series(track=other).status()
        except SeriesError:
            continue
        if not other.default and not (status.clean and status.stage == other.baseline):
            hints.append(f"; {other.base_dir}/ is off its baseline: `{other.make(target)}` works there")
    return "".join(hints)


def cmd_build(args):
    index = stages.build_all()
    _emit(args, index, "\n".join(f"{k}: build/stages/{v}" for k, v in index.items()))


def verify_plan(series: Series, requested: list[str]) -> tuple[list[str], list[str], bool]:
    """(stages to verify, warnings, whether a patch fails to apply): what is not verified is said, loudly."""
    note = series.worktree_note()
    if requested:
        warnings = [f"WARNING: {note}"] if note and stages.WORKTREE not in requested else []
        return requested, warnings, False
    reachable, _, broken = series.reachable()
    names = [s for s in reachable if s != series.baseline_stage]
    warnings = [f"WARNING: {broken}"] if broken else []
    if note:
        names.append(stages.WORKTREE)
        warnings.append(f"WARNING: also verifying stage '{stages.WORKTREE}', because {note}")
    return names, warnings, bool(broken)


def verify_track(requested_track: str | None, requested: list[str]):
    """The track `verify` works on: `--track`, else the one the named stages belong to, else 0.5.6's."""
    if requested_track:
        return track(requested_track)
    found = {track_for_stage(s) for s in requested if s != stages.WORKTREE}
    if len(found) > 1:
        raise TrackError(
            f"{', '.join(requested)} belong to tracks {' and '.join(sorted(t.name for t in found))}: "
            "verify one track at a time"
        )
    return found.pop() if found else DEFAULT


def cmd_verify(args):
    series = Series(track=verify_track(args.track, args.stage))
    names, warnings, series_broken = verify_plan(series, args.stage)
    for line in warnings:
        print(line, file=sys.stderr, flush=True)
    if series.track.default:
        bad = _verify_stub_track(args, names)
    else:
        bad = _verify_fused_track(args, series, names)
    for line in warnings:  # repeated under the table, where a reader looks for the outcome
        print(line, file=sys.stderr)
    return 1 if bad or series_broken else 0


def _verify_fused_track(args, series: Series, names: list[str]) -> int:
    """Each stage x case against the eager reference, whole buffers; how many differ."""
    from fused.verify import verdicts as fused_verdicts

    verdicts = []
    width = max(len(n) for n in names) if names else 0
    for stage in names:
        for v in fused_verdicts(series, stage):
            verdicts.append(v)
            if not args.json:
                print(f"{stage:>{width}}  {v.case:<40} {'bit-exact' if v.exact else 'DIFFERS':>9}"
                      + ("" if v.exact else f"  {v.detail}"), flush=True)
    bad = [v for v in verdicts if not v.exact]
    if args.json:
        print(json.dumps([v.as_dict() for v in verdicts], indent=2))
    else:
        print(f"{len(verdicts) - len(bad)} of {len(verdicts)} stage x case verdicts equal to the eager reference, "
              "every buffer whole")
    return len(bad)


def _verify_stub_track(args, names: list[str]) -> int:
    """Each stage x scenario bit-exact against baseline's replay; how many differ."""
    from .scenarios import matrix
    from .verify import compare_stage
    scenarios = matrix()
    verdicts = []
    for stage in names:
        for scenario in scenarios:
            v = compare_stage(stage, scenario, args.device)
            verdicts.append(v)
            if not args.json:
                print(f"{stage:>13}  {scenario.name:<40} {'bit-exact' if v.exact else 'DIFFERS':>9}"
                      f"  {v.replays} replays" + ("" if v.exact else f"  {v.describe()}"),
                      flush=True)
    if args.json:
        print(json.dumps([v.as_dict() for v in verdicts], indent=2))
    bad = [v for v in verdicts if not v.exact]
    if not args.json:
        print(f"{len(verdicts) - len(bad)} of {len(verdicts)} stage x scenario verdicts bit-exact against baseline")
    return len(bad)


def cmd_ops(args):
    from .verify import count_ops

    rows = []
    for mode in args.mode:
        for stage in args.stage or stages.names():
            for bs in args.bs:
                c = count_ops(stage, bs, args.device, mode=mode)
                rows.append({"mode": mode, "stage": stage, "bs": bs, **c.as_dict()})
    table = [
        f"{'mode':>13} {'stage':>13} {'bs':>4} {'device kernels':>15} {'device views':>13} {'host ops':>9} {'triton':>7}"
    ]
    table += [
        f"{r['mode']:>13} {r['stage']:>13} {r['bs']:>4} {r['device_kernels']:>15} {r['device_views']:>13} "
        f"{r['host_ops']:>9} {r['triton_launches']:>7}"
        for r in rows
    ]
    _emit(args, rows, "\n".join(table))


def cmd_upstream_check(args):
    from .upstream import main as upstream_main

    return upstream_main((["--json"] if args.json else []) + [f"--version={v}" for v in args.version or []])


def cmd_export(args):
    from .export import main as export_main

    return export_main([f"--version={v}" for v in args.version or []])


def cmd_mutations(args):
    from .mutations import MUTATIONS, MutationCheckError, check, check_applicable

    outcomes = []
    try:
        check_applicable()  # refuses, naming each, if a mutation does not apply: before minutes of work
        for mutation in MUTATIONS:  # a line as each finishes: the whole check takes minutes
            o = check(mutation, args.device)
            outcomes.append(o)
            if not args.json:
                print(f"{'caught' if o.caught else 'SURVIVED':>8}  {o.mutation:<55} {o.caught_by or ''}", flush=True)
    except MutationCheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    survived = [o.mutation for o in outcomes if not o.caught]
    summary = f"{len(outcomes) - len(survived)} of {len(outcomes)} planted kernel bugs caught"
    _emit(args, [o.__dict__ for o in outcomes], summary + (f"; survived: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


def main(argv=None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--device", default=os.environ.get("NSA_DEVICE", "cpu"), help="cpu (default) or cuda")
    p = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, parents=[common], **k)
    # Checked by harness.tracks, not argparse `choices`: an unknown track is one line, not usage + error.
    on_track = argparse.ArgumentParser(add_help=False)
    on_track.add_argument("--track", help=f"the track to work on (default: {DEFAULT.name}; the other: fused)")
    with_track = lambda *a, **k: _add(*a, parents=[common, on_track], **k)  # noqa: E731
    with_track("stages", help="stage names in series order").set_defaults(fn=cmd_stages)
    with_track("status", help="which stage each track's base is at (one line per track)").set_defaults(fn=cmd_status)
    a = sub.add_parser("apply", help="bring the base of the stage's track to that stage")
    a.add_argument("stage")
    a.add_argument(
        "--reauthor",
        action="store_true",
        help="the stage's patch no longer applies: go to the stage below, redo its change, `make refresh` rewrites it",
    )
    a.set_defaults(fn=cmd_apply)
    with_track("unapply", help="back to the track's baseline").set_defaults(fn=cmd_unapply)
    with_track("refresh", help="regenerate the track's topmost applied patch").set_defaults(fn=cmd_refresh)
    sub.add_parser("build", help="materialize every stage into build/stages (for machines without git)").set_defaults(
        fn=cmd_build
    )
    v = with_track(
        "verify",
        help="stage x scenario (fused: x case) bit-exact table; 'worktree' is the base as it stands, "
        "unrefreshed edits included",
    )
    v.add_argument("stage", nargs="*", help=f"stages (default: all, plus '{stages.WORKTREE}' when the base is edited)")
    v.set_defaults(fn=cmd_verify)
    o = sub.add_parser("ops", help="aten ops and Triton launches per replay, mode x stage x bs")
    o.add_argument("stage", nargs="*")
    o.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    o.add_argument("--bs", type=int, nargs="+", default=[1, 32, 128])
    o.set_defaults(fn=cmd_ops)
    u = sub.add_parser(
        "upstream-check", help="the series on every release's real file: applies / compiles / lint / bit-exact"
    )
    u.add_argument("--version", action="append", help="one release of either track (repeatable; harness/tracks.py)")
    u.set_defaults(fn=cmd_upstream_check)
    e = sub.add_parser("export", help="dist/sglang-<version>/: git am / quilt mails for every release")
    e.add_argument("--version", action="append", help="one release of either track (repeatable; harness/tracks.py)")
    e.set_defaults(fn=cmd_export)
    sub.add_parser("mutations", help="plant known kernel bugs in the final stage; the matrix must catch each").set_defaults(
        fn=cmd_mutations
    )
    args = p.parse_args(argv)
    try:
        return args.fn(args) or 0
    except (SeriesError, TrackError, ReplayInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only checkout, a full disk: one line, and nothing was half-written
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2


def os_error_line(e: OSError) -> str:
    """What could not be written, why, and how to make the checkout writable."""
    from .loader import REPO_ROOT

    where = e.filename or "a file"
    try:
        where = os.path.relpath(where, REPO_ROOT) if os.path.isabs(where) else where
    except ValueError:
        pass
    text = f"cannot write {where}: {e.strerror or e}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        text += f"; this command writes into the checkout: make it writable (`chmod -R u+w {REPO_ROOT}`) and retry"
    return text


if __name__ == "__main__":
    status = main()
    # Done: a Ctrl-C from here on would land in the interpreter's shutdown, which has put SIGINT
    # back to its default, and end the process silently after the work finished; ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)
