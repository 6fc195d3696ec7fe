"""cryptanalysis (unseen task, spec C.3): deduce a lock's password, two different digits then two
different capital letters, from guesses and their feedback.

Feedback on each half of a guess says how many symbols are right and in place, right but
misplaced, and for a wrong symbol whether it lies below, above or between the password's two
(digits by value, letters by alphabet). With two wrong symbols it says below/above only when both
are; otherwise nothing (the original's rule, which we keep so that our puzzles carry the same
information). The two halves are independent, so the solver filters the 90 digit pairs and the
650 letter pairs separately against every guess. The generator draws guesses until the password
is the only one left, within a guess budget that grows with the level, and starts over with a new
password when the budget runs out (as the original did).

Scoring: the original compared an extracted bare string with the concatenation '53FA' exactly
(its extractor turns the prompt's list form into that string). variant='paper' keeps that
comparison, reading a JSON list of four strings as the original's own verifier did; the
corrected variant also accepts other list spellings, spaces and lower case.
"""

import json
import random
import re
import string
from itertools import permutations
from pathlib import Path

import numpy as np

from symbench.core import Sample, Task, read_question_and_solution, sample_folders

# Guess budgets of the original's five configurations, levels 1-5.
GUESS_BUDGETS = ((4, 6), (7, 9), (10, 12), (13, 15), (16, 18))
DIGITS, LETTERS = "0123456789", string.ascii_uppercase
_HINTS = ("none", "low", "high", "between")


def _all_pairs(alphabet: str) -> np.ndarray:
    """Every ordered pair of different symbols, as indices into the alphabet: shape (P, 2)."""
    return np.array(list(permutations(range(len(alphabet)), 2)), dtype=np.int64)


DIGIT_PAIRS, LETTER_PAIRS = _all_pairs(DIGITS), _all_pairs(LETTERS)


def feedback_codes(secrets: np.ndarray, guess: tuple[int, int]) -> np.ndarray:
    """The feedback one half of a guess gets from each candidate secret half (rows of `secrets`),
    coded as 100 * right-and-in-place + 10 * right-but-misplaced + hint, where the hint for the
    wrong symbols is 1 (below both secret symbols), 2 (above both) or 3 (between), for a single
    wrong symbol, or for two wrong ones when both are below or both above; else 0."""
    a, b = secrets[:, 0], secrets[:, 1]
    g1, g2 = guess
    in1, in2 = (a == g1) | (b == g1), (a == g2) | (b == g2)
    exact = (a == g1).astype(np.int64) + (b == g2)
    misplaced = (in1 & (a != g1)).astype(np.int64) + (in2 & (b != g2))
    low, high = np.minimum(a, b), np.maximum(a, b)
    side1 = np.where(g1 < low, 1, np.where(g1 > high, 2, 3))
    side2 = np.where(g2 < low, 1, np.where(g2 > high, 2, 3))
    hint = np.where(~in1 & in2, side1, np.where(in1 & ~in2, side2,
                    np.where(~in1 & ~in2 & (side1 == side2) & (side1 != 3), side1, 0)))
    return 100 * exact + 10 * misplaced + hint


def _indices(text: str, alphabet: str) -> tuple[int, int]:
    return alphabet.index(text[0]), alphabet.index(text[1])


