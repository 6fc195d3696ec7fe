"""The three SymBench tasks the paper scores with an LLM judge: gsm_hard and the MATH subsets
math_geometry and math_counting_probability (spec C.2). They exist only as files and have no
programmatic solver (solve() raises NotImplementedError).

    task = symbench.get_task("math_geometry")
    sample = symbench.load_original("math_geometry", DATASET_GATHER_DIR)[0]
    task.score(sample, "... <<<(18, -18)>>>")                  # -> 1.0

Scoring is deterministic by default: both sides are normalised (LaTeX spacing, \\left/\\right,
\\dfrac, units text, dollar and degree signs, a trailing period) and compared as numbers within
the judge's relative tolerance of 1e-3 where both read as numbers (\\frac, \\sqrt, \\pi and
implicit products are understood), elementwise for tuples, else as normalised strings.

An LLM judge can be plugged in instead: set `task.judge` to a callable (target, answer) -> the
judge's reply text ending with <<<True>>> or <<<False>>>; `judge_prompt` builds a prompt with
the paper's equivalence rule. variant='paper' then counts every verdict except an exact 'False'
as correct, as the original did; the corrected rule requires 'True'.
"""

import json
import math
import random
import re
from pathlib import Path
from typing import Callable

from symbench.core import Sample, Task, extract_answer

RELATIVE_TOLERANCE = 1e-3  # the paper's judge rule: values within 1e-3 relative difference agree
MAX_FINAL_ANSWER_CHARS = 300  # a final numeric or LaTeX answer is far shorter

# The original prompt construction for GSM-Hard and MATH (CodeSteer benchmark/run_gsm_*.py and
# run_math_*.py): the problem, then this format request.
ORIGINAL_SUFFIX = ("\n\nOutput final answer with the format <<<answer>>> such as <<<123.42>>>, "
                   "<<<125.0>>>, <<<-9867>>>.\nYour answer: ")


def judge_prompt(target: str, answer: str) -> str:
    """A prompt for an LLM judge stating the paper's equivalence rule (in our words)."""
    return (
        "Decide whether two answers to a math problem have the same value. Ignore differences "
        "of format and any extra text such as units, names or equations; values whose relative "
        "difference is below 1e-3 count as the same (so 42 and 41.99999999999998 agree, and "
        "\\frac{63}{64} and 0.984375 agree, but 5\\sqrt{13} and 15.97 do not).\n"
        f"Reference answer: {target}\nGiven answer: {answer}\n"
        "End your reply with <<<True>>> if they agree and <<<False>>> otherwise."
    )


# ---- reading a final answer -----------------------------------------------------------------

