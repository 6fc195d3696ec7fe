"""Four grid tasks of SymBench (spec C.2): pooling, light_puzzles, matrix_transformation and
pattern_recognition. Each is a small deterministic computation on a matrix, so each solver is a
direct simulation and each scorer compares the answer's entries with the label's.

    task = symbench.get_task("pooling")
    sample = task.generate(1, complexity=4, seed=0)[0]
    task.score(sample, "<<<" + task.solve(sample) + ">>>")      # -> 1.0

`comma_tokens` is shared with reversi.py and game2048.py: all of them answer with a matrix
written as a comma-separated list.
"""

import random
import re
from fractions import Fraction
from pathlib import Path

from symbench.core import Sample, Task, original_samples, parse_number

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def comma_tokens(answer: str, limit: int) -> list[str] | None:
    """The entries of a matrix written as a comma-separated list. Newlines count as commas;
    brackets, quotes and blank entries are dropped, so '[[1, 2],\\n [3, 4]]' reads as 1,2,3,4.
    None when the text has more than `limit` entries (we never look at such garbage)."""
    text = answer.strip().rstrip(".").replace("\n", ",")
    if text.count(",") > 2 * limit + 2:
        return None
    text = text.translate({ord(ch): None for ch in "[](){}'\"`"})
    tokens = [token.strip() for token in text.split(",")]
    return [token for token in tokens if token]


def format_grid(rows: list[list], separator: str) -> str:
    return "\n".join(separator.join(str(value) for value in row) for row in rows)


# ---- pooling --------------------------------------------------------------------------------

def pool(matrix: list[list[int]], window: int, pooling: str) -> list[list[float]]:
    """Stride-1 pooling; averages are exact fractions converted to float at the end."""
    out_size = len(matrix) - window + 1
    result = []
    for top in range(out_size):
        row = []
        for left in range(out_size):
            values = [matrix[top + i][left + j] for i in range(window) for j in range(window)]
            row.append(max(values) if pooling == "max" else float(Fraction(sum(values), len(values))))
        result.append(row)
    return result


