"""Task-specific tests of the arithmetic group: game24, number_multiply,
combinatorial_calculation, new_operator, gsm_hard, math_geometry, math_counting_probability.

Scorers are checked on hand-written answers (right, wrong, and the formatting a model uses),
both variants of every Fidelity note, and the solvers on instances with known answers. The
original files are only read through the loaders and checked by rules that hold for all rows."""

import csv
import itertools
import json
import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

import symbench
from symbench.arithmetic import apply_formula, evaluate_operators, ordered_expression
from symbench.core import Sample, safe_arith
from symbench.game24 import WORKED_EXAMPLES, find_equation
from symbench.judged import judge_prompt, last_boxed, latex_value, normalise, same_answer

REFERENCE = Path(__file__).resolve().parent / "symbench-reference" / "dataset_gather"


def make(task_id: str, answer: str | None, **meta) -> Sample:
    return Sample(task=task_id, id="hand", question="q", answer=answer, complexity=None, meta=meta)


def score(task_id: str, sample: Sample, answer: str, variant: str = "corrected") -> float:
    return symbench.get_task(task_id).score(sample, f"The result: <<<{answer}>>>", variant)


# ---- game24 -------------------------------------------------------------------------------

def test_game24_solver_finds_exactly_the_1362_solvable_classic_puzzles():
    # 1362 of the 1820 multisets of four numbers 1..13 reach 24 (the size of the original CSV).
    solvable = [combo for combo in itertools.combinations_with_replacement(range(1, 14), 4)
                if find_equation(list(combo), 24) is not None]
    assert len(solvable) == 1362
    assert find_equation([1, 1, 1, 1], 24) is None


@pytest.mark.parametrize("numbers", [[3, 3, 8, 8], [1, 5, 5, 5], [1, 3, 4, 6], [2, 3, 5, 12, 12]])
def test_game24_solver_equations_are_exact_and_use_each_number_once(numbers):
    equation = find_equation(numbers, 24)
    assert safe_arith(equation) == 24  # these need fractions: float search must not miss them
    assert sorted(int(token) for token in re.findall(r"\d+", equation)) == numbers


@pytest.mark.parametrize("numbers, equation", WORKED_EXAMPLES)
def test_game24_prompt_examples_are_correct(numbers, equation):
    sample = make("game24", None, numbers=[int(n) for n in numbers.split()], target=24)
    assert score("game24", sample, equation) == 1.0


@pytest.mark.parametrize("answer, expected", [
    ("(7-4)*11-9 = 24", 1.0),
    ("(7-4)*11-9", 1.0),                          # '= 24' is implied
    ("((7 - 4) \\times 11) - 9 = 24", 1.0),       # LaTeX
    ("(7 − 4) × 11 − 9 = 24", 1.0),               # typography
    ("(7-4) x 11 - 9", 1.0),
    ("$(11 \\cdot (7-4)) - 9 = 24$", 1.0),
    ("(7-4)*11-9 = 25", 0.0),                     # wrong right-hand side
    ("7*4-11+9 = 24", 0.0),                       # value 26
    ("(7-4)*8 = 24", 0.0),                        # not the puzzle's numbers
    ("(7-4)*11-9+0 = 24", 0.0),
    ("(7-4)*11-9*1 = 24", 0.0),
    ("24", 0.0),
])
def test_game24_scorer_hand_examples(answer, expected):
    sample = make("game24", None, numbers=[4, 7, 9, 11], target=24)
    assert score("game24", sample, answer) == expected


def test_game24_paper_variant_uses_float_equality():
    sample = make("game24", None, numbers=[3, 3, 8, 8], target=24)
    assert score("game24", sample, "8/(3-8/3) = 24") == 1.0
    assert score("game24", sample, "8 \\div (3 - \\frac{8}{3}) = 24") == 1.0
    assert score("game24", sample, "8/(3-8/3) = 24", variant="paper") == 0.0  # 23.999999999999996
    easy = make("game24", None, numbers=[4, 7, 9, 11], target=24)
    assert score("game24", easy, "(7-4)*11-9", variant="paper") == 1.0


