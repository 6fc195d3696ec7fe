"""The four BIG-Bench-Hard tasks of SymBench (spec C.2): what they share, and the two small ones.

Shared here: the loader of the BBH json files (every 4th example, as the original evaluates),
deterministic scoring of Yes/No and multiple-choice answers, and the optional LLM `judge` hook.
The original scored these tasks with a GPT-4o judge; we score deterministically against the
target, and keep the judge as a hook whose verdict is read the corrected way ("Correct" as a whole
word) or the paper's way (any text containing "correct", so "Incorrect" passes).

Tasks here: web_of_lies (a chain of people vouching for or accusing each other) and navigation
(do the moves bring you back to the start?). date_understanding lives in bbh_dates.py and
logical_deduction in bbh_logic.py.

    from symbench import get_task
    task = get_task("navigation")
    sample = task.generate(1, complexity=3, seed=0)[0]
    task.score(sample, "... <<<Yes>>>")
"""

import json
import random
import re
from pathlib import Path

from symbench.core import Sample, Task, extract_answer

MAX_CHOICE_CHARS = 500  # an honest option answer is one short line

_ORIGINAL_SUFFIX = "\n\nOutput final answer with the format <<<answer>>>."
_OPTION_LINE = re.compile(r"^\(([A-Z])\)\s*(.+?)\s*$", re.M)


def parse_options(text: str) -> dict[str, str]:
    """The lettered options '(A) ...' of a BBH question, in order."""
    return {letter: option for letter, option in _OPTION_LINE.findall(text)}


def option_list(texts: list[str]) -> tuple[dict[str, str], str]:
    """Letter the option texts (A), (B), ...; returns the dict and its 'Options:' block."""
    options = {chr(ord("A") + i): text for i, text in enumerate(texts)}
    return options, "Options:\n" + "\n".join(f"({letter}) {text}" for letter, text in options.items())


# ---- answer normalisation -------------------------------------------------------------------

_LEAD_IN = re.compile(r"^(?:the\s+)?(?:final\s+)?(?:answer|option|choice)\s*(?:is)?\s*[:=]?\s*", re.I)


def clean_answer(answer: str) -> str:
    """Drop a lead-in ('Answer:'), markdown emphasis, a trailing full stop."""
    text = _LEAD_IN.sub("", answer.strip())
    return text.strip().strip("*_`'\" ").rstrip(".!").strip()


def yes_no(answer: str) -> str | None:
    """'Yes' or 'No' for the usual ways of writing them (True/False included), else None."""
    if len(answer) > MAX_CHOICE_CHARS:
        return None
    words = re.sub(r"[\s*_`'\"()\[\].!:,-]+", " ", clean_answer(answer)).strip().lower()
    return {"yes": "Yes", "true": "Yes", "no": "No", "false": "No"}.get(words)


def normalise_text(text: str) -> str:
    """Lower case, no punctuation, no leading article: for comparing option texts."""
    words = re.sub(r"[^a-z0-9/]+", " ", text.lower()).split()
    if words and words[0] in ("the", "a", "an"):
        words = words[1:]
    return " ".join(words)


_LETTER_FIRST = re.compile(r"\(?([A-Za-z])\)?(?:(?:\s*[.:)\-]\s*|\s+)(.*))?", re.S)


def chosen_option(options: dict[str, str], answer: str, same_option) -> str | None:
    """The option letter an answer picks: '(B)', 'B', 'B) text', '(B) text', or the option's
    text alone. `same_option(answer_text, option_text)` decides whether a text names an option
    (tasks loosen it: dates in other formats, an object's name). A letter followed by the text of
    a different option picks nothing."""
    if len(answer) > MAX_CHOICE_CHARS:
        return None
    text = clean_answer(answer)
    match = _LETTER_FIRST.fullmatch(text)
    if match and match.group(1).upper() in options:
        letter, rest = match.group(1).upper(), (match.group(2) or "").strip()
        if not rest or same_option(rest, options[letter]):
            return letter
    named = [letter for letter, option in options.items() if same_option(text, option)]
    return named[0] if len(named) == 1 else None


def same_text(answer_text: str, option_text: str) -> bool:
    return normalise_text(answer_text) == normalise_text(option_text)


# ---- the shared task base -------------------------------------------------------------------

