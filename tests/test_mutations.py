"""The verdict matrix catches every planted kernel bug (harness/mutations.py), from a fresh clone."""

import pytest

from harness.mutations import MUTATIONS, Mutation, check, load_mutant
from harness.series import SeriesError


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_matrix_catches_planted_bug(mutation):
    outcome = check(mutation)
    assert outcome.caught, f"survived the whole matrix: {mutation.name} ({mutation.original!r} -> {mutation.mutant!r})"


def test_a_mutation_that_no_longer_matches_the_kernel_says_so():
    stale = Mutation("stale", "no such kernel text", "x")
    with pytest.raises(SeriesError, match=r"mutation 'stale': 'no such kernel text' occurs 0 times .* update harness/mutations.py"):
        load_mutant(stale)
