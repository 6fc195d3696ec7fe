"""Logic puzzle (seen task, spec C.2): select K cells of a number grid with all-different values,
starting from the top-right cell, under a row and column rule.

- Complexity 1-2 (2x2, 3x3, values 1-4): in every row and column the selected numbers sum to <= 4.
- Complexity 3-10 (4x4 to 10x10, values +-5 to +-20): in every row and column the product of the
  selected numbers is > 0 (rows and columns with no selected cell pass).

A verifier task. The original scorer checked only the count and the row/column rule (variant
"paper"); the corrected one also requires distinct in-board cells, distinct values and the
forced top-right start cell (spec Fidelity note).

Some stored labels break the row/column rule: the original generator cached its constraint check
on the cell positions alone (lru_cache keyed on positions, not on the grid), so a set of positions
accepted for one grid was accepted for every later grid (all five complexity-1 reference samples
carry the same label, (0,1), (1,0), (0,0)). The loader keeps a stored label only when it is valid,
otherwise labels the sample with the solver's answer (the stored one stays in meta["stored_label"]),
and leaves out, with a warning, samples that have no valid selection at all (2 of the 5 reference
samples: no three distinct values there satisfy the sum rule).

Solver for the product rule: the selected negative cells must put an even number of negatives in
every row and column, i.e. form an even subgraph of the row-column bipartite graph (a union of
cycles). The search builds that set cell by cell, always repairing the first odd row (or column);
the positive cells are then any cells with distinct positive values.
"""

import itertools
import random
from pathlib import Path

from symbench.core import Sample, Task, read_question_and_solution, sample_folders
from symbench.eight_queens import format_cells, parse_cells

# (size, cells to select, lowest value, highest value, rule) per level: the original's table.
CONFIGS = {
    1: (2, 3, 1, 3, "sum_le_4"), 2: (3, 4, 1, 4, "sum_le_4"),
    3: (4, 6, -5, 8, "product_gt_0"), 4: (5, 9, -8, 8, "product_gt_0"),
    5: (5, 10, -10, 10, "product_gt_0"), 6: (6, 12, -12, 12, "product_gt_0"),
    7: (7, 16, -14, 14, "product_gt_0"), 8: (8, 18, -16, 16, "product_gt_0"),
    9: (9, 20, -18, 18, "product_gt_0"), 10: (10, 25, -20, 20, "product_gt_0"),
}
SEARCH_BUDGET = 200_000  # search nodes before the solver gives up on a grid
RULE_TEXT = {
    "sum_le_4": "In every row and in every column, the selected numbers must add up to at most 4.",
    "product_gt_0": "In every row and in every column that has selected cells, the product of the "
                    "selected numbers must be greater than 0.",
}


def rule_holds(grid: list[list[int]], cells, rule: str) -> bool:
    """The row and column rule over the set of selected cells (each counted once)."""
    n = len(grid)
    chosen = set(cells)
    lines = [[(r, c) for c in range(n)] for r in range(n)] + [[(r, c) for r in range(n)] for c in range(n)]
    for line in lines:
        values = [grid[r][c] for r, c in line if (r, c) in chosen]
        if rule == "sum_le_4" and sum(values) > 4:
            return False
        if rule == "product_gt_0":
            negatives = sum(v < 0 for v in values)
            if 0 in values or negatives % 2:
                return False
    return True


def _solve_sum(grid, count, start) -> list[tuple[int, int]] | None:
    """Small grids only (the sum rule's levels are 2x2 and 3x3): try every selection."""
    n = len(grid)
    others = [(r, c) for r in range(n) for c in range(n) if (r, c) != start]
    for rest in itertools.combinations(others, count - 1):
        cells = [start, *rest]
        values = [grid[r][c] for r, c in cells]
        if len(set(values)) == count and rule_holds(grid, cells, "sum_le_4"):
            return cells
    return None


def _solve_product(grid, count, start) -> list[tuple[int, int]] | None:
    n = len(grid)
    start_value = grid[start[0]][start[1]]
    if start_value == 0:
        return None
    positive_cell = {}  # one cell per distinct positive value, row-major first
    for r in range(n):
        for c in range(n):
            if grid[r][c] > 0:
                positive_cell.setdefault(grid[r][c], (r, c))
    if start_value > 0:
        positive_cell[start_value] = start
    # The negative set's size m leaves count - m positive cells, which must exist and include
    # the start cell when it is positive.
    fewest = max(0, count - len(positive_cell))
    most = count - 1 if start_value > 0 else count
    if fewest > most:
        return None
    negative_cells = [(r, c) for r in range(n) for c in range(n) if grid[r][c] < 0]
    budget = [SEARCH_BUDGET]

    def extend(chosen: list, used: set, odd_rows: set, odd_cols: set):
        budget[0] -= 1
        if budget[0] < 0:
            return None
        if not odd_rows and not odd_cols and fewest <= len(chosen) <= most:
            return chosen
        if len(chosen) + max(len(odd_rows), len(odd_cols)) > most:
            return None
        if odd_rows:
            row = min(odd_rows)
            options = [cell for cell in negative_cells if cell[0] == row]
        elif odd_cols:
            col = min(odd_cols)
            options = [cell for cell in negative_cells if cell[1] == col]
        else:
            options = negative_cells
        for r, c in options:
            if (r, c) in chosen or grid[r][c] in used:
                continue
            found = extend(chosen + [(r, c)], used | {grid[r][c]}, odd_rows ^ {r}, odd_cols ^ {c})
            if found is not None:
                return found
        return None

    if start_value < 0:
        negatives = extend([start], {start_value}, {start[0]}, {start[1]})
    else:
        negatives = extend([], set(), set(), set())
    if negatives is None:
        return None
    positives = [start] if start_value > 0 else []
    positives += [cell for value, cell in sorted(positive_cell.items()) if cell != start]
    cells = negatives + positives[:count - len(negatives)]
    cells.sort(key=lambda cell: cell != start)  # the start cell first, as the question asks
    return cells


