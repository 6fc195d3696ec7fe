"""logical_deduction (BIG-Bench-Hard, spec C.2; the evaluated file is seven_objects): a paragraph
fixes the order of n objects through clues; which option ('X is the third from the left') holds?

Clues say where an object is ('the second-cheapest', 'finished last'), which of two comes first
('older than', 'to the right of'), and at the harder levels where an object is not, or how many
objects lie between two. The solver keeps every ordering consistent with the clues: all n!
orderings as one numpy array (row = ordering, column = object, value = position), filtered clue
by clue. The generator adds true clues that cut the candidates down until exactly one ordering is
left, so every generated puzzle has a unique answer.

The same reader parses BBH's wording (golfers, antique cars, birds, books, fruit) and ours.
"""

import random
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from symbench.bbh import (MAX_CHOICE_CHARS, ChoiceTask, chosen_option, normalise_text, option_list,
                          parse_options)
from symbench.core import Sample

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
            "tenth", "eleventh")
_NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                 "seven": 7, "eight": 8, "nine": 9}

# Words that count from the first position and from the last one.
_FROM_START = {"left", "leftmost", "oldest", "cheapest", "shortest", "lightest", "first"}
_FROM_END = {"right", "rightmost", "newest", "most expensive", "tallest", "heaviest", "last"}
_BEFORE = ("to the left of", "older than", "less expensive than", "cheaper than", "shorter than",
           "lighter than", "above", "ahead of")
_AFTER = ("to the right of", "newer than", "more expensive than", "taller than", "heavier than",
          "below", "behind")


# ---- the solver -----------------------------------------------------------------------------

@lru_cache(maxsize=None)
def all_orderings(n: int) -> np.ndarray:
    """Every ordering of n objects: row r, column x = the position (0-based) of object x.
    Built by inserting object k into each slot of the orderings of objects 0..k-1."""
    positions = np.zeros((1, 0), dtype=np.int8)
    for k in range(n):
        blocks = [np.hstack([positions + (positions >= slot), np.full((len(positions), 1), slot, np.int8)])
                  for slot in range(k + 1)]
        positions = np.vstack(blocks)
    positions.setflags(write=False)
    return positions


def holds(orderings: np.ndarray, clue: list) -> np.ndarray:
    """Which orderings satisfy a clue: ['at', x, p], ['not_at', x, p], ['before', x, y]
    (x comes first) or ['gap', x, y, k] (exactly k objects lie between x and y)."""
    kind = clue[0]
    if kind == "at":
        return orderings[:, clue[1]] == clue[2]
    if kind == "not_at":
        return orderings[:, clue[1]] != clue[2]
    if kind == "before":
        return orderings[:, clue[1]] < orderings[:, clue[2]]
    if kind == "gap":
        return np.abs(orderings[:, clue[1]].astype(int) - orderings[:, clue[2]]) == clue[3] + 1
    raise ValueError(f"unknown clue {clue!r}")


def consistent_orderings(n: int, clues: list) -> np.ndarray:
    orderings = all_orderings(n)
    for clue in clues:
        orderings = orderings[holds(orderings, clue)]
    return orderings


# ---- reading the text -----------------------------------------------------------------------

def position_of(phrase: str, n: int) -> int:
    """'the third from the right', 'the second-most expensive', 'last', 'third-to-last', 'the
    oldest' -> a 0-based position among n."""
    phrase = re.sub(r"^the ", "", phrase.strip().lower())
    if m := re.fullmatch(r"(\w+) from the (left|right)", phrase):
        rank, word = ORDINALS.index(m.group(1)) + 1, m.group(2)
    elif m := re.fullmatch(r"(?:(\w+)-)?(leftmost|rightmost|oldest|newest|cheapest|most expensive|shortest"
                           r"|tallest|lightest|heaviest)", phrase):
        rank, word = (ORDINALS.index(m.group(1)) + 1 if m.group(1) else 1), m.group(2)
    elif m := re.fullmatch(r"(\w+)-to-last", phrase):
        rank, word = ORDINALS.index(m.group(1)) + 1, "last"
    elif phrase == "last":
        rank, word = 1, "last"
    elif phrase in ORDINALS:
        rank, word = ORDINALS.index(phrase) + 1, "first"
    else:
        raise ValueError(f"not a position: {phrase!r}")
    if not 1 <= rank <= n:
        raise ValueError(f"position {phrase!r} is outside 1..{n}")
    return rank - 1 if word in _FROM_START else n - rank


