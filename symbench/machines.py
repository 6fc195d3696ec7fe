"""Three counting "rule machines" of SymBench (spec C.2, C.3): string_synthesis,
string_splitting and synthesis_decomposition. Each holds a stock of items and a list of
methods that trade some items for others; the answer is the stock when no method applies.

    task = symbench.get_task("string_splitting")
    sample = task.generate(1, complexity=3, seed=0)[0]
    task.score(sample, "<<<" + task.solve(sample) + ">>>")      # -> 1.0

A method is {"inputs": {item: n}, "outputs": {item: n}}. Two visiting orders exist, and the
stored labels follow each exactly:
- string_synthesis: run method 1 as many times as possible, then method 2, ..., then the last,
  and repeat the cycle until a whole cycle changes nothing (`run_each_to_exhaustion`);
- string_splitting and synthesis_decomposition: visit the methods round-robin, running each at
  most once per visit, until none can run (`run_round_robin`).
The loaders read the methods and the starting stock from the original question text, so the
solvers reproduce the published labels from the prompt alone.
"""

import copy
import random
import re

from symbench.core import Sample, Task, original_samples

# Cap on the work of one simulation; the benchmark's machines stop after a few dozen steps,
# a method list that never stops (possible for a hand-made one) is an error, not a hang.
MAX_STEPS = 100_000


def can_run(stock: dict, method: dict) -> bool:
    return all(stock.get(item, 0) >= n for item, n in method["inputs"].items())


def run_times(stock: dict, method: dict, times: int) -> None:
    for item, n in method["inputs"].items():
        stock[item] = stock.get(item, 0) - n * times
    for item, n in method["outputs"].items():
        stock[item] = stock.get(item, 0) + n * times


def run_round_robin(initial: dict, methods: list[dict]) -> dict:
    """Visit methods 1, 2, ..., k, 1, 2, ... and run each at most once per visit; stop when no
    method can run."""
    stock = dict(initial)
    for step in range(MAX_STEPS):
        method = methods[step % len(methods)]
        if can_run(stock, method):
            run_times(stock, method, 1)
        elif not any(can_run(stock, other) for other in methods):
            return stock
    raise ValueError(f"the methods still run after {MAX_STEPS} visits")


