"""Letter logic diagram (seen task, spec C.2): complete a 7x7 Latin square over the letters a-g
whose minor diagonal (top-right to bottom-left) holds one letter throughout.

The original scored by exact match with its stored filling (variant "paper"), but a puzzle with
15-30 blanks can have several valid fillings; the corrected scorer checks the rules and the
givens instead (spec Fidelity note).

The original asked for 7 lines of comma-separated letters and its extractor rewrote them as
[[a,b,...],...]; the parser accepts both shapes, with or without quotes.
"""

import random
import re
from pathlib import Path

from symbench.core import Sample, Task, read_question_and_solution, sample_folders

SIZE = 7
LETTERS = "abcdefg"
ALL_LETTERS = (1 << SIZE) - 1


def parse_letter_grid(answer: str) -> list[list[str]] | None:
    """7x7 lowercase letters from '7 rows of a,b,...' or '[[a,b,...],...]' (quotes allowed), or
    7 rows of 7 letters written together. None for any other shape."""
    tokens = re.split(r"[\s,\[\]\"']+", answer.lower())
    tokens = [token for token in tokens if token]
    if len(tokens) == SIZE and all(len(token) == SIZE for token in tokens):
        tokens = [letter for token in tokens for letter in token]
    if len(tokens) != SIZE * SIZE:
        return None
    return [tokens[r * SIZE:(r + 1) * SIZE] for r in range(SIZE)]


def format_letter_grid(grid) -> str:
    return "\n".join(",".join(row) for row in grid)


def follows_rules(grid: list[list[str]]) -> bool:
    """Every row and column is a permutation of a-g and the minor diagonal is one letter."""
    full = sorted(LETTERS)
    if any(sorted(row) != full for row in grid):
        return False
    if any(sorted(grid[r][c] for r in range(SIZE)) != full for c in range(SIZE)):
        return False
    return len({grid[r][SIZE - 1 - r] for r in range(SIZE)}) == 1


def fill_grid(givens: list[list[str | None]]) -> list[list[str]] | None:
    """A completion of the partial grid: fix the diagonal letter (the given one, or each letter
    in turn), then depth-first search on row/column bitmasks, branching on the blank with the
    fewest candidates."""
    diagonal_given = {givens[r][SIZE - 1 - r] for r in range(SIZE)} - {None}
    if len(diagonal_given) > 1:
        return None
    for diagonal_letter in sorted(diagonal_given) or LETTERS:
        grid = [list(row) for row in givens]
        for r in range(SIZE):
            grid[r][SIZE - 1 - r] = diagonal_letter
        rows, cols = [0] * SIZE, [0] * SIZE
        clash = False
        for r in range(SIZE):
            for c in range(SIZE):
                if grid[r][c] is not None:
                    bit = 1 << LETTERS.index(grid[r][c])
                    clash = clash or bool(rows[r] & bit or cols[c] & bit)
                    rows[r] |= bit
                    cols[c] |= bit
        if clash:
            continue
        blanks = [(r, c) for r in range(SIZE) for c in range(SIZE) if grid[r][c] is None]

        def search(open_cells) -> bool:
            if not open_cells:
                return True
            best = min(open_cells,
                       key=lambda cell: bin(ALL_LETTERS & ~(rows[cell[0]] | cols[cell[1]])).count("1"))
            r, c = best
            rest = [cell for cell in open_cells if cell != best]
            for k in range(SIZE):
                bit = 1 << k
                if (rows[r] | cols[c]) & bit:
                    continue
                rows[r] |= bit
                cols[c] |= bit
                grid[r][c] = LETTERS[k]
                if search(rest):
                    return True
                rows[r] ^= bit
                cols[c] ^= bit
            grid[r][c] = None
            return False

        if search(blanks):
            return grid
    return None


def random_square(rng: random.Random) -> list[list[str]]:
    """A random Latin square with a constant minor diagonal. Start from the cyclic square
    (r + c) mod 7, whose minor diagonal is constant, as the original did; then permute rows by
    s and columns by c -> 6 - s(6 - c), which maps the minor diagonal onto itself, maybe
    transpose (also diagonal-preserving), and relabel the letters."""
    order = rng.sample(range(SIZE), SIZE)
    letters = rng.sample(LETTERS, SIZE)
    square = [[letters[(order[r] + SIZE - 1 - order[SIZE - 1 - c]) % SIZE] for c in range(SIZE)]
              for r in range(SIZE)]
    if rng.random() < 0.5:
        square = [list(column) for column in zip(*square)]
    return square


class LetterLogicDiagram(Task):
    """Levels 1-5 are the original's complexity: min(10 + 5 * level, 30) blank cells
    (15, 20, 25, 30, 30; levels 4 and 5 coincide, as in the original)."""

    id = "letter_logic_diagram"
    answer_format = "<<<7 lines of 7 comma-separated letters>>> (or [[a,b,...],...])"
    levels = (1, 2, 3, 4, 5)
    default_level = 3

    def knobs(self, level: int) -> dict:
        return {"blanks": min(10 + 5 * level, 30)}

    def make_sample(self, rng: random.Random, level: int, index: int, *, blanks: int) -> Sample:
        solution = random_square(rng)
        grid = [list(row) for row in solution]
        for cell in rng.sample(range(SIZE * SIZE), blanks):
            grid[cell // SIZE][cell % SIZE] = None
        question = (
            "Fill the empty cells of the 7x7 grid below with the letters a to g so that every row "
            "and every column contains each letter exactly once, and the seven cells of the minor "
            "diagonal (from the top-right corner to the bottom-left corner) all hold the same "
            "letter. Each line is a row; cells are separated by commas and empty cells are left "
            "blank.\n\n"
            + "\n".join(",".join(letter or "" for letter in row) for row in grid)
            + "\n\nAnswer with the seven completed rows, one per line, letters separated by commas:\n"
            "<<<\na,b,c,d,e,f,g\n...\n>>>"
        )
        return Sample(task=self.id, id="", question=question, answer=format_letter_grid(solution),
                      complexity=level, meta={"grid": grid, "solution": solution})

    def solve(self, sample: Sample) -> str:
        grid = fill_grid(sample.meta["grid"])
        if grid is None:
            raise ValueError(f"{sample.id}: the grid has no valid completion")
        return format_letter_grid(grid)

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        grid = parse_letter_grid(answer)
        if grid is None:
            return 0.0
        if variant == "paper":
            return 1.0 if grid == sample.meta["solution"] else 0.0
        givens = sample.meta["grid"]
        if any(givens[r][c] not in (None, grid[r][c]) for r in range(SIZE) for c in range(SIZE)):
            return 0.0
        return 1.0 if follows_rules(grid) else 0.0

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        """Swap the first two letters of the first row: both columns then repeat a letter."""
        grid = parse_letter_grid(answer)
        if grid is None:
            return super().perturb(sample, answer, rng)
        grid[0][0], grid[0][1] = grid[0][1], grid[0][0]
        return format_letter_grid(grid)

    def load_original(self, dataset_gather_dir) -> list[Sample]:
        samples = []
        for folder in sample_folders(Path(dataset_gather_dir) / "letter_logic_diagram"):
            question, stored = read_question_and_solution(folder)
            samples.append(Sample(task=self.id, id=folder.name, question=question,
                                  answer=format_letter_grid(stored["solution"]),
                                  complexity=stored.get("complexity"),
                                  meta={"grid": stored["grid"], "solution": stored["solution"]}))
        return samples


TASKS = [LetterLogicDiagram()]