def _object_at_start(text: str, names: list[str]) -> tuple[int, str]:
    """The object a sentence starts with (longest name first) and the rest of the sentence."""
    lowered = re.sub(r"^the ", "", text.strip().lower())
    for index in sorted(range(len(names)), key=lambda i: -len(names[i])):
        if lowered.startswith(names[index] + " ") or lowered == names[index]:
            return index, lowered[len(names[index]):].strip()
    raise ValueError(f"no known object at the start of {text!r}")


def read_clue(sentence: str, names: list[str]) -> list:
    """One clue sentence as a clue list (see `holds`)."""
    n = len(names)
    sentence = sentence.strip().rstrip(".")
    if m := re.fullmatch(r"In [\w ]+, exactly (\w+) \w+ comes? between (.+?) and (.+)", sentence, re.I):
        count = int(m.group(1)) if m.group(1).isdigit() else _NUMBER_WORDS[m.group(1).lower()]
        return ["gap", _object_at_start(m.group(2), names)[0], _object_at_start(m.group(3), names)[0], count]
    subject, rest = _object_at_start(sentence, names)
    if m := re.fullmatch(r"(?:is|are) not (.+)|did not finish (.+)", rest):
        return ["not_at", subject, position_of(m.group(1) or m.group(2), n)]
    relations = "|".join(_BEFORE + _AFTER)
    if m := re.fullmatch(rf"(?:is|are|finished) ({relations}) (.+)", rest):
        other = _object_at_start(m.group(2), names)[0]
        return ["before", subject, other] if m.group(1) in _BEFORE else ["before", other, subject]
    if m := re.fullmatch(r"(?:is|are|finished) (.+)", rest):
        return ["at", subject, position_of(m.group(1), n)]
    raise ValueError(f"cannot read clue {sentence!r}")


def _drop_article(name: str) -> str:
    return re.sub(r"^(?:a|an|the) ", "", name.strip().lower())


def read_puzzle(text: str) -> tuple[list[str], list[list], dict[str, str]]:
    """(object names, clues, options) of a puzzle text: the object list is the first list after a
    colon, the clues are the sentences after it up to 'Options:'."""
    body, _, options_block = text.partition("Options:")
    intro = re.search(r":\s*([^.:]+)\.", body)
    if intro is None:
        raise ValueError("no list of objects found")
    listed = re.split(r",\s*(?:and\s+)?|\s+and\s+", intro.group(1))
    names = [_drop_article(name) for name in listed if name.strip()]
    sentences = [s for s in re.split(r"(?<=\.)\s+", body[intro.end():].strip()) if s.strip()]
    clues = [read_clue(sentence, names) for sentence in sentences]
    return names, clues, parse_options("Options:" + options_block)


def solve_text(text: str) -> str:
    """The option letter, as '(X)', that holds in every ordering consistent with the clues."""
    names, clues, options = read_puzzle(text)
    orderings = consistent_orderings(len(names), clues)
    if len(orderings) == 0:
        raise ValueError("the clues contradict each other")
    true_options = [letter for letter, option in options.items()
                    if holds(orderings, read_clue(option, names)).all()]
    if len(true_options) != 1:
        raise ValueError(f"{len(true_options)} options hold")
    return f"({true_options[0]})"


