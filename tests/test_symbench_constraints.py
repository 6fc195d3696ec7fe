"""Task-specific tests for the constraint group: eight_queens, standard_sudoku, logic_puzzle,
letter_logic_diagram, permutations_and_combinations, logical_equation.

Every instance and expected value below was worked out by hand; original-layout folders are
written here with made-up contents, so nothing depends on individual reference samples."""

import json

import pytest

import symbench
from symbench.core import Sample
from symbench.letter_logic_diagram import LETTERS, follows_rules
from symbench.logical_equation import CONFIGS, parse_constraint, solve_assignments
from symbench.permutations import parse_constraints
from symbench.sudoku import search_solutions


def score(task_id, sample, answer, variant="corrected"):
    return symbench.get_task(task_id).score(sample, f"Here it is: <<<{answer}>>>", variant)


def write_original(root, folder, question, solution):
    sample_dir = root / folder
    sample_dir.mkdir(parents=True)
    (sample_dir / "question.txt").write_text(question)
    (sample_dir / "solution.json").write_text(json.dumps(solution))


# ---- eight_queens ---------------------------------------------------------------------------

# The first solution in row-by-row order (columns 0 4 7 5 2 6 1 3) and the second (1 3 5 7 2 0 6 4).
FIRST_QUEENS = "0 0, 1 4, 2 7, 3 5, 4 2, 5 6, 6 1, 7 3"
SECOND_QUEENS = "0 1, 1 3, 2 5, 3 7, 4 2, 5 0, 6 6, 7 4"


def queens_sample(placed, blocked):
    return Sample("eight_queens", "hand", "q", None, 1, {"board": [], "placed": placed, "blocked": blocked})


def test_eight_queens_scorer_on_hand_placements():
    sample = queens_sample(placed=[[0, 0]], blocked=[[1, 2]])
    assert score("eight_queens", sample, FIRST_QUEENS) == 1.0
    assert score("eight_queens", sample, "(0,0), (1,4), (2,7), (3,5), (4,2), (5,6), (6,1), (7,3)") == 1.0
    assert score("eight_queens", sample, "[[0, 0], [1, 4], [2, 7], [3, 5], [4, 2], [5, 6], [6, 1], [7, 3]]") == 1.0
    assert score("eight_queens", sample, FIRST_QUEENS.rsplit(",", 1)[0]) == 0.0       # 7 queens
    assert score("eight_queens", sample, FIRST_QUEENS.replace("7 3", "7 4")) == 0.0   # column 4 twice
    on_blocked = queens_sample(placed=[], blocked=[[3, 5]])
    assert score("eight_queens", on_blocked, FIRST_QUEENS) == 0.0
    assert score("eight_queens", on_blocked, FIRST_QUEENS, "paper") == 0.0


def test_eight_queens_fidelity_variants():
    sample = queens_sample(placed=[[0, 0]], blocked=[[1, 2]])
    # A valid placement that drops the pre-placed queen at (0,0).
    assert score("eight_queens", sample, SECOND_QUEENS, "paper") == 1.0
    assert score("eight_queens", sample, SECOND_QUEENS) == 0.0
    # (9,3) instead of (7,3): off the board but attacking nobody.
    off_board = FIRST_QUEENS.replace("7 3", "9 3")
    assert score("eight_queens", sample, off_board, "paper") == 1.0
    assert score("eight_queens", sample, off_board) == 0.0


