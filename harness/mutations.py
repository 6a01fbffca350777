"""Mutation check: plant known kernel bugs in the final stage; the verdict matrix must catch each.

A matrix that passes a buggy kernel proves nothing about a correct one. Each mutation below is a
one-token slip a reviewer could miss (an off-by-one mask, `//` for `>>`, a dropped carry); each is
applied to the final stage's kernel in a scratch build, then the named scenario matrix is replayed
against baseline until a buffer differs (caught) or the matrix ends (survived). A mutant whose
replay raises where baseline's does not is caught too: the lockstep comparison records that as its
verdict.

The check can fail, and never counts what it did not see as caught: a mutation whose original text
does not occur exactly once in the final kernel is refused before anything runs (a kernel edit must
not silently disarm it), and a check process that ends without a verdict (a crash, an import error)
raises `MutationCheckError` naming the mutation. CI runs it (tests/test_mutations.py); so does
`python -m harness mutations`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass

from . import stages
from .loader import BUILD_DIR, REPO_ROOT, import_stub
from .scenarios import matrix
from .series import STUB_DIR, Series, SeriesError, write_tree
from .verify import compare_modules

KERNEL = f"{STUB_DIR}/nsa/cuda_graph_metadata.py"
MUTANTS_DIR = BUILD_DIR.parent / "mutants"


@dataclass(frozen=True)
class Mutation:
    name: str
    original: str  # must occur exactly once in the kernel
    mutant: str


MUTATIONS = (
    Mutation("real_page_table: last page of a row dropped", "mask=first_cols < tl.where(rows > d, max_seqlen_k, 0)",
             "mask=first_cols + 1 < tl.where(rows > d, max_seqlen_k, 0)"),
    Mutation("real_page_table: page shift as floor division", "mask=live_pages) >> LOG2_PAGE_SIZE",
             "mask=live_pages) // (1 << LOG2_PAGE_SIZE)"),
    Mutation("cache_seqlens: last request masked out", "live = req < bs", "live = req < bs - 1"),
    Mutation("max_seqlen_k one short", "max_seqlen_k = tl.minimum(longest, WIDTH)",
             "max_seqlen_k = tl.minimum(longest - 1, WIDTH)"),
    Mutation("page_table_1: tail stores one column too many", "mask=tail < tl.where(rows > d, max_seqlen_k, 0)",
             "mask=tail <= tl.where(rows > d, max_seqlen_k, 0)"),
    # Within the row: a store past the table's width would crash the interpreter, not fail a comparison.
    Mutation("page_table_1: body stores past max_seqlen_k", "row_body_end = tl.where(rows > d, body_end, 0)",
             "row_body_end = tl.where(rows > d, tl.minimum(body_end + 16, WIDTH), 0)"),
    Mutation("page_table_1: body aligned to 32, tail still 16", "body_end = (max_seqlen_k // 16) * 16",
             "body_end = (max_seqlen_k // 32) * 32"),
    Mutation("nsa_cache_seqlens: topk clamp one short", "tl.minimum(expanded, TOPK)", "tl.minimum(expanded, TOPK - 1)"),
    Mutation("cu_seqlens_k: carry between scan chunks dropped", "kv_before += tl.sum(kv, 0)",
             "kv_before += tl.sum(kv, 0) * 0"),
    Mutation("nsa_cu_seqlens_k: carry between scan chunks dropped", "nsa_before += tl.sum(req_total, 0)",
             "nsa_before += tl.sum(req_total, 0) * 0"),
    Mutation("draft extend: a request's first row counts its own accept length", "before = some_req < req",
             "before = some_req <= req"),
    Mutation("draft extend: length scan's row carry between chunks dropped", "rows_before += tl.sum(q, 0)",
             "rows_before += tl.sum(q, 0) * 0"),
    Mutation("draft extend: one row too many per request", "rows = tl.minimum(tl.maximum(rows, 0), DRAFT)",
             "rows = tl.minimum(tl.maximum(rows, 0), DRAFT) + 1"),
)


class MutationCheckError(RuntimeError):
    """The check could not give a verdict for a mutation: it is neither caught nor survived."""


@dataclass(frozen=True)
class Outcome:
    mutation: str
    caught_by: str | None  # "<scenario> replay <i>: <first mismatch>", or the exception; None: survived

    @property
    def caught(self) -> bool:
        return self.caught_by is not None


def mutant_files(mutation: Mutation, series: Series | None = None) -> dict[str, bytes]:
    """The final stage's files with `mutation` applied to its kernel; SeriesError unless it applies once."""
    series = series or Series()
    files = series.materialize(stages.final())
    kernel = files[KERNEL].decode()
    found = kernel.count(mutation.original)
    if found != 1 or mutation.mutant == mutation.original:
        why = f"occurs {found} times" if found != 1 else "is its own mutant"
        raise SeriesError(
            f"mutation '{mutation.name}': {mutation.original!r} {why} in {KERNEL} at stage "
            f"'{stages.final()}', not once: the mutation would plant nothing; update harness/mutations.py"
        )
    files[KERNEL] = kernel.replace(mutation.original, mutation.mutant).encode()
    return files


