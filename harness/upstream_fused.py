"""`make upstream-check` for the fused track (sglang 0.5.15 - 0.5.23): every step executed.

Per release v of fused/RELEASES.toml and per patch of fused/patches/series (the prefix ending at it):

- applies: the patch as exported for v (`export_patches`: the diff from v's own module to the
  patched base under v's names, at v's module path) passes `git apply --check` in a tree holding
  v's real module, from its wheel, at its real path, with the earlier patches applied;
- compiles: the derived module byte-compiles (`py_compile`), imports, and its kernels run through
  Triton's interpreter in the equality cases;
- lint: black 88, isort --profile black, ruff on the derived file, its findings split into those v's
  own file already has and those the series adds (harness.upstream.lint_report, as the 0.5.6 rows);
- equal: per case of `CASES`, upstream's kernels from v's wheel and the derived module run on the
  same inputs; upstream equals the eager reference on its contract, the derived module equals it on
  every buffer whole, and the two equal each other on the contract (fused.cases.check);
- callers: every call of the three functions in v's own sglang/srt code (dsa_backend.py, and where
  a release moved them, its mixins), by name or through the attribute the manager binds them to,
  binds to the derived module's signatures (`inspect.Signature.bind`): a patch that breaks a caller
  fails here;
- kpool: from 0.5.20 on, which calls still reach upstream's KPool kernels (not ported).

A module text is run once: results are cached per (upstream sha256, derived sha256), so the 10
releases cost the 4 distinct texts.

    python -m harness.upstream --track fused [--version V ...] [--write reports/upstream]
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import py_compile
import re
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from fused import track

from .tracks import stage_name

TRACK = "fused"
WIDE = 2**20 + 3  # a width past 2^20: row offsets past int32's 2^20-column comfort, few rows
EDGES = (0, 1, 63, 64, 65, 127, 128, 129, 191, 192, 193)


def _cases():
    """The representative set: every mode, page 1 and 64, page_table_1=None, paged_mqa_ctx_lens_2d,
    static_extend_len both (and a partial fill), bs 0, and one row at a width past 2^20.

    Small widths but for the one wide row: upstream launches a program per 128 columns of every
    row, and each program costs the interpreter a Python round."""
    from fused.cases import Case

    w = 193
    return (
        Case("decode", EDGES[:7], w),
        Case("decode", (5, 70, 193, 1, 128), w, page_size=1),
        Case("decode", EDGES[4:9], w, page_table_1=False),
        Case("decode", (), w),
        Case("target_verify", EDGES[2:7], w, next_n=3, paged_mqa_ctx_lens=True),
        Case("target_verify", (5, 190, 64), w, next_n=2, page_size=1),
        Case("target_verify", (), w, next_n=2),
        Case("draft_extend", EDGES[3:8], w, next_n=3, extend_lens=(3,) * 5, static_extend_len=True),
        Case("draft_extend", EDGES[:6], w, next_n=4, extend_lens=(4, 0, 2, 1, 3, 4)),
        Case("draft_extend", EDGES[5:11], w, next_n=4, extend_lens=(4,) * 6, total_len=19, static_extend_len=True),
        Case("draft_extend", (), w, next_n=2, extend_lens=(), static_extend_len=True),
        Case("decode", (WIDE - 65,), WIDE),
    )


def case_name(case) -> str:
    extras = [f"ps{case.page_size}", f"bs{case.bs}", f"w{case.width}"]
    if case.mode != "decode":
        extras.append(f"n{case.next_n}")
    if not case.page_table_1:
        extras.append("no-page_table_1")
    if case.paged_mqa_ctx_lens:
        extras.append("paged_mqa_ctx_lens_2d")
    if case.mode == "draft_extend":
        extras.append("static" if case.static_extend_len else "variable")
        if case.total_len is not None:
            extras.append(f"total{case.total_len}")
    return "-".join([case.mode, *extras])


CASES = _cases()


# -- the release's files, from its wheel ------------------------------------------------------------


def _wheel(version: str) -> Path:
    track.upstream_source(version)  # the table's sha256 check, and the one-line advice without a wheel
    return sorted((track.WHEEL_CACHE / f"sglang-{version}").glob("sglang-*.whl"))[0]


@cache
def srt_sources(version: str) -> dict[str, str]:
    """Every Python file of the wheel's sglang/srt/layers/attention tree, at its repository path."""
    with zipfile.ZipFile(_wheel(version)) as wheel:
        return {
            f"python/{name}": wheel.read(name).decode()
            for name in wheel.namelist()
            if name.startswith("sglang/srt/layers/attention/") and name.endswith(".py")
        }