class BBHTask(Task):
    """A BIG-Bench-Hard task: loader of its json file, deterministic scorer, optional judge.

    `judge`: None (default) or a callable judge(question, target, answer) -> the judge's reply
    text, which must end with '<<<[extracted answer, Correct|Wrong]>>>' as in the original. When
    set, it replaces the deterministic comparison; the corrected variant reads its verdict as the
    whole word "Correct", the paper variant as any text containing "correct" or "Correct"."""

    file_stem: str = ""
    judge = None

    def is_correct(self, sample: Sample, answer: str) -> bool:
        """Deterministic comparison of an extracted answer with sample.answer."""
        raise NotImplementedError

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        if self.judge is None:
            return float(self.is_correct(sample, answer))
        verdict = extract_answer(self.judge(sample.question, sample.answer, answer)) or ""
        if variant == "paper":
            return float("Correct" in verdict or "correct" in verdict)
        return float(re.search(r"\bcorrect\b", verdict, re.I) is not None)

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        """Every 4th example (indices 0, 4, 8, ...) of BIG-Bench-Hard/bbh/<file>.json, among the
        examples present; the prompt is the input plus the original's format sentence."""
        path = Path(dataset_gather_dir) / "BIG-Bench-Hard" / "bbh" / f"{self.file_stem}.json"
        if not path.is_file():
            raise FileNotFoundError(f"missing {path}")
        examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
        samples = []
        for index in range(0, len(examples), 4):
            example = examples[index]
            samples.append(Sample(
                task=self.id, id=f"sample_{index}", question=example["input"] + _ORIGINAL_SUFFIX,
                answer=example["target"], complexity=None,
                meta={"bbh_input": example["input"], "options": parse_options(example["input"])}))
        return samples


class YesNoTask(BBHTask):
    """A BBH task whose answer is Yes or No."""

    answer_format = "<<<Yes>>> or <<<No>>>"

    def is_correct(self, sample: Sample, answer: str) -> bool:
        return yes_no(answer) == sample.answer

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        return {"Yes": "No", "No": "Yes"}.get(yes_no(answer), "Maybe")


class ChoiceTask(BBHTask):
    """A BBH task whose answer is an option letter such as '(B)'."""

    answer_format = "<<<(B)>>>, the letter of the correct option"

    def same_option(self, answer_text: str, option_text: str) -> bool:
        return same_text(answer_text, option_text)

    def is_correct(self, sample: Sample, answer: str) -> bool:
        target = sample.answer.strip("() ")
        return chosen_option(sample.meta["options"], answer, self.same_option) == target

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        letters = sorted(sample.meta["options"])
        wrong = [letter for letter in letters if letter != sample.answer.strip("() ")]
        return f"({rng.choice(wrong)})"


# ---- web of lies ----------------------------------------------------------------------------

NAMES = (
    "Abel", "Beatrix", "Cosmo", "Dagny", "Emrys", "Fenna", "Gideon", "Hollis", "Ines", "Jasper",
    "Kalani", "Linus", "Marisol", "Nico", "Odette", "Priya", "Quincy", "Rosalind", "Silas",
    "Tamsin", "Ulrich", "Vesna", "Wendell", "Ximena", "Yusuf", "Zelda", "Anouk", "Bram", "Cleo",
    "Dorian", "Elio", "Freya", "Gustav", "Hana", "Idris", "Juno", "Kasper", "Lorna", "Matteo",
    "Nadia", "Oskar", "Petra", "Rafael", "Saoirse", "Tobias", "Uma", "Viggo", "Wren", "Yara",
)

_TRUTH = "(tells the truth|is truthful|is honest|lies|is a liar|is lying)"
_FACT = re.compile(rf"(\w+) {_TRUTH}")
_CLAIM = re.compile(rf"(\w+) (?:says|claims)(?: that)? (\w+) {_TRUTH}")
_ASKED = re.compile(r"(?:Does (\w+) tell the truth|Is (\w+) (?:truthful|honest|telling the truth))\?")


def _is_truth_phrase(phrase: str) -> bool:
    return phrase in ("tells the truth", "is truthful", "is honest")


def solve_web_of_lies_text(text: str) -> str:
    """Resolve 'A tells the truth. B says A lies. ... Does E tell the truth?' (BBH wording and
    ours): whoever speaks truly about a person of known honesty is honest."""
    asked = _ASKED.search(text)
    if asked is None:
        raise ValueError("no 'Does X tell the truth?' question found")
    honest, claims = {}, []
    for sentence in re.split(r"[.?\n]+", text):
        sentence = re.sub(r"^Question:\s*", "", sentence.strip())
        if claim := _CLAIM.fullmatch(sentence):
            claims.append((claim.group(1), claim.group(2), _is_truth_phrase(claim.group(3))))
        elif fact := _FACT.fullmatch(sentence):
            honest[fact.group(1)] = _is_truth_phrase(fact.group(2))
    pending = list(claims)
    while pending:
        resolved = [claim for claim in pending if claim[1] in honest]
        if not resolved:
            raise ValueError("the statements do not form a chain from a known person")
        for speaker, subject, says_truthful in resolved:
            honest[speaker] = says_truthful == honest[subject]
            pending.remove((speaker, subject, says_truthful))
    name = asked.group(1) or asked.group(2)
    return "Yes" if honest[name] else "No"


