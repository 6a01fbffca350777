"""The verdict matrix catches every planted kernel bug (harness/mutations.py), and the check itself can fail."""

import ast

import pytest

from harness import stages
from harness.mutations import KERNEL, MUTATIONS, Mutation, MutationCheckError, check, check_applicable, mutant_files
from harness.series import Series, SeriesError


@pytest.mark.slow
@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_matrix_catches_planted_bug(mutation):
    outcome = check(mutation)
    assert outcome.caught, f"survived the whole matrix: {mutation.name} ({mutation.original!r} -> {mutation.mutant!r})"


@pytest.fixture(scope="module")
def final_kernel() -> str:
    return Series().materialize(stages.final())[KERNEL].decode()


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_every_mutation_plants_its_bug_in_the_final_kernel(mutation, final_kernel):
    # A kernel edit that moves a mutation's text must fail here, in the fast tier, not disarm it.
    assert final_kernel.count(mutation.original) == 1, mutation.name
    mutant = mutant_files(mutation)[KERNEL].decode()
    assert mutant != final_kernel and mutant.count(mutation.mutant) >= 1
    ast.parse(mutant)  # a planted bug, not a syntax error the import would report instead


def test_mutation_names_are_unique():
    names = [m.name for m in MUTATIONS]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    "stale, why",
    [
        (Mutation("stale", "no such kernel text", "x"), "occurs 0 times"),
        (Mutation("twice", "tl.", "tl_"), r"occurs \d+ times"),
        (Mutation("inert", "live = req < bs", "live = req < bs"), "is its own mutant"),
    ],
    ids=["absent", "ambiguous", "inert"],
)
def test_an_inapplicable_mutation_fails_the_check(stale, why):
    # Loudly, naming the mutation, before any process runs: never counted as caught.
    message = rf"mutation '{stale.name}': .* {why} in {KERNEL} .* update harness/mutations.py"
    with pytest.raises(SeriesError, match=message):
        check(stale)
    with pytest.raises(SeriesError, match=message):
        check_applicable((*MUTATIONS, stale))


def test_a_crashed_check_process_is_not_caught(final_kernel):
    # The mutant kernel module exits the process as it is imported: no replay ran, so no verdict.
    first_import = next(line for line in final_kernel.splitlines() if line.startswith("import "))
    crash = Mutation("exits on import", first_import, f"{first_import}\nimport os\nos._exit(3)")
    with pytest.raises(MutationCheckError, match=r"mutation 'exits on import': .* without a verdict \(exit 3\)"):
        check(crash)
