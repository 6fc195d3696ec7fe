"""Task-specific tests for the "strings" group: statistical_counting, string_insertion,
string_deletion_and_modification (symbench/strings.py), string_synthesis, string_splitting,
synthesis_decomposition (symbench/machines.py) and constrained_linear_arrangement
(symbench/linear_arrangement.py).

Every expected value below was worked out by hand from the rules; the samples are made up."""

import json
import random

import pytest

import symbench
from symbench.core import Sample
from symbench.linear_arrangement import animal_result, elements_result, stick_result
from symbench.machines import (BLOCK_PATTERN, CROP_OR_PRODUCT_PATTERN, EXCHANGE_ARROW,
                               MACHINE_OR_PART_PATTERN, SPLITTING_ARROW, SPLITTING_METHODS,
                               SYNTHESIS_METHODS, BLOCKS, parse_counts, read_method,
                               run_each_to_exhaustion, run_round_robin)
from symbench.strings import (EDIT_RULES, INSERTION_RULES, apply_insertions, parse_edit_rule,
                              run_edits, run_score)

IDS = ["statistical_counting", "string_insertion", "string_deletion_and_modification",
       "string_synthesis", "string_splitting", "synthesis_decomposition",
       "constrained_linear_arrangement"]


def hand_sample(task_id: str, answer: str, meta: dict) -> Sample:
    return Sample(task=task_id, id="hand", question="(made up)", answer=answer, complexity=None,
                  meta=meta)


def score(task_id: str, sample: Sample, answer: str, variant: str = "corrected") -> float:
    return symbench.get_task(task_id).score(sample, f"<<<{answer}>>>", variant=variant)


# ---- statistical_counting -------------------------------------------------------------------

ABC_RULES = [{"letter": letter, "score": i + 1, "min_consecutive": 2}
             for i, letter in enumerate("ABC")]


def test_counting_scores_each_maximal_run_once():
    # AA -> 1, BBB -> 2 (once, not per pair), C and the lone A add nothing
    assert run_score("AABBBCA", ABC_RULES) == 3
    assert run_score("ABCABC", ABC_RULES) == 0
    assert run_score("CCACC", ABC_RULES) == 6


def test_counting_scorer_accepts_number_variants_only():
    sample = hand_sample("statistical_counting", "3", {"sequence": "AABBBCA", "rules": ABC_RULES})
    assert symbench.get_task("statistical_counting").solve(sample) == "3"
    for good in ["3", " 3 ", "3.0", "[3]"]:
        assert score("statistical_counting", sample, good) == 1.0, good
    for bad in ["4", "3.5", "", "three", "33"]:
        assert score("statistical_counting", sample, bad) == 0.0, bad


# ---- string_insertion -----------------------------------------------------------------------

def test_insertion_finds_overlapping_triggers_in_the_original_string():
    assert apply_insertions("ABCDE", INSERTION_RULES) == "ABCDAEB"      # ABCD then BCDE
    assert apply_insertions("DEABCD", INSERTION_RULES) == "DEABDCEDA"   # DEAB, EABC, ABCD
    assert apply_insertions("AABBCC", INSERTION_RULES) == "AABBCC"


def test_insertion_scorer_is_exact_up_to_wrapping():
    sample = hand_sample("string_insertion", "ABCDAEB",
                         {"original_string": "ABCDE", "rules": INSERTION_RULES})
    for good in ["ABCDAEB", '"ABCDAEB"', "[ABCDAEB]", " ABCDAEB "]:
        assert score("string_insertion", sample, good) == 1.0, good
    for bad in ["abcdaeb", "ABCDAE", "ABCDEAB", "A B C D A E B"]:
        assert score("string_insertion", sample, bad) == 0.0, bad


# ---- string_deletion_and_modification -------------------------------------------------------

def test_every_edit_rule_reads_in_both_wordings():
    for rule in EDIT_RULES:
        assert parse_edit_rule(rule.text) is rule
        assert parse_edit_rule("  " + rule.original_text.upper() + " ") is rule
    with pytest.raises(ValueError):
        parse_edit_rule("If the string is nice, leave it.")