def format_number(value: float) -> str:
    """Whole numbers as integers, others with ten decimals (well inside the 1e-6 tolerance)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.10f}".rstrip("0")


class Pooling(Task):
    """Stride-1 max or average pooling of a square integer matrix (entries -10..20).

    Levels are the original's six configurations (matrix size, window, pooling):
    1: 3/2/max, 2: 4/2/max, 3: 5/3/max, 4: 4/2/average, 5: 5/3/average, 6: 6/3/average.
    Fidelity note: the original scorer parses every entry as an integer, so its average-pooling
    samples (fractional labels) can never pass; variant='paper' keeps that parser, the corrected
    one parses numbers (decimals or fractions) and allows an absolute error of 1e-6.
    """

    id = "pooling"
    answer_format = "<<<v1,v2,...>>>: the pooled matrix flattened row by row"
    levels = (1, 2, 3, 4, 5, 6)
    default_level = 3
    CONFIGURATIONS = {1: (3, 2, "max"), 2: (4, 2, "max"), 3: (5, 3, "max"),
                      4: (4, 2, "average"), 5: (5, 3, "average"), 6: (6, 3, "average")}
    TOLERANCE = 1e-6

    def knobs(self, level: int) -> dict:
        size, window, pooling = self.CONFIGURATIONS[level]
        return {"size": size, "window": window, "pooling": pooling, "low": -10, "high": 20}

    def make_sample(self, rng: random.Random, level: int, index: int, *, size, window, pooling,
                    low, high) -> Sample:
        matrix = [[rng.randint(low, high) for _ in range(size)] for _ in range(size)]
        solution = pool(matrix, window, pooling)
        meta = {"matrix": matrix, "window_size": window, "pooling_type": pooling, "solution": solution}
        return Sample(task=self.id, id="", question=self._question(matrix, window, pooling),
                      answer=self._format(solution), complexity=level, meta=meta)

    @staticmethod
    def _question(matrix, window, pooling) -> str:
        out_size = len(matrix) - window + 1
        statistic = "maximum" if pooling == "max" else "average"
        precision = ("" if pooling == "max" else
                     "Write an average that is not a whole number exactly, as a fraction such as "
                     "7/4, or as a decimal with at least six digits after the point.\n")
        return (
            f"Apply {pooling} pooling with stride 1 to the {len(matrix)}x{len(matrix)} integer "
            f"matrix below (one row per line, entries separated by commas). A {window}x{window} "
            f"window visits every position where it fits inside the matrix, moving one cell at a "
            f"time from left to right and from top to bottom; each position is replaced by the "
            f"{statistic} of the {window * window} numbers under the window, and these values, "
            f"kept in the positions' order, form a {out_size}x{out_size} matrix.\n\n"
            f"{format_grid(matrix, ', ')}\n\n{precision}"
            f"Give the resulting matrix flattened row by row as a comma-separated list, for "
            f"example <<<0,0,0,0>>> for a 2x2 result.")

    @staticmethod
    def _format(solution) -> str:
        return ",".join(format_number(value) for row in solution for value in row)

    def solve(self, sample: Sample) -> str:
        meta = sample.meta
        return self._format(pool(meta["matrix"], meta["window_size"], meta["pooling_type"]))

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        expected = [value for row in sample.meta["solution"] for value in row]
        tokens = comma_tokens(answer, len(expected))
        if tokens is None or len(tokens) != len(expected):
            return 0.0
        if variant == "paper":  # the original: int() of every entry, so "2.5" fails
            if not all(re.fullmatch(r"[-+]?\d{1,12}", token) for token in tokens):
                return 0.0
            return float(all(int(token) == value for token, value in zip(tokens, expected)))
        values = [parse_number(token) for token in tokens]
        return float(all(value is not None and abs(value - target) <= self.TOLERANCE
                         for value, target in zip(values, expected)))

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        # Changing one far decimal of an average could stay inside the tolerance: shift a whole entry.
        tokens = comma_tokens(answer, len(answer))
        i = rng.randrange(len(tokens))
        tokens[i] = format_number(parse_number(tokens[i]) + rng.choice([-1, 1]))
        return ",".join(tokens)

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        def to_sample(question, solution):
            meta = {key: solution[key] for key in ("matrix", "window_size", "pooling_type", "solution")}
            return self._format(solution["solution"]), meta
        return original_samples(self, dataset_gather_dir, "pooling_dataset", to_sample)


# ---- light_puzzles --------------------------------------------------------------------------

def press_buttons(initial_state: list[list[int]], buttons: dict, operations: list[str]) -> list[int]:
    """The flattened grid after pressing the buttons in order; each press toggles its
    (1-based) cells."""
    state = [row[:] for row in initial_state]
    for name in operations:
        for row, col in buttons[name]:
            state[row - 1][col - 1] ^= 1
    return [value for row in state for value in row]


class LightPuzzles(Task):
    """Buttons toggle fixed sets of lights on an n x n grid; report the grid after a sequence
    of presses. Each button controls 2..n^2/2 distinct lights, as in the original generator.

    Levels are the original's five configurations (n, buttons, presses):
    1: (2, 1, 1), 2: (3, 2, 2), 3: (4, 2, 3), 4: (4, 3, 3), 5: (5, 3, 4).
    """

    id = "light_puzzles"
    answer_format = "<<<0,1,...>>>: the n*n final lights (1 = on) row by row"
    levels = (1, 2, 3, 4, 5)
    default_level = 3
    CONFIGURATIONS = {1: (2, 1, 1), 2: (3, 2, 2), 3: (4, 2, 3), 4: (4, 3, 3), 5: (5, 3, 4)}

    def knobs(self, level: int) -> dict:
        n, buttons, presses = self.CONFIGURATIONS[level]
        return {"n": n, "buttons": buttons, "presses": presses}

    def make_sample(self, rng: random.Random, level: int, index: int, *, n, buttons, presses) -> Sample:
        initial_state = [[rng.randint(0, 1) for _ in range(n)] for _ in range(n)]
        cells = [[row, col] for row in range(1, n + 1) for col in range(1, n + 1)]
        controls = {LETTERS[b]: rng.sample(cells, rng.randint(2, max(2, n * n // 2)))
                    for b in range(buttons)}
        operations = [LETTERS[rng.randrange(buttons)] for _ in range(presses)]
        solution = press_buttons(initial_state, controls, operations)
        meta = {"n": n, "initial_state": initial_state, "buttons": controls,
                "operations": operations, "solution": solution}
        return Sample(task=self.id, id="", question=self._question(meta),
                      answer=",".join(map(str, solution)), complexity=level, meta=meta)

    @staticmethod
    def _question(meta) -> str:
        n = meta["n"]
        button_lines = "\n".join(
            f"Button {name}: " + ", ".join(f"({row}, {col})" for row, col in cells)
            for name, cells in meta["buttons"].items())
        press_lines = "\n".join(f"Press {i}: button {name}" for i, name in enumerate(meta["operations"], 1))
        return (
            f"A {n}x{n} panel of lights is shown below, one row per line: 1 is a light that is "
            f"on, 0 one that is off.\n\n{format_grid(meta['initial_state'], '')}\n\n"
            f"Each of the {len(meta['buttons'])} buttons is wired to a list of lights, given as "
            f"(row, column) counted from 1 at the top left. Pressing a button toggles every light "
            f"on its list (on becomes off, off becomes on); two buttons may share a light.\n\n"
            f"{button_lines}\n\nThe buttons are pressed in this order:\n{press_lines}\n\n"
            f"What does the panel look like after the last press? Give the {n * n} lights row by "
            f"row as a comma-separated list, for example <<<{','.join(['0'] * n * n)}>>> for a "
            f"panel with every light off.")

    def solve(self, sample: Sample) -> str:
        meta = sample.meta
        return ",".join(map(str, press_buttons(meta["initial_state"], meta["buttons"], meta["operations"])))

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        expected = sample.meta["solution"]
        tokens = comma_tokens(answer, len(expected))
        if tokens is None or len(tokens) != sample.meta["n"] ** 2:
            return 0.0
        return float(tokens == [str(value) for value in expected])

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        def to_sample(question, solution):
            meta = {key: solution[key] for key in ("n", "initial_state", "buttons", "operations", "solution")}
            return ",".join(map(str, solution["solution"])), meta
        return original_samples(self, dataset_gather_dir, "light_puzzles_dataset", to_sample)


# ---- matrix_transformation ------------------------------------------------------------------

def rotate_clockwise(matrix: list[list[str]]) -> list[list[str]]:
    """Row i of the result is column i of the input read from the bottom up."""
    return [list(column) for column in zip(*matrix[::-1])]


class MatrixTransformation(Task):
    """Rotate a small matrix of one-character entries 90 degrees clockwise.

    Levels are the original's five configurations (rows x columns, alphabet):
    1: 2x2 letters, 2: 2x3 digits 1-9, 3: 3x3 letters, 4: 3x4 letters and digits,
    5: 4x4 symbols from !@#$%^&*.
    """

    id = "matrix_transformation"
    answer_format = "<<<a,b,c,...>>>: the rotated matrix flattened row by row"
    levels = (1, 2, 3, 4, 5)
    default_level = 3
    ALPHABETS = {"letters": LETTERS, "numbers": "123456789", "mixed": LETTERS + "123456789",
                 "symbols": "!@#$%^&*"}
    CONFIGURATIONS = {1: (2, 2, "letters"), 2: (2, 3, "numbers"), 3: (3, 3, "letters"),
                      4: (3, 4, "mixed"), 5: (4, 4, "symbols")}

    def knobs(self, level: int) -> dict:
        rows, cols, content = self.CONFIGURATIONS[level]
        return {"rows": rows, "cols": cols, "content": content}

    def make_sample(self, rng: random.Random, level: int, index: int, *, rows, cols, content) -> Sample:
        alphabet = self.ALPHABETS[content]
        matrix = [[rng.choice(alphabet) for _ in range(cols)] for _ in range(rows)]
        solution = rotate_clockwise(matrix)
        formatted = ",".join(entry for row in solution for entry in row)
        question = (
            f"Rotate the {rows}x{cols} matrix below by 90 degrees clockwise (one row per line, "
            f"entries separated by spaces).\n\n{format_grid(matrix, ' ')}\n\n"
            f"Give the rotated matrix flattened row by row, its entries separated by commas; for "
            f"example <<<A,B,C,D>>> stands for the 2x2 matrix with rows A B and C D.")
        meta = {"matrix": matrix, "solution": solution, "formatted_solution": formatted}
        return Sample(task=self.id, id="", question=question, answer=formatted, complexity=level, meta=meta)

    def solve(self, sample: Sample) -> str:
        return ",".join(entry for row in rotate_clockwise(sample.meta["matrix"]) for entry in row)

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        expected = sample.meta["formatted_solution"].split(",")
        tokens = comma_tokens(answer, len(expected))
        return float(tokens == expected)

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        def to_sample(question, solution):
            meta = {key: solution[key] for key in ("matrix", "solution", "formatted_solution")}
            return solution["formatted_solution"], meta
        return original_samples(self, dataset_gather_dir, "matrix_transformation_dataset", to_sample)


# ---- pattern_recognition --------------------------------------------------------------------

MIN_SQUARE = 3
_MATRIX_LINE = re.compile(r"[A-Z](?: [A-Z])+")


def largest_square(matrix: list[list[str]]) -> tuple[int, int, int]:
    """(side, row, col) of the largest solid one-letter square, (row, col) its bottom-right
    corner; dynamic programming over the side of the largest square ending at each cell."""
    rows, cols = len(matrix), len(matrix[0])
    side = [[1] * cols for _ in range(rows)]
    best = (1, 0, 0)
    for r in range(1, rows):
        for c in range(1, cols):
            if matrix[r][c] == matrix[r - 1][c] == matrix[r][c - 1] == matrix[r - 1][c - 1]:
                side[r][c] = 1 + min(side[r - 1][c], side[r][c - 1], side[r - 1][c - 1])
                if side[r][c] > best[0]:
                    best = (side[r][c], r, c)
    return best


def solid_windows(matrix: list[list[str]], size: int) -> list[tuple[int, int]]:
    """Top-left corners of every size x size window holding a single letter."""
    rows, cols = len(matrix), len(matrix[0])
    return [(r, c) for r in range(rows - size + 1) for c in range(cols - size + 1)
            if len({matrix[r + i][c + j] for i in range(size) for j in range(size)}) == 1]


class PatternRecognition(Task):
    """Find the one solid square (side >= 3) of a single letter in a random letter matrix and
    give its bottom-right corner, 0-based.

    The original draws rows and columns uniformly from 6-15 and the side from 3..min/2; our
    levels split that size range into five bands (rows and columns each drawn from the band):
    1: 6-7, 2: 8-9, 3: 10-11, 4: 12-13, 5: 14-15. Generated matrices are checked to hold exactly
    one maximal square: every solid 3x3 window lies inside the planted square.
    """

    id = "pattern_recognition"
    answer_format = "<<<[row, column]>>>: the square's bottom-right corner, 0-based"
    levels = (1, 2, 3, 4, 5)
    default_level = 3

    def knobs(self, level: int) -> dict:
        return {"min_size": 4 + 2 * level, "max_size": 5 + 2 * level}

    def make_sample(self, rng: random.Random, level: int, index: int, *, min_size, max_size) -> Sample:
        rows, cols = rng.randint(min_size, max_size), rng.randint(min_size, max_size)
        side = rng.randint(MIN_SQUARE, max(MIN_SQUARE, min(rows, cols) // 2))
        top, left = rng.randint(0, rows - side), rng.randint(0, cols - side)
        letter = rng.choice(LETTERS)
        offsets = range(side - MIN_SQUARE + 1)
        inside = {(top + i, left + j) for i in offsets for j in offsets}
        while True:
            matrix = [[rng.choice(LETTERS) for _ in range(cols)] for _ in range(rows)]
            for r in range(top, top + side):
                matrix[r][left:left + side] = [letter] * side
            # A neighbouring row or column that happens to match would make a second square.
            if set(solid_windows(matrix, MIN_SQUARE)) == inside:
                break
        row, col = top + side - 1, left + side - 1
        question = (
            f"The {rows}x{cols} letter matrix below contains exactly one square block, with sides "
            f"of at least {MIN_SQUARE} cells, in which every cell holds the same letter. Rows and "
            f"columns are numbered from 0, starting at the top left.\n\n{format_grid(matrix, ' ')}\n\n"
            f"Find that square and give the row and column of its bottom-right cell, in the form "
            f"<<<[row, column]>>>, for example <<<[4, 7]>>>.")
        meta = {"matrix": matrix, "row": row, "column": col}
        return Sample(task=self.id, id="", question=question, answer=f"[{row}, {col}]",
                      complexity=level, meta=meta)

    def solve(self, sample: Sample) -> str:
        _, row, col = largest_square(sample.meta["matrix"])
        return f"[{row}, {col}]"

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        if len(answer) > 100:
            return 0.0
        numbers = re.findall(r"-?\d+", answer)
        if len(numbers) != 2 or re.search(r"[^\d\s,;()\[\]-]", answer):
            return 0.0
        return float([int(n) for n in numbers] == [sample.meta["row"], sample.meta["column"]])

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        def to_sample(question, solution):
            matrix = [line.split() for line in question.splitlines() if _MATRIX_LINE.fullmatch(line.strip())]
            if not matrix:
                raise ValueError("pattern_recognition: no letter matrix in question.txt")
            meta = {"matrix": matrix, "row": solution["row"], "column": solution["column"]}
            return f"[{solution['row']}, {solution['column']}]", meta
        return original_samples(self, dataset_gather_dir, "pattern_recognition", to_sample)


TASKS = [Pooling(), LightPuzzles(), MatrixTransformation(), PatternRecognition()]