def test_game24_levels_set_count_and_target_and_overrides_apply():
    task = symbench.get_task("game24")
    assert task.default_level == 1 and task.knobs(1)["count"] == 4 and task.knobs(1)["target"] == 24
    for level in task.levels:
        knobs = task.knobs(level)
        for sample in task.generate(2, complexity=level, seed=1):
            assert len(sample.meta["numbers"]) == knobs["count"]
            assert sample.meta["target"] == knobs["target"]
            assert all(1 <= n <= 13 for n in sample.meta["numbers"])
    custom = task.generate(2, seed=1, count=5, target=24)
    assert all(len(s.meta["numbers"]) == 5 and s.meta["target"] == 24 for s in custom)
    with pytest.raises(ValueError, match="no solvable puzzle"):
        task.generate(1, count=2, target=1000, low=1, high=2)


def test_game24_loader_reads_every_50th_row_from_row_5():
    with (REFERENCE / "game24_dataset" / "24" / "24.csv").open(newline="") as file:
        puzzles = [row["Puzzles"] for row in csv.DictReader(file)]
    samples = symbench.load_original("game24", REFERENCE)
    rows = range(5, len(puzzles), 50)
    assert [s.id for s in samples] == [f"sample_{row}" for row in rows]
    for sample, row in zip(samples, rows):
        assert sample.meta == {"numbers": [int(n) for n in puzzles[row].split()], "target": 24}
        assert sample.question.endswith(f"Input: {puzzles[row]} Answer:\n"
                                        "Output final answer with the format <<<answer>>>.")


# ---- number_multiply ----------------------------------------------------------------------

@pytest.mark.parametrize("answer, corrected, paper", [
    ("-514828", 1.0, 1.0),
    ("-514,828", 1.0, 1.0),
    ("−514828", 1.0, 0.0),        # a Unicode minus is not the target's text
    ("-514828.0", 1.0, 1.0),
    ("[-514828]", 1.0, 1.0),
    ("x = -514 828", 1.0, 0.0),
    ("1-514828", 0.0, 1.0),       # the original's substring match accepts this
    ("-5148280", 0.0, 1.0),
    ("514828", 0.0, 0.0),
    ("-514829", 0.0, 0.0),
    ("", 0.0, 0.0),
])
def test_number_multiply_scorer_variants(answer, corrected, paper):
    sample = make("number_multiply", "-514828", factors=[-4, 17, 7571])
    assert score("number_multiply", sample, answer) == corrected
    assert score("number_multiply", sample, answer, variant="paper") == paper


def test_number_multiply_generates_the_digit_patterns():
    task = symbench.get_task("number_multiply")
    for level in task.levels:
        pattern = task.knobs(level)["digits"]
        for sample in task.generate(3, complexity=level, seed=2):
            factors = sample.meta["factors"]
            assert [len(str(abs(f))) for f in factors] == pattern
            product = 1
            for factor in factors:
                product *= factor
            assert sample.answer == str(product) and task.solve(sample) == str(product)
            assert sample.question.rstrip().endswith(">>>.")
    wide = task.generate(1, seed=0, digits=[20, 20])[0]
    assert [len(str(abs(f))) for f in wide.meta["factors"]] == [20, 20]


def test_number_multiply_loader_keeps_the_question_verbatim():
    for sample in symbench.load_original("number_multiply", REFERENCE):
        pattern, folder = sample.id.split("/")
        path = REFERENCE / "number_multiply" / pattern / folder
        assert sample.question == (path / "input_prompt_1.txt").read_text()
        assert sample.meta["factors"] == json.loads((path / "input_value_list.txt").read_text())
        assert [len(str(abs(f))) for f in sample.meta["factors"]] == [
            int(d) for d in pattern.split("_")[1:]]


