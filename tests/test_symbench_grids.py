"""Task-specific tests for the grid group: pooling, light_puzzles, matrix_transformation,
pattern_recognition (symbench/grids.py), reversi, 2048 and mahjong_pattern.

Every expected value below was worked out by hand; original-layout folders are written here
with made-up contents, so nothing depends on individual reference samples."""

import json
import random
import re

import pytest

import symbench
from symbench.core import Sample
from symbench.grids import comma_tokens, largest_square, pool
from symbench.mahjong import judge
from symbench.reversi import opening_board


def write_original(root, folder, question, solution):
    sample_dir = root / folder / "sample_0"
    sample_dir.mkdir(parents=True)
    (sample_dir / "question.txt").write_text(question)
    (sample_dir / "solution.json").write_text(json.dumps(solution))
    return root


def score(task_id, sample, answer, variant="corrected"):
    return symbench.get_task(task_id).score(sample, f"Done. <<<{answer}>>>", variant)


def test_comma_tokens_reads_the_usual_matrix_spellings():
    assert comma_tokens("[[1, 2],\n [3, 4]]", 10) == ["1", "2", "3", "4"]
    assert comma_tokens("'A', 'B', \"C\".", 10) == ["A", "B", "C"]
    assert comma_tokens("*, *,\n*, *", 10) == ["*"] * 4
    assert comma_tokens(",".join("1" * 100), 10) is None


# ---- pooling --------------------------------------------------------------------------------

def pooling_sample(matrix, window, pooling):
    meta = {"matrix": matrix, "window_size": window, "pooling_type": pooling,
            "solution": pool(matrix, window, pooling)}
    return symbench.get_task("pooling"), Sample("pooling", "hand", "q", None, 1, meta)


def test_pooling_max_by_hand():
    task, sample = pooling_sample([[1, 9, 3], [4, 5, -6], [7, 8, 2]], 2, "max")
    assert task.solve(sample) == "9,9,8,8"
    assert score("pooling", sample, "[[9, 9], [8, 8]]") == 1.0
    assert score("pooling", sample, "9,9,8,8", "paper") == 1.0
    assert score("pooling", sample, "9,9,8,5") == 0.0
    assert score("pooling", sample, "9,9,8") == 0.0


def test_pooling_average_fidelity_variants():
    # windows: (1+2+0+0)/4, (2+0+0+0)/4, (0+0+0+0)/4, (0+0+0+1)/4
    task, sample = pooling_sample([[1, 2, 0], [0, 0, 0], [0, 0, 1]], 2, "average")
    assert task.solve(sample) == "0.75,0.5,0,0.25"
    for answer in ["0.75,0.5,0,0.25", "3/4, 1/2, 0, 1/4", "0.7500000, 0.5, 0.0, 0.25\n"]:
        assert score("pooling", sample, answer) == 1.0, answer
    assert score("pooling", sample, "0.75,0.5,0,0.26") == 0.0
    # The original parser reads integers only: fractional labels can never pass.
    assert score("pooling", sample, "0.75,0.5,0,0.25", "paper") == 0.0
    assert score("pooling", sample, "1,1,0,0", "paper") == 0.0


def test_pooling_tolerance_is_1e_6():
    # (1+2+...+9)/9 = 5 and (2+3+5+6+8+9+0+1+3)/9 = 37/9 = 4.111...
    task, sample = pooling_sample([[1, 2, 3, 5], [4, 5, 6, 8], [7, 8, 9, 0], [1, 1, 1, 3]], 3, "average")
    target = [v for row in sample.meta["solution"] for v in row]
    close = ",".join(f"{v:.7f}" for v in target)
    rounded = ",".join(f"{v:.2f}" for v in target)
    assert score("pooling", sample, close) == 1.0
    assert target[0] == 5 and target[1] != int(target[1])
    assert score("pooling", sample, rounded) == 0.0


def test_pooling_perturb_never_stays_inside_the_tolerance():
    task = symbench.get_task("pooling")
    rng = random.Random(1)
    for sample in task.generate(20, complexity=6, seed=3):
        assert task.score(sample, f"<<<{task.perturb(sample, sample.answer, rng)}>>>") == 0.0


def test_pooling_loader_keeps_average_labels_without_paper_answer(tmp_path):
    solution = {"matrix": [[1, 2, 0], [0, 0, 0], [0, 0, 1]], "window_size": 2,
                "pooling_type": "average", "solution": [[0.75, 0.5], [0.0, 0.25]], "complexity": 2}
    write_original(tmp_path, "pooling_dataset", "question text", solution)
    [sample] = symbench.load_original("pooling", tmp_path)
    assert sample.answer == "0.75,0.5,0,0.25" and "paper_answer" not in sample.meta
    assert sample.complexity == 2 and sample.id == "sample_0"


