"""Task-specific tests of the BBH group: date_understanding, web_of_lies, logical_deduction,
navigation, letters, cryptanalysis. Hand-worked instances for every solver and scorer, both
variants where the spec has a Fidelity note, and checks of each generator against an independent
reading of its own question text."""

import json
import math
import random
import re
from datetime import date
from pathlib import Path

import pytest

import symbench
from symbench.bbh import chosen_option, same_text, solve_web_of_lies_text, yes_no
from symbench.bbh_dates import asked_offset, pick_option, shift, solve_bbh_date, today_from_context
from symbench.bbh_logic import all_orderings, consistent_orderings, position_of, solve_text
from symbench.cryptanalysis import consistent_passwords, feedback, read_original_feedback
from symbench.letters import made_up_word, parse_answer

REFERENCE = Path(__file__).resolve().parent / "symbench-reference" / "dataset_gather"
BBH_IDS = ("date_understanding", "web_of_lies", "logical_deduction", "navigation")


def task(task_id):
    return symbench.get_task(task_id)


# ---- shared BBH pieces ----------------------------------------------------------------------

@pytest.mark.parametrize("task_id", BBH_IDS)
def test_bbh_loader_takes_every_fourth_example(task_id):
    path = REFERENCE / "BIG-Bench-Hard" / "bbh" / f"{task(task_id).file_stem}.json"
    examples = json.loads(path.read_text())["examples"]
    samples = task(task_id).load_original(REFERENCE)
    assert [s.id for s in samples] == [f"sample_{i}" for i in range(0, len(examples), 4)]
    assert len(samples) == math.ceil(len(examples) / 4)
    for sample, example in zip(samples, examples[::4]):
        assert sample.question.startswith(example["input"]) and sample.question.endswith("<<<answer>>>.")
        assert sample.answer == example["target"]


def test_bbh_loader_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="navigate.json"):
        task("navigation").load_original(tmp_path)


def test_yes_no_reads_the_usual_spellings():
    for text in ["Yes", "yes.", "**Yes**", "(Yes)", "- Yes", "Answer: Yes", "True"]:
        assert yes_no(text) == "Yes", text
    for text in ["No", "no!", "False", "The answer is No"]:
        assert yes_no(text) == "No", text
    for text in ["", "Yes and no", "Maybe", "Y", "Yes" * 300]:
        assert yes_no(text) is None, text


def test_choice_reading_accepts_letter_or_text_and_refuses_contradictions():
    options = {"A": "01/01/2000", "B": "02/29/2000", "C": "03/01/2000"}
    for text in ["(B)", "B", "b", "B)", "(B) 02/29/2000", "B. 02/29/2000", "Answer: (B)", "02/29/2000"]:
        assert chosen_option(options, text, same_text) == "B", text
    for text in ["(B) 01/01/2000", "(D)", "A or B", "", "(B)(C)"]:
        assert chosen_option(options, text, same_text) != "B", text


@pytest.mark.parametrize("task_id", BBH_IDS)
def test_judge_hook_reads_the_verdict_per_variant(task_id, monkeypatch):
    t = task(task_id)
    sample = t.generate(1, seed=0)[0]
    verdicts = {"right": "<<<[Yes, Correct]>>>", "incorrect": "<<<[No, Incorrect]>>>",
                "wrong": "<<<[No, Wrong]>>>"}
    for key, reply in verdicts.items():
        monkeypatch.setattr(t, "judge", lambda question, target, answer, reply=reply: reply)
        corrected = t.score(sample, "<<<anything>>>")
        paper = t.score(sample, "<<<anything>>>", variant="paper")
        assert (corrected, paper) == {"right": (1.0, 1.0), "incorrect": (0.0, 1.0), "wrong": (0.0, 0.0)}[key]
    monkeypatch.setattr(t, "judge", None)
    assert t.score(sample, "<<<anything>>>") == 0.0


# ---- web of lies ----------------------------------------------------------------------------

def test_web_of_lies_hand_worked():
    text = ("Question: Ana lies. Bo says Ana tells the truth. Cy says Bo lies. Di says Cy lies. "
            "Does Di tell the truth?")
    # Ana lies, so Bo (vouching for her) lies, Cy (calling Bo a liar) is honest, Di lies.
    assert solve_web_of_lies_text(text) == "No"
    assert solve_web_of_lies_text(text.replace("Ana lies.", "Ana tells the truth.")) == "Yes"