def load_mutant(mutation: Mutation, series: Series | None = None):
    """The final stage with `mutation` applied to its kernel, imported as a module of its own."""
    files = mutant_files(mutation, series)
    digest = hashlib.sha256(b"".join(k.encode() + v for k, v in sorted(files.items()))).hexdigest()[:12]
    folder = MUTANTS_DIR / digest
    if not folder.exists():  # written aside then renamed, as stages.load does
        staging = folder.with_name(f".{digest}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        write_tree(staging, files)
        try:
            staging.rename(folder)
        except OSError:  # another process won the race with identical content
            shutil.rmtree(staging, ignore_errors=True)
    return import_stub(f"nsa_mutant_{digest}", folder / STUB_DIR)


def _check_in_process(mutation: Mutation, device: str) -> Outcome:
    mutant = load_mutant(mutation)
    baseline = stages.load(stages.BASELINE)
    # Small captured batches first: the edge profiles then come before the slow bs-256 scenarios.
    for scenario in sorted(matrix(), key=lambda s: max(s.capture_bs)):
        verdict = compare_modules(baseline, mutant, scenario, device)
        if not verdict.exact:  # a differing buffer, or the mutant raising where baseline did not
            return Outcome(mutation.name, f"{scenario.name} {verdict.describe()}".splitlines()[0][:200])
    return Outcome(mutation.name, None)


def check(mutation: Mutation, device: str = "cpu") -> Outcome:
    """Run one mutant in a process of its own: a mutant may write out of bounds and crash it.

    Raises SeriesError when the mutation does not apply (before anything runs), and
    MutationCheckError when the process ends without a verdict: a crash proves nothing about the
    matrix, so it is never counted as caught.
    """
    mutant_files(mutation)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.mutations", json.dumps(asdict(mutation)), device],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return Outcome(**json.loads(lines[-1]))
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
    raise MutationCheckError(
        f"mutation '{mutation.name}': the check process ended without a verdict (exit {proc.returncode}): {last}"
    )


def check_applicable(mutations: tuple[Mutation, ...] = MUTATIONS) -> None:
    """SeriesError naming every mutation that does not apply exactly once to the final kernel."""
    series = Series()
    problems = []
    for mutation in mutations:
        try:
            mutant_files(mutation, series)
        except SeriesError as e:
            problems.append(str(e))
    if problems:
        raise SeriesError("; ".join(problems))


def check_all(device: str = "cpu") -> list[Outcome]:
    """Every mutation's outcome; refuses before running any if one of them does not apply."""
    check_applicable()
    return [check(m, device) for m in MUTATIONS]


if __name__ == "__main__":  # one mutant: python -m harness.mutations '<Mutation as JSON>' [device]
    device = (sys.argv[2:] or ["cpu"])[0]
    if not os.environ.get("TRITON_INTERPRET") and device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    outcome = _check_in_process(Mutation(**json.loads(sys.argv[1])), device)
    print(json.dumps(asdict(outcome)))