# ---- light_puzzles --------------------------------------------------------------------------

def test_light_puzzles_by_hand():
    task = symbench.get_task("light_puzzles")
    meta = {"n": 2, "initial_state": [[1, 0], [0, 0]],
            "buttons": {"A": [[1, 1], [2, 2]], "B": [[2, 2], [1, 2]]},
            "operations": ["A", "B", "B"], "solution": [0, 0, 0, 1]}
    sample = Sample("light_puzzles", "hand", "q", "0,0,0,1", 1, meta)
    assert task.solve(sample) == "0,0,0,1"
    assert score("light_puzzles", sample, "[0, 0, 0, 1]") == 1.0
    assert score("light_puzzles", sample, "0,0\n0,1") == 1.0
    assert score("light_puzzles", sample, "0,0,1,0") == 0.0
    assert score("light_puzzles", sample, "0,0,0,1,0") == 0.0


def test_light_puzzles_buttons_follow_the_configuration():
    task = symbench.get_task("light_puzzles")
    for level, (n, buttons, presses) in task.CONFIGURATIONS.items():
        for sample in task.generate(5, complexity=level, seed=1):
            assert sample.meta["n"] == n and len(sample.meta["buttons"]) == buttons
            assert len(sample.meta["operations"]) == presses
            for cells in sample.meta["buttons"].values():
                assert 2 <= len(cells) <= max(2, n * n // 2)
                assert len({tuple(cell) for cell in cells}) == len(cells)


# ---- matrix_transformation ------------------------------------------------------------------

def test_matrix_transformation_rotates_clockwise():
    task = symbench.get_task("matrix_transformation")
    meta = {"matrix": [["1", "2", "3"], ["4", "5", "6"]], "solution": None,
            "formatted_solution": "4,1,5,2,6,3"}
    sample = Sample("matrix_transformation", "hand", "q", "4,1,5,2,6,3", 2, meta)
    assert task.solve(sample) == "4,1,5,2,6,3"
    assert score("matrix_transformation", sample, "['4', '1', '5', '2', '6', '3']") == 1.0
    assert score("matrix_transformation", sample, "4,1\n5,2\n6,3") == 1.0
    assert score("matrix_transformation", sample, "3,6,2,5,1,4") == 0.0  # counter-clockwise
    assert score("matrix_transformation", sample, "1,4,2,5,3,6") == 0.0  # transpose


def test_matrix_transformation_levels_use_their_alphabet():
    task = symbench.get_task("matrix_transformation")
    [sample] = task.generate(1, complexity=5, seed=0)
    assert len(sample.meta["matrix"]) == 4 and set(sample.answer.split(",")) <= set("!@#$%^&*")


# ---- pattern_recognition --------------------------------------------------------------------

HAND_MATRIX = ["ABCDEF", "GZZZHI", "JZZZKL", "MZZZNO", "PQRSTU", "VWXYAB"]


def test_pattern_recognition_by_hand():
    task = symbench.get_task("pattern_recognition")
    meta = {"matrix": [list(row) for row in HAND_MATRIX], "row": 3, "column": 3}
    sample = Sample("pattern_recognition", "hand", "q", "[3, 3]", 1, meta)
    assert task.solve(sample) == "[3, 3]"
    for answer in ["[3, 3]", "3, 3", "(3,3)", "[3,3]"]:
        assert score("pattern_recognition", sample, answer) == 1.0
    for answer in ["[1, 1]", "[3, 3, 3]", "[3]", "row 3 column 3"]:
        assert score("pattern_recognition", sample, answer) == 0.0


def maximal_squares(matrix):
    """Brute force: every solid square of side >= 3 not inside a larger solid square."""
    rows, cols = len(matrix), len(matrix[0])
    solid = {(r, c, s) for s in range(3, min(rows, cols) + 1) for r in range(rows - s + 1)
             for c in range(cols - s + 1)
             if len({matrix[r + i][c + j] for i in range(s) for j in range(s)}) == 1}
    return [(r, c, s) for r, c, s in solid
            if not any(s2 > s and r2 <= r and c2 <= c and r + s <= r2 + s2 and c + s <= c2 + s2
                       for r2, c2, s2 in solid)]


def test_pattern_recognition_generates_exactly_one_square():
    task = symbench.get_task("pattern_recognition")
    for level in task.levels:
        for sample in task.generate(4, complexity=level, seed=5):
            [(r, c, s)] = maximal_squares(sample.meta["matrix"])
            assert [r + s - 1, c + s - 1] == [sample.meta["row"], sample.meta["column"]]
            assert 3 <= s <= min(len(sample.meta["matrix"]), len(sample.meta["matrix"][0])) // 2


def test_pattern_recognition_loader_parses_the_matrix(tmp_path):
    grid = "\n".join(" ".join(row) for row in HAND_MATRIX)
    question = f"Some rules.\n\nIf the matrix is\n\n{grid}\n\nPlease answer. <<<[row, column]>>>."
    write_original(tmp_path, "pattern_recognition", question, {"row": 3, "column": 3, "complexity": 5})
    [sample] = symbench.load_original("pattern_recognition", tmp_path)
    assert sample.meta["matrix"] == [list(row) for row in HAND_MATRIX]
    assert largest_square(sample.meta["matrix"]) == (3, 3, 3)


# ---- reversi --------------------------------------------------------------------------------

def test_reversi_flips_along_several_lines():
    task = symbench.get_task("reversi")
    # Black at (3, 1): flips (2, 1) upwards and (2, 2) diagonally; the row to the right ends
    # on an empty cell, so (3, 2) and (3, 3) stay white.
    meta = {"board_size": 4, "start_board": ["0*0*", "11**", "*11*", "****"], "moves": [[3, 1]],
            "solution": ""}
    sample = Sample("reversi", "hand", "q", None, 1, meta)
    assert task.solve(sample) == "0,*,0,*,0,0,*,*,0,1,1,*,*,*,*,*"


def test_reversi_alternates_colours_from_black():
    task = symbench.get_task("reversi")
    start = ["".join(row) for row in opening_board(4)]
    assert start == ["****", "*10*", "*01*", "****"]
    # Black (1,2) flips (2,2); white (1,1) flips (2,2) back along the diagonal.
    meta = {"board_size": 4, "start_board": start, "moves": [[1, 2], [1, 1]],
            "solution": "1,0,*,*,*,1,0,*,*,0,1,*,*,*,*,*"}
    sample = Sample("reversi", "hand", "q", meta["solution"], 2, meta)
    assert task.solve(sample) == meta["solution"]
    assert score("reversi", sample, "1,0,*,*\n*,1,0,*\n*,0,1,*\n*,*,*,*") == 1.0
    assert score("reversi", sample, "[1, 0, *, *, *, 1, 0, *, *, 0, 1, *, *, *, *, *]") == 1.0
    assert score("reversi", sample, "1,0,*,*,*,0,0,*,*,0,1,*,*,*,*,*") == 0.0
    assert score("reversi", sample, "10**\n*10*\n*01*\n****") == 0.0


def test_reversi_original_samples_replay_from_the_opening(tmp_path):
    # Original layout: the printed board is already the answer; the moves start at the opening.
    solution = {"board_size": 4, "moves": [[1, 2], [1, 1]], "solution": "1,0,*,*,*,1,0,*,*,0,1,*,*,*,*,*",
                "complexity": 2}
    write_original(tmp_path, "reversi_dataset", "The previous round of the game was: 10**...", solution)
    [sample] = symbench.load_original("reversi", tmp_path)
    assert sample.meta["start_board"] == ["****", "*10*", "*01*", "****"]
    assert symbench.get_task("reversi").solve(sample) == solution["solution"]


def test_reversi_questions_show_the_board_before_the_moves():
    task = symbench.get_task("reversi")
    for level in task.levels:
        for sample in task.generate(5, complexity=level, seed=2):
            meta = sample.meta
            assert "\n".join(meta["start_board"]) in sample.question
            assert len(meta["moves"]) == task.CONFIGURATIONS[level][1]
            row, col = meta["moves"][0]
            assert meta["start_board"][row - 1][col - 1] == "*"
            assert ",".join("".join(meta["start_board"])) != sample.answer


# ---- 2048 -----------------------------------------------------------------------------------

def test_2048_merges_and_keeps_moving():
    task = symbench.get_task("2048")
    # 2 at (1,1): r merges with 2 -> 4 at (1,2); d merges with 4 -> 8 at (2,2); l slides to (2,1);
    # u slides into the empty (1,1); a second u would leave the grid, so it stays.
    meta = {"grid": [[2, 2], [0, 4]], "moves": "rdluu", "start_pos": [0, 0], "solution": "8, 0\n0, 0"}
    sample = Sample("2048", "hand", "q", meta["solution"], 1, meta)
    assert task.solve(sample) == "8, 0\n0, 0"
    for answer in ["8, 0\n0, 0", "8,0,0,0", "[[8, 0], [0, 0]]", "\n8, 0\n0, 0\n"]:
        assert score("2048", sample, answer) == 1.0, answer
    assert score("2048", sample, "0, 8\n0, 0") == 0.0
    assert score("2048", sample, "8, 0\n0") == 0.0


def test_2048_blocked_moves_and_empty_start():
    task = symbench.get_task("2048")
    blocked = {"grid": [[4, 2], [8, 0]], "moves": "rdu", "start_pos": [0, 0], "solution": ""}
    assert task.solve(Sample("2048", "h", "q", None, 1, blocked)) == "4, 2\n8, 0"
    # The originals' empty start: the 0 wanders through empty cells and nothing changes.
    empty = {"grid": [[0, 0], [16, 0]], "moves": "rdl", "start_pos": [0, 0], "solution": ""}
    assert task.solve(Sample("2048", "h", "q", None, 1, empty)) == "0, 0\n16, 0"


def test_2048_generator_starts_on_a_number():
    task = symbench.get_task("2048")
    for level in task.levels:
        for sample in task.generate(10, complexity=level, seed=4):
            row, col = sample.meta["start_pos"]
            assert sample.meta["grid"][row][col] != 0
            assert len(sample.meta["moves"]) == task.CONFIGURATIONS[level][1]


# ---- mahjong_pattern ------------------------------------------------------------------------

def test_mahjong_judgements():
    assert judge(list("AABCDEFGHIJKL"), "A", chi_allowed=True) == 1
    assert judge(list("ABXXYZQRSTUVW"), "X", chi_allowed=True) == 1       # Peng beats Chi
    assert judge(list("BCMMNOPQRSTUV"), "A", chi_allowed=True) == 2       # A B C
    assert judge(list("BDMMNOPQRSTUV"), "C", chi_allowed=True) == 2       # B C D
    assert judge(list("BCMMNOPQRSTUV"), "A", chi_allowed=False) == 0      # no Chi below level 3
    assert judge(list("UUVHIJKLMNOPQ"), "T", chi_allowed=True) == 2       # T U V despite the duplicate U
    assert judge(list("ACEGIKMOQSUWY"), "Z", chi_allowed=True) == 0


def test_mahjong_rounds_replay_removals():
    task = symbench.get_task("mahjong_pattern")
    # Round 1 adds a second A; round 2 removes one A before round 3 adds A: only one A is held.
    rounds = [{"add": "A", "remove": "Z"}, {"add": "B", "remove": "A"}, {"add": "A", "remove": "C"}]
    meta = {"initial_cards": "AZYXWVUTSRQPO", "rounds": rounds, "chi": False, "solution": 0}
    assert task.solve(Sample("mahjong_pattern", "h", "q", "0", 3, meta)) == "0"
    meta["rounds"] = [{"add": "A", "remove": "Z"}, {"add": "A", "remove": "Y"}]
    assert task.solve(Sample("mahjong_pattern", "h", "q", "1", 2, meta)) == "1"


def test_mahjong_original_chi_label_at_low_complexity(tmp_path):
    # Complexity 1 states no Chi rule, yet the original labeller stored 2 (T with U, V in hand).
    solution = {"initial_cards": "ABCDEFGHIJUVK", "rounds": [{"add": "T", "remove": "A"}],
                "solution": 2, "complexity": 1}
    write_original(tmp_path, "mahjong_pattern_dataset", "rules ... <<<x>>>", solution)
    [sample] = symbench.load_original("mahjong_pattern", tmp_path)
    assert sample.answer == "0" and sample.meta["paper_answer"] == "2"
    assert score("mahjong_pattern", sample, "0") == 1.0
    assert score("mahjong_pattern", sample, "2") == 0.0
    assert score("mahjong_pattern", sample, "2", "paper") == 1.0
    assert score("mahjong_pattern", sample, "0", "paper") == 0.0


def test_mahjong_answer_spellings():
    meta = {"initial_cards": "AABCDEFGHIJKL", "rounds": [{"add": "A", "remove": "L"}], "chi": False,
            "solution": 1}
    sample = Sample("mahjong_pattern", "h", "q", "1", 1, meta)
    for answer, expected in [("1", 1.0), ("[1]", 1.0), (" 1 ", 1.0), ("0", 0.0), ("11", 0.0), ("1, 2", 0.0)]:
        assert score("mahjong_pattern", sample, answer) == expected, answer


def test_mahjong_chi_only_from_level_3():
    task = symbench.get_task("mahjong_pattern")
    for level in task.levels:
        samples = task.generate(30, complexity=level, seed=6)
        assert all(len(s.meta["rounds"]) == level for s in samples)
        assert all(("Chi" in s.question) == (level >= 3) for s in samples)
        assert ("2" in {s.answer for s in samples}) == (level >= 3)


@pytest.mark.parametrize("task_id", ["pooling", "light_puzzles", "matrix_transformation",
                                     "pattern_recognition", "reversi", "2048", "mahjong_pattern"])
def test_missing_original_folder_names_the_path(tmp_path, task_id):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        symbench.load_original(task_id, tmp_path)