class WebOfLies(YesNoTask):
    """Who tells the truth? A chain: the first person's honesty is given, each next person says
    the previous one tells the truth or lies, and the question asks about the last.

    Levels 1-5 = 3, 5, 7, 9, 11 people (BBH's file uses 5, level 2). Knob: `people`."""

    id = "web_of_lies"
    file_stem = "web_of_lies"
    levels = (1, 2, 3, 4, 5)
    default_level = 2

    def knobs(self, level: int) -> dict:
        return {"people": 2 * level + 1}

    def make_sample(self, rng: random.Random, level: int, index: int, people: int = 5) -> Sample:
        names = rng.sample(NAMES, people)
        first_truthful = rng.random() < 0.5
        says_truthful = [rng.random() < 0.5 for _ in range(people - 1)]
        lines = [f"{names[0]} {'is honest' if first_truthful else 'is a liar'}."]
        for speaker, subject, says in zip(names[1:], names, says_truthful):
            lines.append(f"{speaker} says that {subject} {'is honest' if says else 'is a liar'}.")
        question = (
            "Every person mentioned below is either honest (everything they say is true) or a liar "
            "(everything they say is false).\n" + " ".join(lines) + f"\nQuestion: Is {names[-1]} honest?\n"
            "Reply Yes or No, and end your reply with the answer in triple angle brackets, "
            "for example <<<Yes>>> or <<<No>>>.")
        meta = {"names": names, "first_truthful": first_truthful, "says_truthful": says_truthful}
        sample = Sample(task=self.id, id="", question=question, answer=None, complexity=level, meta=meta)
        sample.answer = self.solve(sample)
        return sample

    def solve(self, sample: Sample) -> str:
        if "bbh_input" in sample.meta:
            return solve_web_of_lies_text(sample.meta["bbh_input"])
        honest = sample.meta["first_truthful"]
        for says_truthful in sample.meta["says_truthful"]:
            honest = says_truthful == honest
        return "Yes" if honest else "No"


# ---- navigation -----------------------------------------------------------------------------

# Headings as unit vectors, clockwise from the starting direction: forward, right, back, left.
_HEADINGS = ((0, 1), (1, 0), (0, -1), (-1, 0))
_RELATIVE = {"forward": 0, "right": 1, "backward": 2, "back": 2, "left": 3}
_TURNS = {"right": 1, "around": 2, "left": 3}

_STEP = re.compile(r"^(?:take|walk|move) (\d+) steps?"
                   r"(?: (?:to the )?(forward|backward|back|left|right))?$", re.I)
_TURN = re.compile(r"^turn (left|right|around)$", re.I)


def parse_instructions(text: str) -> list[list]:
    """The moves of a navigation prompt as ['step', n, relative direction] and ['turn', side].
    Sentences that are not moves (the question, the options) are skipped."""
    moves = []
    for sentence in re.split(r"[.?\n]+", text):
        sentence = sentence.strip(" -")
        if step := _STEP.match(sentence):
            moves.append(["step", int(step.group(1)), (step.group(2) or "forward").lower()])
        elif turn := _TURN.match(sentence):
            moves.append(["turn", turn.group(1).lower()])
    return moves


def end_position(moves: list[list]) -> tuple[int, int]:
    """Walk the moves from (0, 0) facing forward; a step's direction is relative to the
    current heading, which only turns change."""
    x = y = heading = 0
    for move in moves:
        if move[0] == "turn":
            heading = (heading + _TURNS[move[1]]) % 4
        else:
            dx, dy = _HEADINGS[(heading + _RELATIVE[move[2]]) % 4]
            x, y = x + move[1] * dx, y + move[1] * dy
    return x, y


def _zero_sum_lengths(rng: random.Random, count: int) -> list[int]:
    """`count` signed step counts, each 1-10 in size, adding up to zero (count is 0 or >= 2)."""
    while count:
        lengths = [rng.choice((-1, 1)) * rng.randint(1, 10) for _ in range(count - 1)]
        if 1 <= abs(sum(lengths)) <= 10:
            return lengths + [-sum(lengths)]
    return []


