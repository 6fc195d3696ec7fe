"""Game of 24 (spec C.2 game24): combine the given integers with + - * / and parentheses,
each exactly once, to reach the target.

    task = symbench.get_task("game24")
    sample = task.generate(1, seed=0)[0]                 # four numbers 1..13, target 24
    task.score(sample, "<<<" + task.solve(sample) + ">>>")      # -> 1.0

The scorer is a verifier (any valid equation passes) and works in exact fractions, so
8/(3-8/3) = 24 counts; variant='paper' keeps the original's float equality, which rejects it.
The original CSV stores puzzles but no solutions: the loader's reference answer is our solver's.
"""

import ast
import csv
import random
import re
from fractions import Fraction
from pathlib import Path

from symbench.core import Sample, Task, integer_literals, normalize_math_text, safe_arith

# Our own worked examples for the prompt (numbers, equation); tests check each with the scorer.
WORKED_EXAMPLES = (
    ("1 2 3 4", "(1+2+3)*4 = 24"),
    ("4 6 9 13", "9+13+6-4 = 24"),
    ("1 4 7 11", "(1+4)*7-11 = 24"),
    ("1 5 5 5", "(5-1/5)*5 = 24"),
    ("3 3 8 8", "8/(3-8/3) = 24"),
)

# The original prompt for the CSV puzzles (CodeSteer benchmark/run_game24_*.py), kept so that the
# loaded samples ask exactly what the paper's runs asked.
ORIGINAL_PROMPT = (
    "Use numbers and basic arithmetic operations (+ - * /) to obtain 24. Each number should be "
    "used only once but each number has to be used in the equation. "
    "Input: 9 10 11 13, Answer: ((10-9)*(11+13)) = 24 "
    "Input: 4 10 10 11, Answer: ((4*11)-(10+10)) = 24 "
    "Input: 5 6 13 13, Answer: ((5-(13/13))*6)"
    "Input: 2 6 6 7, Answer: ((6+(6*7))/2) Input: 2 6 10 18, Answer: (2-(6-(10+18)))"
)
ORIGINAL_FIRST_ROW, ORIGINAL_ROW_STEP = 5, 50  # 0-based data rows 5, 55, ..., 1355 of 24.csv

# Nodes the search may visit while picking a puzzle at the larger levels; puzzles that need more
# are redrawn, which keeps generation fast. solve() runs without a budget.
SEARCH_BUDGET = 5000
MAX_DRAWS = 1000

_TIMES_X = re.compile(r"(?<=[\d)\s])[xX](?=[\s\d(])")


class SearchBudgetExceeded(Exception):
    pass


def _combinations(a: float, expr_a: str, b: float, expr_b: str):
    """Every value one operation can make of a and b, with its expression."""
    yield a * b, f"({expr_a}*{expr_b})"
    yield a + b, f"({expr_a}+{expr_b})"
    yield a - b, f"({expr_a}-{expr_b})"
    yield b - a, f"({expr_b}-{expr_a})"
    if b:
        yield a / b, f"({expr_a}/{expr_b})"
    if a:
        yield b / a, f"({expr_b}/{expr_a})"


def _equals_exactly(expr: str, goal: int) -> bool:
    try:
        return safe_arith(expr) == goal
    except ValueError:  # a float that only looked non-zero was a divisor
        return False


def find_equation(numbers: list[int], target: int, budget: int | None = None) -> str | None:
    """An expression over `numbers` (each once) equal to `target`, or None if there is none.

    Depth-first search that repeatedly replaces two numbers by one result; multisets already
    shown to fail are remembered. It runs in floats (ten times faster than fractions) and
    confirms each candidate in exact arithmetic, so rounding can neither invent a solution nor,
    with a 1e-9 tolerance, hide one. The search order is fixed, so the same numbers always give
    the same equation. Raises SearchBudgetExceeded after `budget` nodes."""
    tolerance = 1e-9 * max(1, abs(target))
    failed: set[tuple] = set()
    visited = 0

    def search(items: list[tuple[float, str]]) -> str | None:
        nonlocal visited
        visited += 1
        if budget is not None and visited > budget:
            raise SearchBudgetExceeded
        if len(items) == 2:  # the last operation: cheaper to try than to remember
            return next((expr for value, expr in _combinations(*items[0], *items[1])
                         if abs(value - target) < tolerance and _equals_exactly(expr, target)),
                        None)
        key = tuple(sorted(value for value, _ in items))
        if key in failed:
            return None
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                rest = items[:i] + items[i + 1:j] + items[j + 1:]
                for value, expr in _combinations(*items[i], *items[j]):
                    found = search(rest + [(value, expr)])
                    if found:
                        return found
        failed.add(key)
        return None

    if len(numbers) == 1:
        return str(numbers[0]) if numbers[0] == target else None
    found = search([(float(n), str(n)) for n in numbers])
    return found[1:-1] if found else None  # drop the outermost parentheses


