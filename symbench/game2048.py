"""SymBench 2048 (spec C.3, unseen): one number of a grid of powers of two follows a sequence of
single-cell moves, merging with an equal neighbour; report the grid afterwards.

    task = symbench.get_task("2048")
    sample = task.generate(1, complexity=2, seed=0)[0]
    task.solve(sample)          # -> "2, 0, 4\n0, 8, 2\n..." (rows on lines, entries by commas)

About half of the original samples start on an empty cell: the "number" there is 0, it moves
through empty cells leaving the grid unchanged, so their label is the unchanged grid. The
solver's plain simulation reproduces that; our generator always starts on a number.
"""

import random
from pathlib import Path

from symbench.core import Sample, Task, original_samples
from symbench.grids import comma_tokens, format_grid

STEPS = {"u": (-1, 0), "d": (1, 0), "l": (0, -1), "r": (0, 1)}


def slide(grid: list[list[int]], start: list[int], moves: str) -> list[list[int]]:
    """Move the number at `start` (0-based) one cell per move: into an empty cell, or onto an
    equal number, which doubles; it stays put at the edge or before a different number."""
    grid = [row[:] for row in grid]
    n = len(grid)
    row, col = start
    for move in moves:
        dr, dc = STEPS[move]
        r, c = row + dr, col + dc
        if not (0 <= r < n and 0 <= c < n):
            continue
        if grid[r][c] == 0:
            grid[r][c], grid[row][col] = grid[row][col], 0
        elif grid[r][c] == grid[row][col]:
            grid[r][c], grid[row][col] = 2 * grid[r][c], 0
        else:
            continue
        row, col = r, c
    return grid


class Game2048(Task):
    """Levels are the original's five configurations (grid size, moves):
    1: (2, 2), 2: (3, 3), 3: (4, 4), 4: (5, 5), 5: (5, 6). As in the original, n..2n cells hold
    numbers drawn from 2, 4, 8, 16, 32 and the moves are uniform over u, d, l, r.
    """

    id = "2048"
    seen = False
    answer_format = "<<<a, b\\nc, d>>>: the grid after the moves, rows on lines, entries by commas"
    levels = (1, 2, 3, 4, 5)
    default_level = 3
    CONFIGURATIONS = {1: (2, 2), 2: (3, 3), 3: (4, 4), 4: (5, 5), 5: (5, 6)}

    def knobs(self, level: int) -> dict:
        grid_size, num_moves = self.CONFIGURATIONS[level]
        return {"grid_size": grid_size, "num_moves": num_moves, "values": [2, 4, 8, 16, 32]}

    def make_sample(self, rng: random.Random, level: int, index: int, *, grid_size, num_moves,
                    values) -> Sample:
        cells = [[r, c] for r in range(grid_size) for c in range(grid_size)]
        filled = rng.sample(cells, rng.randint(grid_size, min(2 * grid_size, len(cells))))
        grid = [[0] * grid_size for _ in range(grid_size)]
        for r, c in filled:
            grid[r][c] = rng.choice(values)
        start = rng.choice(filled)
        moves = "".join(rng.choice("udlr") for _ in range(num_moves))
        meta = {"grid": grid, "moves": moves, "start_pos": start,
                "solution": format_grid(slide(grid, start, moves), ", ")}
        question = (
            f"A {grid_size}x{grid_size} grid holds powers of two; 0 marks an empty cell. Only "
            f"the number at row {start[0] + 1}, column {start[1] + 1} (counted from 1 at the top "
            f"left) moves. It follows the moves '{moves}' one at a time, where u, d, l and r move "
            f"it one cell up, down, left or right. If the cell it moves into is empty, it simply "
            f"moves there; if that cell holds the same number, the two merge into one number "
            f"twice as large in that cell (2 and 2 make 4, 16 and 16 make 32), which then keeps "
            f"moving; if the cell holds a different number or lies outside the grid, the number "
            f"stays where it is for that move. No other number ever moves.\n\n"
            f"{format_grid(grid, ', ')}\n\n"
            f"What is the grid after all the moves? Write it one row per line, entries separated "
            f"by commas, the way the grid is written above; a 2x2 grid, for example, is written"
            f"\n<<<\n2, 0\n4, 8\n>>>")
        return Sample(task=self.id, id="", question=question, answer=meta["solution"],
                      complexity=level, meta=meta)

    def solve(self, sample: Sample) -> str:
        meta = sample.meta
        return format_grid(slide(meta["grid"], meta["start_pos"], meta["moves"]), ", ")

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        expected = comma_tokens(sample.meta["solution"], len(sample.meta["solution"]))
        return float(comma_tokens(answer, len(expected)) == expected)

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        def to_sample(question, solution):
            meta = {key: solution[key] for key in ("grid", "moves", "start_pos", "solution")}
            return solution["solution"], meta
        return original_samples(self, dataset_gather_dir, "2048_dataset", to_sample)


TASKS = [Game2048()]
