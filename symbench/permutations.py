"""Permutations and combinations (unseen task, spec C.3): order 6-9 books on a shelf under
7-11 constraints (fixed position, not in position, left of, right of, adjacent to).

A verifier task: the scorer re-parses the numbered constraint lines and checks each one. The
original did only that, so an answer that repeats or leaves out books could pass (variant
"paper", which also keeps the original's lookups of a missing book: it counts as position -1
or 99999 depending on the constraint); the corrected scorer also requires a permutation of the
books.
"""

import random
import re
from pathlib import Path

from symbench.core import Sample, Task, read_question_and_solution, sample_folders

MAX_ITEMS = 100
CONSTRAINT_PATTERNS = (  # the original wording, which the samples store as data
    ("fixed_position", re.compile(r"Book\s+([A-Za-z])\s+must\s+be\s+placed\s+in\s+position\s+(\d+)")),
    ("left_of", re.compile(r"Book\s+([A-Za-z])\s+must\s+be\s+to\s+the\s+left\s+of\s+book\s+([A-Za-z])")),
    ("not_in_position", re.compile(r"Book\s+([A-Za-z])\s+cannot\s+be\s+placed\s+in\s+position\s+(\d+)")),
    ("right_of", re.compile(r"Book\s+([A-Za-z])\s+must\s+be\s+to\s+the\s+right\s+of\s+book\s+([A-Za-z])")),
    ("adjacent_to", re.compile(r"Book\s+([A-Za-z])\s+must\s+be\s+adjacent\s+to\s+book\s+([A-Za-z])")),
)
CONSTRAINT_TEXT = {
    "fixed_position": "Book {} must be placed in position {}.",
    "left_of": "Book {} must be to the left of book {}.",
    "not_in_position": "Book {} cannot be placed in position {}.",
    "right_of": "Book {} must be to the right of book {}.",
    "adjacent_to": "Book {} must be adjacent to book {}.",
}


def parse_constraints(constraints_text: str) -> list[tuple]:
    """('left_of', 'A', 'B'), ('fixed_position', 'C', 4), ... one per recognised line."""
    constraints = []
    for line in constraints_text.splitlines():
        for kind, pattern in CONSTRAINT_PATTERNS:
            match = pattern.search(line)
            if match:
                first, second = match.groups()
                constraints.append((kind, first, int(second) if second.isdigit() else second))
                break
    return constraints


def satisfies(position: dict, constraint: tuple) -> bool:
    """One constraint on a {book: 1-based position} map. A missing book gets the original's
    defaults, chosen there so that most constraints on it fail."""
    kind, first, second = constraint
    if kind == "fixed_position":
        return position.get(first, -1) == second
    if kind == "not_in_position":
        return position.get(first, -1) != second
    if kind == "left_of":
        return position.get(first, 99999) < position.get(second, -99999)
    if kind == "right_of":
        return position.get(first, -1) > position.get(second, 99999)
    return abs(position.get(first, -1) - position.get(second, -1)) == 1


def still_possible(position: dict, filled: int, constraint: tuple) -> bool:
    """Can the constraint still hold once positions 1..filled are taken as in `position` and
    the remaining books go to the later positions?"""
    kind, first, second = constraint
    if kind == "fixed_position":
        return position[first] == second if first in position else filled < second
    if kind == "not_in_position":
        return position.get(first) != second
    if kind == "left_of":  # the second book, once placed, needs the first before it
        return second not in position or position.get(first, filled + 1) < position[second]
    if kind == "right_of":
        return first not in position or position.get(second, filled + 1) < position[first]
    placed = [position[book] for book in (first, second) if book in position]
    if len(placed) == 2:
        return abs(placed[0] - placed[1]) == 1
    return not placed or placed[0] == filled  # a lone book needs its partner right after it


def arrange(items: list[str], constraints: list[tuple]) -> list[str] | None:
    """Fill the shelf from position 1, pruning as soon as a constraint can no longer hold.
    The first arrangement found, or None."""
    shelf: list[str] = []
    position: dict[str, int] = {}

    def extend() -> bool:
        if len(shelf) == len(items):
            return True
        for item in items:
            if item in position:
                continue
            shelf.append(item)
            position[item] = len(shelf)
            if all(still_possible(position, len(shelf), c) for c in constraints) and extend():
                return True
            shelf.pop()
            del position[item]
        return False

    return list(shelf) if extend() else None