def test_edit_rules_follow_the_original_semantics():
    rules = {rule.key: rule.apply for rule in EDIT_RULES}
    assert rules["ca-inside"]("cabca") == "cab"          # the leading 'ca' is skipped
    assert rules["ca-inside"]("cab") is None
    assert rules["drop-middle"]("aaaaaaaabbbbbbbb") == "aaaaaaaabbbbbbb"   # index 16 // 2
    assert rules["drop-middle"]("a" * 15) is None
    assert rules["cb-start"]("cbab") == "aaa"
    assert rules["even-b"]("abcb") == "abcbab" and rules["even-b"]("acca") is None


def test_edits_apply_the_first_matching_rule_until_none_applies():
    keys = ["ab-start", "bb-end", "ca-end"]
    # abcabb -(ab-start)-> cacabb -(bb-end)-> caca -(ca-end)-> cac
    assert run_edits("abcabb", keys, 100) == ["abcabb", "cacabb", "caca", "cac"]
    with pytest.raises(ValueError, match="still apply"):
        run_edits("abcabb", keys, 2)


def test_deletion_scorer_variants():
    sample = hand_sample("string_deletion_and_modification", "cac",
                         {"initial_string": "abcabb", "rules": ["ab-start", "bb-end", "ca-end"]})
    task = symbench.get_task("string_deletion_and_modification")
    assert task.solve(sample) == "cac"
    assert score("string_deletion_and_modification", sample, '"cac"') == 1.0
    # a second layer of quotes survives the shared extractor: only the corrected rule strips it
    assert task.score_answer(sample, "'cac'", "corrected") == 1.0
    assert task.score_answer(sample, "'cac'", "paper") == 0.0
    assert task.score_answer(sample, "cac", "paper") == 1.0
    for bad in ["ca", "cacc", "", "[]"]:
        assert task.score_answer(sample, bad, "corrected") == 0.0, bad


def test_generated_deletion_samples_need_the_promised_number_of_edits():
    task = symbench.get_task("string_deletion_and_modification")
    for level in task.levels:
        minimum = task.knobs(level)["min_edits"]
        for sample in task.generate(10, complexity=level, seed=3):
            states = run_edits(sample.meta["initial_string"], sample.meta["rules"], 1000)
            assert len(states) - 1 >= minimum and states[-1] == sample.answer != ""


# ---- the rule machines ----------------------------------------------------------------------

def test_round_robin_runs_each_method_at_most_once_per_visit():
    # 1A 1B 1C: M1 A->2X+Y; M4 B+C->A; M5 X+Y->Z; M1 again; M5 again; nothing runs any more
    stock = run_round_robin({"A": 1, "B": 1, "C": 1}, SPLITTING_METHODS)
    assert [stock.get(item, 0) for item in "ABCXYZ"] == [0, 0, 0, 2, 0, 2]


def test_synthesis_runs_each_rule_to_exhaustion_which_differs_from_round_robin():
    start = {"[A]": 2, "[B]": 2, "[C]": 2}
    greedy = run_each_to_exhaustion(start, SYNTHESIS_METHODS)
    assert [greedy.get(block, 0) for block in BLOCKS] == [0, 0, 0, 2, 0, 0, 0, 0, 0]
    # once per visit: rule 1, rule 2, (3 and 4 cannot), rule 5 -> a different end state
    once = run_round_robin(start, SYNTHESIS_METHODS)
    assert [once.get(block, 0) for block in BLOCKS] == [0, 0, 1, 0, 0, 0, 1, 1, 0]


def test_machines_refuse_to_run_forever():
    looping = [{"inputs": {"A": 1}, "outputs": {"B": 1}}, {"inputs": {"B": 1}, "outputs": {"A": 1}}]
    with pytest.raises(ValueError):
        run_round_robin({"A": 1}, looping)
    with pytest.raises(ValueError):
        run_each_to_exhaustion({"A": 1}, looping)


