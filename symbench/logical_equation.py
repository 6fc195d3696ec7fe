"""Logical equation (seen task, spec C.2): assign distinct numbers from a given set to the letters
A, B, ... under numbered constraints X - Y = k, X + Y = k, X = cY, X > Y, X < Y.

A verifier task: the scorer parses the numbered constraint lines of the question and checks each
one exactly (rational arithmetic, so '1.1C' means 11/10 of C); the answer must have one value per
letter, each from the set. The original did not check that the values are distinct
(variant "paper"); the corrected scorer requires a permutation of the set. Generated puzzles have
exactly one solution; the original's did not always.

Solver: depth-first search over letters. An equation fixes a letter once its partner is known,
so the search continues with such a forced letter when there is one, else with the letter in the
most constraints.
"""

import random
import re
from fractions import Fraction
from pathlib import Path

from symbench.core import Sample, Task, read_question_and_solution

MAX_VALUES = 100
# (letters, constraints, value set) per level: the original's ten configurations, in order.
CONFIGS = (
    (9, 7, (1, 3, 4, 9, 16, 27, 36, 80, 121)),
    (9, 8, (3, 6, 9, 20, 32, 36, 80, 121, 120)),
    (11, 10, (3, 9, 16, 27, 36, 48, 75, 80, 121, 150, 225)),
    (11, 11, (3, 9, 16, 20, 39, 48, 75, 80, 121, 150, 225)),
    (13, 10, (1, 2, 3, 5, 7, 16, 15, 24, 10, 45, 28, 36, 50)),
    (13, 11, (2, 3, 5, 7, 16, 15, 24, 10, 45, 28, 36, 50, 96)),
    (13, 12, (2, 3, 5, 7, 16, 15, 24, 10, 45, 28, 36, 50, 96)),
    (15, 12, (2, 3, 5, 7, 16, 15, 24, 10, 45, 28, 36, 50, 78, 90, 100)),
    (15, 13, (1, 3, 5, 7, 16, 15, 24, 12, 45, 34, 36, 56, 78, 95, 100)),
    (15, 14, (1, 3, 5, 7, 16, 15, 24, 12, 45, 34, 36, 56, 78, 95, 100)),
)
_SUM_OR_DIFFERENCE = re.compile(r"([A-Z])\s*([+-])\s*([A-Z])\s*=\s*(-?\d+)")
_MULTIPLE = re.compile(r"([A-Z])\s*=\s*(\d+(?:\.\d+)?)\s*\*?\s*([A-Z])")
_COMPARISON = re.compile(r"([A-Z])\s*([<>=])\s*([A-Z])")


def parse_constraint(text: str) -> tuple:
    """'A - C = -44' -> ('-', 'A', 'C', -44); 'I = 3.0D' -> ('*', 'I', 'D', 3);
    'C > H' -> ('>', 'C', 'H', None). Raises ValueError on anything else."""
    text = text.strip().rstrip(".")
    if match := _SUM_OR_DIFFERENCE.fullmatch(text):
        left, op, right, k = match.groups()
        return op, left, right, int(k)
    if match := _MULTIPLE.fullmatch(text):
        left, factor, right = match.groups()
        return "*", left, right, Fraction(factor)
    if match := _COMPARISON.fullmatch(text):
        left, op, right = match.groups()
        return op, left, right, None
    raise ValueError(f"unrecognised constraint: {text!r}")


def constraint_text(constraint: tuple) -> str:
    """The inverse of parse_constraint, in the original's notation ('I = 3.0D')."""
    op, left, right, k = constraint
    if op in "+-":
        return f"{left} {op} {right} = {k}"
    if op == "*":
        return f"{left} = {float(k)}{right}"
    return f"{left} {op} {right}"


def question_constraints(question: str) -> list[tuple]:
    """The numbered lines of the question ('3. I = 3.0D'), parsed: the original scorer's rule."""
    return [parse_constraint(line.split(". ", 1)[1]) for line in question.splitlines()
            if line[:1].isdigit() and ". " in line]


