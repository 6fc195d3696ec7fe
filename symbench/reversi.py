"""SymBench reversi (spec C.2): play a few Othello moves from a given position and write down
the board. 0 is black (the player, who moves first), 1 white, * an empty cell.

    task = symbench.get_task("reversi")
    sample = task.generate(1, complexity=4, seed=0)[0]
    task.solve(sample)          # -> "*,*,0,1,..." (n*n cells, row by row)

Fidelity note (spec): every original question prints, as the "previous round", the board AFTER
its moves, so its label equals the printed board. The original generator always played its
moves from the standard opening (four centre stones), which is what its rules text describes;
so for original samples the loader sets meta['start_board'] to that opening and the solver,
which always replays meta['moves'] from meta['start_board'], reproduces every stored label by
simulation. Our generator plays a few opening moves, prints the position reached, and asks for
the moves that follow, so its questions show the board before the moves.
"""

import random
from pathlib import Path

from symbench.core import Sample, Task, original_samples
from symbench.grids import comma_tokens

BLACK, WHITE, EMPTY = "0", "1", "*"
DIRECTIONS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


def opening_board(n: int) -> list[list[str]]:
    board = [[EMPTY] * n for _ in range(n)]
    mid = n // 2
    board[mid - 1][mid - 1] = board[mid][mid] = WHITE
    board[mid - 1][mid] = board[mid][mid - 1] = BLACK
    return board


def captured(board: list[list[str]], row: int, col: int, player: str) -> list[tuple[int, int]]:
    """The opponent stones flipped by `player` placing at (row, col), 0-based: every unbroken
    line of opponent stones that ends at one of the player's stones."""
    n = len(board)
    flipped = []
    for dr, dc in DIRECTIONS:
        line = []
        r, c = row + dr, col + dc
        while 0 <= r < n and 0 <= c < n and board[r][c] not in (EMPTY, player):
            line.append((r, c))
            r, c = r + dr, c + dc
        if line and 0 <= r < n and 0 <= c < n and board[r][c] == player:
            flipped.extend(line)
    return flipped


def place(board: list[list[str]], row: int, col: int, player: str) -> None:
    for r, c in captured(board, row, col, player):
        board[r][c] = player
    board[row][col] = player


def legal_moves(board: list[list[str]], player: str) -> list[tuple[int, int]]:
    n = len(board)
    return [(r, c) for r in range(n) for c in range(n)
            if board[r][c] == EMPTY and captured(board, r, c, player)]


def opponent(player: str) -> str:
    return WHITE if player == BLACK else BLACK


def play_moves(start_board: list[str], moves: list[list[int]]) -> list[list[str]]:
    """The board after `moves` (1-based (row, col)), black first and the colours alternating."""
    board = [list(row) for row in start_board]
    player = BLACK
    for row, col in moves:
        place(board, row - 1, col - 1, player)
        player = opponent(player)
    return board


def flat(board: list[list[str]]) -> str:
    return ",".join(cell for row in board for cell in row)


class Reversi(Task):
    """Levels are the original's five configurations (board size, moves to play):
    1: (4, 1), 2: (4, 2), 3: (4, 3), 4: (6, 2), 5: (6, 3). Before the shown position the
    generator plays an even number (2..max_opening_moves) of random legal moves from the
    standard opening, so black is to move; every move it asks about is legal.
    """

    id = "reversi"
    answer_format = "<<<c,c,...>>>: the n*n cells (0 black, 1 white, * empty) row by row"
    levels = (1, 2, 3, 4, 5)
    default_level = 3
    CONFIGURATIONS = {1: (4, 1), 2: (4, 2), 3: (4, 3), 4: (6, 2), 5: (6, 3)}

    def knobs(self, level: int) -> dict:
        board_size, num_moves = self.CONFIGURATIONS[level]
        return {"board_size": board_size, "num_moves": num_moves,
                "max_opening_moves": 4 if board_size == 4 else 8}

    def make_sample(self, rng: random.Random, level: int, index: int, *, board_size, num_moves,
                    max_opening_moves) -> Sample:
        while True:  # a random game can run out of legal moves; draw again
            opening = 2 * rng.randint(1, max(1, max_opening_moves // 2))
            board, player, moves = opening_board(board_size), BLACK, []
            for turn in range(opening + num_moves):
                if turn == opening:
                    start_board = ["".join(row) for row in board]
                options = legal_moves(board, player)
                if not options:
                    break
                row, col = rng.choice(options)
                place(board, row, col, player)
                if turn >= opening:
                    moves.append([row + 1, col + 1])
                player = opponent(player)
            else:
                break
        meta = {"board_size": board_size, "start_board": start_board, "moves": moves,
                "solution": flat(board)}
        return Sample(task=self.id, id="", question=self._question(meta), answer=meta["solution"],
                      complexity=level, meta=meta)

    @staticmethod
    def _question(meta) -> str:
        n = meta["board_size"]
        rounds = "\n".join(
            f"Round {i}: " + ("you (black) place" if i % 2 == 1 else "your opponent (white) places")
            + f" a stone at ({row}, {col})" for i, (row, col) in enumerate(meta["moves"], 1))
        return (
            f"A Reversi (Othello) game is played on a {n}x{n} board. 0 is a black stone, 1 a "
            f"white stone and * an empty cell. The game began with four stones in the centre, two "
            f"of each colour on the diagonals, and the players take turns. A move places one "
            f"stone on an empty cell; then, along each of the eight directions (row, column and "
            f"diagonals), an unbroken line of the opponent's stones that runs from the new stone "
            f"to another stone of the mover's colour is flipped to the mover's colour. Position "
            f"(a, b) is row a and column b, both counted from 1 at the top left.\n\n"
            f"You play black. The board now is:\n\n"
            + "\n".join(meta["start_board"]) + f"\n\nThe next moves are:\n{rounds}\n\n"
            f"Write down the board after these moves, all {n * n} cells row by row as a "
            f"comma-separated list; for example <<<{','.join([EMPTY] * n * n)}>>> is an empty "
            f"board.")

    def solve(self, sample: Sample) -> str:
        return flat(play_moves(sample.meta["start_board"], sample.meta["moves"]))

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        expected = sample.meta["solution"].split(",")
        return float(comma_tokens(answer, len(expected)) == expected)

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        def to_sample(question, solution):
            n = solution["board_size"]
            meta = {"board_size": n, "start_board": ["".join(row) for row in opening_board(n)],
                    "moves": solution["moves"], "solution": solution["solution"]}
            return solution["solution"], meta
        return original_samples(self, dataset_gather_dir, "reversi_dataset", to_sample)


TASKS = [Reversi()]