def last_boxed(solution: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}) of a MATH solution, braces matched."""
    start = solution.rfind("\\boxed")
    if start < 0:
        start = solution.rfind("\\fbox")
        if start < 0:
            return None
    opening = solution.find("{", start)
    if opening < 0:
        return None
    depth = 0
    for index in range(opening, len(solution)):
        if solution[index] == "{":
            depth += 1
        elif solution[index] == "}":
            depth -= 1
            if depth == 0:
                return solution[opening + 1:index]
    return None


_DROPPED = ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\%", "%",
            "^{\\circ}", "^\\circ", "\\circ", "°", "\\$", "$", "~")
_TEXT = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}")
_TRAILING_UNITS = re.compile(r"(?<=[\d}])\s+[A-Za-z][A-Za-z\s.]*$")


def normalise(text: str) -> str:
    """A final answer with its typography removed, e.g. '\\$1,\\!000 \\text{ cm}.' -> '1,000'."""
    text = text.strip().replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for dropped in _DROPPED:
        text = text.replace(dropped, "")
    without_text = _TEXT.sub("", text)
    text = without_text if without_text.strip() else _TEXT.sub(r"\1", text)
    text = _TRAILING_UNITS.sub("", text.strip())
    text = re.sub(r"\s+", "", text).rstrip(".")
    text = re.sub(r"^[A-Za-z]\w*=", "", text)  # 'x=5' -> '5'
    # \frac12 -> \frac{1}{2}, \sqrt2 -> \sqrt{2}
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    return re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", text)


_VALUE_TOKEN = re.compile(r"\d+(?:\.\d+)?|\.\d+|\\[A-Za-z]+|π|\S")
_OPENING = {"(": ")", "{": "}", "[": "]"}
MAX_NESTING = 20
MAX_EXPONENT = 100


def latex_value(text: str) -> float | None:
    """The value of a normalised numeric answer: numbers (1,000 grouping), + - * / ^, \\cdot,
    \\times, \\frac, \\sqrt (with an optional index), \\pi and implicit products. None for
    anything else. Work is bounded by the length check, a nesting limit and exponent limits."""
    if len(text) > MAX_FINAL_ANSWER_CHARS or not text:
        return None
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    depth = 0
    for char in text:
        depth += char in _OPENING
        depth -= char in _OPENING.values()
        if depth > MAX_NESTING:
            return None
    tokens = _VALUE_TOKEN.findall(text.replace("\\cdot", "*").replace("\\times", "*"))
    try:
        value, position = _sum(tokens, 0)
    except (ValueError, IndexError, OverflowError, ZeroDivisionError):
        return None
    return value if position == len(tokens) and math.isfinite(value) else None


def _sum(tokens: list[str], position: int) -> tuple[float, int]:
    value, position = _product(tokens, position)
    while position < len(tokens) and tokens[position] in "+-":
        sign = tokens[position]
        term, position = _product(tokens, position + 1)
        value = value + term if sign == "+" else value - term
    return value, position


def _starts_atom(token: str) -> bool:
    return token[0].isdigit() or token[0] == "." or token in _OPENING or token in (
        "\\frac", "\\sqrt", "\\pi", "π")


def _product(tokens: list[str], position: int) -> tuple[float, int]:
    value, position = _signed(tokens, position)
    while position < len(tokens):
        token = tokens[position]
        if token in "*/":
            factor, position = _signed(tokens, position + 1)
            value = value * factor if token == "*" else value / factor
        elif _starts_atom(token):  # implicit product: 2\sqrt{3}, 12\pi, 3(4)
            factor, position = _power(tokens, position)
            value *= factor
        else:
            break
    return value, position


def _signed(tokens: list[str], position: int) -> tuple[float, int]:
    if tokens[position] in "+-":
        value, end = _signed(tokens, position + 1)
        return (-value if tokens[position] == "-" else value), end
    return _power(tokens, position)


def _power(tokens: list[str], position: int) -> tuple[float, int]:
    base, position = _atom(tokens, position)
    if position < len(tokens) and tokens[position] == "^":
        exponent, position = _signed(tokens, position + 1)
        if abs(exponent) > MAX_EXPONENT or abs(base) > 10 ** 6:
            raise ValueError("power too large")
        base = base ** exponent
        if isinstance(base, complex):
            raise ValueError("complex power")
    return base, position


def _atom(tokens: list[str], position: int) -> tuple[float, int]:
    token = tokens[position]
    if token[0].isdigit() or token[0] == ".":
        return float(token), position + 1
    if token in ("\\pi", "π"):
        return math.pi, position + 1
    if token in _OPENING:
        value, end = _sum(tokens, position + 1)
        if tokens[end] != _OPENING[token]:
            raise ValueError("unbalanced brackets")
        return value, end + 1
    if token == "\\frac":
        numerator, position = _atom(tokens, position + 1)
        denominator, position = _atom(tokens, position)
        return numerator / denominator, position
    if token == "\\sqrt":
        position, index = position + 1, 2.0
        if tokens[position] == "[":
            index, position = _atom(tokens, position)
        radicand, position = _atom(tokens, position)
        if radicand < 0 or index <= 0:
            raise ValueError("no real root")
        return radicand ** (1 / index), position
    raise ValueError(f"not a number: {token!r}")


def _tuple_items(text: str) -> list[str] | None:
    """The items of '(a,b,...)' or '[a,b]' split at top-level commas; None if not a tuple."""
    if len(text) < 2 or text[0] not in "([" or text[-1] not in ")]":
        return None
    items, depth, current = [], 0, ""
    for char in text[1:-1]:
        if char == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        depth += char in _OPENING
        depth -= char in _OPENING.values()
        current += char
    items.append(current)
    return items if len(items) > 1 else None


def same_answer(target: str, answer: str) -> bool:
    """The deterministic equivalence rule: normalised strings equal, or values within the
    relative tolerance, elementwise for tuples of the same length."""
    target, answer = normalise(target), normalise(answer)
    if target == answer:
        return True
    target_items, answer_items = _tuple_items(target), _tuple_items(answer)
    if target_items is not None or answer_items is not None:
        return (target_items is not None and answer_items is not None
                and len(target_items) == len(answer_items)
                and all(map(_same_value, target_items, answer_items)))
    return _same_value(target, answer)


def _same_value(target: str, answer: str) -> bool:
    if target == answer:
        return True
    target_value, answer_value = latex_value(target), latex_value(answer)
    return (target_value is not None and answer_value is not None
            and math.isclose(target_value, answer_value, rel_tol=RELATIVE_TOLERANCE,
                             abs_tol=1e-9))


def format_float(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


# ---- the tasks ------------------------------------------------------------------------------

class JudgedTask(Task):
    """Shared scoring of the judged tasks; subclasses set the id and the loader."""

    generatable = False
    # Optional LLM judge: judge(target, answer) -> reply text ending with <<<True>>>/<<<False>>>.
    # None (the default) uses the deterministic rule `same_answer`.
    judge: Callable[[str, str], str] | None = None

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        if len(answer) > MAX_FINAL_ANSWER_CHARS or not answer.strip():
            return 0.0
        target = str(sample.meta["target"])
        if self.judge is None:
            return float(same_answer(target, answer))
        verdict = (extract_answer(self.judge(target, answer)) or "").strip()
        if variant == "paper":  # the original failed a sample only on an exact 'False'
            return float(verdict != "False")
        return float(verdict.lower() == "true")

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        # A changed late digit can stay inside the 1e-3 tolerance: move numeric answers clearly.
        value = latex_value(normalise(answer))
        if value is None:
            return super().perturb(sample, answer, rng)
        return format_float(value + max(1.0, abs(value)))


class GsmHard(JudgedTask):
    """GSM-Hard: grade-school word problems with large numbers; the answer is one number.

    The original evaluates rows 1, 26, 51, ... (0-based) of gsmhardv2.jsonl (53 of 1319); the
    loader takes those among the rows present. No complexity levels."""

    id = "gsm_hard"
    seen = True
    answer_format = "<<<number>>>, e.g. <<<-9867.5>>>"
    levels = ()
    _FIRST_ROW, _ROW_STEP = 1, 25

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        path = Path(dataset_gather_dir) / "gsmhardv2.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"missing {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        samples = []
        for row in range(self._FIRST_ROW, len(lines), self._ROW_STEP):
            record = json.loads(lines[row])
            target = float(record["target"])
            samples.append(Sample(task=self.id, id=f"Sample_{row}",
                                  question=record["input"] + ORIGINAL_SUFFIX,
                                  answer=format_float(target), complexity=None,
                                  meta={"target": target}))
        return samples


class MathSubset(JudgedTask):
    """A MATH subject: the first 50 problems of MATH/train/<subject>/<n>.json in increasing n
    (the original's selection). Levels are MATH's difficulty levels 1-5 stored in the files.
    The target is the content of the solution's last \\boxed{...}."""

    seen = True
    answer_format = "<<<answer>>>, e.g. <<<\\frac{7}{33}>>> or <<<(18, -18)>>>"
    levels = (1, 2, 3, 4, 5)
    subject = ""
    _EVALUATED = 50

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        folder = Path(dataset_gather_dir) / "MATH" / "train" / self.subject
        if not folder.is_dir():
            raise FileNotFoundError(f"missing {folder}")
        numbered = sorted((int(path.stem), path) for path in folder.glob("*.json")
                          if path.stem.isdigit())
        samples = []
        for number, path in numbered[: self._EVALUATED]:
            record = json.loads(path.read_text(encoding="utf-8"))
            target = last_boxed(record["solution"])
            if target is None:
                raise ValueError(f"{path}: the solution has no \\boxed{{...}} answer")
            level = re.search(r"\d+", record.get("level", ""))
            samples.append(Sample(task=self.id, id=f"Sample_{number}",
                                  question=record["problem"] + ORIGINAL_SUFFIX, answer=target,
                                  complexity=int(level.group()) if level else None,
                                  meta={"target": target, "type": record.get("type")}))
        return samples


class MathGeometry(MathSubset):
    id = "math_geometry"
    subject = "geometry"


class MathCountingProbability(MathSubset):
    id = "math_counting_probability"
    subject = "counting_and_probability"


TASKS = [GsmHard(), MathGeometry(), MathCountingProbability()]
