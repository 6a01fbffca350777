"""bench/graph_demo.py's CPU-checkable parts: setup, the bit-exact check and the interleaved timing."""

import pytest
import torch

from bench import graph_demo


def test_demo_runs_on_cpu_and_its_recorded_replays_are_bit_exact():
    result = graph_demo.run("cpu", capture_bs=(1, 2, 4), context=640, rounds=3, steps_per_bs=1)
    assert result["bit_exact"] == {"replays": 5, "exact": True, "mismatch": None, "consumer_matches": True}
    assert [row["bs"] for row in result["host"]] == [1, 2, 4]
    for row in result["host"]:
        assert set(graph_demo.VARIANTS) <= row.keys()
        assert row["in_graph_extra_us"] == row["in_graph_extra"]["median"]
        assert row["in_graph_extra"]["q1"] <= row["in_graph_extra_us"] <= row["in_graph_extra"]["q3"]
        assert row["unpaired_extra_us"] == row["recorded"]["median"] - row["consumer_only"]["median"]
        assert row["recorded"]["q1"] <= row["recorded"]["median"] <= row["recorded"]["q3"]
    assert result["issue_11"]["met"] == all(r["in_graph_extra_us"] <= 2.0 for r in result["host"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, run python3 -m bench.graph_demo OUT.json")
def test_main_refuses_without_a_gpu(tmp_path):
    with pytest.raises(SystemExit, match="needs a GPU"):
        graph_demo.main(str(tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()
