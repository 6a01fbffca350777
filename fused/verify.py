"""`python -m harness verify --track fused`: a stage of the fused track against the eager reference.

The cases are the track's equality matrix, the one fused.gpu_check runs compiled on a GPU
(`gpu_check.equality_cases()`: every mode, bs 0 - 256, page size 1 and 64, widths 193 to
1,000,003, page_table_1 dropped, paged_mqa_ctx_lens_2d, static and variable draft extend). Each
runs once through the Triton interpreter on sentinel-filled buffers and is checked by
`fused.cases.check` against fused/reference.py: every buffer whole, the guard row behind each page
table included, the first differing index named. The track's baseline is upstream 0.5.23's own
kernel, which may write past a row's live prefix: it is held to upstream's contract instead (page
tables on each row's live prefix), as the tests hold every release.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from fused import cases, track
from fused.cases import Case

WORKTREE = "worktree"  # the pseudo-stage: the base as it stands in the working tree
SHORT_MODES = {"decode": "decode", "target_verify": "tv", "draft_extend": "de"}


@dataclass(frozen=True)
class Verdict:
    stage: str
    case: str
    exact: bool
    detail: str = ""  # where it differs, or what it raised

    def as_dict(self) -> dict:
        return asdict(self)


def case_name(case: Case) -> str:
    """`tv-bs7-w193-ps64-D2-mqa`: mode, bs, table width, page size, draft tokens and the options."""
    parts = [SHORT_MODES[case.mode], f"bs{case.bs}", f"w{case.width}", f"ps{case.page_size}"]
    if case.mode != "decode":
        parts.append(f"D{case.next_n}")
    if case.static_extend_len:
        parts.append("static")
    if not case.page_table_1:
        parts.append("no-pt1")
    if case.paged_mqa_ctx_lens:
        parts.append("mqa")
    return "-".join(parts)


def matrix() -> list[Case]:
    from fused import gpu_check

    return gpu_check.equality_cases()


def stage_source(series, stage: str) -> str:
    """The fused metadata module at `stage` of `series` (a harness.series.Series of this track), or
    as it stands in the working tree for WORKTREE."""
    from harness.series import SeriesError

    path = track.table()["track"]["base_file"]
    files = series.worktree() if stage == WORKTREE else series.materialize(stage)
    if path not in files:
        raise SeriesError(f"{path} is missing: `make apply-{series.status().stage}` restores it")
    return files[path].decode()


def verdicts(series, stage: str, case_list: list[Case] | None = None) -> Iterator[Verdict]:
    """One verdict per case, as each finishes (the interpreter takes seconds per case)."""
    contract_only = stage == series.baseline_stage
    try:
        source = track.without_cuda_asserts(stage_source(series, stage))
        module = track.load(source, "fused_verify_" + re.sub(r"\W", "_", stage))
    except SyntaxError as error:  # an edit that does not parse: one verdict, not a traceback per case
        yield Verdict(stage, "import", False, f"SyntaxError: {error}")
        return
    page_size_arg = track.page_size_arg(track.table()["track"]["base_version"])
    with track.interpreter_bool_masks():
        for case in matrix() if case_list is None else case_list:
            name = case_name(case)
            try:
                cases.run_and_check(module, case, page_size_arg, live_prefix_only=contract_only)
            except AssertionError as error:  # "<case>: <buffer>[index] is x, want y": the case is named already
                yield Verdict(stage, name, False, _first_line(str(error).removeprefix(f"{case}: ")))
            except Exception as error:  # an edit that crashes is a difference too, not the end of the table
                yield Verdict(stage, name, False, f"raises {type(error).__name__}: {_first_line(str(error))}")
            else:
                yield Verdict(stage, name, True)


def _first_line(text: str) -> str:
    return (text.splitlines() or [""])[0][:300]
