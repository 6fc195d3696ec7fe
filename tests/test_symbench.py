"""Properties every SymBench task must have: the registry, deterministic generation at every
complexity level, solver answers that score 1.0, near misses that do not, the original files,
and scorers that survive adversarial text quickly.

Nothing here is specific to one reference sample: the original files are read through the
loader and checked by rules that hold for all of them."""

import random
import time
from pathlib import Path

import pytest

import symbench
from symbench.core import extract_answer, safe_arith

REFERENCE = Path(__file__).resolve().parent / "symbench-reference" / "dataset_gather"
GENERATABLE = [t for t in symbench.TASKS.values() if t.generatable]
SAMPLES_PER_LEVEL = 3


def test_registry_has_the_37_tasks():
    assert list(symbench.TASKS) == list(symbench.TASK_IDS)
    assert len(symbench.TASKS) == 37
    assert sum(t.seen for t in symbench.TASKS.values()) == 28
    assert sum(not t.seen for t in symbench.TASKS.values()) == 9
    assert symbench.get_task("game24").id == "game24"
    with pytest.raises(KeyError, match="unknown task"):
        symbench.get_task("no_such_task")


@pytest.mark.parametrize("task", GENERATABLE, ids=lambda t: t.id)
def test_generation_is_deterministic_and_solvable(task):
    for level in task.levels:
        first = task.generate(SAMPLES_PER_LEVEL, complexity=level, seed=7)
        again = task.generate(SAMPLES_PER_LEVEL, complexity=level, seed=7)
        assert [s.to_json() for s in first] == [s.to_json() for s in again]
        other_seed = task.generate(SAMPLES_PER_LEVEL, complexity=level, seed=8)
        assert [s.question for s in other_seed] != [s.question for s in first], (task.id, level)
        rng = random.Random(0)
        for sample in first:
            assert sample.task == task.id and sample.complexity == level
            assert "<<<" in sample.question and ">>>" in sample.question, "prompt must state the format"
            assert symbench.Sample.from_json(sample.to_json()) == sample
            solved = task.solve(sample)
            assert task.score(sample, f"The answer is <<<{solved}>>>") == 1.0, (task.id, level, solved)
            if sample.answer is not None:
                assert task.score(sample, f"<<<{sample.answer}>>>") == 1.0, (task.id, level)
            near_miss = task.perturb(sample, solved, rng)
            assert task.score(sample, f"<<<{near_miss}>>>") < 1.0, (task.id, level, solved, near_miss)


@pytest.mark.parametrize("task", [t for t in symbench.TASKS.values() if not t.generatable],
                         ids=lambda t: t.id)
def test_file_only_tasks_refuse_to_generate(task):
    with pytest.raises(NotImplementedError, match="load_original"):
        task.generate(1)


@pytest.mark.parametrize("task", list(symbench.TASKS.values()), ids=lambda t: t.id)
def test_original_files_load_and_their_answers_score(task):
    samples = symbench.load_original(task.id, REFERENCE)
    assert samples, task.id
    assert len({s.id for s in samples}) == len(samples), "sample ids must be unique"
    rng = random.Random(0)
    for sample in samples:
        assert sample.task == task.id and sample.question.strip()
        paper_answer = sample.meta.get("paper_answer")
        if paper_answer is not None:  # the stored label, kept where the corrected one differs
            assert task.score(sample, f"<<<{paper_answer}>>>", variant="paper") == 1.0, (task.id, sample.id)
        if sample.meta.get("unsolvable"):  # a broken original item: nothing can pass the corrected rules
            assert sample.answer is None
            continue
        assert sample.answer is not None, (task.id, sample.id)
        assert task.score(sample, f"<<<{sample.answer}>>>") == 1.0, (task.id, sample.id, sample.answer)
        near_miss = task.perturb(sample, sample.answer, rng)
        assert task.score(sample, f"<<<{near_miss}>>>") < 1.0, (task.id, sample.id, near_miss)


@pytest.mark.parametrize("task", [t for t in symbench.TASKS.values() if t.generatable],
                         ids=lambda t: t.id)
def test_solver_agrees_with_the_original_labels(task):
    """Our solver, run on the original questions, must produce answers the scorer accepts:
    an independent check of solver, loader and scorer against the published labels."""
    for sample in symbench.load_original(task.id, REFERENCE):
        if sample.meta.get("unsolvable"):
            continue
        try:
            solved = task.solve(sample)
        except NotImplementedError:
            pytest.skip(f"{task.id}: solver needs generator metadata absent from the files")
        assert task.score(sample, f"<<<{solved}>>>") == 1.0, (task.id, sample.id, solved)


ADVERSARIAL = [
    "", "<<<>>>", "<<<", ">>>", "<<<<<<>>>>>>", "no answer here", "<<< \x00\x01\x02 >>>",
    "<<<" * 200_000, "<<<" + "(" * 100_000 + ">>>", "<<<" + "9" * 1_000_000 + ">>>",
    "<<<" + "9**9**9**9" + ">>>", "<<<__import__('os').system('echo pwned')>>>",
    "<<<" + "1*" * 50_000 + "1>>>", "<<<" + "[" * 5000 + "]" * 5000 + ">>>",
    "<<<" + "a" * 1_000_000 + ">>>", "<<<{" + '"a":' * 10_000 + "1" + "}" * 10_000 + ">>>",
    "<<<" + "Step 1: [(1, [0])]\n" * 20_000 + ">>>", "<<<-1e308*10>>>", "<<<nan>>>", "<<<inf>>>",
    "<<<" + ", ".join(["1"] * 100_000) + ">>>",
]


@pytest.mark.parametrize("task", list(symbench.TASKS.values()), ids=lambda t: t.id)
def test_adversarial_answers_score_zero_quickly(task):
    samples = (task.generate(1, seed=0) if task.generatable
               else symbench.load_original(task.id, REFERENCE)[:1])
    for response in ADVERSARIAL:
        started = time.perf_counter()
        assert task.score(samples[0], response) == 0.0, (task.id, response[:40])
        assert time.perf_counter() - started < 2.0, (task.id, response[:40])


def test_extract_answer_takes_the_last_block_and_cleans_it():
    assert extract_answer("first <<<1>>> then <<< 2 >>>") == "2"
    assert extract_answer('<<<"abc">>>') == "abc"
    assert extract_answer("<<<```\n[1, 2]\n```>>>") == "[1, 2]"
    assert extract_answer("nothing") is None


def test_safe_arith_is_exact_and_refuses_code():
    assert safe_arith("8 / (3 - 8 / 3)") == 24
    for bad in ["__import__('os')", "2**10", "a + 1", "1/0", "9" * 100, "(1)(2)", "[1]"]:
        with pytest.raises(ValueError):
            safe_arith(bad)