def _value(expr: str, exact: bool) -> Fraction | float:
    """The value of an arithmetic expression: exact (safe_arith), or the float value Python's
    eval would give (the original scorer), computed only after safe_arith accepted the text."""
    value = safe_arith(expr)
    return value if exact else _float_value(ast.parse(expr.strip(), mode="eval").body)


def _float_value(node) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.UnaryOp):
        operand = _float_value(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    left, right = _float_value(node.left), _float_value(node.right)
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    return left / right


class Game24(Task):
    """Reach the target with every given number exactly once and + - * / ( ).

    Levels (numbers, target), numbers drawn from 1..13: 1: 4 -> 24 (the classic game and the
    original CSV), 2: 5 -> 240, 3: 6 -> 480, 4: 7 -> 960, 5: 8 -> 1920. The original's extra CSVs
    grow the same two knobs (2-80 numbers, targets 240 to 122880); ours stay small enough for a
    search to pick solvable puzzles quickly. Knobs: count, target, low, high."""

    id = "game24"
    seen = True
    answer_format = "<<<expression = target>>>, e.g. <<<(7-4)*11-9 = 24>>>"
    levels = (1, 2, 3, 4, 5)
    default_level = 1
    _LEVELS = {1: (4, 24), 2: (5, 240), 3: (6, 480), 4: (7, 960), 5: (8, 1920)}

    def knobs(self, level: int) -> dict:
        count, target = self._LEVELS[level]
        return {"count": count, "target": target, "low": 1, "high": 13}

    def make_sample(self, rng: random.Random, level: int, index: int, count: int = 4,
                    target: int = 24, low: int = 1, high: int = 13) -> Sample:
        for _ in range(MAX_DRAWS):
            numbers = sorted(rng.randint(low, high) for _ in range(count))
            try:
                equation = find_equation(numbers, target, budget=SEARCH_BUDGET)
            except SearchBudgetExceeded:
                continue
            if equation is not None:
                break
        else:
            raise ValueError(f"no solvable puzzle found for {count} numbers in {low}..{high} "
                             f"and target {target}")
        return Sample(task=self.id, id="", question=self._prompt(numbers, target),
                      answer=f"{equation} = {target}", complexity=level,
                      meta={"numbers": numbers, "target": target})

    @staticmethod
    def _prompt(numbers: list[int], target: int) -> str:
        shown = " ".join(map(str, numbers))
        return (
            f"Combine the numbers {shown} into one arithmetic expression whose value is {target}.\n"
            "Rules: use every number exactly once (their order is free); the only operations are "
            "addition, subtraction, multiplication and division (+ - * /), with as many "
            "parentheses as you like; do not glue digits together, and intermediate results may "
            "be fractions.\n"
            "Worked examples with target 24: "
            + "; ".join(f"{example} -> {equation}" for example, equation in WORKED_EXAMPLES)
            + ".\n"
            f"End your reply with the equation in the form <<<expression = {target}>>>, for "
            "example <<<(7-4)*11-9 = 24>>> for the numbers 4 7 9 11 and the target 24."
        )

    def solve(self, sample: Sample) -> str:
        numbers, target = sample.meta["numbers"], sample.meta["target"]
        equation = find_equation(numbers, target)
        if equation is None:
            raise ValueError(f"no equation reaches {target} with {numbers}")
        return f"{equation} = {target}"

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        numbers, target = sample.meta["numbers"], sample.meta["target"]
        if len(answer) > 40 * len(numbers) + 100:
            return 0.0
        text = normalize_math_text(_TIMES_X.sub("*", answer))
        if "=" not in text:
            text += f" = {target}"
        sides = text.split("=")
        left, right = sides[0], sides[-1]
        if sorted(integer_literals(left)) != sorted(numbers):
            return 0.0
        exact = variant == "corrected"
        if _value(right, exact) != target or _value(left, exact) != target:
            return 0.0
        return 1.0

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        path = Path(dataset_gather_dir) / "game24_dataset" / "24" / "24.csv"
        if not path.is_file():
            raise FileNotFoundError(f"missing {path}")
        with path.open(newline="", encoding="utf-8") as file:
            puzzles = [row["Puzzles"] for row in csv.DictReader(file)]
        samples = []
        for row in range(ORIGINAL_FIRST_ROW, len(puzzles), ORIGINAL_ROW_STEP):
            numbers = [int(n) for n in puzzles[row].split()]
            question = (f"{ORIGINAL_PROMPT}Input: {''.join(f'{n} ' for n in numbers)}Answer:\n"
                        "Output final answer with the format <<<answer>>>.")
            # complexity 1: our level 1 is exactly this configuration (4 numbers, target 24)
            sample = Sample(task=self.id, id=f"sample_{row}", question=question, answer=None,
                            complexity=1, meta={"numbers": numbers, "target": 24})
            sample.answer = self.solve(sample)  # the CSV stores no solution
            samples.append(sample)
        return samples


TASKS = [Game24()]