@pytest.mark.parametrize("sentence, expected", [
    ("One unit of machine A can be dismantled into two units of part X and one unit of part Y "
     "per round.", ({"A": 1}, {"X": 2, "Y": 1})),
    ("Dismantling a single machine A yields two part X and one part Y each cycle.",
     ({"A": 1}, {"X": 2, "Y": 1})),
    ("Dismantling two machine B units produces one part X each cycle.", ({"B": 2}, {"X": 1})),
    ("Each round, two machines C break down into one part Y.", ({"C": 2}, {"Y": 1})),
    ("Combining one machine B and one machine C results in one machine A each cycle.",
     ({"B": 1, "C": 1}, {"A": 1})),
    ("Every round, merging one machine B with one machine C creates one machine A.",
     ({"B": 1, "C": 1}, {"A": 1})),
    ("Each round, one part X and one part Y merge to form one part Z.",
     ({"X": 1, "Y": 1}, {"Z": 1})),
    ("dismantle 2 machines B into 1 part X.", ({"B": 2}, {"X": 1})),
])
def test_splitting_method_sentences_in_the_original_phrasings(sentence, expected):
    method = read_method(sentence, MACHINE_OR_PART_PATTERN, SPLITTING_ARROW)
    assert (method["inputs"], method["outputs"]) == expected


def test_synthesis_and_exchange_sentences():
    method = read_method("One {A} and one {C} can be combined to form one (A) and one (B).",
                         BLOCK_PATTERN, r"\bform\b")
    assert method == {"inputs": {"{A}": 1, "{C}": 1}, "outputs": {"(A)": 1, "(B)": 1}}
    method = read_method("2 units of crop C and 1 unit of product X can be exchanged for 1 unit "
                         "of product Y", CROP_OR_PRODUCT_PATTERN, EXCHANGE_ARROW)
    assert method == {"inputs": {"C": 2, "X": 1}, "outputs": {"Y": 1}}


def test_parse_counts():
    assert parse_counts("[1, 0, 12]", 3) == [1, 0, 12]
    assert parse_counts('["1", "0", "12"]', 3) == [1, 0, 12]
    assert parse_counts("1 0 12", 3) == [1, 0, 12]
    assert parse_counts("1012", 4) == [1, 0, 1, 2]      # one digit per count
    assert parse_counts("1012", 3) is None              # ambiguous: 10,1,2 or 1,0,12 or ...
    assert parse_counts("A=1, B=0, X=3", 3) is None
    assert parse_counts(", ".join(["1"] * 10_000), 3) is None


def synthesis_sample(counts: dict) -> Sample:
    return hand_sample("string_synthesis", None, {
        "initial": counts, "methods": SYNTHESIS_METHODS, "report": BLOCKS})


def test_synthesis_scorer_variants():
    task = symbench.get_task("string_synthesis")
    # 3 [A], 2 [B], 1 [C]: rule 1 once, rule 2 once, rule 5 once
    small = synthesis_sample({"[A]": 3, "[B]": 2, "[C]": 1})
    assert task.solve(small) == "[1, 0, 0, 0, 0, 0, 1, 1, 0]"
    for answer in ["[1, 0, 0, 0, 0, 0, 1, 1, 0]", "100000110", "1,0,0,0,0,0,1,1,0"]:
        assert score("string_synthesis", small, answer) == 1.0, answer
        assert score("string_synthesis", small, answer, "paper") == 1.0, answer
    # the paper rule drops single quotes only, so double-quoted counts fail there
    quoted = ", ".join(f'"{n}"' for n in [1, 0, 0, 0, 0, 0, 1, 1, 0])
    assert task.score_answer(small, quoted, "corrected") == 1.0
    assert task.score_answer(small, quoted, "paper") == 0.0
    assert score("string_synthesis", small, "[1, 0, 0, 0, 0, 0, 1, 0, 1]") == 0.0
    # 12 [A], 1 [B], 1 [C]: rule 1 once leaves 11 [A]; one digit per count cannot say 11
    large = synthesis_sample({"[A]": 12, "[B]": 1, "[C]": 1})
    assert task.solve(large) == "[11, 0, 0, 1, 0, 0, 0, 0, 0]"
    assert score("string_synthesis", large, "[11, 0, 0, 1, 0, 0, 0, 0, 0]") == 1.0
    assert score("string_synthesis", large, "[11, 0, 0, 1, 0, 0, 0, 0, 0]", "paper") == 0.0


def splitting_sample(counts: dict) -> Sample:
    return hand_sample("string_splitting", None, {
        "initial": counts, "methods": SPLITTING_METHODS, "report": list("ABCXYZ")})


