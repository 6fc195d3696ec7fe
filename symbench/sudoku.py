"""Standard Sudoku (seen task, spec C.2): fill a 9x9 grid with 51-55 blanks and a unique solution.

A verifier task: the givens must be kept and every row, column and 3x3 box must hold 1-9 once.

Generation has to stay fast in pure Python (100 puzzles in well under a second), so:
- a full grid is a random relabelling of one valid pattern (digits, rows within bands, bands,
  columns within stacks, stacks are shuffled), which is instant and always valid;
- cells are removed in random order, each only if the solution stays unique. Most removals are
  decided by a cheap argument (the removed digit is the only candidate left for its cell, or the
  only place left for it in one of its units); only the rest run the bitmask search, which looks
  for a second solution that differs at the removed cell.
"""

import json
import random
import re
from pathlib import Path

from symbench.core import Sample, Task, read_question_and_solution, sample_folders

ALL_DIGITS = 0x1FF  # bit d-1 stands for digit d
ROW = [i // 9 for i in range(81)]
COL = [i % 9 for i in range(81)]
BOX = [(i // 27) * 3 + (i % 9) // 3 for i in range(81)]
UNITS = ([[r * 9 + c for c in range(9)] for r in range(9)]
         + [[r * 9 + c for r in range(9)] for c in range(9)]
         + [[(b // 3) * 27 + (b % 3) * 3 + r * 9 + c for r in range(3) for c in range(3)]
            for b in range(9)])
UNITS_OF = [[u for u, unit in enumerate(UNITS) if i in unit] for i in range(81)]
PEERS = [sorted({j for u in UNITS_OF[i] for j in UNITS[u]} - {i}) for i in range(81)]
POPCOUNT = [bin(mask).count("1") for mask in range(512)]


def search_solutions(cells: list[int], limit: int = 2, cell: int = -1,
                     banned_digit: int = 0) -> tuple[int, list[int] | None]:
    """(number of completions of `cells`, the first one found); `cells` is 81 ints with
    0 = blank and counting stops at `limit`. With `cell` and `banned_digit` given, only
    completions where that cell differs from banned_digit count: the question "is there
    another solution?" asked directly.

    Depth-first search on bitmasks, always branching on the blank with fewest candidates."""
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    blanks = []
    for i, digit in enumerate(cells):
        if digit:
            bit = 1 << (digit - 1)
            if rows[ROW[i]] & bit or cols[COL[i]] & bit or boxes[BOX[i]] & bit:
                return 0, None  # the givens already clash
            rows[ROW[i]] |= bit
            cols[COL[i]] |= bit
            boxes[BOX[i]] |= bit
        else:
            blanks.append(i)
    banned = [0] * 81
    if cell >= 0:
        banned[cell] = 1 << (banned_digit - 1)
    grid = list(cells)
    found = 0
    first = None

    def search(open_cells: list[int]) -> None:
        nonlocal found, first
        if not open_cells:
            found += 1
            first = first or list(grid)
            return
        best, best_mask, best_count = -1, 0, 10
        for i in open_cells:
            mask = ALL_DIGITS & ~(rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]] | banned[i])
            count = POPCOUNT[mask]
            if count < best_count:
                best, best_mask, best_count = i, mask, count
                if count <= 1:
                    break
        if best_count == 0:
            return
        rest = [i for i in open_cells if i != best]
        r, c, b = ROW[best], COL[best], BOX[best]
        while best_mask and found < limit:
            bit = best_mask & -best_mask
            best_mask ^= bit
            grid[best] = bit.bit_length()
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            search(rest)
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit

    search(blanks)
    return found, first


def _forced_after_removal(cells: list[int], i: int, digit: int) -> bool:
    """True when blanking cell i (holding `digit`) provably keeps the solution unique: the
    other givens leave `digit` as the cell's only candidate, or leave cell i as the only place
    for `digit` in one of its units. Every solution then puts `digit` back at i."""
    seen = 0
    for j in PEERS[i]:
        if cells[j]:
            seen |= 1 << (cells[j] - 1)
    if POPCOUNT[ALL_DIGITS & ~seen] == 1:
        return True
    for u in UNITS_OF[i]:
        if all(j == i or cells[j] or any(cells[k] == digit for k in PEERS[j])
               for j in UNITS[u]):
            return True
    return False


def full_grid(rng: random.Random) -> list[int]:
    """A random valid filled grid: the pattern (3*(r%3) + r//3 + c) % 9 is valid, and
    permuting digits, rows within a band, bands, columns within a stack and stacks keeps it so."""
    def shuffled_lines() -> list[int]:
        bands = rng.sample(range(3), 3)
        return [band * 3 + line for band in bands for line in rng.sample(range(3), 3)]

    rows, cols, digits = shuffled_lines(), shuffled_lines(), rng.sample(range(1, 10), 9)
    return [digits[(3 * (r % 3) + r // 3 + c) % 9] for r in rows for c in cols]


def make_puzzle(solution: list[int], blanks: int, rng: random.Random) -> list[int] | None:
    """Blank `blanks` cells of `solution` one at a time in random order, skipping any cell whose
    removal would admit a second solution. None if the order runs out first."""
    cells = list(solution)
    removed = 0
    for i in rng.sample(range(81), 81):
        if removed == blanks:
            break
        digit = cells[i]
        cells[i] = 0
        if _forced_after_removal(cells, i, digit) or not search_solutions(cells, 1, i, digit)[0]:
            removed += 1
        else:
            cells[i] = digit
    return cells if removed == blanks else None


def parse_grid(answer: str) -> list[int] | None:
    """81 digits from a JSON matrix, comma/space separated rows, or 9 rows of 9 digits."""
    tokens = re.findall(r"-?\d+", answer)
    if len(tokens) == 9 and all(len(token) == 9 for token in tokens):
        tokens = [digit for token in tokens for digit in token]
    if len(tokens) != 81 or any(len(token) != 1 for token in tokens):
        return None
    return [int(token) for token in tokens]


def format_grid(cells: list[int]) -> str:
    return json.dumps([cells[r * 9:(r + 1) * 9] for r in range(9)], separators=(",", ":"))


class StandardSudoku(Task):
    """Levels 1-5 give 51-55 blank cells (level + 50). The original drew 51-55 blanks at random
    for each of its complexity labels 5, 6 and 7, which loaded samples keep."""

    id = "standard_sudoku"
    answer_format = "<<<[[9 ints], ... 9 rows]>>>: the completed grid as a JSON matrix"
    levels = (1, 2, 3, 4, 5)
    default_level = 3

    def knobs(self, level: int) -> dict:
        return {"blanks": 50 + level}

    def make_sample(self, rng: random.Random, level: int, index: int, *, blanks: int) -> Sample:
        puzzle = None
        while puzzle is None:
            solution = full_grid(rng)
            puzzle = make_puzzle(solution, blanks, rng)
        rows = [" ".join(str(d) if d else "_" for d in puzzle[r * 9:(r + 1) * 9])
                for r in range(9)]
        question = (
            "Complete this Sudoku: every row, every column and every 3x3 box of the 9x9 grid must "
            "contain each digit from 1 to 9 exactly once. Digits already written stay as they are; "
            "blank cells are shown as _.\n\n"
            + "\n".join(rows)
            + "\n\nAnswer with the whole completed grid as a JSON list of 9 rows of 9 integers, "
            "for example <<<[[1,2,3,4,5,6,7,8,9],[4,5,6,7,8,9,1,2,3],...]>>>."
        )
        meta = {"puzzle": [puzzle[r * 9:(r + 1) * 9] for r in range(9)]}
        return Sample(task=self.id, id="", question=question, answer=format_grid(solution),
                      complexity=level, meta=meta)

    def solve(self, sample: Sample) -> str:
        _, solution = search_solutions([d for row in sample.meta["puzzle"] for d in row], limit=1)
        if solution is None:
            raise ValueError(f"{sample.id}: the puzzle has no solution")
        return format_grid(solution)

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        cells = parse_grid(answer)
        if cells is None:
            return 0.0
        givens = [d for row in sample.meta["puzzle"] for d in row]
        if any(given and given != digit for given, digit in zip(givens, cells)):
            return 0.0
        if any(sorted(cells[i] for i in unit) != list(range(1, 10)) for unit in UNITS):
            return 0.0
        return 1.0

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        """Copy the second cell of the first row onto the first: that row repeats a digit."""
        cells = parse_grid(answer)
        if cells is None:
            return super().perturb(sample, answer, rng)
        cells[0] = cells[1]
        return format_grid(cells)

    def load_original(self, dataset_gather_dir) -> list[Sample]:
        samples = []
        for folder in sample_folders(Path(dataset_gather_dir) / "standard_sudoku"):
            question, stored = read_question_and_solution(folder)
            samples.append(Sample(task=self.id, id=folder.name, question=question,
                                  answer=format_grid([d for row in stored["solution"] for d in row]),
                                  complexity=stored.get("complexity"),
                                  meta={"puzzle": stored["puzzle"]}))
        return samples


TASKS = [StandardSudoku()]
