"""The sglang tests the series adds (vendor_stub/test/), run here against a stage.

Those files are written for sglang's repository: they import the kernel by its sglang name
(sglang.srt.layers.attention.nsa.cuda_graph_metadata), CustomTestCase from sglang.test.test_utils
and, where a release's layout wants it, register_cuda_ci from sglang.test.ci.ci_register. Here
those three names are the stage's own kernel module, unittest.TestCase and a no-op, for the
duration of the run only; the test files themselves are the stage's, unchanged.

    python -m harness.sglang_test [STAGE]     # the final stage by default; exit status 1 on failure

On a CPU machine Triton runs through its interpreter (CPU tensors); on a GPU machine without git,
`make bench-prepare` here and NSA_USE_BUILD=1 there (README, "Benchmarks and reports").
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
import unittest
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from .env import triton_device

TESTS = "test"  # vendor_stub/test/: sglang tests, placed by release in sglang's test layout


def test_files(backend: ModuleType) -> list[Path]:
    """The sglang test files beside a loaded stub's nsa_backend module (materialized with it)."""
    return sorted((Path(backend.__file__).parent / TESTS).glob("test_*.py"))


def sglang_name(kernel: ModuleType) -> str:
    """The kernel module's name in sglang: the stub package sits where UPSTREAM_PIN.toml's file does."""
    stub = Path(kernel.__file__).resolve()
    package_dir = next(p for p in stub.parents if (p / "UPSTREAM_PIN.toml").exists())
    pin = tomllib.loads((package_dir / "UPSTREAM_PIN.toml").read_text())
    upstream_package = Path(pin["path"]).parent  # sglang/srt/layers/attention
    return ".".join((upstream_package / stub.relative_to(package_dir).with_suffix("")).parts)


def _module(name: str, **attributes) -> ModuleType:
    module = ModuleType(name)
    module.__dict__.update(attributes)
    return module


@contextmanager
def sglang_names(kernel: ModuleType):
    """sys.modules holds the stage's kernel and the two sglang.test stand-ins, then as it was."""
    names = {
        sglang_name(kernel): kernel,
        "sglang.test.test_utils": _module("sglang.test.test_utils", CustomTestCase=unittest.TestCase),
        "sglang.test.ci.ci_register": _module(
            "sglang.test.ci.ci_register", register_cuda_ci=lambda **registration: None
        ),
    }
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(names)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def run(
    stage: str | None = None,
    *,
    backend: ModuleType | None = None,
    only: str | None = None,
    verbosity: int = 1,
    stream=None,
) -> unittest.TestResult:
    """Every sglang test of `stage` (default: the final stage), or of an already loaded stub's
    `backend` module (a mutant, say), in one unittest run; `only`: test methods named so."""
    triton_device()  # before triton is imported: the interpreter where there is no GPU
    from . import stages

    stage = stage or stages.final()
    backend = backend or stages.load(stage)
    kernel = stages.kernel_module_of(backend)
    suite = unittest.TestSuite()
    with sglang_names(kernel):
        for path in test_files(backend):
            name = "nsa_sglang_" + re.sub(r"\W", "_", f"{backend.__package__}_{path.stem}")
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            tests = unittest.defaultTestLoader.loadTestsFromModule(module)
            suite.addTests(t for t in _flat(tests) if only is None or t._testMethodName == only)
        return unittest.TextTestRunner(stream=stream, verbosity=verbosity).run(suite)


def _flat(suite: unittest.TestSuite):
    for item in suite:
        yield from _flat(item) if isinstance(item, unittest.TestSuite) else (item,)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    result = run(args[0] if args else None, verbosity=2)
    return 0 if result.wasSuccessful() and result.testsRun else 1


if __name__ == "__main__":
    sys.exit(main())