def test_splitting_scorer_variants():
    task = symbench.get_task("string_splitting")
    sample = splitting_sample({"A": 1, "B": 1, "C": 1})
    assert task.solve(sample) == "[0, 0, 0, 2, 0, 2]"
    for answer in ['["0", "0", "0", "2", "0", "2"]', "000202", "0, 0, 0, 2, 0, 2"]:
        assert score("string_splitting", sample, answer) == 1.0, answer
        assert score("string_splitting", sample, answer, "paper") == 1.0, answer
    # 10 machines A alone: ten rounds of M1 then M5 -> [0, 0, 0, 10, 0, 10]
    many = splitting_sample({"A": 10, "B": 0, "C": 0})
    assert task.solve(many) == "[0, 0, 0, 10, 0, 10]"
    assert score("string_splitting", many, "[0, 0, 0, 10, 0, 10]") == 1.0
    # '000' + '10' + '0' + '10' == '000' + '100' + '1' + '0': only the paper rule is fooled
    wrong = "[0, 0, 0, 100, 1, 0]"
    assert score("string_splitting", many, wrong, "paper") == 1.0
    assert score("string_splitting", many, wrong) == 0.0


def test_decomposition_scorer_variants():
    task = symbench.get_task("synthesis_decomposition")
    methods = [{"inputs": {"A": 2, "B": 1, "C": 1}, "outputs": {"X": 3}},
               {"inputs": {"A": 1, "B": 1}, "outputs": {"C": 2}},
               {"inputs": {"C": 2, "X": 1}, "outputs": {"Y": 1}},
               {"inputs": {"A": 1, "X": 2}, "outputs": {"Y": 1}}]
    sample = hand_sample("synthesis_decomposition", None, {
        "initial": {"A": 5, "B": 2, "C": 4}, "methods": methods, "report": list("ABCXY")})
    # M1: 3,1,3,X3  M2: 2,0,5  M3: C3,X2,Y1  M4: A1,X0,Y2  then nothing can run
    assert task.solve(sample) == "[1, 0, 3, 0, 2]"
    assert score("synthesis_decomposition", sample, "1, 0, 3, 0, 2", "paper") == 1.0
    assert score("synthesis_decomposition", sample, "[1, 0, 3, 0, 2]", "paper") == 0.0
    for answer in ["[1, 0, 3, 0, 2]", "1, 0, 3, 0, 2", "['1', '0', '3', '0', '2']"]:
        assert score("synthesis_decomposition", sample, answer) == 1.0, answer
    for answer in ["[1, 0, 3, 0]", "[1, 0, 3, 0, 2, 0]", "[1, 0, 3, 2, 0]"]:
        assert score("synthesis_decomposition", sample, answer) == 0.0, answer


ORIGINAL_STYLE_DECOMPOSITION = (
    "Xiao Li is a farm owner who grows A, B, and C. He can exchange these crops for agricultural "
    "products X and Y. He has discovered the following methods to increase the farm's yield:\n\n"
    "Method 1: 2 units of crop A and 1 unit of crop B and 1 unit of crop C can be exchanged for "
    "3 units of product X, and this can be done only once per cycle.\n\n"
    "Method 2: 1 unit of crop A and 1 unit of crop B can be exchanged for 2 units of product C, "
    "and this can be done only once per cycle.\n\n"
    "Method 3: 2 units of crop C and 1 unit of product X can be exchanged for 1 unit of product "
    "Y, and this can be done only once per cycle.\n\n"
    "Method 4: 1 unit of crop A and 2 units of product X can be exchanged for 1 unit of product "
    "Y, and this can be done only once per cycle.\n\n"
    "Xiao Li continuously cycles through these methods in the given order.\n\n"
    "Initially there are 5 units of crop A, 2 units of crop B, 4 units of crop C.\n\n"
    "Then wrap your final answer in <<<>>> format as a list showing [remaining_A, remaining_B, "
    "remaining_C, obtained_X, obtained_Y].")