# ---- combinatorial_calculation ------------------------------------------------------------

def test_ordered_expression_keeps_the_order():
    expression = ordered_expression([6, 2, 7], 10)
    assert safe_arith(expression) == 10
    assert [int(t) for t in re.findall(r"\d+", expression)] == [6, 2, 7]
    assert ordered_expression([1, 1, 1], 10) is None
    # 8/(3-8/3) reordered is not allowed: in this order only fractions reach 24
    assert safe_arith(ordered_expression([8, 3, 8, 3], 24)) == 24


@pytest.mark.parametrize("answer, corrected, paper", [
    ("[6, /, 2, +, 7]", 1.0, 1.0),
    ("['6', '/', '2', '+', '7']", 1.0, 1.0),
    ("6/2+7", 1.0, 1.0),
    ("[6, ÷, 2, +, 7]", 1.0, 1.0),
    ("[(, 6, /, 2, ), +, 7]", 1.0, 1.0),
    ("[7, +, 6, /, 2]", 0.0, 1.0),     # reordered: the original only checks the multiset
    ("[6, -, 2, +, 7]", 0.0, 0.0),     # value 11
    ("[6, ^, 2, +, 7]", 0.0, 0.0),
    ("[(, 6, /, 2, +, 7]", 0.0, 0.0),
    ("[6, /, 2.0, +, 7]", 0.0, 0.0),
    ("[6, /, 2, +, 7, +, 0]", 0.0, 0.0),
])
def test_combinatorial_scorer_variants(answer, corrected, paper):
    sample = make("combinatorial_calculation", "[6, /, 2, +, 7]", numbers=[6, 2, 7], target=10)
    assert score("combinatorial_calculation", sample, answer) == corrected
    assert score("combinatorial_calculation", sample, answer, variant="paper") == paper


def test_combinatorial_paper_variant_glues_adjacent_numbers_like_the_original():
    sample = make("combinatorial_calculation", None, numbers=[1, 2, 3], target=15)
    assert score("combinatorial_calculation", sample, "[1, 2, +, 3]", variant="paper") == 1.0
    assert score("combinatorial_calculation", sample, "[1, 2, +, 3]") == 0.0


def test_combinatorial_levels_are_the_original_configurations():
    task = symbench.get_task("combinatorial_calculation")
    configurations = [(task.knobs(level)["count"], task.knobs(level)["target"])
                      for level in task.levels]
    assert configurations == [(3, 10), (4, 24), (5, 69), (5, 78), (6, 100)]


# ---- new_operator -------------------------------------------------------------------------

OPERATORS = {"~": "1*a*b", "&": "5*a+5*b", "@": "3*a*b"}


def test_new_operator_evaluates_parentheses_then_left_to_right():
    assert apply_formula("(a + b)/b", Fraction(20), Fraction(5)) == 5
    assert apply_formula("4*a+2*b", Fraction(1, 2), Fraction(3)) == 8
    # (3~4) = 12, 12&5 = 85, 85@6 = 1530; the original label applied only 5@6 = 90
    assert evaluate_operators("(3~4)&5@6", OPERATORS) == 1530
    assert evaluate_operators("5@(1~2)", OPERATORS) == 30
    with pytest.raises(ValueError):
        evaluate_operators("(3~4&5", OPERATORS)


def test_new_operator_both_variants_of_the_label_bug():
    sample = make("new_operator", "1530", definitions=OPERATORS, expression="(3~4)&5@6",
                  paper_answer="90.0")
    assert score("new_operator", sample, "1530") == 1.0
    assert score("new_operator", sample, "1,530") == 1.0
    assert score("new_operator", sample, "90") == 0.0
    assert score("new_operator", sample, "90", variant="paper") == 1.0
    assert score("new_operator", sample, "1530", variant="paper") == 0.0


