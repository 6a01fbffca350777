"""python -m harness {stages,status,apply,unapply,refresh,build,verify,ops,upstream-check,export,mutations} [--json]

`verify` with no stage checks every stage of the committed series, and also vendor_stub/ as it
stands (the `worktree` pseudo-stage) when it holds edits not refreshed into a patch;
`verify worktree` checks only vendor_stub/ as it stands.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys

INTERRUPTED = "interrupted: vendor_stub/ and patches/ are as before or as after, never between (`make status` says where)"


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

from .env import triton_device  # noqa: E402

triton_device("cpu")  # before triton is imported: the CLI runs on CPU unless NSA_DEVICE=cuda

from . import stages  # noqa: E402
from .runner import MODES, ReplayInputError  # noqa: E402
from .series import SeriesError, Series  # noqa: E402


def _emit(args, data, table: str) -> None:
    print(json.dumps(data, indent=2) if args.json else table)


def cmd_stages(args):
    names = stages.names()
    _emit(args, names, "\n".join(names))


def cmd_status(args):
    st = Series().status()
    data = {"stage": st.stage, "clean": st.clean, "kind": st.kind, "edited": list(st.edited), "broken": st.broken}
    _emit(args, data, st.describe())


def cmd_apply(args):
    st = Series().apply(args.stage, reauthor=args.reauthor)
    _emit(args, {"stage": st.stage}, st.describe())


def cmd_unapply(args):
    st = Series().unapply()
    _emit(args, {"stage": st.stage}, st.describe())


def cmd_refresh(args):
    msg = Series().refresh()
    _emit(args, {"message": msg}, msg)


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
    names = [s for s in reachable if s != stages.BASELINE]
    warnings = [f"WARNING: {broken}"] if broken else []
    if note:
        names.append(stages.WORKTREE)
        warnings.append(f"WARNING: also verifying stage '{stages.WORKTREE}', because {note}")
    return names, warnings, bool(broken)


def cmd_verify(args):
    from .scenarios import matrix
    from .verify import compare_stage

    names, warnings, series_broken = verify_plan(Series(), args.stage)
    for line in warnings:
        print(line, file=sys.stderr, flush=True)
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
    for line in warnings:  # repeated under the table, where a reader looks for the outcome
        print(line, file=sys.stderr)
    return 1 if bad or series_broken else 0


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
    sub.add_parser("stages", help="stage names in series order").set_defaults(fn=cmd_stages)
    sub.add_parser("status", help="which stage vendor_stub/ is at").set_defaults(fn=cmd_status)
    a = sub.add_parser("apply", help="bring vendor_stub/ to a stage")
    a.add_argument("stage")
    a.add_argument(
        "--reauthor",
        action="store_true",
        help="the stage's patch no longer applies: go to the stage below, redo its change, `make refresh` rewrites it",
    )
    a.set_defaults(fn=cmd_apply)
    sub.add_parser("unapply", help="back to baseline").set_defaults(fn=cmd_unapply)
    sub.add_parser("refresh", help="regenerate the topmost applied patch").set_defaults(fn=cmd_refresh)
    sub.add_parser("build", help="materialize every stage into build/stages (for machines without git)").set_defaults(
        fn=cmd_build
    )
    v = sub.add_parser(
        "verify",
        help="stage x scenario bit-exact table; 'worktree' is vendor_stub/ as it stands, unrefreshed edits included",
    )
    v.add_argument("stage", nargs="*", help=f"stages (default: all, plus '{stages.WORKTREE}' when vendor_stub/ is edited)")
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
    except (SeriesError, ReplayInputError) as e:
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
    sys.exit(main())