def feedback(password: str, guess: str) -> list:
    """[[digits right and in place, right but misplaced, hint], [same for the letters]], the
    hint being 'low', 'high', 'between' or 'none' (see feedback_codes)."""
    halves = []
    for alphabet, secret, tried in ((DIGITS, password[:2], guess[:2]), (LETTERS, password[2:], guess[2:])):
        code = int(feedback_codes(np.array([_indices(secret, alphabet)]), _indices(tried, alphabet))[0])
        halves.append([code // 100, code // 10 % 10, _HINTS[code % 10]])
    return halves


def _code(half: list) -> int:
    return 100 * half[0] + 10 * half[1] + _HINTS.index(half[2])


def _surviving(pairs: np.ndarray, alphabet: str, guess_half: str, half: list) -> np.ndarray:
    return pairs[feedback_codes(pairs, _indices(guess_half, alphabet)) == _code(half)]


def consistent_passwords(guesses: list[str], feedbacks: list[list]) -> list[str]:
    digits, letters = DIGIT_PAIRS, LETTER_PAIRS
    for guess, fb in zip(guesses, feedbacks):
        digits = _surviving(digits, DIGITS, guess[:2], fb[0])
        letters = _surviving(letters, LETTERS, guess[2:], fb[1])
    return [DIGITS[d1] + DIGITS[d2] + LETTERS[l1] + LETTERS[l2] for d1, d2 in digits for l1, l2 in letters]


# ---- the original's wording -----------------------------------------------------------------

_HINT_WORDS = {"too small": "low", "too large": "high", "too early in the alphabet": "low",
               "too late in the alphabet": "high", "incorrect": "between"}
_GUESS_LINE = re.compile(r"^\d+\. Guess: (\d\d[A-Z][A-Z]), Feedback: (.+?)\.?$", re.M)


def read_original_feedback(text: str) -> list:
    """'one number is correct but in the wrong position; both letters are incorrect' -> the
    two-halves feedback list."""
    halves = {"number": [0, 0, "none"], "letter": [0, 0, "none"]}
    for clause in text.split(";"):
        m = re.fullmatch(r"(one|both) (number|letter)s? (?:is|are) (correct and in the correct positions?|"
                         r"correct but in the wrong positions?|incorrect)(?: and (.+))?", clause.strip())
        if m is None:
            raise ValueError(f"cannot read feedback {clause.strip()!r}")
        amount, half = (1 if m.group(1) == "one" else 2), halves[m.group(2)]
        if m.group(3).startswith("correct and"):
            half[0] = amount
        elif m.group(3).startswith("correct but"):
            half[1] = amount
        elif m.group(4):
            half[2] = _HINT_WORDS[m.group(4)]
    return [halves["number"], halves["letter"]]


# ---- our wording ----------------------------------------------------------------------------

def _describe_half(half: list, symbol: str, below: str, above: str, between: str) -> str:
    exact, misplaced, hint = half
    parts = []
    if exact:
        parts.append(f"both {symbol}s are right and in place" if exact == 2
                     else f"one {symbol} is right and in place")
    if misplaced:
        parts.append(f"both {symbol}s are right but in each other's place" if misplaced == 2
                     else f"one {symbol} is right but in the wrong place")
    wrong = 2 - exact - misplaced
    if wrong == 1:
        parts.append(f"one {symbol} is wrong and " + {"low": below, "high": above, "between": between}[hint])
    elif wrong == 2:
        parts.append(f"both {symbol}s are wrong"
                     + {"low": f" and {below}", "high": f" and {above}", "none": ""}[hint])
    return ", ".join(parts)


def describe_feedback(fb: list) -> str:
    digits = _describe_half(fb[0], "digit", "smaller than both password digits",
                            "larger than both password digits", "between the two password digits")
    letters = _describe_half(fb[1], "letter", "earlier in the alphabet than both password letters",
                             "later in the alphabet than both password letters",
                             "between the two password letters in the alphabet")
    return f"digits: {digits}; letters: {letters}"


def _password_text(answer: str, variant: str) -> str | None:
    """The password an answer names: '53FA', '["5", "3", "F", "A"]', and for the corrected
    variant also '5 3 F A', "[5, 3, 'f', 'a']" and the like."""
    if len(answer) > 200:
        return None
    if variant == "paper":
        try:  # the original's verifier: a JSON list of four strings is joined, anything else kept
            listed = json.loads(answer)
        except json.JSONDecodeError:
            return answer
        if isinstance(listed, list) and len(listed) == 4 and all(isinstance(item, str) for item in listed):
            return "".join(listed)
        return answer
    return re.sub(r"[\s\[\]\"',()]", "", answer).upper()


class Cryptanalysis(Task):
    """Deduce a two-digit, two-letter password from guess feedback.

    Levels 1-5 = the original's guess budgets 4-6, 7-9, 10-12, 13-15, 16-18; the instance stops
    at the first guess that leaves one password, so the budget caps the number of lines. Knobs:
    `min_guesses`, `max_guesses`."""

    id = "cryptanalysis"
    seen = False
    answer_format = '<<<["5", "3", "F", "A"]>>>: the two digits, then the two letters'
    levels = (1, 2, 3, 4, 5)
    default_level = 3

    def knobs(self, level: int) -> dict:
        low, high = GUESS_BUDGETS[level - 1]
        return {"min_guesses": low, "max_guesses": high}

    def make_sample(self, rng: random.Random, level: int, index: int, min_guesses: int = 10,
                    max_guesses: int = 12) -> Sample:
        budget = rng.randint(min_guesses, max_guesses)
        while True:
            password = "".join(rng.sample(DIGITS, 2) + rng.sample(LETTERS, 2))
            digits, letters, guesses, feedbacks = DIGIT_PAIRS, LETTER_PAIRS, [], []
            while len(guesses) < budget and (len(digits) > 1 or len(letters) > 1):
                guess = "".join(rng.sample(DIGITS, 2) + rng.sample(LETTERS, 2))
                if guess == password or guess in guesses:
                    continue
                fb = feedback(password, guess)
                guesses.append(guess)
                feedbacks.append(fb)
                digits = _surviving(digits, DIGITS, guess[:2], fb[0])
                letters = _surviving(letters, LETTERS, guess[2:], fb[1])
            if len(digits) == 1 and len(letters) == 1:
                break
        lines = [f"{i}. Guess {guess}: {describe_feedback(fb)}."
                 for i, (guess, fb) in enumerate(zip(guesses, feedbacks), 1)]
        question = (
            "A lock opens with a password of two different digits followed by two different capital "
            "letters (for example 53FA). Below are guesses and the feedback each one got. A wrong "
            "digit is 'smaller' or 'larger' when it is smaller or larger than both password digits, "
            "and 'between' otherwise; wrong letters are compared by alphabet order in the same way. "
            "When both digits (or both letters) of a guess are wrong, the feedback says smaller or "
            "larger (earlier or later) only if that holds for both of them, and nothing more "
            "otherwise.\n" + "\n".join(lines) + "\nWhich password fits all the feedback? End your reply "
            'with its four characters in triple angle brackets, for example <<<["5", "3", "F", "A"]>>>.')
        return Sample(task=self.id, id="", question=question, answer=password, complexity=level,
                      meta={"guesses": guesses, "feedback": feedbacks})

    def solve(self, sample: Sample) -> str:
        candidates = consistent_passwords(sample.meta["guesses"], sample.meta["feedback"])
        if len(candidates) != 1:
            raise ValueError(f"{len(candidates)} passwords fit the feedback")
        return candidates[0]

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        return float(_password_text(answer, variant) == sample.answer)

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        samples = []
        for folder in sample_folders(Path(dataset_gather_dir) / "cryptanalysis"):
            question, solution = read_question_and_solution(folder)
            lines = _GUESS_LINE.findall(question)
            if not lines:
                raise ValueError(f"{folder}: no guess lines in question.txt")
            samples.append(Sample(
                task=self.id, id=folder.name, question=question, answer="".join(solution["answer"]),
                complexity=None, meta={"guesses": [guess for guess, _ in lines],
                                       "feedback": [read_original_feedback(text) for _, text in lines]}))
        return samples


TASKS = [Cryptanalysis()]
