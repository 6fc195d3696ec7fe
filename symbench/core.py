"""The pieces every SymBench task shares: the Sample record, the Task base class, answer
extraction from a model's text, and a safe arithmetic evaluator.

A task module defines subclasses of `Task` and exposes them as a module-level list `TASKS`;
`symbench/__init__.py` collects them. Scorers see text written by a model: nothing here or in a
task ever calls eval/exec on it, and every parser bounds the work it does.
"""

import ast
import json
import math
import random
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

# The 37 task ids of the spec (Part C.1), in the paper's order: 28 seen, then 9 unseen.
SEEN_TASK_IDS = (
    "game24", "path_plan", "boxlift", "boxnet", "blocksworld", "date_understanding",
    "web_of_lies", "logical_deduction", "navigation", "gsm_hard", "math_geometry",
    "math_counting_probability", "logical_equation", "new_operator", "pooling", "light_puzzles",
    "mahjong_pattern", "statistical_counting", "matrix_transformation", "logic_puzzle",
    "constrained_linear_arrangement", "pattern_recognition", "string_insertion",
    "letter_logic_diagram", "string_deletion_and_modification", "string_synthesis", "reversi",
    "standard_sudoku",
)
UNSEEN_TASK_IDS = (
    "letters", "eight_queens", "number_multiply", "cryptanalysis", "string_splitting",
    "combinatorial_calculation", "synthesis_decomposition", "2048",
    "permutations_and_combinations",
)
TASK_IDS = SEEN_TASK_IDS + UNSEEN_TASK_IDS

# Longest extracted answer a scorer looks at; anything longer is garbage by construction
# (the largest honest answers, BoxNet plans, stay well under this).
MAX_ANSWER_CHARS = 50_000


@dataclass
class Sample:
    task: str
    id: str
    question: str          # the full prompt given to the TaskLLM, ending with the answer format
    answer: str | None     # reference answer in the task's format, without <<< >>>; None if unknown
    complexity: int | None
    meta: dict = field(default_factory=dict)  # the task's structured data (JSON-serialisable)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> "Sample":
        return cls(**json.loads(line))