def select_cells(grid, count, rule) -> list[tuple[int, int]] | None:
    start = (0, len(grid) - 1)
    if rule == "sum_le_4":
        return _solve_sum(grid, count, start)
    return _solve_product(grid, count, start)


class LogicPuzzle(Task):
    """Levels 1-10 are the original's configurations (size, cells to select, value range, rule):
    1: 2x2, 3, 1..3, sum; 2: 3x3, 4, 1..4, sum; 3: 4x4, 6, -5..8; 4: 5x5, 9, +-8;
    5: 5x5, 10, +-10; 6: 6x6, 12, +-12; 7: 7x7, 16, +-14; 8: 8x8, 18, +-16; 9: 9x9, 20, +-18;
    10: 10x10, 25, +-20 (levels 3-10 use the product rule)."""

    id = "logic_puzzle"
    answer_format = "<<<0 3, 1 0, 2 4>>>: the selected cells as 0-based 'row column' pairs"
    levels = tuple(range(1, 11))
    default_level = 5

    def knobs(self, level: int) -> dict:
        size, count, low, high, rule = CONFIGS[level]
        return {"size": size, "count": count, "low": low, "high": high, "rule": rule}

    def make_sample(self, rng: random.Random, level: int, index: int, *, size: int, count: int,
                    low: int, high: int, rule: str) -> Sample:
        while True:
            grid = [[self._draw_value(rng, low, high) for _ in range(size)] for _ in range(size)]
            cells = select_cells(grid, count, rule)
            if cells is not None:
                break
        start_value = grid[0][size - 1]
        question = (
            f"Select {count} cells of the {size}x{size} grid below so that the selected numbers "
            f"are all different. The first selected cell must be the top-right cell (0,{size - 1}), "
            f"which holds {start_value}. {RULE_TEXT[rule]} Rows are numbered from 0 at the top and "
            "columns from 0 at the left; numbers in a row are separated by commas.\n\n"
            + "\n".join(", ".join(map(str, row)) for row in grid)
            + "\n\nGive the selected cells as 0-based 'row column' pairs separated by commas, "
            "the top-right cell first, for example <<<0 3, 1 0, 2 4>>>."
        )
        meta = {"grid": grid, "count": count, "rule": rule}
        return Sample(task=self.id, id="", question=question, answer=format_cells(cells),
                      complexity=level, meta=meta)

    @staticmethod
    def _draw_value(rng: random.Random, low: int, high: int) -> int:
        # The original: with negatives allowed, 70% of cells positive, never 0.
        if low < 0:
            return rng.randint(1, high) if rng.random() < 0.7 else rng.randint(low, -1)
        return rng.randint(low, high)

    def solve(self, sample: Sample) -> str:
        meta = sample.meta
        cells = select_cells(meta["grid"], meta["count"], meta["rule"])
        if cells is None:
            raise ValueError(f"{sample.id}: no selection found")
        return format_cells(cells)

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        grid, count, rule = sample.meta["grid"], sample.meta["count"], sample.meta["rule"]
        cells = parse_cells(answer)
        if cells is None or len(cells) != count:
            return 0.0
        n = len(grid)
        on_board = [(r, c) for r, c in cells if 0 <= r < n and 0 <= c < n]
        if variant == "corrected":
            if len(on_board) != count or len(set(cells)) != count:
                return 0.0
            if (0, n - 1) not in cells or len({grid[r][c] for r, c in cells}) != count:
                return 0.0
        # The original looked up each board cell in the answer, so off-board cells and
        # repeats simply did not count.
        return 1.0 if rule_holds(grid, on_board, rule) else 0.0

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        """Drop the last selected cell: one cell short."""
        cells = parse_cells(answer)
        if not cells:
            return super().perturb(sample, answer, rng)
        return format_cells(cells[:-1])

    def load_original(self, dataset_gather_dir) -> list[Sample]:
        """The original samples. A stored label that breaks the rules (the original generator
        cached its check on cell positions across grids) is replaced by our solver's answer and
        kept in meta["stored_label"]. Some original grids have no valid selection at all: they
        stay in the set (every method fails them alike) with answer None and meta["unsolvable"]."""
        samples = []
        for folder in sample_folders(Path(dataset_gather_dir) / "logic_puzzle_dataset"):
            question, stored = read_question_and_solution(folder)
            meta = {"grid": stored["grid"], "count": len(stored["solution"]),
                    "rule": stored["constraints"]["type"]}
            sample = Sample(task=self.id, id=folder.name, question=question,
                            answer=format_cells(map(tuple, stored["solution"])),
                            complexity=stored.get("complexity"), meta=meta)
            if self.score_answer(sample, sample.answer) < 1.0:
                sample.meta["stored_label"] = sample.answer
                cells = select_cells(meta["grid"], meta["count"], meta["rule"])
                sample.answer = None if cells is None else format_cells(cells)
                if cells is None:
                    sample.meta["unsolvable"] = True
                if self.score_answer(sample, sample.meta["stored_label"], "paper") == 1.0:
                    sample.meta["paper_answer"] = sample.meta["stored_label"]
            samples.append(sample)
        return samples


TASKS = [LogicPuzzle()]