def run_each_to_exhaustion(initial: dict, methods: list[dict]) -> dict:
    """Run method 1 as often as it can run, then method 2, ..., and repeat the cycle until a
    whole cycle changes nothing."""
    stock = dict(initial)
    for _ in range(MAX_STEPS):
        changed = False
        for method in methods:
            times = min(stock.get(item, 0) // n for item, n in method["inputs"].items())
            if times > 0:
                run_times(stock, method, times)
                changed = True
        if not changed:
            return stock
    raise ValueError(f"the methods still run after {MAX_STEPS} cycles")


# ---- reading and writing methods ------------------------------------------------------------

_QUANTITY_WORDS = {"a single": 1, "single": 1, "a": 1, "an": 1, "one": 1, "two": 2,
                   "three": 3, "four": 4, "five": 5, "six": 6}
_QUANTITY = r"(\d+|(?i:" + "|".join(_QUANTITY_WORDS) + r"))"


def read_items(text: str, item_pattern: str) -> dict:
    """{item: quantity} for every 'quantity item' mention in `text`, in order of appearance;
    item_pattern has one group, the item's name."""
    items = {}
    for match in re.finditer(r"\b" + _QUANTITY + r"\s+" + item_pattern, text):
        quantity, item = match.groups()
        count = int(quantity) if quantity.isdigit() else _QUANTITY_WORDS[quantity.lower()]
        items[item] = items.get(item, 0) + count
    return items


def read_method(sentence: str, item_pattern: str, arrow_pattern: str) -> dict:
    """A method sentence such as 'Two units of machine B can be dismantled into one unit of
    part X': the items before the arrow word are consumed, those after it produced."""
    arrow = re.search(arrow_pattern, sentence)
    if arrow is None:
        raise ValueError(f"cannot read method: {sentence!r}")
    inputs = read_items(sentence[:arrow.start()], item_pattern)
    outputs = read_items(sentence[arrow.end():], item_pattern)
    if not inputs or not outputs:
        raise ValueError(f"cannot read method: {sentence!r}")
    return {"inputs": inputs, "outputs": outputs}


def english_list(words: list[str]) -> str:
    """'x', 'x and y', 'x, y and z'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def describe_items(items: dict, name) -> str:
    """'1 [A], 1 [B] and 1 [C]' from {'[A]': 1, ...}; name(item, n) words one mention."""
    return english_list([name(item, n) for item, n in items.items()])


def format_counts(values: list[int]) -> str:
    return "[" + ", ".join(str(value) for value in values) + "]"


def parse_counts(answer: str, count: int) -> list[int] | None:
    """`count` non-negative integers written as a list ('[1, 0, 12]', '1 0 12', '"1","0"') or,
    when each count is one digit, as a bare digit string ('1012' for four counts). None for
    anything else."""
    if len(answer) > 20 * count + 100:
        return None
    text = answer.translate({ord(ch): " " for ch in "[](){}'\"`"}).strip()
    if not re.fullmatch(r"[0-9\s,;]*", text):
        return None
    tokens = re.findall(r"[0-9]+", text)
    if len(tokens) == 1 and len(tokens[0]) == count:
        tokens = list(tokens[0])
    if len(tokens) != count:
        return None
    return [int(token) for token in tokens]


def read_numbered_lines(question: str, label: str) -> list[str]:
    return re.findall(r"^" + label + r"\s*(.+?)\s*$", question, flags=re.MULTILINE)


# ---- string_synthesis -----------------------------------------------------------------------

BLOCKS = ["[A]", "[B]", "[C]", "{A}", "{B}", "{C}", "(A)", "(B)", "(C)"]
BLOCK_PATTERN = r"([\[{(][A-Z][\]})])"
SYNTHESIS_METHODS = [
    {"inputs": {"[A]": 1, "[B]": 1, "[C]": 1}, "outputs": {"{A}": 1}},
    {"inputs": {"[A]": 1, "[B]": 1}, "outputs": {"{C}": 1}},
    {"inputs": {"[B]": 1, "[C]": 1}, "outputs": {"{B}": 1}},
    {"inputs": {"[C]": 2}, "outputs": {"{C}": 1}},
    {"inputs": {"{A}": 1, "{C}": 1}, "outputs": {"(A)": 1, "(B)": 1}},
    {"inputs": {"{B}": 2}, "outputs": {"(C)": 1}},
]


def _block_words(block: str, n: int) -> str:
    return f"{n} {block}"


class StringSynthesis(Task):
    """Nine kinds of blocks [A] [B] [C] {A} {B} {C} (A) (B) (C) and the original's six
    combination rules; start from some [A], [B], [C] and report the final nine counts.

    Semantics (those of the stored labels): rule 1 as many times as possible, then rule 2, ...,
    rule 6, and the cycle repeats until nothing changes.
    Levels: the largest starting counts of [A], [B], [C] (each drawn from 1..max):
    1: 2/3/3, 2: 3/5/5, 3: 5/8/7 (the original), 4: 8/12/10, 5: 12/16/14.
    Fidelity note: the original scorer deletes brackets, quotes, commas and spaces and reads
    every remaining character as one count, so a count of 10 or more can never be written;
    variant='paper' keeps that rule, the corrected one reads comma- or space-separated
    integers (and still accepts a bare string of nine digits)."""

    id = "string_synthesis"
    answer_format = "<<<[a, b, c, d, e, f, g, h, i]>>>: the nine block counts in the listed order"
    levels = (1, 2, 3, 4, 5)
    default_level = 3
    _MAX_COUNTS = {1: [2, 3, 3], 2: [3, 5, 5], 3: [5, 8, 7], 4: [8, 12, 10], 5: [12, 16, 14]}

    def knobs(self, level: int) -> dict:
        return {"max_counts": self._MAX_COUNTS[level]}

    def make_sample(self, rng: random.Random, level: int, index: int, *,
                    max_counts: list[int]) -> Sample:
        initial = {block: rng.randint(1, top) for block, top in zip(BLOCKS, max_counts)}
        rules = "\n".join(
            f"{i}. {describe_items(method['inputs'], _block_words)} combine to form "
            f"{describe_items(method['outputs'], _block_words)}."
            for i, method in enumerate(SYNTHESIS_METHODS, start=1))
        question = (
            f"There are nine kinds of blocks: {', '.join(BLOCKS)}. They combine by these "
            f"rules:\n{rules}\n\n"
            f"Apply rule 1 as many times as it can be applied, then rule 2 as many times as "
            f"possible, and so on up to rule 6; then go back to rule 1 and repeat the whole "
            f"cycle until a full cycle changes nothing.\n\n"
            f"You start with {describe_items(initial, _block_words)}. How many blocks of each "
            f"kind are there at the end?\n"
            f"Give the nine counts in the order {', '.join(BLOCKS)}, separated by commas, in the "
            f"form <<<[1, 0, 3, 0, 0, 0, 0, 0, 0]>>>.")
        meta = {"initial": initial, "methods": copy.deepcopy(SYNTHESIS_METHODS),
                "report": list(BLOCKS)}
        return Sample(task=self.id, id="", question=question, answer=self.solve_meta(meta),
                      complexity=level, meta=meta)

    @staticmethod
    def solve_meta(meta: dict) -> str:
        stock = run_each_to_exhaustion(meta["initial"], meta["methods"])
        return format_counts([stock.get(block, 0) for block in meta["report"]])

    def solve(self, sample: Sample) -> str:
        return self.solve_meta(sample.meta)

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        expected = parse_counts(self.solve(sample), len(sample.meta["report"]))
        if variant == "paper":
            digits = answer
            for dropped in ("[", "]", "'", ",", " "):
                digits = digits.replace(dropped, "")
            return float(re.fullmatch(r"[0-9]+", digits) is not None
                         and [int(digit) for digit in digits] == expected)
        return float(parse_counts(answer, len(expected)) == expected)

    def load_original(self, dataset_gather_dir) -> list[Sample]:
        def to_sample(question, solution):
            methods = [read_method(line, BLOCK_PATTERN, r"\bform\b")
                       for line in read_numbered_lines(question, r"\d+\.")]
            start = re.search(r"If we now have (.+?), what", question)
            if start is None:
                raise ValueError(f"no starting blocks in question: {question[:80]!r}")
            meta = {"initial": read_items(start.group(1), BLOCK_PATTERN), "methods": methods,
                    "report": list(BLOCKS)}
            return format_counts(solution["final_counts"]), meta
        return original_samples(self, dataset_gather_dir, "string_synthesis", to_sample)


# ---- string_splitting -----------------------------------------------------------------------

SPLITTING_ITEMS = ["A", "B", "C", "X", "Y", "Z"]
MACHINE_OR_PART_PATTERN = r"(?:units?\s+of\s+)?(?i:machines?|parts?)\s+([A-Z])\b"
SPLITTING_ARROW = r"\b(?:into|yields|produces|results in|creates|form)\b"
SPLITTING_METHODS = [
    {"inputs": {"A": 1}, "outputs": {"X": 2, "Y": 1}},
    {"inputs": {"B": 2}, "outputs": {"X": 1}},
    {"inputs": {"C": 2}, "outputs": {"Y": 1}},
    {"inputs": {"B": 1, "C": 1}, "outputs": {"A": 1}},
    {"inputs": {"X": 1, "Y": 1}, "outputs": {"Z": 1}},
]


def _machine_or_part_words(item: str, n: int) -> str:
    kind = "machine" if item in "ABC" else "part"
    return f"{n} {kind}{'s' if n > 1 else ''} {item}"


class RoundRobinMachine(Task):
    """What string_splitting and synthesis_decomposition share: the round-robin simulation as
    the solver, and counts compared as integers in the corrected scorer. `paper_matches` is each
    task's original comparison."""

    def solve(self, sample: Sample) -> str:
        return _round_robin_answer(sample.meta)

    def paper_matches(self, answer: str, expected: list[int]) -> bool:
        raise NotImplementedError

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        expected = parse_counts(self.solve(sample), len(sample.meta["report"]))
        if variant == "paper":
            return float(self.paper_matches(answer, expected))
        return float(parse_counts(answer, len(expected)) == expected)


class StringSplitting(RoundRobinMachine):
    """Machines A, B, C are dismantled into parts X, Y, Z (and B + C assembled into A) by the
    original's five methods, visited round-robin, each run at most once per visit, until none
    can run; report the final A, B, C, X, Y, Z.

    Levels: the range of each starting machine count, the original's five complexities:
    1: 1-3, 2: 2-4, 3: 3-6, 4: 4-7, 5: 5-10.
    Fidelity note: the original compares the answer with the six counts written one after
    another ('0012035'), which cannot tell 1,12 from 11,2; variant='paper' keeps that
    comparison (after deleting brackets, quotes, commas and spaces), the corrected one reads six
    separate integers."""

    id = "string_splitting"
    seen = False
    answer_format = "<<<[A, B, C, X, Y, Z]>>>: the six final counts"
    levels = (1, 2, 3, 4, 5)
    default_level = 3
    _RANGES = {1: [1, 3], 2: [2, 4], 3: [3, 6], 4: [4, 7], 5: [5, 10]}

    def knobs(self, level: int) -> dict:
        return {"count_range": self._RANGES[level]}

    def make_sample(self, rng: random.Random, level: int, index: int, *,
                    count_range: list[int]) -> Sample:
        initial = {machine: rng.randint(*count_range) for machine in "ABC"}
        verbs = ["dismantle", "dismantle", "dismantle", "combine", "combine"]
        methods = "\n".join(
            f"Method {i}: {verb} {describe_items(method['inputs'], _machine_or_part_words)} into "
            f"{describe_items(method['outputs'], _machine_or_part_words)}."
            for i, (verb, method) in enumerate(zip(verbs, SPLITTING_METHODS), start=1))
        question = (
            f"An engineer takes old machines A, B and C apart to collect parts X, Y and Z. He "
            f"knows these methods:\n{methods}\n\n"
            f"He goes through the methods in order, 1, 2, 3, 4, 5, then 1 again, and so on. At "
            f"each visit he carries out the method once if he has what it needs, and otherwise "
            f"skips it. He stops as soon as no method can be carried out.\n\n"
            f"He starts with {describe_items(initial, _machine_or_part_words)}. How many "
            f"machines A, B, C and parts X, Y, Z does he have at the end?\n"
            f"Give the six counts in the order A, B, C, X, Y, Z in the form "
            f"<<<[1, 0, 1, 1, 1, 1]>>>.")
        meta = {"initial": initial, "methods": copy.deepcopy(SPLITTING_METHODS),
                "report": list(SPLITTING_ITEMS)}
        return Sample(task=self.id, id="", question=question, answer=_round_robin_answer(meta),
                      complexity=level, meta=meta)

    def paper_matches(self, answer: str, expected: list[int]) -> bool:
        squeezed = re.sub(r"[\[\]\"',\s]", "", answer)
        return bool(squeezed) and squeezed == "".join(str(n) for n in expected)

    def load_original(self, dataset_gather_dir) -> list[Sample]:
        def to_sample(question, solution):
            methods = [read_method(line, MACHINE_OR_PART_PATTERN, SPLITTING_ARROW)
                       for line in read_numbered_lines(question, r"Method \d+:")]
            start = re.search(r"Initially, there are (.+?)\.", question)
            if start is None:
                raise ValueError(f"no starting machines in question: {question[:80]!r}")
            meta = {"initial": read_items(start.group(1), MACHINE_OR_PART_PATTERN),
                    "methods": methods, "report": list(SPLITTING_ITEMS)}
            return format_counts([int(n) for n in solution["expected_answer"]]), meta
        return original_samples(self, dataset_gather_dir, "string_splitting", to_sample)


def _round_robin_answer(meta: dict) -> str:
    stock = run_round_robin(meta["initial"], meta["methods"])
    return format_counts([stock.get(item, 0) for item in meta["report"]])


# ---- synthesis_decomposition ----------------------------------------------------------------

CROP_OR_PRODUCT_PATTERN = r"units?\s+of\s+(?:crop|product)\s+([A-Z])\b"
EXCHANGE_ARROW = r"\b(?:exchanged|traded) for\b"
# The original's three method sets; its answer lists the items of `report`.
DECOMPOSITION_SETS = {
    "two_crops": {
        "report": ["A", "B", "X"],
        "methods": [{"inputs": {"A": 1, "B": 1}, "outputs": {"X": 1}},
                    {"inputs": {"A": 3}, "outputs": {"X": 2}}]},
    "three_crops": {
        "report": ["A", "B", "C", "X"],
        "methods": [{"inputs": {"A": 1, "B": 1, "C": 1}, "outputs": {"X": 1}},
                    {"inputs": {"A": 1, "B": 1}, "outputs": {"C": 2}},
                    {"inputs": {"C": 2}, "outputs": {"X": 1}}]},
    "two_products": {
        "report": ["A", "B", "C", "X", "Y"],
        "methods": [{"inputs": {"A": 2, "B": 1, "C": 1}, "outputs": {"X": 3}},
                    {"inputs": {"A": 1, "B": 1}, "outputs": {"C": 2}},
                    {"inputs": {"C": 2, "X": 1}, "outputs": {"Y": 1}},
                    {"inputs": {"A": 1, "X": 2}, "outputs": {"Y": 1}}]},
}
_DECOMPOSITION_ORDER = ["A", "B", "C", "X", "Y"]   # the original's solution.answer order


def _crop_or_product_words(item: str, n: int) -> str:
    kind = "crop" if item in "ABC" else "product"
    return f"{n} unit{'s' if n > 1 else ''} of {kind} {item}"


class SynthesisDecomposition(RoundRobinMachine):
    """A farmer trades crops A, B (C) for products X (Y) with the original's exchange methods,
    visited round-robin, each at most once per visit, until none applies; report the final
    counts: [A, B, X], [A, B, C, X] or [A, B, C, X, Y] depending on the method set.

    Levels (method set, starting ranges): 1: two crops, A 3-6, B 2-4 (the original's complexity
    1-2); 2: two crops, A 6-12, B 4-8; 3: three crops, A 4-8, B 3-6, C 2-5 (the original's 3-4);
    4: three crops, A 8-14, B 6-10, C 4-8; 5: two products, A 5-8, B 2-4, C 4-7 (the
    original's 5).
    Fidelity note: the original splits the answer on commas and compares the pieces as strings,
    so '[1, 0, 3]' fails on its brackets; variant='paper' keeps that, the corrected one strips
    brackets and quotes and compares integers."""

    id = "synthesis_decomposition"
    seen = False
    answer_format = "<<<[A, B, X]>>>, <<<[A, B, C, X]>>> or <<<[A, B, C, X, Y]>>>: final counts"
    levels = (1, 2, 3, 4, 5)
    default_level = 3
    _CONFIGS = {
        1: ("two_crops", {"A": [3, 6], "B": [2, 4]}),
        2: ("two_crops", {"A": [6, 12], "B": [4, 8]}),
        3: ("three_crops", {"A": [4, 8], "B": [3, 6], "C": [2, 5]}),
        4: ("three_crops", {"A": [8, 14], "B": [6, 10], "C": [4, 8]}),
        5: ("two_products", {"A": [5, 8], "B": [2, 4], "C": [4, 7]}),
    }

    def knobs(self, level: int) -> dict:
        method_set, ranges = self._CONFIGS[level]
        return {"method_set": method_set, "ranges": ranges}

    def make_sample(self, rng: random.Random, level: int, index: int, *, method_set: str,
                    ranges: dict) -> Sample:
        chosen = DECOMPOSITION_SETS[method_set]
        initial = {crop: rng.randint(*ranges[crop]) for crop in sorted(ranges)}
        methods = "\n".join(
            f"Method {i}: {describe_items(method['inputs'], _crop_or_product_words)} can be "
            f"traded for {describe_items(method['outputs'], _crop_or_product_words)}."
            for i, method in enumerate(chosen["methods"], start=1))
        report = chosen["report"]
        example = format_counts([1, 0, 2, 3, 1][:len(report)])
        question = (
            f"A farmer grows crops {english_list(sorted(ranges))} and can trade them with these "
            f"methods:\n{methods}\n\n"
            f"He goes through the methods in order, starting again from method 1 after method "
            f"{len(chosen['methods'])}. At each visit he carries out the method once if he has "
            f"what it needs, and otherwise skips it. He stops as soon as no method can be "
            f"carried out.\n\n"
            f"He starts with {describe_items(initial, _crop_or_product_words)}. How many units "
            f"of {', '.join(report)} does he have at the end?\n"
            f"Give the counts in the order {', '.join(report)} as a list, in the form "
            f"<<<{example}>>>.")
        meta = {"initial": initial, "methods": copy.deepcopy(chosen["methods"]),
                "report": list(report)}
        return Sample(task=self.id, id="", question=question, answer=_round_robin_answer(meta),
                      complexity=level, meta=meta)

    def paper_matches(self, answer: str, expected: list[int]) -> bool:
        return [part.strip() for part in answer.split(",")] == [str(n) for n in expected]

    def load_original(self, dataset_gather_dir) -> list[Sample]:
        def to_sample(question, solution):
            methods = []
            for line in read_numbered_lines(question, r"Method \d+:"):
                sentence = re.sub(r", and this can be done only once per cycle\.?$", "", line)
                methods.append(read_method(sentence, CROP_OR_PRODUCT_PATTERN, EXCHANGE_ARROW))
            start = re.search(r"Initially there are (.+?)\.\s*$", question, flags=re.MULTILINE)
            shape = re.search(r"\[(remaining_[A-Z](?:, (?:remaining|obtained)_[A-Z])*)\]", question)
            if start is None or shape is None:
                raise ValueError(f"cannot read question: {question[:80]!r}")
            report = [name[-1] for name in shape.group(1).split(", ")]
            stored = dict(zip(_DECOMPOSITION_ORDER, solution["solution"]["answer"]))
            meta = {"initial": read_items(start.group(1), CROP_OR_PRODUCT_PATTERN),
                    "methods": methods, "report": report}
            return format_counts([int(stored[item]) for item in report]), meta
        return original_samples(self, dataset_gather_dir, "synthesis_decomposition_dataset",
                                to_sample)


TASKS = [StringSynthesis(), StringSplitting(), SynthesisDecomposition()]