def _closed_walk(rng: random.Random, count: int) -> list[tuple[int, int]]:
    """`count` (absolute heading, steps) moves that return to the start, in random order."""
    across = rng.choice([a for a in range(count + 1) if a != 1 and count - a != 1])
    moves = [(1 if n > 0 else 3, abs(n)) for n in _zero_sum_lengths(rng, across)]
    moves += [(0 if n > 0 else 2, abs(n)) for n in _zero_sum_lengths(rng, count - across)]
    rng.shuffle(moves)
    return moves


def _open_walk(rng: random.Random, count: int) -> list[tuple[int, int]]:
    """`count` moves that do not return: either a near miss (one length of a closed walk
    changed) or random moves."""
    if rng.random() < 0.5:
        moves = _closed_walk(rng, count)
        i = rng.randrange(count)
        heading, steps = moves[i]
        moves[i] = (heading, rng.choice([n for n in range(1, 11) if n != steps]))
        return moves
    while True:
        moves = [(rng.randrange(4), rng.randint(1, 10)) for _ in range(count)]
        if sum(n * _HEADINGS[h][0] for h, n in moves) or sum(n * _HEADINGS[h][1] for h, n in moves):
            return moves


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


class Navigation(YesNoTask):
    """Do these moves bring you back to the start? Two forms, as in BBH's navigate file: facing
    forward throughout with steps forward, backward, left or right; or steps straight ahead
    with turns in between. Yes and No are drawn with equal probability.

    Levels 1-5 = 2-3, 4-5, 6-7, 8-10, 11-14 steps (turns come on top). Knobs: `min_steps`,
    `max_steps`."""

    id = "navigation"
    file_stem = "navigate"
    levels = (1, 2, 3, 4, 5)
    default_level = 3
    _STEP_RANGES = {1: (2, 3), 2: (4, 5), 3: (6, 7), 4: (8, 10), 5: (11, 14)}

    def knobs(self, level: int) -> dict:
        low, high = self._STEP_RANGES[level]
        return {"min_steps": low, "max_steps": high}

    def make_sample(self, rng: random.Random, level: int, index: int, min_steps: int = 6,
                    max_steps: int = 7) -> Sample:
        count = rng.randint(min_steps, max_steps)
        walk = _closed_walk(rng, count) if rng.random() < 0.5 else _open_walk(rng, count)
        if rng.random() < 0.5:
            moves, sentences = self._facing_forward(walk)
        else:
            moves, sentences = self._with_turns(rng, walk)
        question = (
            "You start at some point and carry out the instructions below, in order. Do you end up "
            "back at the point where you started?\n" + " ".join(sentences) + "\n"
            "Reply Yes or No, and end your reply with the answer in triple angle brackets, "
            "for example <<<Yes>>> or <<<No>>>.")
        sample = Sample(task=self.id, id="", question=question, answer=None, complexity=level,
                        meta={"moves": moves})
        sample.answer = self.solve(sample)
        return sample

    @staticmethod
    def _facing_forward(walk):
        names = ("forward", "right", "backward", "left")
        moves = [["step", steps, names[heading]] for heading, steps in walk]
        sentences = ["Keep facing the same direction the whole time."]
        for _, steps, direction in moves:
            where = direction if direction in ("forward", "backward") else f"to the {direction}"
            sentences.append(f"Walk {_steps(steps)} {where}.")
        return moves, sentences

    @staticmethod
    def _with_turns(rng, walk):
        """Steps always go straight ahead; turns (sometimes a roundabout pair) set the heading."""
        roundabout = {1: (("left", "around"), ("around", "left")), 2: (("left", "left"), ("right", "right")),
                      3: (("right", "around"), ("around", "right"))}
        moves, heading = [], 0
        for target, steps in walk:
            change = (target - heading) % 4
            if change and rng.random() < 0.25:
                moves += [["turn", side] for side in rng.choice(roundabout[change])]
            elif change:
                moves.append(["turn", {1: "right", 2: "around", 3: "left"}[change]])
            moves.append(["step", steps, "forward"])
            heading = target
        if rng.random() < 0.3:
            moves.append(["turn", rng.choice(("left", "right", "around"))])
        sentences = [f"Turn {move[1]}." if move[0] == "turn" else f"Walk {_steps(move[1])}."
                     for move in moves]
        return moves, sentences

    def solve(self, sample: Sample) -> str:
        meta = sample.meta
        moves = meta["moves"] if "moves" in meta else parse_instructions(meta["bbh_input"])
        if not moves:
            raise ValueError("no instructions found")
        return "Yes" if end_position(moves) == (0, 0) else "No"


TASKS = [WebOfLies(), Navigation()]
