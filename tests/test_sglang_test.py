"""The sglang test the series ships (vendor_stub/test/), run here, and where each release gets it.

The test file is the final stage's, unchanged; harness.sglang_test gives it the stage's kernel under
its sglang module name. Under Triton's interpreter its CUDA-graph test skips (it records a graph).
"""

from __future__ import annotations

import io

import pytest
import torch

from harness import sglang_test, stages
from harness.lint import findings
from harness.mutations import MUTATIONS, load_mutant
from harness.releases import STUB_TESTS, Table, map_patch, registered, to_upstream, wheel_file
from harness.series import PATCH_DIR, Series

GRAPH_ONLY = {"test_recorded_into_cuda_graph"}  # needs CUDA: skipped under the interpreter


def series_tests() -> list[str]:
    """Stub paths of the sglang tests the series adds."""
    return sorted(p for p in Series().materialize(stages.final()) if p.startswith(STUB_TESTS))


def test_the_series_adds_an_sglang_test():
    assert series_tests() == [f"{STUB_TESTS}test_nsa_cuda_graph_metadata.py"]


def test_final_stage_passes_its_sglang_test():
    out = io.StringIO()
    result = sglang_test.run(stream=out, verbosity=2)
    assert result.wasSuccessful(), out.getvalue()[-4000:]
    skipped = {test._testMethodName for test, _ in result.skipped}
    assert skipped == (set() if torch.cuda.is_available() else GRAPH_ONLY), out.getvalue()[-2000:]
    assert result.testsRun == 5


def test_sglang_test_catches_a_planted_kernel_bug():
    """The test can fail: a topk clamp one short fails target verify's whole-buffer comparison."""
    mutation = next(m for m in MUTATIONS if m.name == "nsa_cache_seqlens: topk clamp one short")
    out = io.StringIO()
    result = sglang_test.run(backend=load_mutant(mutation), only="test_target_verify", stream=out, verbosity=2)
    # One failure per page size (subtests), none an error: the comparison caught it.
    assert result.testsRun == 1 and len(result.failures) == 2 and not result.errors, out.getvalue()[-2000:]
    assert "nsa_cache_seqlens_int32, first difference at" in out.getvalue()


@pytest.mark.parametrize("version, folder, registers", [
    ("0.5.5", "test/srt/layers/attention/nsa", False),
    ("0.5.6", "test/srt/layers/attention/nsa", False),
    ("0.5.6.post2", "test/srt/layers/attention/nsa", False),
    ("0.5.7", "test/registered/attention", True),
    ("0.5.9", "test/registered/attention", True),
])
def test_each_release_gets_the_test_in_its_layout(version, folder, registers, tmp_path):
    """Mapped into the release's test folder; registered where that layout asks, as the release's
    own CI registry (sglang/test/ci/ci_register.py from its wheel) reads it; the file as mailed
    adds no finding of sglang's lint."""
    layout = Table.load().test_layout(version)
    stub = f"{STUB_TESTS}test_nsa_cuda_graph_metadata.py"
    path = f"{folder}/test_nsa_cuda_graph_metadata.py"
    assert to_upstream(stub, layout) == path
    series = Series()
    texts = [(series.root / PATCH_DIR / p).read_bytes() for p in series.patch_files]
    patch = next(text for text in texts if f"+++ b/{stub}\n".encode() in text)  # the patch adding it
    mapped = map_patch(patch, layout).decode()
    assert f"+++ b/{path}\n" in mapped and STUB_TESTS not in mapped
    content = "".join(line[1:] for line in mapped.split("\n@@ ", 1)[1].splitlines(keepends=True)[1:])
    assert ("\nregister_cuda_ci(" in content) == registers
    assert findings({path: content.encode()}) == set()
    if registers:
        registry = {}
        exec(wheel_file(version, "sglang/test/ci/ci_register.py"), registry)  # noqa: S102
        (tmp_path / "test.py").write_text(content)
        (entry,) = registry["collect_tests"]([str(tmp_path / "test.py")])
        assert (entry.backend.name, entry.suite) == ("CUDA", "stage-b-test-small-1-gpu")


def test_registered_places_the_registration_after_the_imports():
    text = 'import os\n\nimport torch\n\nfrom sglang.srt.x import y\nfrom sglang.test.test_utils import (\n    Z,\n)\n\nA = 1\n'
    assert registered(text, "register_cuda_ci(est_time=1, suite=\"s\")") == (
        'import os\n\nimport torch\n\nfrom sglang.srt.x import y\n'
        'from sglang.test.ci.ci_register import register_cuda_ci\n'
        'from sglang.test.test_utils import (\n    Z,\n)\n\nregister_cuda_ci(est_time=1, suite="s")\n\nA = 1\n'
    )
