"""What synth.py costs apart from the LLMs, against a scripted OpenAI-compatible server that answers after 200 ms.

    python bench/bench_synth.py [--questions 48] [--delay 0.2] [--concurrency 16]

Targets (issue 12):
- synthesis at --concurrency 16 >= 10x the samples (SFT trajectories, DPO questions) per second of --concurrency 1;
- synth.py's own overhead (all but LLM calls and code execution) < 5 % of the wall time.

The scripted roles are bench_steer's (a fine-tuned-mode CodeSteer asks for code and returns the answer after one
round; the TaskLLM's reply holds code that runs; the Self-answer Checker runs its code). DPO grows a tree of branch 2,
depth 2 per question (its siblings agree, so it makes no pairs: this measures the cost of the tree). The rows are
checked against the embedded model's tokenizer (loaded once, in the warm-up).
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import synth  # noqa: E402
from bench_steer import ExecutionClock, print_targets, scripted_llm  # noqa: E402
from fixture_server import fixture_server  # noqa: E402


def run(command: str, url: str, questions: int, concurrency: int, out: Path) -> tuple[float, dict, float]:
    """(wall seconds, summary, LLM seconds) of one synth.py run."""
    argv = [command, "--task", "game24", "--n", str(questions), "--concurrency", str(concurrency), "--quiet",
            "--out", str(out), "--steer-mode", "finetuned",
            *[f"--{role}-base-url={url}" for role in ("task", "steer", "helper")]]
    if command == "dpo":
        argv += ["--branch", "2", "--max-depth", "2"]
    started = time.perf_counter()
    synth.main(argv)
    wall = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    if command == "sft":
        records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        llm = sum(r["llm_seconds"] for r in records)
    else:   # node seconds hold LLM time and execution; the LLM share is calls x the server's delay and transfer
        llm = None
    return wall, summary, llm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the server waits before every answer")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    rows = []
    with fixture_server(lambda m: scripted_llm(True)(m), delay=args.delay) as server, \
            tempfile.TemporaryDirectory() as tmp:
        for command in ("sft", "dpo"):
            run(command, server.url, 2, 2, Path(tmp) / f"warm-{command}")   # imports, tokenizer, connections
            with ExecutionClock() as clock:
                serial, summary, llm = run(command, server.url, args.questions, 1, Path(tmp) / f"{command}-1")
            parallel, _, _ = run(command, server.url, args.questions, args.concurrency,
                                 Path(tmp) / f"{command}-{args.concurrency}")
            unit = "trajectories" if command == "sft" else "questions"
            speedup = serial / parallel
            rows.append((f"{command}: {args.questions} {unit}, concurrency 1", f"{args.questions / serial:.2f} /s", "",
                         None))
            rows.append((f"... concurrency {args.concurrency}", f"{args.questions / parallel:.2f} /s", "", None))
            rows.append(("... speedup", f"{speedup:.1f}x", ">= 10x", speedup >= 10))
            if command == "dpo":
                nodes = [json.loads(line) for line in (Path(tmp) / "dpo-1" / "tree.jsonl").read_text().splitlines()]
                calls = sum(n["usage"]["calls"] for n in nodes if n["kind"] == "node")
                llm = calls * args.delay   # a lower bound: the server's wait alone
                rows.append((f"... {summary['rows']} pairs from {calls} LLM calls", "", "", None))
            overhead = serial - llm - clock.seconds
            rows.append((f"... synth.py overhead at concurrency 1 (wall {serial:.1f} s, LLM {llm:.1f} s, code "
                         f"{clock.seconds:.1f} s)", f"{100 * overhead / serial:.2f} %", "< 5 %",
                         overhead / serial < 0.05))
    print_targets(rows, value_width=12)


if __name__ == "__main__":
    main()