def parse_items(answer: str) -> list[str] | None:
    """["A", "B"], [A, B], 'A', 'B' or A B C -> ['A', 'B', ...]."""
    tokens = re.findall(r"[A-Za-z0-9_]+", answer)
    return tokens if 0 < len(tokens) <= MAX_ITEMS else None


def format_items(items) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


class PermutationsAndCombinations(Task):
    """Levels 7-10 are the original's complexity labels: level L shelves L - 1 books under
    L or L + 1 constraints (drawn at random, as the original did)."""

    id = "permutations_and_combinations"
    seen = False
    answer_format = '<<<["A", "B", "C", ...]>>>: the books from position 1 to the last'
    levels = (7, 8, 9, 10)
    default_level = 8

    def knobs(self, level: int) -> dict:
        return {"books": level - 1, "fewest_constraints": level, "most_constraints": level + 1}

    def make_sample(self, rng: random.Random, level: int, index: int, *, books: int,
                    fewest_constraints: int, most_constraints: int) -> Sample:
        items = [chr(ord("A") + i) for i in range(books)]
        while True:
            constraints = [self._draw_constraint(rng, items)
                           for _ in range(rng.randint(fewest_constraints, most_constraints))]
            solution = arrange(items, constraints)
            if solution is not None:
                break
        constraints_text = "\n".join(f"{k}. " + CONSTRAINT_TEXT[kind].format(first, second)
                                     for k, (kind, first, second) in enumerate(constraints, 1))
        question = (
            f"A librarian has to put {books} books, labelled {', '.join(items)}, on a shelf whose "
            f"positions are numbered 1 to {books} from left to right. The arrangement must meet "
            f"every one of these conditions:\n\n{constraints_text}\n\n"
            "Give one arrangement that meets them all, listing the books from position 1 to "
            f"position {books}, for example <<<[\"A\", \"B\", \"C\"]>>>."
        )
        meta = {"items": items, "constraints_text": constraints_text}
        return Sample(task=self.id, id="", question=question, answer=format_items(solution),
                      complexity=level, meta=meta)

    @staticmethod
    def _draw_constraint(rng: random.Random, items: list[str]) -> tuple:
        kind = rng.choice(sorted(CONSTRAINT_TEXT))
        if kind in ("fixed_position", "not_in_position"):
            return kind, rng.choice(items), rng.randint(1, len(items))
        first, second = rng.sample(items, 2)
        return kind, first, second

    def solve(self, sample: Sample) -> str:
        solution = arrange(sample.meta["items"], parse_constraints(sample.meta["constraints_text"]))
        if solution is None:
            raise ValueError(f"{sample.id}: no arrangement meets the constraints")
        return format_items(solution)

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        arrangement = parse_items(answer)
        if arrangement is None:
            return 0.0
        if variant == "corrected" and sorted(arrangement) != sorted(sample.meta["items"]):
            return 0.0
        position = {item: i for i, item in enumerate(arrangement, 1)}
        constraints = parse_constraints(sample.meta["constraints_text"])
        return 1.0 if all(satisfies(position, c) for c in constraints) else 0.0

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        """Put the first book in the last place too: the shelf is no longer a permutation."""
        arrangement = parse_items(answer)
        if not arrangement or len(arrangement) < 2:
            return super().perturb(sample, answer, rng)
        return format_items(arrangement[:-1] + arrangement[:1])

    def load_original(self, dataset_gather_dir) -> list[Sample]:
        samples = []
        for folder in sample_folders(Path(dataset_gather_dir) / "permutations_and_combinations"):
            question, stored = read_question_and_solution(folder)
            meta = {"items": stored["items"], "constraints_text": stored["constraints_text"]}
            samples.append(Sample(task=self.id, id=folder.name, question=question,
                                  answer=format_items(stored["correct_solution"]),
                                  complexity=stored.get("complexity"), meta=meta))
        return samples


TASKS = [PermutationsAndCombinations()]