def test_web_of_lies_generated_text_agrees_with_its_structure_and_is_balanced():
    t = task("web_of_lies")
    for level in t.levels:
        samples = t.generate(30, complexity=level, seed=1)
        assert all(solve_web_of_lies_text(s.question) == s.answer for s in samples)
        assert all(len(s.meta["names"]) == 2 * level + 1 for s in samples)
    answers = [s.answer for s in t.generate(400, seed=2)]
    assert 0.4 < answers.count("Yes") / len(answers) < 0.6


# ---- navigation -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Take 3 steps. Turn around. Take 3 steps. Turn right.", "Yes"),
    ("Take 2 steps. Turn left. Take 2 steps. Turn left. Take 2 steps. Turn left. Take 2 steps.", "Yes"),
    ("Take 2 steps. Turn left. Take 2 steps. Turn right. Take 2 steps.", "No"),
    ("Always face forward. Take 2 steps left. Take 1 step right. Take 1 step right.", "Yes"),
    ("Always face forward. Take 4 steps forward. Take 4 steps left. Take 4 steps backward.", "No"),
])
def test_navigation_hand_worked(text, expected):
    sample = symbench.Sample(task="navigation", id="x", question=text, answer=expected, complexity=None,
                             meta={"bbh_input": text, "options": {}})
    assert task("navigation").solve(sample) == expected


def test_navigation_generated_text_agrees_and_yes_no_are_balanced():
    t = task("navigation")
    for level in t.levels:
        for sample in t.generate(30, complexity=level, seed=3):
            from_text = dict(sample.meta, bbh_input=sample.question)
            del from_text["moves"]
            assert t.solve(symbench.Sample(**{**sample.__dict__, "meta": from_text})) == sample.answer
            steps = sum(move[0] == "step" for move in sample.meta["moves"])
            assert t.knobs(level)["min_steps"] <= steps <= t.knobs(level)["max_steps"]
    answers = [s.answer for s in t.generate(400, seed=4)]
    assert 0.4 < answers.count("Yes") / len(answers) < 0.6


# ---- date understanding ---------------------------------------------------------------------

def test_calendar_shift_clamps_to_the_month_end():
    assert shift(date(2008, 3, 31), "months", -1) == date(2008, 2, 29)
    assert shift(date(2016, 2, 29), "years", -1) == date(2015, 2, 28)
    assert shift(date(1999, 12, 15), "months", 2) == date(2000, 2, 15)
    assert shift(date(2000, 3, 1), "weeks", -1) == date(2000, 2, 23)


@pytest.mark.parametrize("context, today", [
    ("Yesterday was March 31, 1999.", "1999-04-01"),
    ("The day before yesterday was 2/27/2000.", "2000-02-29"),
    ("Tomorrow is 1/1/1901.", "1900-12-31"),
    ("Today is Feb 3, 1950. Ana's interview will be 4 days later.", "1950-02-03"),
    ("It was Jan. 30th, 2022 two weeks ago.", "2022-02-13"),
    ("Ana moved on Oct 3, 2010. 30 days have passed since then.", "2010-11-02"),
    ("Bo and Cy married on Apr 5, 1990. Today is their silver wedding anniversary.", "2015-04-05"),
    ("In the UK, people usually put the day before the month when formatting the date. "
     "Therefore, today is 05/03/1999 to them.", "1999-03-05"),
    ("Today is the last day of the second quarter of 1996.", "1996-06-30"),
    ("Today is the third Friday of 2021.", "2021-01-15"),
    ("Today is the palindrome day of 2021, because MMDDYYYY reads the same backwards.", "2021-12-02"),
    ("Ana was born on the last day of February in 1996. Today is her 8-year-old birthday.", "2004-02-29"),
])
def test_today_from_bbh_style_contexts(context, today):
    assert today_from_context(context) == date.fromisoformat(today)


def test_unreadable_context_is_not_implemented():
    with pytest.raises(NotImplementedError):
        today_from_context("Ana remembers a lovely spring day.")


def test_offsets_and_option_choice():
    assert asked_offset("one week ago from today") == ("weeks", -1)
    assert asked_offset("24 hours later") == ("days", 1)
    assert asked_offset("a month ago") == ("months", -1)
    text = ("Today is Mar 1, 2000. What is the date yesterday in MM/DD/YYYY?\nOptions:\n"
            "(A) 02/28/2000\n(B) 02/29/2000\n(C) 03/02/2000")
    assert solve_bbh_date(text, {"A": "02/28/2000", "B": "02/29/2000", "C": "03/02/2000"}) == "(B)"
    # No option shows the date: the nearest one with the same month and day is the label.
    assert pick_option({"A": "11/22/1950", "B": "11/22/2002", "C": "10/22/2001"}, date(2001, 11, 22)) == "(B)"
    with pytest.raises(ValueError):
        pick_option({"A": "01/01/2000"}, date(2000, 1, 2))


