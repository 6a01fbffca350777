"""Hypothesis strategies shared by the fuzz tests (stages against baseline, releases unpatched
against patched): scenarios over every axis the named matrix samples."""

from hypothesis import strategies as st

from harness.scenarios import TOKEN_VALUES, Scenario


def target_verify_scenarios(replays: int):
    return st.builds(
        Scenario,
        num_draft_tokens=st.integers(1, 16),
        page_size=st.sampled_from([1, 64]),
        index_topk=st.integers(1, 400),
        context_len=st.integers(130, 400),
        capture_bs=st.lists(st.integers(1, 12), min_size=1, max_size=4, unique=True).map(tuple),
        seq_lens_dtype=st.sampled_from(["int32", "int64"]),
        token_values=st.sampled_from(sorted(TOKEN_VALUES)),
        lengths=st.sampled_from(["random", "page_boundaries"]),
        replays=st.just(replays),
        seed=st.integers(0, 2**16),
    )


def mode_scenarios(mode: str, replays: int):
    """Decode or draft-extend scenarios; draft extend also over its accept-length profiles."""
    return st.builds(
        Scenario,
        num_draft_tokens=st.integers(1, 8),
        page_size=st.sampled_from([1, 64]),
        index_topk=st.integers(1, 400),
        mode=st.just(mode),
        context_len=st.integers(130, 400),
        capture_bs=st.lists(st.integers(1, 12), min_size=1, max_size=4, unique=True).map(tuple),
        seq_lens_dtype=st.sampled_from(["int32", "int64"]),
        token_values=st.sampled_from(sorted(TOKEN_VALUES)),
        accept=st.sampled_from(["random", "all-1", "all-D", "seq_len"] if mode == "draft_extend" else ["random"]),
        replays=st.just(replays),
        seed=st.integers(0, 2**16),
    )