def holds(constraint: tuple, values: dict) -> bool:
    op, left, right, k = constraint
    a, b = values[left], values[right]
    if op == "+":
        return a + b == k
    if op == "-":
        return a - b == k
    if op == "*":
        return a == k * b
    if op == ">":
        return a > b
    if op == "<":
        return a < b
    return a == b


def _implied_value(constraint: tuple, letter: str, values: dict):
    """The value an equation forces on `letter` given its partner's value, else None."""
    op, left, right, k = constraint
    if op not in "+-*=" or letter not in (left, right):
        return None
    other = right if letter == left else left
    if other not in values:
        return None
    known = values[other]
    if op == "+":
        return k - known
    if op == "=":
        return known
    if op == "-":
        return known + k if letter == left else known - k
    return known * k if letter == left else Fraction(known) / k


def solve_assignments(letters: list[str], numbers: list[int], constraints: list[tuple],
                      limit: int = 2) -> list[dict]:
    """Up to `limit` assignments of distinct numbers to letters meeting every constraint."""
    found: list[dict] = []
    values: dict = {}
    touching = {letter: [c for c in constraints if letter in (c[1], c[2])] for letter in letters}

    def next_letter() -> tuple[str, list]:
        """A letter an equation forces (with its one possible value, or none), else the open
        letter in the most constraints, with every unused number."""
        used = set(values.values())
        open_letters = [letter for letter in letters if letter not in values]
        for letter in open_letters:
            for constraint in touching[letter]:
                forced = _implied_value(constraint, letter, values)
                if forced is not None:
                    return letter, [forced] if forced in numbers and forced not in used else []
        letter = max(open_letters, key=lambda x: len(touching[x]))
        return letter, [n for n in numbers if n not in used]

    def search() -> None:
        if len(values) == len(letters):
            found.append(dict(values))
            return
        letter, options = next_letter()
        for number in options:
            values[letter] = int(number)
            if all(holds(c, values) for c in touching[letter] if c[1] in values and c[2] in values):
                search()
            del values[letter]
            if len(found) >= limit:
                return

    search()
    return found


def parse_values(answer: str) -> list[int] | None:
    """[36, 1, 80] or 36, 1, 80 (integers, '36.0' allowed) -> [36, 1, 80]."""
    tokens = re.findall(r"-?\d+(?:\.\d+)?", answer)
    if not tokens or len(tokens) > MAX_VALUES or any(len(token) > 12 for token in tokens):
        return None
    numbers = [Fraction(token) for token in tokens]
    if any(number.denominator != 1 for number in numbers):
        return None
    return [int(number) for number in numbers]


