"""letters (unseen task, spec C.3): how many times does a letter occur in a word, and at which
1-based positions?

The original drew real English words of a length band holding the letter 1-5 times (and random
letter strings when too few words qualified). We generate pronounceable made-up words from
syllables, then set the letter's count exactly: what makes the task hard for a language model is
that it reads words as multi-letter tokens, and made-up words keep that property without
shipping a word list.

Answer `Count: N, Positions: [p, ...]`; the count must match and the positions must match as a
set (the original's rule).
"""

import json
import random
import re
import string
from pathlib import Path

from symbench.core import Sample, Task

# The original's length bands, shortest first; levels 1-5 index them. The paper evaluates 2-4.
LENGTH_BANDS = ((5, 10), (10, 15), (15, 20), (20, 25), (25, 30))
EVALUATED_LETTERS = "agmsy"  # string.ascii_lowercase[::6], as the original loops over
MAX_POSITIONS = 100

_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w",
           "z", "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "sk", "st", "th", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "io", "ou", "y")
_CODAS = ("", "", "", "n", "r", "s", "l", "m", "nd", "st", "ng", "ck", "x", "rt")


def letter_positions(word: str, letter: str) -> list[int]:
    return [i + 1 for i, ch in enumerate(word) if ch == letter]


def format_answer(positions: list[int]) -> str:
    return f"Count: {len(positions)}, Positions: [{', '.join(map(str, positions))}]"


def parse_answer(answer: str) -> tuple[int, list[int]] | None:
    """(count, positions) of 'Count: 3, Positions: [2, 5, 9]' and its variants (any case,
    '=' for ':', no space); None when either part is missing or absurd."""
    count = re.search(r"count\s*[:=]?\s*(\d{1,4})\b", answer, re.I)
    listed = re.search(r"positions?\s*[:=]?\s*\[([^\]]{0,1000})\]", answer, re.I)
    if count is None or listed is None:
        return None
    items = [item.strip() for item in listed.group(1).split(",") if item.strip()]
    if len(items) > MAX_POSITIONS or not all(re.fullmatch(r"\d{1,4}", item) for item in items):
        return None
    return int(count.group(1)), [int(item) for item in items]


def made_up_word(rng: random.Random, letter: str, count: int, length: int) -> str:
    """A pronounceable string of exactly `length` letters holding `letter` exactly `count` times."""
    word = ""
    while len(word) < length:
        word += rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
    chars = list(word[:length])
    others = [ch for ch in string.ascii_lowercase if ch != letter]
    vowels = set("aeiouy")
    present = [i for i, ch in enumerate(chars) if ch == letter]
    for i in rng.sample(present, max(0, len(present) - count)):
        # a vowel stays a vowel and a consonant a consonant, so the word stays sayable
        chars[i] = rng.choice([ch for ch in others if (ch in vowels) == (letter in vowels)])
    absent = [i for i, ch in enumerate(chars) if ch != letter]
    for i in rng.sample(absent, max(0, count - len(present))):
        chars[i] = letter
    return "".join(chars)


class Letters(Task):
    """Count a letter in a word and list its 1-based positions.

    Levels 1-5 = word lengths 5-10, 10-15, 15-20, 20-25, 25-30 (the original's bands; the paper
    evaluates levels 2-4). Knobs: `min_length`, `max_length`, `max_count` (the letter occurs
    1..max_count times)."""

    id = "letters"
    seen = False
    answer_format = "<<<Count: 2, Positions: [1, 3]>>>"
    levels = (1, 2, 3, 4, 5)
    default_level = 3

    def knobs(self, level: int) -> dict:
        low, high = LENGTH_BANDS[level - 1]
        return {"min_length": low, "max_length": high, "max_count": 5}

    def make_sample(self, rng: random.Random, level: int, index: int, min_length: int = 15,
                    max_length: int = 20, max_count: int = 5) -> Sample:
        letter = rng.choice(string.ascii_lowercase)
        length = rng.randint(min_length, max_length)
        word = made_up_word(rng, letter, rng.randint(1, min(max_count, length)), length)
        question = (
            f"The made-up word '{word}' is written with the letters of the English alphabet. How many "
            f"times does the letter '{letter}' appear in it, and at which positions? Number the "
            "positions from 1 for the first letter.\nEnd your reply with the answer in triple angle "
            "brackets, in exactly this form: <<<Count: 2, Positions: [1, 3]>>>.")
        return Sample(task=self.id, id="", question=question,
                      answer=format_answer(letter_positions(word, letter)), complexity=level,
                      meta={"word": word, "letter": letter})

    def solve(self, sample: Sample) -> str:
        return format_answer(letter_positions(sample.meta["word"], sample.meta["letter"]))

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        parsed = parse_answer(answer)
        if parsed is None:
            return 0.0
        count, positions = parsed
        expected = letter_positions(sample.meta["word"], sample.meta["letter"])
        return float(count == len(expected) and set(positions) == set(expected))

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        """Move one position to a place the letter is not (a changed character in the word
        'Count' would only test the parser)."""
        parsed = parse_answer(answer)
        if parsed is None or not parsed[1]:
            return "Count: 1, Positions: [1]" if parsed and parsed[0] == 0 else "Count: 0, Positions: []"
        positions = parsed[1]
        positions[rng.randrange(len(positions))] = max(positions) + 1
        return f"Count: {parsed[0]}, Positions: [{', '.join(map(str, positions))}]"

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        """Letters/Letters_dataset_min_length_<a>_max_length_<b>/<letter>_<freq>_1/test_words.json
        for the evaluated bands (10-15, 15-20, 20-25), letters a, g, m, s, y and frequencies 1-5,
        among the folders present; the prompt is rebuilt as the original wrote it."""
        root = Path(dataset_gather_dir) / "Letters"
        samples = []
        for level in (2, 3, 4):
            low, high = LENGTH_BANDS[level - 1]
            band = root / f"Letters_dataset_min_length_{low}_max_length_{high}"
            if not band.is_dir():
                raise FileNotFoundError(f"missing {band}")
            for letter in EVALUATED_LETTERS:
                for frequency in range(1, 6):
                    path = band / f"{letter}_{frequency}_1" / "test_words.json"
                    if not path.parent.is_dir():
                        continue
                    if not path.is_file():
                        raise FileNotFoundError(f"missing {path}")
                    word = json.loads(path.read_text(encoding="utf-8"))
                    samples.append(Sample(
                        task=self.id, id=f"{band.name}/{path.parent.name}",
                        question=_original_prompt(word, letter),
                        answer=format_answer(letter_positions(word, letter)), complexity=level,
                        meta={"word": word, "letter": letter}))
        if not samples:
            raise FileNotFoundError(f"no letter folders under {root}")
        return samples


def _original_prompt(word: str, letter: str) -> str:
    """The prompt the original benchmark built for a stored word."""
    return (f"How many '{letter}'s are in the word '{word}' and what are their positions? The position in "
            "the word counts from 1 not 0.\nSurround the answer with <<<content>>>. Please respond in the "
            "format: <<<Count: X, Positions: [Y, Z, ...]>>>, such as <<<Count: 2, Positions: [1, 3]>>>.\n"
            "Your answer:\n")


TASKS = [Letters()]