def test_eight_queens_solver_and_generator():
    task = symbench.get_task("eight_queens")
    assert task.solve(queens_sample(placed=[[0, 0]], blocked=[[1, 2]])) == FIRST_QUEENS
    assert task.solve(queens_sample(placed=[], blocked=[[0, 0]])) == SECOND_QUEENS
    for level in task.levels:
        for sample in task.generate(5, complexity=level, seed=3):
            placed, blocked = sample.meta["placed"], sample.meta["blocked"]
            assert min(1 + len(placed) + len(blocked) // 2, 5) == level  # the original's formula
            assert all(sample.meta["board"][r][c] == "1" for r, c in placed)
            assert all(sample.meta["board"][r][c] == "X" for r, c in blocked)


# ---- standard_sudoku ------------------------------------------------------------------------

SOLVED = ["534678912", "672195348", "198342567", "859761423", "426853791",
          "713924856", "961537284", "287419635", "345286179"]


def sudoku_sample(blanked_cells):
    puzzle = [[int(d) for d in row] for row in SOLVED]
    for i in blanked_cells:
        puzzle[i // 9][i % 9] = 0
    return Sample("standard_sudoku", "hand", "q", None, 1, {"puzzle": puzzle})


def test_sudoku_scorer_on_hand_grids():
    sample = sudoku_sample(range(0, 81, 2))
    as_json = json.dumps([[int(d) for d in row] for row in SOLVED])
    assert score("standard_sudoku", sample, as_json) == 1.0
    assert score("standard_sudoku", sample, "\n".join(" ".join(row) for row in SOLVED)) == 1.0
    assert score("standard_sudoku", sample, "\n".join(SOLVED)) == 1.0
    # Swapping two blank cells of row 0 (columns 0 and 2) keeps the row but breaks two columns.
    swapped = [SOLVED[0][2] + SOLVED[0][1] + SOLVED[0][0] + SOLVED[0][3:]] + SOLVED[1:]
    assert score("standard_sudoku", sample, "\n".join(swapped)) == 0.0
    # Exchanging the digits 1 and 2 everywhere gives a valid Sudoku that changes the givens.
    relabelled = [row.translate(str.maketrans("12", "21")) for row in SOLVED]
    assert score("standard_sudoku", sudoku_sample([]), "\n".join(relabelled)) == 0.0
    assert score("standard_sudoku", sudoku_sample(range(81)), "\n".join(relabelled)) == 1.0
    assert score("standard_sudoku", sample, "\n".join(SOLVED[:8])) == 0.0


def test_sudoku_solution_counter_and_solver():
    full = [int(d) for row in SOLVED for d in row]
    assert search_solutions(full) == (1, full)
    assert search_solutions([0] * 81)[0] == 2
    row_blank = [0] * 9 + full[9:]
    assert search_solutions(row_blank, limit=3) == (1, full)
    # (0,3)=6 (0,4)=7 (3,3)=7 (3,4)=6 lie in two boxes: blanking them lets 6 and 7 swap.
    rectangle = list(full)
    for i in (3, 4, 30, 31):
        rectangle[i] = 0
    assert search_solutions(rectangle, limit=3)[0] == 2
    assert search_solutions(rectangle, limit=3, cell=3, banned_digit=6)[0] == 1
    task = symbench.get_task("standard_sudoku")
    assert json.loads(task.solve(sudoku_sample(range(9)))) == [[int(d) for d in r] for r in SOLVED]
    assert score("standard_sudoku", sudoku_sample(range(0, 81, 2)), task.solve(sudoku_sample(range(0, 81, 2)))) == 1.0


def test_sudoku_generator_gives_unique_puzzles_with_the_level_blank_count():
    task = symbench.get_task("standard_sudoku")
    for level in (1, 5):
        for sample in task.generate(3, complexity=level, seed=11):
            cells = [d for row in sample.meta["puzzle"] for d in row]
            assert cells.count(0) == 50 + level
            assert search_solutions(cells, limit=3)[0] == 1


# ---- logic_puzzle ---------------------------------------------------------------------------

def grid_sample(grid, count, rule):
    return Sample("logic_puzzle", "hand", "q", None, 1, {"grid": grid, "count": count, "rule": rule})


def test_logic_puzzle_sum_rule_by_hand():
    # Start (0,2) = 4. Rows and columns sum to at most 4.
    sample = grid_sample([[1, 2, 4], [3, 1, 2], [2, 3, 1]], 3, "sum_le_4")
    assert score("logic_puzzle", sample, "0 2, 1 1, 2 0") == 1.0        # 4, 1, 2: every line <= 4
    assert score("logic_puzzle", sample, "[[0, 2], [1, 1], [2, 0]]") == 1.0
    assert score("logic_puzzle", sample, "0 2, 0 0, 1 0") == 0.0        # row 0: 4 + 1 = 5
    assert score("logic_puzzle", sample, "0 2, 0 0, 1 0", "paper") == 0.0
    assert score("logic_puzzle", sample, "0 2, 1 1") == 0.0             # one cell short


def test_logic_puzzle_fidelity_variants():
    sample = grid_sample([[1, 2, 4], [3, 1, 2], [2, 3, 1]], 3, "sum_le_4")
    no_start = "0 0, 1 2, 2 1"        # 1, 2, 3 and every line <= 4, but (0,2) is missing
    assert score("logic_puzzle", sample, no_start, "paper") == 1.0
    assert score("logic_puzzle", sample, no_start) == 0.0
    repeated_cell = "0 2, 0 2, 1 1"   # the original counted 3 cells and checked 2
    assert score("logic_puzzle", sample, repeated_cell, "paper") == 1.0
    assert score("logic_puzzle", sample, repeated_cell) == 0.0
    repeated_value = "0 2, 1 0, 2 1"  # 4, 3, 3
    assert score("logic_puzzle", sample, repeated_value, "paper") == 1.0
    assert score("logic_puzzle", sample, repeated_value) == 0.0
    off_board = "0 2, 1 1, 5 5"
    assert score("logic_puzzle", sample, off_board, "paper") == 1.0
    assert score("logic_puzzle", sample, off_board) == 0.0


def test_logic_puzzle_product_rule_and_solver_by_hand():
    # Negatives only at the corners, which form the one even cycle; the start (0,2) is negative,
    # so any answer uses all four corners plus two of the five positive cells.
    grid = [[-1, 4, -2], [3, 5, 6], [-3, 7, -4]]
    sample = grid_sample(grid, 6, "product_gt_0")
    assert score("logic_puzzle", sample, "0 2, 0 0, 2 0, 2 2, 1 1, 0 1") == 1.0
    assert score("logic_puzzle", sample, "0 2, 0 0, 2 0, 1 1, 0 1, 1 2") == 0.0  # row 2: -3 alone
    task = symbench.get_task("logic_puzzle")
    solved = task.solve(sample)
    assert score("logic_puzzle", sample, solved) == 1.0
    assert {"0 0", "0 2", "2 0", "2 2"} <= set(solved.split(", "))
    assert solved.startswith("0 2")
    # No even cycle of negatives: the five positive cells are the only answer.
    only_positive = grid_sample([[2, -3, 5], [-4, 6, -1], [7, -2, 3]], 5, "product_gt_0")
    assert set(task.solve(only_positive).split(", ")) == {"0 2", "0 0", "1 1", "2 0", "2 2"}
    with pytest.raises(ValueError):
        task.solve(grid_sample([[2, -3, 5], [-4, 6, -1], [7, -2, 3]], 6, "product_gt_0"))


def test_logic_puzzle_loader_replaces_invalid_labels_and_marks_unsolvable(tmp_path):
    root = tmp_path / "logic_puzzle_dataset"
    question = "Select 3 cells ... <<<0 3, 1 0, 2 4>>>"
    # sample_0: valid label. sample_1: label breaks column 0 (2 + 3), another selection exists.
    # sample_2: no three distinct values fit the rule at all.
    for i, (grid, label) in enumerate([([[1, 2], [3, 1]], [[0, 1], [1, 0], [0, 0]]),
                                       ([[2, 1], [3, 3]], [[0, 1], [1, 0], [0, 0]]),
                                       ([[3, 1], [2, 3]], [[0, 1], [1, 0], [0, 0]])]):
        write_original(root, f"sample_{i}", question, {"grid": grid, "solution": label, "complexity": 1,
                                                        "constraints": {"type": "sum_le_4"}})
    samples = symbench.load_original("logic_puzzle", tmp_path)
    assert [s.id for s in samples] == ["sample_0", "sample_1", "sample_2"]
    assert samples[0].answer == "0 1, 1 0, 0 0" and "stored_label" not in samples[0].meta
    assert samples[1].answer == "0 1, 0 0, 1 1" and samples[1].meta["stored_label"] == "0 1, 1 0, 0 0"
    assert samples[2].answer is None and samples[2].meta["unsolvable"]
    assert symbench.get_task("logic_puzzle").score(samples[2], "<<<0 1, 1 0, 0 0>>>") == 0.0


# ---- letter_logic_diagram -------------------------------------------------------------------

# (r + c) mod 7 over a..g: every row and column a permutation, the minor diagonal all 'g'.
CYCLIC = [[LETTERS[(r + c) % 7] for c in range(7)] for r in range(7)]


def letters_sample(blanks):
    grid = [[None if r * 7 + c in blanks else CYCLIC[r][c] for c in range(7)] for r in range(7)]
    return Sample("letter_logic_diagram", "hand", "q", None, 1, {"grid": grid, "solution": CYCLIC})


def rows_text(square):
    return "\n".join(",".join(row) for row in square)


def test_letter_logic_scorer_by_hand():
    sample = letters_sample(set(range(0, 49, 3)))
    assert score("letter_logic_diagram", sample, rows_text(CYCLIC)) == 1.0
    assert score("letter_logic_diagram", sample, json.dumps(CYCLIC)) == 1.0
    assert score("letter_logic_diagram", sample, "[" + ",".join("[" + ",".join(r) + "]" for r in CYCLIC) + "]") == 1.0
    assert score("letter_logic_diagram", sample, "\n".join("".join(r) for r in CYCLIC).upper()) == 1.0
    assert score("letter_logic_diagram", sample, rows_text(CYCLIC[:6])) == 0.0
    # (r - c) mod 7 is a Latin square whose minor diagonal is not constant.
    skew = [[LETTERS[(r - c) % 7] for c in range(7)] for r in range(7)]
    assert score("letter_logic_diagram", letters_sample(set(range(49))), rows_text(skew)) == 0.0


def test_letter_logic_fidelity_variants():
    # Exchanging a and b gives another valid square (the diagonal stays g).
    relabelled = [[{"a": "b", "b": "a"}.get(x, x) for x in row] for row in CYCLIC]
    assert follows_rules(relabelled)
    open_grid = letters_sample(set(range(49)))
    assert score("letter_logic_diagram", open_grid, rows_text(relabelled)) == 1.0
    assert score("letter_logic_diagram", open_grid, rows_text(relabelled), "paper") == 0.0
    assert score("letter_logic_diagram", open_grid, rows_text(CYCLIC), "paper") == 1.0
    with_givens = letters_sample({0})
    assert score("letter_logic_diagram", with_givens, rows_text(relabelled)) == 0.0


def test_letter_logic_solver_and_generator():
    task = symbench.get_task("letter_logic_diagram")
    one_blank = letters_sample({10})
    assert task.solve(one_blank) == rows_text(CYCLIC)
    wide_open = letters_sample(set(range(49)) - {6})  # only (0,6) = g is given
    assert score("letter_logic_diagram", wide_open, task.solve(wide_open)) == 1.0
    for level in task.levels:
        for sample in task.generate(3, complexity=level, seed=5):
            assert follows_rules(sample.meta["solution"])
            blanks = sum(x is None for row in sample.meta["grid"] for x in row)
            assert blanks == min(10 + 5 * level, 30)


# ---- permutations_and_combinations ----------------------------------------------------------

def shelf_sample(items, constraints_text):
    return Sample("permutations_and_combinations", "hand", "q", None, 7,
                  {"items": items, "constraints_text": constraints_text})


def test_permutation_constraints_parse_all_five_kinds():
    text = ("1. Book A must be placed in position 3.\n2. Book B must be to the left of book C.\n"
            "3. Book C cannot be placed in position 1.\n4. Book D must be to the right of book A.\n"
            "5. Book E must be adjacent to book F.\nnot a constraint")
    assert parse_constraints(text) == [("fixed_position", "A", 3), ("left_of", "B", "C"),
                                       ("not_in_position", "C", 1), ("right_of", "D", "A"),
                                       ("adjacent_to", "E", "F")]


def test_permutations_scorer_and_solver_by_hand():
    # A is fixed at 2 and B left of C: B A C is the only arrangement.
    sample = shelf_sample(["A", "B", "C"], "1. Book A must be placed in position 2.\n"
                                           "2. Book B must be to the left of book C.")
    assert symbench.get_task("permutations_and_combinations").solve(sample) == '["B", "A", "C"]'
    for spelling in ('["B", "A", "C"]', "B, A, C", "['B','A','C']", "[B, A, C]"):
        assert score("permutations_and_combinations", sample, spelling) == 1.0
    assert score("permutations_and_combinations", sample, '["C", "A", "B"]') == 0.0
    assert score("permutations_and_combinations", sample, "[]") == 0.0
    adjacent = shelf_sample(["A", "B", "C"], "1. Book A must be adjacent to book C.\n"
                                             "2. Book B must be to the right of book C.")
    assert score("permutations_and_combinations", adjacent, '["A", "C", "B"]') == 1.0
    assert score("permutations_and_combinations", adjacent, '["C", "B", "A"]') == 0.0


def test_permutations_fidelity_variants():
    sample = shelf_sample(["A", "B", "C"], "1. Book A cannot be placed in position 1.")
    repeated = '["B", "B", "A"]'  # not a permutation, yet no constraint fails
    assert score("permutations_and_combinations", sample, repeated, "paper") == 1.0
    assert score("permutations_and_combinations", sample, repeated) == 0.0


# ---- logical_equation -----------------------------------------------------------------------

def equation_sample(values, lines):
    question = ("Letters A, B, C ... stand for different numbers.\n"
                + "\n".join(f"{k}. {line}" for k, line in enumerate(lines, 1))
                + "\n\nAnswer like <<<[1, 2, 3]>>>.")
    return Sample("logical_equation", "hand", question, None, 1, {"values": values})


def test_logical_equation_scorer_and_fidelity_by_hand():
    # A + B = 3 and C = 2B over {1, 2, 4}: with distinct values only A=1, B=2, C=4.
    sample = equation_sample([1, 2, 4], ["A + B = 3", "C = 2.0B"])
    for spelling in ("[1, 2, 4]", "1, 2, 4", "[1.0, 2.0, 4.0]"):
        assert score("logical_equation", sample, spelling) == 1.0
    assert score("logical_equation", sample, "[2, 1, 4]") == 0.0
    assert score("logical_equation", sample, "[1, 2]") == 0.0
    # A=2, B=1, C=2 meets both equations with values from the set, but repeats 2.
    assert score("logical_equation", sample, "[2, 1, 2]", "paper") == 1.0
    assert score("logical_equation", sample, "[2, 1, 2]") == 0.0
    assert symbench.get_task("logical_equation").solve(sample) == "[1, 2, 4]"


def test_logical_equation_parses_every_form_and_uses_exact_arithmetic():
    assert parse_constraint("A - C = -44") == ("-", "A", "C", -44)
    assert parse_constraint("I = 3.0D")[:3] == ("*", "I", "D")
    assert parse_constraint("C > H") == (">", "C", "H", None)
    assert parse_constraint("C < H") == ("<", "C", "H", None)
    with pytest.raises(ValueError):
        parse_constraint("A ** B = 3")
    # 1.1 * 10 is 11.000000000000002 in floating point; here it is exactly 11.
    sample = equation_sample([10, 11, 12], ["B = 1.1A", "C > B"])
    assert score("logical_equation", sample, "[10, 11, 12]") == 1.0
    letters = ["A", "B", "C"]
    assert len(solve_assignments(letters, [1, 2, 3], [parse_constraint("A > B")])) == 2
    assert solve_assignments(letters, [1, 2, 3], [parse_constraint("A > B"), parse_constraint("B > C")]) \
        == [{"A": 3, "B": 2, "C": 1}]


def test_logical_equation_generator_gives_unique_solutions():
    task = symbench.get_task("logical_equation")
    for level in (1, 10):
        letters_count, constraint_count, values = CONFIGS[level - 1]
        for sample in task.generate(3, complexity=level, seed=2):
            lines = [line for line in sample.question.splitlines() if line[:1].isdigit()]
            assert len(lines) == constraint_count
            constraints = [parse_constraint(line.split(". ", 1)[1]) for line in lines]
            letters = [chr(ord("A") + i) for i in range(letters_count)]
            assert len(solve_assignments(letters, sorted(values), constraints, limit=2)) == 1


def test_logical_equation_loader_reads_the_special_folder_names(tmp_path):
    root = tmp_path / "logical_equation"
    question = ("There are 9 letters ...\n1. A + B = 3\n2. C = 2.0B\n\nReturn <<<[1, 2, 3]>>>.")
    write_original(root, "sample_9_7_1", question, [1, 2, 4, 3, 5, 6, 7, 8, 9])
    write_original(root, "sample_15_14_0", question, list(range(1, 16)))
    write_original(root, "sample_9_7_0", question, [1, 2, 4, 3, 5, 6, 7, 8, 9])
    samples = symbench.load_original("logical_equation", tmp_path)
    assert [(s.id, s.complexity) for s in samples] == [
        ("sample_9_7_0", 1), ("sample_9_7_1", 1), ("sample_15_14_0", 10)]
    assert samples[0].answer == "[1, 2, 4, 3, 5, 6, 7, 8, 9]"
    with pytest.raises(FileNotFoundError, match="logical_equation"):
        symbench.load_original("logical_equation", tmp_path / "elsewhere")