def test_decomposition_loader_reads_an_original_style_question(tmp_path):
    folder = tmp_path / "synthesis_decomposition_dataset" / "sample_0"
    folder.mkdir(parents=True)
    (folder / "question.txt").write_text(ORIGINAL_STYLE_DECOMPOSITION)
    (folder / "solution.json").write_text(json.dumps(
        {"initial_state": {"A": 5, "B": 2, "C": 4}, "complexity": 5,
         "solution": {"answer": ["1", "0", "3", "0", "2"], "process": []}}))
    task = symbench.get_task("synthesis_decomposition")
    [sample] = task.load_original(tmp_path)
    assert sample.answer == "[1, 0, 3, 0, 2]" and sample.meta["report"] == list("ABCXY")
    assert sample.meta["initial"] == {"A": 5, "B": 2, "C": 4}
    assert task.solve(sample) == sample.answer


@pytest.mark.parametrize("task_id", IDS)
def test_missing_original_folder_is_a_clear_error(task_id, tmp_path):
    with pytest.raises(FileNotFoundError, match="sample_0"):
        symbench.get_task(task_id).load_original(tmp_path)


# ---- constrained_linear_arrangement ---------------------------------------------------------

def test_game_results_from_the_players_side():
    # elements: Wood A generates Fire B (loss), overcomes Earth C (win); Metal D overcoming
    # Wood and Water E generating Wood are draws, because only the player's card is judged
    assert [elements_result("A", card) for card in "ABCDE"] == ["draw", "loss", "win", "draw",
                                                                 "draw"]
    assert [stick_result("A", card) for card in "ABCD"] == ["draw", "win", "draw", "loss"]
    assert animal_result("H", "A") == "win" and animal_result("A", "H") == "loss"
    assert animal_result("B", "C") == "win" and animal_result("D", "D") == "draw"


def arrangement_sample(game_type: str, moves: str, results: list[str], truth: str) -> Sample:
    return hand_sample("constrained_linear_arrangement", ",".join(truth), {
        "game_type": game_type, "player_moves": list(moves), "results": results})


def test_arrangement_verifier_accepts_any_consistent_draw_card():
    # A vs C win, B vs D win (Fire overcomes Metal), C vs A draw
    sample = arrangement_sample("elements", "ABC", ["win", "win", "draw"], "CDA")
    task = symbench.get_task("constrained_linear_arrangement")
    assert task.solve(sample) == "C,D,A"
    for good in ["C,D,A", "C,D,B", "[C, D, B]", "c, d, a", "C D A", "C,D,C"]:
        assert score("constrained_linear_arrangement", sample, good) == 1.0, good
    for bad in ["C,D,E", "C,D,D", "C,E,A", "C,D", "C,D,A,B", "C,D,Z"]:
        assert score("constrained_linear_arrangement", sample, bad) == 0.0, bad
    assert score("constrained_linear_arrangement", sample, "[C, D, A]", "paper") == 0.0
    assert score("constrained_linear_arrangement", sample, "C, D, A", "paper") == 1.0
    # the original skips the card check on element draws
    assert score("constrained_linear_arrangement", sample, "C,D,Z", "paper") == 1.0


def test_arrangement_animal_rules_and_the_paper_mouse_elephant_slip():
    sample = arrangement_sample("animal", "HBC", ["loss", "win", "draw"], "DEC")
    assert score("constrained_linear_arrangement", sample, "D,E,C") == 1.0
    assert score("constrained_linear_arrangement", sample, "G,H,C") == 1.0
    assert score("constrained_linear_arrangement", sample, "D,D,C") == 0.0   # no repeats
    # the Mouse beats the Elephant, so an Elephant cannot explain the Mouse's loss ...
    assert score("constrained_linear_arrangement", sample, "A,E,C") == 0.0
    # ... but the original's rank check lets it through
    assert score("constrained_linear_arrangement", sample, "A,E,C", "paper") == 1.0


def test_arrangement_perturb_always_breaks_a_round():
    task = symbench.get_task("constrained_linear_arrangement")
    rng = random.Random(5)
    for level in task.levels:
        for sample in task.generate(30, complexity=level, seed=11):
            for answer in (sample.answer, task.solve(sample)):
                assert task.score(sample, f"<<<{task.perturb(sample, answer, rng)}>>>") == 0.0


@pytest.mark.parametrize("task_id", IDS)
def test_levels_change_the_instances(task_id):
    task = symbench.get_task(task_id)
    questions = {level: task.generate(1, complexity=level, seed=0)[0].question
                 for level in task.levels}
    assert len(set(questions.values())) == len(task.levels)
    assert task.default_level in task.levels