class Task:
    """One SymBench task. Subclasses set the class attributes and override the hooks below."""

    id: str = ""
    seen: bool = True
    answer_format: str = ""        # one line describing the <<<...>>> shape, for docs and the CLI
    levels: tuple = (1, 2, 3, 4, 5)  # the documented complexity scale; a sweep loops over it
    default_level: int = 3
    generatable: bool = True       # False for tasks that exist only as files (GSM-Hard, MATH)

    # ---- generation ---------------------------------------------------------------------
    def knobs(self, level: int) -> dict:
        """Generator parameters for one complexity level (the spec's knobs)."""
        return {}

    def make_sample(self, rng: random.Random, level: int, index: int, **knobs) -> Sample:
        """One new sample drawn with `rng` only (generate() fills in its id and complexity)."""
        raise NotImplementedError

    def generate(self, n: int, complexity: int | None = None, seed: int = 0, **overrides) -> list[Sample]:
        """n samples at one complexity level; the same (n, complexity, seed, overrides) always gives
        the same samples. `overrides` replace individual knobs of the level."""
        if not self.generatable:
            raise NotImplementedError(
                f"task {self.id!r} cannot be generated: its samples come only from the original "
                f"files; use symbench.load_original({self.id!r}, DATASET_GATHER_DIR)")
        level = self.default_level if complexity is None else complexity
        if level not in self.levels:
            raise ValueError(f"task {self.id!r}: complexity {level!r} is not one of {self.levels}")
        params = {**self.knobs(level), **overrides}
        # A string seed is hashed with SHA-512 by `random`, so this is stable across processes.
        rng = random.Random(f"{self.id}/{level}/{seed}/{sorted(overrides.items())}")
        samples = []
        for index in range(n):
            sample = self.make_sample(rng, level, index, **params)
            sample.id = f"gen-L{level}-seed{seed}-{index}"
            sample.complexity = level
            samples.append(sample)
        return samples

    # ---- solving and scoring ------------------------------------------------------------
    def solve(self, sample: Sample) -> str:
        """A programmatic reference answer (search, simulation, constraint solving)."""
        raise NotImplementedError(f"task {self.id!r} has no programmatic solver")

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        """Score an extracted answer (the inside of <<<...>>>). Must never raise on bad input."""
        raise NotImplementedError

    def score(self, sample: Sample, response: str, variant: str = "corrected") -> float:
        """Score a TaskLLM's final text in [0, 1]. variant='paper' reproduces the original scorer
        where the spec has a Fidelity note; the default is the corrected rule."""
        if variant not in ("corrected", "paper"):
            raise ValueError(f"variant must be 'corrected' or 'paper', not {variant!r}")
        answer = extract_answer(response)
        if answer is None or len(answer) > MAX_ANSWER_CHARS:
            return 0.0
        try:
            return float(self.score_answer(sample, answer, variant))
        except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, OverflowError,
                RecursionError, AttributeError, ArithmeticError):
            return 0.0

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        """A near-miss of a correct answer that must score below 1.0 (tests use it; data
        synthesis can use it as a negative). The default changes one character in the middle:
        a digit to another digit, a letter to another letter. Tasks whose answers can stay
        valid under that change override it."""
        positions = [i for i, ch in enumerate(answer) if ch.isalnum()]
        if not positions:
            return answer[: len(answer) // 2]
        i = positions[len(positions) // 2]
        ch = answer[i]
        pool = "0123456789" if ch.isdigit() else ("abcdefghijklmnopqrstuvwxyz" if ch.islower()
                                                   else "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        return answer[:i] + rng.choice(pool.replace(ch, "")) + answer[i + 1:]

    # ---- the original files -------------------------------------------------------------
    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        """Read the original published samples (spec C.4 layout) under dataset_gather_dir."""
        raise NotImplementedError(f"task {self.id!r} has no loader for the original files")

    def __repr__(self) -> str:
        return f"<Task {self.id} ({'seen' if self.seen else 'unseen'})>"


# ---- answer extraction ----------------------------------------------------------------------

_FENCE = re.compile(r"^```[A-Za-z0-9_+-]*\s*|\s*```$")


def extract_answer(text: str) -> str | None:
    """The inside of the last <<<...>>> block of `text`, stripped of whitespace, code fences
    and one layer of matching quotes; None when there is no block.

    Written with rfind rather than a regex so that adversarial input ('<<<' repeated a million
    times) stays linear-time."""
    if not isinstance(text, str):
        return None
    end = text.rfind(">>>")
    if end < 0:
        return None
    start = text.rfind("<<<", 0, end)
    if start < 0:
        return None
    inner = text[start + 3:end]
    # '<<<<x>>>' or '<<<x>>>>' style slips: drop the stray angle brackets.
    inner = inner.lstrip("<").strip()
    inner = _FENCE.sub("", inner).strip()
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "\"'`":
        inner = inner[1:-1].strip()
    return inner


# ---- safe arithmetic ------------------------------------------------------------------------

MAX_DIGITS = 40      # longest integer literal we accept in a model's arithmetic
MAX_NODES = 400      # largest expression tree we evaluate
MAX_MAGNITUDE = 10 ** 60

_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def normalize_math_text(expr: str) -> str:
    """Rewrite the usual typography of arithmetic into + - * / ( )."""
    replacements = {"\\times": "*", "\\cdot": "*", "×": "*", "·": "*", "\\div": "/", "÷": "/",
                    "−": "-", "–": "-", "\\left": "", "\\right": "", "{": "(", "}": ")",
                    "[": "(", "]": ")", "\\(": "", "\\)": ""}
    for old, new in replacements.items():
        expr = expr.replace(old, new)
    # \frac(a)(b) after the brace rewrite -> ((a)/(b))
    previous = None
    while previous != expr:  # innermost first, so nested fractions unwind
        previous = expr
        expr = re.sub(r"\\frac\s*(\([^()]*\))\s*(\([^()]*\))", r"(\1/\2)", expr)
    return expr.replace("$", "").strip()


def safe_arith(expr: str) -> Fraction:
    """Exact value of an expression made only of numbers, + - * / and parentheses.

    Raises ValueError on anything else (names, calls, powers, huge numbers, huge trees,
    division by zero). Never evaluates code."""
    if len(expr) > 10 * MAX_NODES:
        raise ValueError("expression too long")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as error:
        raise ValueError(f"not an arithmetic expression: {error}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ValueError("expression too large")
    return _eval_node(tree.body)


def _eval_node(node) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if isinstance(node.value, int) and len(str(abs(node.value))) > MAX_DIGITS:
            raise ValueError("number too large")
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise ValueError("non-finite number")
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval_node(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ValueError("division by zero")
        value = _BINOPS[type(node.op)](left, right)
        if abs(value) > MAX_MAGNITUDE or value.denominator > MAX_MAGNITUDE:
            raise ValueError("intermediate value too large")
        return value
    raise ValueError(f"disallowed element {type(node).__name__}")


def integer_literals(expr: str) -> list[int]:
    """The integer literals of an arithmetic expression, in order (for multiset checks)."""
    return [int(token) for token in re.findall(r"\d+", expr)]


_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def parse_number(text: str) -> float | None:
    """A number written by a model: '1,234.5', ' -3 ', '$12', '7.0', '1/4', '\\frac{1}{4}'.
    None when `text` is not one number."""
    if not isinstance(text, str) or len(text) > 200:
        return None
    cleaned = text.strip().strip("$").replace("\\!", "").replace("\\,", "").strip()
    cleaned = cleaned.rstrip(".").strip()
    if not cleaned:
        return None
    if _NUMBER.fullmatch(cleaned):
        digits = cleaned.replace(",", "")
        try:
            value = float(digits)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    try:  # a fraction or simple expression: 1/4, -3/2, \frac{1}{4}
        return float(safe_arith(normalize_math_text(cleaned)))
    except (ValueError, OverflowError, ZeroDivisionError):
        return None


def numbers_close(a: float, b: float, rel: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


# ---- the original files ---------------------------------------------------------------------

def sample_folders(root: Path, prefix: str = "sample_") -> list[Path]:
    """<prefix>0, <prefix>1, ... under root, in numeric order, stopping at the first gap
    (the original loaders' rule)."""
    folders = []
    for i in range(100_000):
        folder = root / f"{prefix}{i}"
        if not folder.is_dir():
            break
        folders.append(folder)
    if not folders:
        raise FileNotFoundError(f"no {prefix}0 folder under {root}")
    return folders


def read_question_and_solution(folder: Path) -> tuple[str, object]:
    """question.txt (verbatim) and solution.json of one sample folder."""
    question_path, solution_path = folder / "question.txt", folder / "solution.json"
    for path in (question_path, solution_path):
        if not path.is_file():
            raise FileNotFoundError(f"missing {path}")
    question = question_path.read_text(encoding="utf-8")
    try:
        solution = json.loads(solution_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{solution_path}: invalid JSON: {error}") from None
    return question, solution


def original_samples(task: Task, dataset_gather_dir: Path, folder_name: str, to_sample) -> list[Sample]:
    """One Sample per sample_i folder of an original task folder; `to_sample(question,
    solution)` returns (answer, meta) and the complexity comes from solution.json."""
    samples = []
    for folder in sample_folders(Path(dataset_gather_dir) / folder_name):
        question, solution = read_question_and_solution(folder)
        answer, meta = to_sample(question, solution)
        samples.append(Sample(task=task.id, id=folder.name, question=question, answer=answer,
                              complexity=solution.get("complexity"), meta=meta))
    return samples