# ---- generation -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Scene:
    """How one kind of ordering is told: its objects, comparatives and position words."""

    intro: str          # with {n} and {items}
    objects: tuple      # the pool objects are drawn from
    before: str         # comparative for 'closer to the first position'
    after: str
    start: str          # superlative of the first position ('shortest'); style "word" only
    end: str
    style: str          # "side": the third from the left; "word": the third-tallest; "rank": third
    gap_order: str      # 'In <gap_order>, exactly k ... come between X and Y'
    noun: str
    verb: str = "is"    # "finished" for a race, whose objects are people named without article

    def name(self, obj: str) -> str:
        return obj if self.verb == "finished" else f"the {obj}"

    def listed(self, obj: str) -> str:
        return obj if self.verb == "finished" else f"{'an' if obj[0] in 'aeiou' else 'a'} {obj}"

    def position(self, rng: random.Random, p: int, n: int) -> str:
        """A phrase for 0-based position p, counted from either end."""
        from_start = p == 0 or (p != n - 1 and rng.random() < 0.5)
        rank = p + 1 if from_start else n - p
        if self.style == "side":
            side = "left" if from_start else "right"
            return f"the {side}most" if rank == 1 else f"the {ORDINALS[rank - 1]} from the {side}"
        if self.style == "rank":
            if rank == 1:
                return "first" if from_start else "last"
            return ORDINALS[rank - 1] if from_start else f"{ORDINALS[rank - 1]}-to-last"
        word = self.start if from_start else self.end
        return f"the {word}" if rank == 1 else f"the {ORDINALS[rank - 1]}-{word}"

    def sentence(self, rng: random.Random, clue: list, objects: list[str], n: int) -> str:
        kind, x = clue[0], self.name(objects[clue[1]])
        if kind == "gap":
            k, y = clue[3], self.name(objects[clue[2]])
            counted = f"{k} {self.noun} comes" if k == 1 else f"{k} {self.noun}s come"
            return f"In {self.gap_order}, exactly {counted} between {x} and {y}."
        if kind == "before":
            first, second = x, self.name(objects[clue[2]])
            if rng.random() < 0.5:
                return f"{first.capitalize()} {self.verb} {self.before} {second}."
            return f"{second.capitalize()} {self.verb} {self.after} {first}."
        phrase = self.position(rng, clue[2], n)
        if kind == "at":
            return f"{x.capitalize()} {self.verb} {phrase}."
        negated = "did not finish" if self.verb == "finished" else "is not"
        return f"{x.capitalize()} {negated} {phrase}."


SCENES = (
    Scene(intro="On a windowsill, {n} potted plants stand in a row: {items}.",
          objects=("fern", "cactus", "orchid", "basil plant", "aloe", "ivy", "bonsai", "yucca",
                   "lavender", "begonia", "mint plant"),
          before="to the left of", after="to the right of", start="left", end="right",
          style="side", gap_order="the row", noun="plant"),
    Scene(intro="A city skyline has {n} structures, no two of the same height: {items}.",
          objects=("clock tower", "water tower", "radio mast", "lighthouse", "bell tower",
                   "grain silo", "chimney", "spire", "pylon", "minaret", "observation deck"),
          before="shorter than", after="taller than", start="shortest", end="tallest",
          style="word", gap_order="height order", noun="structure"),
    Scene(intro="At a county fair, {n} animals were weighed, and no two weighed the same: {items}.",
          objects=("goat", "pig", "sheep", "calf", "pony", "llama", "alpaca", "donkey", "ostrich",
                   "emu", "turkey"),
          before="lighter than", after="heavier than", start="lightest", end="heaviest",
          style="word", gap_order="weight order", noun="animal"),
    Scene(intro="{n} riders finished a cycling race, with no ties: {items}.",
          objects=("Alba", "Bex", "Cato", "Dov", "Enzo", "Fay", "Gil", "Hugo", "Iris", "Jed", "Kit"),
          before="ahead of", after="behind", start="first", end="last", style="rank",
          gap_order="the finishing order", noun="rider", verb="finished"),
)


def _candidate_clues(order: list[int], extra_kinds: bool) -> dict[str, list]:
    """Every true clue of each kind for the ordering `order` (order[x] = position of x)."""
    n = len(order)
    pairs = [(x, y) for x in range(n) for y in range(n) if x != y]
    clues = {"at": [["at", x, order[x]] for x in range(n)],
             "before": [["before", x, y] for x, y in pairs if order[x] < order[y]]}
    if extra_kinds:
        clues["not_at"] = [["not_at", x, p] for x in range(n) for p in range(n) if p != order[x]]
        clues["gap"] = [["gap", x, y, abs(order[x] - order[y]) - 1] for x, y in pairs if x < y]
    return clues