def module_path(version: str) -> str:
    return track.release(version)["module"]


def as_release(text: str, version: str) -> str:
    """The patched base's text under `version`'s names (what fused.track.derived_source does for the
    whole series, here for any prefix of it)."""
    name = track.page_size_arg(version)
    return text if name == "physical_page_size" else re.sub(r"\bphysical_page_size\b", name, text)


@cache
def _patched_prefix(count: int) -> str:
    """The base after the series' first `count` patches (the stage the count-th patch ends in)."""
    return track.patched_source(stage_name(track.series()[count - 1].name))


def derived_sources(version: str) -> list[str]:
    """v's module, then v's module after each prefix of the series (derived: the patched base)."""
    return [track.upstream_source(version)] + [
        as_release(_patched_prefix(i), version) for i in range(1, len(track.series()) + 1)
    ]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- applies ---------------------------------------------------------------------------------------


def export_patches(version: str) -> list[tuple[Path, str]]:
    """(canonical patch, its diff for `version`): the diff from the text before it to the text after,
    at v's module path, as `git diff` writes it."""
    import git

    path = module_path(version)
    texts = derived_sources(version)
    out = []
    with tempfile.TemporaryDirectory(prefix="fused-export-") as scratch:
        repo = git.Repo.init(scratch)
        target = Path(scratch) / path
        target.parent.mkdir(parents=True)
        for patch, before, after in zip(track.series(), texts, texts[1:]):
            target.write_text(before)
            repo.git.add(path)
            target.write_text(after)
            out.append((patch, repo.git.diff("--full-index", "--", path) + "\n"))
            repo.git.reset("-q")
    return out


def applies(version: str, before: str, diff: str) -> str | None:
    """None when `diff` applies (`git apply --check`) onto a tree holding `before` at v's module path;
    else git's one-line reason."""
    import git

    with tempfile.TemporaryDirectory(prefix="fused-apply-") as scratch:
        repo = git.Repo.init(scratch)
        target = Path(scratch) / module_path(version)
        target.parent.mkdir(parents=True)
        target.write_text(before)
        patch = Path(scratch) / ".export.patch"
        patch.write_text(diff)
        try:
            repo.git.apply("--check", str(patch))
        except git.GitCommandError as error:
            return " ".join(error.stderr.split()) or str(error)
    return None


# -- compiles and equal ------------------------------------------------------------------------------


def compiles(text: str, path: str) -> str | None:
    with tempfile.TemporaryDirectory(prefix="fused-compile-") as scratch:
        source = Path(scratch) / Path(path).name
        source.write_text(text)
        try:
            py_compile.compile(str(source), doraise=True)
        except py_compile.PyCompileError as error:
            return " ".join(error.msg.split())
    return None


@cache
def _module(text: str, label: str):
    return track.load(track.without_cuda_asserts(text), f"fused_{label}_{_sha(text)[:12]}")


@cache
def equality(upstream_text: str, derived_text: str, page_size_arg: str, cases: tuple) -> tuple[int, int, str | None]:
    """(cases run, cases equal, first failure) for one pair of module texts over `cases` (cached:
    releases that ship the same text are run once)."""
    from fused import cases as fc

    upstream, derived = _module(upstream_text, "upstream"), _module(derived_text, "derived")
    equal, failure = 0, None
    with track.interpreter_bool_masks():
        for case in cases:
            try:
                ran = {}
                for label, module in (("upstream", upstream), ("derived", derived)):
                    inputs, outputs = fc.make_inputs(case)
                    fc.call(module, case, inputs, outputs, page_size_arg)
                    ran[label] = outputs
                want = fc.expected(case, inputs, outputs)
                fc.check(case, ran["upstream"], want, live_prefix_only=True)
                fc.check(case, ran["derived"], want, live_prefix_only=False)
                # The two against each other on the contract: upstream's values where it names an
                # entry (whole length buffers; each row's live prefix of the page tables).
                theirs = {name: (buffer, want.get(name, (None, None))[1])
                          for name, buffer in ran["upstream"].items() if buffer is not None}
                fc.check(case, ran["derived"], theirs, live_prefix_only=True)
                equal += 1
            except Exception as error:  # a refusal or a difference: the case is not equal, say which
                failure = failure or f"{case_name(case)}: {type(error).__name__}: {' '.join(str(error).split())[:300]}"
    return len(cases), equal, failure