class LogicalEquation(Task):
    """Levels 1-10 are the original's ten configurations, in its order:
    (letters, constraints) = (9, 7), (9, 8), (11, 10), (11, 11), (13, 10), (13, 11), (13, 12),
    (15, 12), (15, 13), (15, 14), each with its fixed value set."""

    id = "logical_equation"
    answer_format = "<<<[v_A, v_B, ...]>>>: the value of each letter in alphabetical order"
    levels = tuple(range(1, 11))
    default_level = 5

    def knobs(self, level: int) -> dict:
        _, constraints, values = CONFIGS[level - 1]
        return {"constraints": constraints, "values": list(values)}

    def make_sample(self, rng: random.Random, level: int, index: int, *, constraints: int,
                    values: list[int]) -> Sample:
        numbers = sorted(values)
        letters = [chr(ord("A") + i) for i in range(len(numbers))]
        drawn = None
        while drawn is None:
            solution = dict(zip(letters, rng.sample(numbers, len(numbers))))
            drawn = self._draw_constraints(rng, solution, numbers, constraints)
        question = (
            f"Each of the {len(letters)} letters {', '.join(letters)} stands for a different "
            f"number from this set: {', '.join(map(str, numbers))}. The letters satisfy the "
            "following equations and inequalities:\n"
            + "\n".join(f"{k}. {constraint_text(c)}" for k, c in enumerate(drawn, 1))
            + "\n\nFind the number of every letter. Answer with the values in alphabetical order "
            "of the letters, for example <<<[1, 2, 3]>>> if A is 1, B is 2 and C is 3."
        )
        answer = [solution[letter] for letter in letters]
        return Sample(task=self.id, id="", question=question, answer=str(answer),
                      complexity=level, meta={"values": numbers})

    @staticmethod
    def _draw_constraints(rng: random.Random, solution: dict, numbers: list[int],
                          count: int) -> list[tuple] | None:
        """`count` distinct constraints true of `solution` that no other assignment meets, or
        None when this draw fails to pin the solution down.

        The original's mix: 95% equations (a multiple, a difference or a sum of two letters),
        5% 'X > Y'. So that the solution ends up unique without endless redraws, each constraint
        is drawn among those that rule out a rival assignment the earlier ones still allow."""
        letters = sorted(solution)
        pairs = [(a, b) for a in letters for b in letters if a != b]
        options = {
            # X = cY with c one of 1.1, 1.2, ..., 4.9 exactly
            "multiple": [("*", a, b, Fraction(10 * solution[a] // solution[b], 10))
                         for a, b in pairs if 10 * solution[a] % solution[b] == 0
                         and 11 <= 10 * solution[a] // solution[b] <= 49],
            "difference": [("-", a, b, solution[a] - solution[b]) for a, b in pairs],
            "sum": [("+", a, b, solution[a] + solution[b]) for a, b in pairs if a < b],
            ">": [(">", a, b, None) for a, b in pairs if solution[a] > solution[b]],
        }
        drawn: list[tuple] = []
        while len(drawn) < count:
            rivals = [x for x in solve_assignments(letters, numbers, drawn) if x != solution]
            kind = rng.choice(("multiple", "difference", "sum")) if rng.random() < 0.95 else ">"
            candidates = [c for c in options[kind] if c not in drawn]
            if rivals:
                candidates = [c for c in candidates if not holds(c, rivals[0])] or candidates
            if candidates:
                drawn.append(rng.choice(candidates))
        return drawn if len(solve_assignments(letters, numbers, drawn)) == 1 else None

    def solve(self, sample: Sample) -> str:
        numbers = sample.meta["values"]
        letters = [chr(ord("A") + i) for i in range(len(numbers))]
        found = solve_assignments(letters, numbers, question_constraints(sample.question), limit=1)
        if not found:
            raise ValueError(f"{sample.id}: no assignment meets the constraints")
        return str([found[0][letter] for letter in letters])

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        numbers = sample.meta["values"]
        proposed = parse_values(answer)
        if proposed is None or len(proposed) != len(numbers):
            return 0.0
        if any(value not in numbers for value in proposed):
            return 0.0
        if variant == "corrected" and sorted(proposed) != sorted(numbers):
            return 0.0
        values = {chr(ord("A") + i): value for i, value in enumerate(proposed)}
        constraints = question_constraints(sample.question)
        return 1.0 if all(holds(c, values) for c in constraints) else 0.0

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        """Give A the value of B: two letters share a number."""
        proposed = parse_values(answer)
        if not proposed or len(proposed) < 2:
            return super().perturb(sample, answer, rng)
        return str([proposed[1]] + proposed[1:])

    def load_original(self, dataset_gather_dir) -> list[Sample]:
        root = Path(dataset_gather_dir) / "logical_equation"
        if not root.is_dir():
            raise FileNotFoundError(f"missing {root}")
        folders = []
        for folder in root.iterdir():
            match = re.fullmatch(r"sample_(\d+)_(\d+)_(\d+)", folder.name)
            if match and folder.is_dir():
                folders.append((tuple(map(int, match.groups())), folder))
        if not folders:
            raise FileNotFoundError(f"no sample_<letters>_<constraints>_<i> folder under {root}")
        level_of = {(letters, count): level for level, (letters, count, _) in enumerate(CONFIGS, 1)}
        samples = []
        for (letters, count, _), folder in sorted(folders):
            question, stored = read_question_and_solution(folder)
            samples.append(Sample(task=self.id, id=folder.name, question=question,
                                  answer=str(stored), complexity=level_of.get((letters, count)),
                                  meta={"values": sorted(stored)}))
        return samples


TASKS = [LogicalEquation()]