def test_date_scorer_accepts_other_date_spellings():
    t = task("date_understanding")
    sample = t.generate(1, seed=5)[0]
    target_text = sample.meta["options"][sample.answer.strip("()")]
    month, day, year = map(int, target_text.split("/"))
    assert t.score(sample, f"<<<{month}/{day}/{year}>>>") == 1.0
    assert t.score(sample, f"<<<{sample.answer} {target_text}>>>") == 1.0
    letter = sample.answer.strip("()")
    wrong = next(text for other, text in sample.meta["options"].items() if other != letter)
    assert t.score(sample, f"<<<{wrong}>>>") == 0.0
    assert t.score(sample, f"<<<{sample.answer} {wrong}>>>") == 0.0


def test_generated_dates_have_six_distinct_options_and_one_right_one():
    t = task("date_understanding")
    for level in t.levels:
        for sample in t.generate(40, complexity=level, seed=6):
            options = sample.meta["options"]
            assert len(options) == 6 and len(set(options.values())) == 6
            assert len(sample.meta["steps"]) == t.knobs(level)["links"]
            assert sample.answer in {f"({letter})" for letter in options}


# ---- logical deduction ----------------------------------------------------------------------

def test_orderings_table_holds_every_permutation_once():
    table = all_orderings(4)
    assert table.shape == (24, 4)
    assert len({tuple(row) for row in table}) == 24
    assert all(sorted(row) == [0, 1, 2, 3] for row in table.tolist())


@pytest.mark.parametrize("phrase, position", [
    ("the leftmost", 0), ("the third from the right", 4), ("the second-most expensive", 5),
    ("the cheapest", 0), ("last", 6), ("second-to-last", 5), ("third", 2), ("the fourth-newest", 3),
])
def test_position_phrases(phrase, position):
    assert position_of(phrase, 7) == position


def test_logical_deduction_hand_worked():
    text = ("On a shelf, there are four books: a red book, a green book, a blue book, and a gray book. "
            "The red book is the leftmost. The blue book is to the left of the green book. "
            "The gray book is the second from the left.\n"
            "Options:\n(A) The red book is the third from the left\n"
            "(B) The green book is the third from the left\n(C) The blue book is the third from the left\n"
            "(D) The gray book is the third from the left")
    # red, gray fixed at 1 and 2; blue before green leaves blue third.
    assert solve_text(text) == "(C)"


def test_logical_deduction_generated_puzzles_are_unique_and_readable():
    t = task("logical_deduction")
    for level in t.levels:
        for sample in t.generate(10, complexity=level, seed=7):
            n = len(sample.meta["names"])
            assert n == t.knobs(level)["objects"]
            assert len(consistent_orderings(n, sample.meta["clues"])) == 1
            assert solve_text(sample.question) == sample.answer


def test_logical_deduction_accepts_the_object_name():
    t = task("logical_deduction")
    sample = t.generate(1, seed=8)[0]
    letter = sample.answer.strip("()")
    name = sample.meta["names"][ord(letter) - ord("A")]
    assert t.score(sample, f"<<<{name}>>>") == 1.0
    assert t.score(sample, f"<<<{sample.meta['options'][letter]}>>>") == 1.0
    other = next(n for n in sample.meta["names"] if n != name)
    assert t.score(sample, f"<<<{other}>>>") == 0.0


# ---- letters --------------------------------------------------------------------------------

def test_letters_scorer_hand_worked():
    t = task("letters")
    sample = symbench.Sample(task="letters", id="x", question="", answer="Count: 3, Positions: [2, 4, 6]",
                             complexity=None, meta={"word": "banana", "letter": "a"})
    assert t.solve(sample) == "Count: 3, Positions: [2, 4, 6]"
    for good in ["Count: 3, Positions: [2, 4, 6]", "count: 3, positions: [6, 4, 2]",
                 "Count:3,Positions:[2,4,6]"]:
        assert t.score(sample, f"<<<{good}>>>") == 1.0, good
    for bad in ["Count: 3, Positions: [2, 4]", "Count: 2, Positions: [2, 4, 6]",
                "Count: 3, Positions: [1, 3, 5]",
                "3, [2, 4, 6]", "Count: 3, Positions: [2, 4, x]"]:
        assert t.score(sample, f"<<<{bad}>>>") == 0.0, bad
    assert parse_answer("Count: 0, Positions: []") == (0, [])