# -- callers ---------------------------------------------------------------------------------------

FUNCTIONS = tuple(track.table()["track"]["functions"])


def _bound_names(tree: ast.AST) -> dict[str, str]:
    """Names and `self.<attr>` attributes that stand for one of the three functions in a file:
    the functions themselves, `import ... as alias`, `self._x = fused_dsa_..._metadata`."""
    names = {f: f for f in FUNCTIONS}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in FUNCTIONS and alias.asname:
                    names[alias.asname] = alias.name
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id in FUNCTIONS:
            for target in node.targets:
                if isinstance(target, ast.Attribute):
                    names[f"self.{target.attr}"] = node.value.id
    return names


def _callee(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
        return f"self.{func.attr}"
    return None


def call_sites(version: str) -> list[dict]:
    """Every call of the three functions in the release's attention code, with its arguments."""
    sources = srt_sources(version)
    # Attributes bound in one file (the manager mixin) are called in others (the backend).
    bound: dict[str, str] = {}
    trees = {path: ast.parse(text) for path, text in sources.items()}
    for tree in trees.values():
        bound.update(_bound_names(tree))
    sites = []
    for path, tree in sorted(trees.items()):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (function := bound.get(_callee(node) or "")):
                sites.append({
                    "where": f"{path}:{node.lineno}",
                    "callee": _callee(node),
                    "function": function,
                    "positional": len(node.args),
                    "keywords": [k.arg for k in node.keywords],
                    "starred": any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords),
                })
    return sites


def check_callers(version: str, derived_text: str) -> list[dict]:
    """Each call site bound to the derived module's signature: ok, or the TypeError it would raise."""
    module = _module(derived_text, "derived")
    out = []
    for site in call_sites(version):
        signature = inspect.signature(getattr(module, site["function"]))
        problem = None
        if site["starred"]:
            problem = "passes *args or **kwargs: not checkable"
        else:
            try:
                signature.bind(*range(site["positional"]), **{k: None for k in site["keywords"]})
            except TypeError as error:
                problem = str(error)
        out.append({**site, "ok": problem is None, "problem": problem})
    return out


# -- KPool -----------------------------------------------------------------------------------------


def kpool(version: str) -> dict | None:
    """The KPool kernels a release can send calls to instead (not ported), read from its wheel, and
    the calls that reach them: those made through the attributes the backend's metadata manager
    rebinds to the KPool kernels when the fusion is enabled (`self._fused_*_metadata`)."""
    folder = track.release(version)["kpool_module"]
    if not folder:
        return None
    with zipfile.ZipFile(_wheel(version)) as wheel:
        names = [n for n in wheel.namelist() if n.startswith(folder.removeprefix("python/")) and n.endswith(".py")]
        # module.function, relative to the folder: 0.5.20 - 0.5.22 reuse the three names there.
        functions = sorted(
            f"{Path(name).stem}.{node.name}"
            for name in names
            for node in ast.parse(wheel.read(name).decode()).body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("fused_dsa_")
        )
    return {
        "module": folder,
        "functions": functions,
        "calls": [s["where"] for s in call_sites(version) if s["callee"].startswith("self.")],
        "when": "SGLANG_EXPERIMENTAL_DSA_KPOOL_METADATA_FUSION set, a KPool size above 1, page size 64",
    }


# -- one release -----------------------------------------------------------------------------------


@dataclass
class FusedCell:
    patch: str
    applies: bool = False
    compiles: bool = False
    lint: list[str] = field(default_factory=list)  # findings the patch adds
    cases: int = 0
    equal: int = 0
    callers: int = 0  # call sites that bind to the derived signatures
    call_sites: int = 0
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return (self.applies and self.compiles and not self.lint and self.failure is None
                and self.equal == self.cases > 0 and self.callers == self.call_sites)

    def describe(self) -> str:
        if not self.applies:
            return "does not apply"
        if not self.compiles:
            return "applies / does not compile"
        lint = f"lint: {len(self.lint)} new" if self.lint else "lint clean"
        return f"applies / compiles / {lint} / {self.equal}/{self.cases} equal / callers {self.callers}/{self.call_sites}"


