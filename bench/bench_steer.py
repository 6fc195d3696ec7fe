"""What the CodeSteer loop costs apart from the LLMs, against a scripted OpenAI-compatible server.

    python bench/bench_steer.py [--samples 64] [--delay 0.2] [--concurrency 16] [--overhead-samples 4]

Targets (issue 4):
- executor overhead: median wall time of run_python("print(1)") < 60 ms;
- concurrency: 64 CodeSteer samples against a server answering after 200 ms finish >= 10x faster at --concurrency 16
  than at 1;
- loop overhead per turn, excluding LLM time, < 5% of the turn.

Every sample is a full CodeSteer run in which every TaskLLM reply holds code: CodeSteer's turn-0 guidance, the
TaskLLM's code, its execution, the Symbolic Checker, the Self-answer Checker (one call and one execution), CodeSteer's
next guidance, and the final-answer run. In the concurrency run CodeSteer returns the answer after one round; in the
overhead run it never does, so every sample runs the full six turns.
"""
import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import checkers  # noqa: E402
import report  # noqa: E402
import steer  # noqa: E402
import symbench  # noqa: E402
from fixture_server import fixture_server  # noqa: E402
from llm import make_client  # noqa: E402

TASK = symbench.get_task("game24")


class ExecutionClock:
    """Wraps run_python where the loop and the checkers call it, adding up the time spent executing code."""

    def __init__(self):
        self.seconds, self.calls = 0.0, 0
        self._lock = threading.Lock()
        self._original = checkers.run_python

    def __enter__(self):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return self._original(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds += time.perf_counter() - started
                    self.calls += 1
        checkers.run_python = steer.run_python = timed
        return self

    def __exit__(self, *exc):
        checkers.run_python = steer.run_python = self._original


def scripted_llm(answer_after_one_round: bool, code_replies: bool = True):
    """One reply function for all three roles, told apart by their prompts."""
    def reply(messages):
        first, last = messages[0]["content"], messages[-1]["content"]
        if first.startswith(steer.CHOICE_PROMPT):    # CodeSteer
            if len(messages) == 1:
                return "Write code that searches for the expression.\n\n"
            return "<<<Return Answer>>>" if answer_after_one_round else "Check the arithmetic once more in code."
        if last.startswith(checkers.CHECK_PROMPT):    # the Self-answer Checker
            return "```python\nprint('Correct')\n```"
        if last.startswith("Below is a response"):    # the answer extractor
            return "<<<(2*10)-(1-5) = 24>>>"
        if not code_replies:
            return "Step by step: 2*10 = 20, 1-5 = -4, 20-(-4) = 24. <<<(2*10)-(1-5) = 24>>>"
        return ("Plan: try every order of the numbers.\n```python\nimport itertools\n"
                "orders = list(itertools.permutations([1, 2, 5, 10]))\nprint('<<<(2*10)-(1-5) = 24>>>')\n```")
    return reply


def run_codesteer(url: str, n: int, concurrency: int, answer_after_one_round: bool) -> tuple[float, list[dict]]:
    """(wall seconds, records) of n CodeSteer samples through the harness's thread pool."""
    clients = steer.Clients(*(make_client(name, base_url=url, max_retries=0) for name in ("task", "steer", "helper")))
    samples = TASK.generate(n, complexity=1, seed=0)
    with tempfile.TemporaryDirectory() as out:
        results = report.ResultsFile(Path(out) / "results.jsonl")
        started = time.perf_counter()
        records = steer.run_all([(TASK, s) for s in samples], "codesteer", clients, steer.Settings(mode="finetuned"),
                                results, concurrency, progress=False)
        wall = time.perf_counter() - started
    errors = [r["error"] for r in records if r["error"]]
    assert not errors, errors[:3]
    return wall, records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the server waits before every answer")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--overhead-samples", type=int, default=4)
    parser.add_argument("--executor-runs", type=int, default=30)
    args = parser.parse_args()
    rows = []

    checkers.run_python("print(1)")  # warm the page cache
    timings = []
    for _ in range(args.executor_runs):
        started = time.perf_counter()
        checkers.run_python("print(1)")
        timings.append(time.perf_counter() - started)
    executor_ms = 1000 * statistics.median(timings)
    rows.append(("executor: run_python('print(1)') median", f"{executor_ms:.1f} ms", "< 60 ms", executor_ms < 60))

    for code_replies, label in ((True, "code in every TaskLLM reply"), (False, "text replies")):
        with fixture_server(scripted_llm(True, code_replies), delay=args.delay) as server:
            run_codesteer(server.url, 2, 2, True)  # warm up connections and imports
            with ExecutionClock() as clock:
                serial, records = run_codesteer(server.url, args.samples, 1, True)
            parallel, _ = run_codesteer(server.url, args.samples, args.concurrency, True)
        calls = statistics.mean(sum(role["calls"] for role in r["tokens"].values()) for r in records)
        runs = clock.calls / args.samples
        speedup = serial / parallel
        rows.append((f"{args.samples} samples, {label} ({calls:.1f} LLM calls of {args.delay * 1000:.0f} ms and "
                     f"{runs:.0f} code runs each): concurrency 1", f"{serial:.1f} s", "", None))
        rows.append((f"... concurrency {args.concurrency}", f"{parallel:.1f} s", "", None))
        rows.append(("... speedup", f"{speedup:.1f}x", ">= 10x", speedup >= 10))

    with fixture_server(scripted_llm(answer_after_one_round=False), delay=args.delay) as server, \
            ExecutionClock() as clock:
        wall, records = run_codesteer(server.url, args.overhead_samples, 1, False)
    turns = sum(r["turns"] for r in records)
    llm = sum(r["llm_seconds"] for r in records)
    overhead = wall - llm - clock.seconds
    rows.append((f"loop, {turns} turns: turn time", f"{1000 * wall / turns:.0f} ms", "", None))
    rows.append(("... of which LLM calls", f"{100 * llm / wall:.1f} %", "", None))
    rows.append(("... of which code execution (task code, checker code, final run)",
                 f"{100 * clock.seconds / wall:.1f} %", "", None))
    rows.append(("... loop overhead per turn excluding LLM time and execution",
                 f"{1000 * overhead / turns:.1f} ms = {100 * overhead / wall:.2f} %", "< 5 %", overhead / wall < 0.05))
    rows.append(("... loop overhead per turn excluding LLM time (execution included)",
                 f"{100 * (wall - llm) / wall:.1f} %", "", None))

    print_targets(rows, value_width=22)


def print_targets(rows: list[tuple], value_width: int):
    """A table of (measure, value, target, ok) rows; ok None: no target."""
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'value':>{value_width}}  {'target':>8}  ok")
    for name, value, target, ok in rows:
        print(f"{name.ljust(width)}  {value:>{value_width}}  {target:>8}  {'' if ok is None else 'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