@pytest.mark.parametrize("answer, corrected, paper", [
    ("1.8333333333333333", 1.0, 1.0),
    ("11/6", 1.0, 0.0),
    ("\\frac{11}{6}", 1.0, 0.0),
    ("1.833333", 1.0, 0.0),
    ("1.83", 0.0, 0.0),
    ("[1.8333333333333333]", 1.0, 0.0),
])
def test_new_operator_tolerance(answer, corrected, paper):
    sample = make("new_operator", "1.8333333333333333", definitions={"#": "(a + b)/b"},
                  expression="5#6")
    assert score("new_operator", sample, answer) == corrected
    assert score("new_operator", sample, answer, variant="paper") == paper


def test_new_operator_loader_flags_exactly_the_complexity_5_labels():
    task = symbench.get_task("new_operator")
    for sample in symbench.load_original("new_operator", REFERENCE):
        assert float(sample.answer) == float(task.solve(sample))
        if sample.complexity == 5:  # the stored label applied a single operator
            assert float(sample.meta["paper_answer"]) != pytest.approx(float(sample.answer))
        elif "paper_answer" in sample.meta:  # complexity 2: only float rounding may differ
            assert float(sample.meta["paper_answer"]) == pytest.approx(float(sample.answer))


def test_new_operator_levels_shape_the_expression():
    task = symbench.get_task("new_operator")
    for level in task.levels:
        knobs = task.knobs(level)
        for sample in task.generate(3, complexity=level, seed=4):
            expression = sample.meta["expression"]
            operands = re.findall(r"\d+", expression)
            assert len(operands) == knobs["operands"]
            assert len(sample.meta["definitions"]) == knobs["operators"]
            assert set(ch for ch in expression if not ch.isdigit() and ch not in "()") == \
                set(sample.meta["definitions"])
            assert ("left to right" in sample.question) == ("(" in expression)


# ---- gsm_hard and MATH --------------------------------------------------------------------

def test_last_boxed_matches_braces():
    assert last_boxed("so \\boxed{1} and \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert last_boxed("$\\boxed{x^{2}+1}$") == "x^{2}+1"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{open") is None


@pytest.mark.parametrize("target, answer, expected", [
    ("\\frac{7}{33}", "7/33", True),
    ("\\frac{7}{33}", "\\dfrac{7}{33}", True),
    ("\\frac{7}{33}", "0.21212", True),
    ("\\frac{7}{33}", "0.22", False),
    ("1,\\!000,\\!000", "1000000", True),
    ("1,\\!000,\\!000", "10^6", True),
    ("110", "110^\\circ", True),
    ("7", "7\\text{ cm}.", True),
    ("400", "400 square inches", True),
    ("\\pi", "\\pi", True),
    ("\\pi", "3.1416", True),
    ("4\\sqrt{3}", "4 \\sqrt 3", True),
    ("4\\sqrt{3}", "\\sqrt{48}", True),
    ("4\\sqrt{3}", "4\\sqrt{2}", False),
    ("\\frac{\\sqrt{3}}{2}", "\\left(\\frac{\\sqrt3}{2}\\right)", True),
    ("(18, -18)", "(18,-18)", True),
    ("(18, -18)", "(18, -18.0)", True),
    ("(18, -18)", "(-18, 18)", False),
    ("(18, -18)", "18", False),
    ("-9", "x = -9", True),
    ("\\$1.50", "1.5", True),
    ("1,2", "12", False),
])
def test_math_equivalence_rule(target, answer, expected):
    assert same_answer(target, answer) is expected


def test_latex_value_refuses_garbage_and_huge_powers():
    for text in ["9^9^9^9", "(-2)^{0.5}", "\\sqrt{-1}", "\\frac{1}", "\\sqrt", "abc", "1/0",
                 "(" * 30 + "1" + ")" * 30, "2^" * 200 + "2", "nan", "inf", ""]:
        assert latex_value(normalise(text)) is None, text
    assert latex_value("\\sqrt[3]{8}") == 2.0
    assert latex_value("2^{10}") == 1024.0