def run_release(version: str, step=None) -> dict:
    """One release's row: each patch's cell, lint split, callers, KPool. JSON-ready."""
    from .upstream import lint_report

    step = step or (lambda version, what: None)
    entry = track.release(version)
    row = {"version": version, "track": TRACK, "module": entry["module"], "module_sha256": entry["module_sha256"],
           "page_size_arg": entry["page_size_arg"], "live_prefix_contract": entry["live_prefix_contract"],
           "error": None, "cells": [], "lint": {}, "callers": [], "kpool": None}
    try:
        texts = derived_sources(version)
        diffs = export_patches(version)
    except track.TrackError as error:
        row["error"] = str(error)
        return row
    path = entry["module"]
    for (patch, diff), before, after in zip(diffs, texts, texts[1:]):
        cell = FusedCell(patch.name)
        row["cells"].append(cell)
        step(version, f"{patch.name}: applies, compiles, lint")
        problem = applies(version, before, diff)
        cell.applies = problem is None
        if problem:
            cell.failure = f"git apply --check: {problem}"
            break
        problem = compiles(after, path)
        if problem is None:
            try:
                _module(after, "derived")
            except Exception as error:  # any import failure is the cell's verdict, said in one line
                problem = f"import: {type(error).__name__}: {error}"
        cell.compiles = problem is None
        if problem:
            cell.failure = problem
            break
        cell.lint = lint_report({path: texts[0].encode()}, {path: after.encode()})["added"]
        step(version, f"{patch.name}: {len(CASES)} cases, upstream and derived (interpreter)")
        cell.cases, cell.equal, cell.failure = equality(texts[0], after, entry["page_size_arg"], CASES)
        callers = check_callers(version, after)
        cell.call_sites, cell.callers = len(callers), sum(c["ok"] for c in callers)
        if cell.failure is None and cell.callers != cell.call_sites:
            cell.failure = "; ".join(f"{c['where']}: {c['problem']}" for c in callers if not c["ok"])
        row["callers"] = callers
    row["lint"] = lint_report({path: texts[0].encode()}, {path: texts[-1].encode()})
    row["kpool"] = kpool(version)
    row["cells"] = [asdict(c) for c in row["cells"]]
    return row


def verdict(rows: list[dict]) -> dict:
    """{"ok", "problems"} of a set of release rows."""
    problems = [f"sglang {r['version']}: {r['error']}" for r in rows if r["error"]]
    problems += [f"sglang {r['version']} {c['patch']}: {c['failure']}" for r in rows for c in r["cells"] if c["failure"]]
    problems += [f"sglang {r['version']} {c['patch']}: lint: {f}" for r in rows for c in r["cells"] for f in c["lint"]]
    problems += [f"sglang {r['version']}: no patch reached" for r in rows if not r["error"] and not r["cells"]]
    return {"ok": not problems, "problems": problems}


def header() -> dict:
    """What a fused part of matrix.json says about the run: the series, the cases, the tools."""
    from .upstream import tool_versions

    return {"patches": [p.name for p in track.series()], "cases": [case_name(c) for c in CASES], "tools": tool_versions()}


def run_matrix(versions=None, progress=None, step=None) -> dict:
    """The fused track's part of matrix.json: every release (or `versions`) x patch."""
    for version in versions or ():
        track.release(version)  # an unknown version stops here, in one line
    rows = []
    for version in versions or track.versions():
        row = run_release(version, step)
        rows.append(row)
        if progress:
            progress(row)
    return {**header(), "releases": rows, **verdict(rows)}


def cell_ok(cell: dict) -> bool:
    return FusedCell(**cell).ok


def describe(cell: dict) -> str:
    return FusedCell(**cell).describe()


def kpool_line(row: dict) -> str:
    k = row.get("kpool")
    if not k:
        return "no KPool kernels in this release"
    if "calls" not in k:  # a row written before the calls were recorded
        return f"not ported: {', '.join(k['functions'])} in `{k['module']}`; which calls reach them: rerun this release"
    calls = ", ".join(w.rsplit("/", 1)[-1] for w in k["calls"])
    return (f"not ported: with {k['when']}, {len(k['calls'])} calls ({calls}) still reach upstream's "
            + ", ".join(k["functions"]) + f" in `{k['module']}`")