def test_made_up_words_hold_the_letter_exactly_count_times():
    rng = random.Random(0)
    for _ in range(300):
        letter, length = rng.choice("abcxyz"), rng.randint(5, 30)
        count = rng.randint(1, 5)
        word = made_up_word(rng, letter, count, length)
        assert len(word) == length and word.count(letter) == count and word.isalpha()


def test_letters_loader_reads_the_evaluated_bands(tmp_path):
    samples = task("letters").load_original(REFERENCE)
    assert {s.complexity for s in samples} <= {2, 3, 4}
    for sample in samples:
        band = sample.id.split("/")[0]
        low, high = map(int, re.findall(r"\d+", band))
        assert low <= len(sample.meta["word"]) <= high
        assert sample.meta["letter"] == sample.id.split("/")[1][0]
    with pytest.raises(FileNotFoundError, match="Letters_dataset_min_length_10_max_length_15"):
        task("letters").load_original(tmp_path)


# ---- cryptanalysis --------------------------------------------------------------------------

def _original_rule(password: str, guess: str) -> list:
    """The feedback rule as the original generator states it, written out symbol by symbol."""
    halves = []
    for secret, tried in ((password[:2], guess[:2]), (password[2:], guess[2:])):
        exact = misplaced = 0
        wrong = []
        for i, symbol in enumerate(tried):
            if symbol == secret[i]:
                exact += 1
            elif symbol in secret:
                misplaced += 1
            elif symbol < min(secret):
                wrong.append("low")
            elif symbol > max(secret):
                wrong.append("high")
            else:
                wrong.append("between")
        hint = "none"
        if len(wrong) == 1:
            hint = wrong[0]
        elif len(wrong) == 2 and wrong[0] == wrong[1] and wrong[0] != "between":
            hint = wrong[0]
        halves.append([exact, misplaced, hint])
    return halves


def test_feedback_matches_the_original_rule_on_random_guesses():
    rng = random.Random(1)
    for _ in range(2000):
        password = "".join(rng.sample("0123456789", 2) + rng.sample("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 2))
        guess = "".join(rng.sample("0123456789", 2) + rng.sample("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 2))
        assert feedback(password, guess) == _original_rule(password, guess), (password, guess)


def test_feedback_hand_worked_and_original_wording():
    # 47KC vs guess 74AC: digits swapped; C right in place; A before both K and C.
    assert feedback("47KC", "74AC") == [[0, 2, "none"], [1, 0, "low"]]
    text = ("both numbers are correct but in the wrong positions; one letter is correct and in the correct "
            "position; one letter is incorrect and too early in the alphabet")
    assert read_original_feedback(text) == [[0, 2, "none"], [1, 0, "low"]]


def test_stored_original_feedback_follows_our_rule():
    for sample in task("cryptanalysis").load_original(REFERENCE):
        for guess, stored in zip(sample.meta["guesses"], sample.meta["feedback"]):
            assert feedback(sample.answer, guess) == stored, (sample.id, guess)


def test_cryptanalysis_solver_and_generator():
    t = task("cryptanalysis")
    assert consistent_passwords(["12AB"], [[[2, 0, "none"], [0, 2, "none"]]]) == ["12BA"]
    for level in t.levels:
        for sample in t.generate(10, complexity=level, seed=9):
            assert len(sample.meta["guesses"]) <= t.knobs(level)["max_guesses"]
            assert consistent_passwords(sample.meta["guesses"], sample.meta["feedback"]) == [sample.answer]


def test_cryptanalysis_scorer_variants():
    t = task("cryptanalysis")
    sample = t.generate(1, seed=10)[0]
    d1, d2, l1, l2 = sample.answer
    list_form = json.dumps([d1, d2, l1, l2])
    for text, corrected, paper in [
        (sample.answer, 1.0, 1.0), (list_form, 1.0, 1.0), (sample.answer.lower(), 1.0, 0.0),
        (f"{d1} {d2} {l1} {l2}", 1.0, 0.0), (f"[{d1}, {d2}, '{l1}', '{l2}']", 1.0, 0.0),
        (f"{d2}{d1}{l1}{l2}", 0.0, 0.0), (sample.answer[:3], 0.0, 0.0),
    ]:
        assert t.score(sample, f"<<<{text}>>>") == corrected, text
        assert t.score(sample, f"<<<{text}>>>", variant="paper") == paper, text