@pytest.mark.parametrize("answer, expected", [
    ("3431580", 1.0), ("3431580.0", 1.0), ("3,431,580", 1.0), ("$3431580", 1.0),
    ("3431580 bolts", 1.0), ("3433000", 1.0),   # within the judge's 1e-3 relative tolerance
    ("3440000", 0.0), ("-3431580", 0.0), ("no answer found", 0.0),
])
def test_gsm_hard_numeric_rule(answer, expected):
    sample = make("gsm_hard", "3431580", target=3431580.0)
    assert score("gsm_hard", sample, answer) == expected


def test_judge_hook_and_its_fidelity_note(monkeypatch):
    task = symbench.get_task("gsm_hard")
    sample = make("gsm_hard", "18", target=18.0)
    seen = []

    def judge_saying(verdict):
        def judge(target, answer):
            seen.append((target, answer))
            return f"Reasoning... {verdict}"
        return judge

    monkeypatch.setattr(task, "judge", judge_saying("<<<True>>>"))
    assert task.score(sample, "<<<eighteen>>>") == 1.0 and seen[-1] == ("18.0", "eighteen")
    monkeypatch.setattr(task, "judge", judge_saying("<<<False>>>"))
    assert task.score(sample, "<<<18>>>") == 0.0
    assert task.score(sample, "<<<18>>>", variant="paper") == 0.0
    for unclear in ("<<<Incorrect>>>", "no verdict at all"):
        monkeypatch.setattr(task, "judge", judge_saying(unclear))
        assert task.score(sample, "<<<17>>>") == 0.0
        assert task.score(sample, "<<<17>>>", variant="paper") == 1.0  # only 'False' failed
    prompt = judge_prompt("18.0", "eighteen")
    assert "18.0" in prompt and "eighteen" in prompt and "<<<True>>>" in prompt


def test_judged_tasks_have_no_solver():
    for task_id in ("gsm_hard", "math_geometry", "math_counting_probability"):
        sample = symbench.load_original(task_id, REFERENCE)[0]
        with pytest.raises(NotImplementedError):
            symbench.get_task(task_id).solve(sample)


def test_gsm_hard_loader_takes_rows_1_26_51():
    lines = (REFERENCE / "gsmhardv2.jsonl").read_text().splitlines()
    samples = symbench.load_original("gsm_hard", REFERENCE)
    rows = range(1, len(lines), 25)
    assert [s.id for s in samples] == [f"Sample_{row}" for row in rows]
    for sample, row in zip(samples, rows):
        record = json.loads(lines[row])
        assert sample.question.startswith(record["input"]) and "<<<" in sample.question
        assert float(sample.answer) == pytest.approx(record["target"], rel=1e-12)


@pytest.mark.parametrize("task_id, subject", [("math_geometry", "geometry"),
                                              ("math_counting_probability",
                                               "counting_and_probability")])
def test_math_loader_takes_the_first_files_in_numeric_order(task_id, subject):
    folder = REFERENCE / "MATH" / "train" / subject
    numbers = sorted(int(path.stem) for path in folder.glob("*.json"))[:50]
    samples = symbench.load_original(task_id, REFERENCE)
    assert [s.id for s in samples] == [f"Sample_{n}" for n in numbers]
    for sample, number in zip(samples, numbers):
        record = json.loads((folder / f"{number}.json").read_text())
        assert sample.answer == last_boxed(record["solution"])
        assert sample.question.startswith(record["problem"])
        assert sample.complexity is None or f"Level {sample.complexity}" == record["level"]


def test_judged_perturbation_leaves_the_tolerance():
    task = symbench.get_task("math_counting_probability")
    sample = make(task.id, "\\frac{1001}{2003}", target="\\frac{1001}{2003}")
    rng = random.Random(0)
    near_miss = task.perturb(sample, sample.answer, rng)
    assert task.score(sample, f"<<<{near_miss}>>>") == 0.0
