"""Eight queens (unseen task, spec C.3): complete an 8-queens placement on a board where some
queens are already placed and some cells are blocked.

A verifier task: any placement that keeps the given queens, avoids the blocked cells and has no two
queens on one row, column or diagonal scores 1.0. The original scorer checked only the count,
the blocked cells and the attacks, so a model could move the pre-placed queens or answer with
off-board coordinates (spec Fidelity note); variant="paper" reproduces that.

`parse_cells` (row column pairs) is shared with logic_puzzle, which uses the same answer shape.
"""

import random
import re
from functools import lru_cache
from pathlib import Path

from symbench.core import Sample, Task, read_question_and_solution, sample_folders

SIZE = 8
MAX_CELLS = 200  # more coordinate pairs than any honest answer to these tasks holds

_INTEGER = re.compile(r"-?\d+")


def parse_cells(answer: str) -> list[tuple[int, int]] | None:
    """The (row, column) pairs of '0 3, 1 0, 2 4' and its usual variants ('(0,3), (1,0)',
    '[[0, 3], [1, 0]]'): every integer of the text, taken two at a time. None when the integers
    do not pair up, are too many, or one is absurdly long."""
    tokens = _INTEGER.findall(answer)
    if not tokens or len(tokens) % 2 or len(tokens) > 2 * MAX_CELLS:
        return None
    if any(len(token) > 4 for token in tokens):
        return None
    numbers = [int(token) for token in tokens]
    return list(zip(numbers[0::2], numbers[1::2]))


def format_cells(cells) -> str:
    return ", ".join(f"{row} {col}" for row, col in cells)


def queens_attack(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] == b[0] or a[1] == b[1] or abs(a[0] - b[0]) == abs(a[1] - b[1])


@lru_cache(maxsize=1)
def all_placements() -> tuple[tuple[int, ...], ...]:
    """The 92 solutions of the empty board, each as the queen's column in rows 0..7."""
    found = []

    def extend(columns: list[int]) -> None:
        row = len(columns)
        if row == SIZE:
            found.append(tuple(columns))
            return
        for col in range(SIZE):
            if not any(queens_attack((row, col), (r, c)) for r, c in enumerate(columns)):
                extend(columns + [col])

    extend([])
    return tuple(found)


def complete_placement(placed, blocked) -> list[tuple[int, int]] | None:
    """Backtracking row by row: rows with a given queen keep it, other rows try every free
    column. The first complete placement, or None."""
    given_column = {row: col for row, col in placed}
    blocked = set(blocked)

    def extend(queens: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
        row = len(queens)
        if row == SIZE:
            return queens
        columns = [given_column[row]] if row in given_column else range(SIZE)
        for col in columns:
            cell = (row, col)
            if cell in blocked or any(queens_attack(cell, queen) for queen in queens):
                continue
            found = extend(queens + [cell])
            if found:
                return found
        return None

    return extend([])


class EightQueens(Task):
    """Levels 1-5 are the original's complexity, 1 + placed queens + blocked cells // 2 (capped
    at 5); each level draws a fixed number of each:
    1: 0 queens, 1 blocked; 2: 1, 1; 3: 1, 2; 4: 2, 3; 5: 3, 4 (the original's maximum)."""

    id = "eight_queens"
    seen = False
    answer_format = "<<<0 3, 1 0, 2 4, ...>>>: all eight queens as 0-based 'row column' pairs"
    levels = (1, 2, 3, 4, 5)
    default_level = 3
    _PLACED_AND_BLOCKED = {1: (0, 1), 2: (1, 1), 3: (1, 2), 4: (2, 3), 5: (3, 4)}

    def knobs(self, level: int) -> dict:
        placed, blocked = self._PLACED_AND_BLOCKED[level]
        return {"placed_queens": placed, "blocked_cells": blocked}

    def make_sample(self, rng: random.Random, level: int, index: int, *, placed_queens: int,
                    blocked_cells: int) -> Sample:
        # Start from a random complete solution so the instance is solvable by construction.
        solution = [(row, col) for row, col in enumerate(rng.choice(all_placements()))]
        placed = sorted(rng.sample(solution, placed_queens))
        free = [(r, c) for r in range(SIZE) for c in range(SIZE) if (r, c) not in solution]
        blocked = sorted(rng.sample(free, blocked_cells))
        board = [["0"] * SIZE for _ in range(SIZE)]
        for row, col in placed:
            board[row][col] = "1"
        for row, col in blocked:
            board[row][col] = "X"
        board = ["".join(row) for row in board]
        question = (
            "Place eight queens on an 8x8 board so that no two of them share a row, a column or a "
            "diagonal. In the board below, 1 is a queen that is already there and must stay, X is "
            "a cell where no queen may stand, and 0 is a free cell.\n\n"
            + "\n".join(board)
            + "\n\nComplete the placement. List all eight queens, the given ones included, as "
            "0-based 'row column' pairs separated by commas, for example <<<0 3, 1 0, 2 4, ...>>>."
        )
        meta = {"board": board, "placed": [list(cell) for cell in placed],
                "blocked": [list(cell) for cell in blocked]}
        return Sample(task=self.id, id="", question=question, answer=format_cells(solution),
                      complexity=level, meta=meta)

    def solve(self, sample: Sample) -> str:
        placement = complete_placement([tuple(c) for c in sample.meta["placed"]],
                                       [tuple(c) for c in sample.meta["blocked"]])
        if placement is None:
            raise ValueError(f"{sample.id}: the board has no completion")
        return format_cells(placement)

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        queens = parse_cells(answer)
        if queens is None or len(queens) != SIZE:
            return 0.0
        blocked = {tuple(cell) for cell in sample.meta["blocked"]}
        if any(queen in blocked for queen in queens):
            return 0.0
        if any(queens_attack(a, b) for i, a in enumerate(queens) for b in queens[i + 1:]):
            return 0.0
        if variant == "corrected":
            if not all(0 <= row < SIZE and 0 <= col < SIZE for row, col in queens):
                return 0.0
            if not all(tuple(cell) in queens for cell in sample.meta["placed"]):
                return 0.0
        return 1.0

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        """Move the first queen onto the second queen's row: they then attack each other."""
        queens = parse_cells(answer)
        if not queens or len(queens) < 2:
            return super().perturb(sample, answer, rng)
        queens[0] = (queens[1][0], queens[0][1])
        return format_cells(queens)

    def load_original(self, dataset_gather_dir) -> list[Sample]:
        samples = []
        for folder in sample_folders(Path(dataset_gather_dir) / "eight_queens_dataset"):
            question, stored = read_question_and_solution(folder)
            meta = {"board": stored["initial_board"], "placed": stored["placed_queens"],
                    "blocked": stored["blocked_positions"]}
            samples.append(Sample(task=self.id, id=folder.name, question=question,
                                  answer=format_cells(sorted(map(tuple, stored["solution"]))),
                                  complexity=stored.get("complexity"), meta=meta))
        return samples


TASKS = [EightQueens()]