class LogicalDeduction(ChoiceTask):
    """Order n objects from clues; pick the one true option.

    Levels: 1, 2, 3 = 3, 5, 7 objects with position and before/after clues (BBH's evaluated file
    has 7: level 3); 4 = 7 objects, 5 = 9 objects, both adding 'is not at' and 'exactly k
    between' clues. Knobs: `objects`, `extra_kinds`."""

    id = "logical_deduction"
    file_stem = "logical_deduction_seven_objects"
    levels = (1, 2, 3, 4, 5)
    default_level = 3

    def knobs(self, level: int) -> dict:
        return {"objects": (3, 5, 7, 7, 9)[level - 1], "extra_kinds": level >= 4}

    def make_sample(self, rng: random.Random, level: int, index: int, objects: int = 7,
                    extra_kinds: bool = False) -> Sample:
        n = objects
        scene = rng.choice(SCENES)
        names = rng.sample(scene.objects, n)
        order = rng.sample(range(n), n)
        candidates = _candidate_clues(order, extra_kinds)
        kinds = list(candidates)
        weights = [{"at": 3, "before": 5, "not_at": 1, "gap": 2}[kind] for kind in kinds]
        clues, orderings = [], all_orderings(n)
        while len(orderings) > 1:
            clue = rng.choice(candidates[rng.choices(kinds, weights)[0]])
            kept = orderings[holds(orderings, clue)]
            if len(kept) < len(orderings):  # only clues that tell something new
                clues.append(clue)
                orderings = kept
        stated = {clue[2] for clue in clues if clue[0] == "at"}
        asked = rng.choice([p for p in range(n) if p not in stated] or list(range(n)))
        phrase = scene.position(rng, asked, n)
        verb = scene.verb
        options, block = option_list([f"{scene.name(name).capitalize()} {verb} {phrase}" for name in names])
        paragraph = [scene.intro.format(n=n, items=", ".join(scene.listed(x) for x in names[:-1])
                                        + f", and {scene.listed(names[-1])}")]
        paragraph += [scene.sentence(rng, clue, names, n) for clue in clues]
        question = (f"The paragraph below describes {n} things in a strict order, and its statements "
                    "are consistent with each other.\n" + " ".join(paragraph) + f"\n{block}\n"
                    "Exactly one option is true. Pick it and end your reply with its letter in triple "
                    "angle brackets, for example <<<(B)>>>.")
        meta = {"names": names, "clues": clues, "asked_position": asked, "options": options}
        sample = Sample(task=self.id, id="", question=question, answer=None, complexity=level, meta=meta)
        sample.answer = self.solve(sample)
        return sample

    def solve(self, sample: Sample) -> str:
        meta = sample.meta
        if "bbh_input" in meta:
            return solve_text(meta["bbh_input"])
        orderings = consistent_orderings(len(meta["names"]), meta["clues"])
        if len(orderings) != 1:
            raise ValueError(f"the clues allow {len(orderings)} orderings")
        answer = int(np.flatnonzero(orderings[0] == meta["asked_position"])[0])
        return f"({chr(ord('A') + answer)})"

    def is_correct(self, sample: Sample, answer: str) -> bool:
        """An option letter or text as usual, or the bare name of the object the answer is about."""
        target = sample.answer.strip("() ")
        options = sample.meta["options"]
        chosen = chosen_option(options, answer, self.same_option)
        if chosen is None and len(answer) <= MAX_CHOICE_CHARS:
            subjects = {letter: re.match(r"(?:the )?(.+?) (?:is|are|finished)\b", option.lower())
                        for letter, option in options.items()}
            named = [letter for letter, match in subjects.items()
                     if match and normalise_text(answer) == normalise_text(match.group(1))]
            chosen = named[0] if len(named) == 1 else None
        return chosen == target


TASKS = [LogicalDeduction()]
