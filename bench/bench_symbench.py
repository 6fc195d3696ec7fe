"""What SymBench costs: generating 100 samples of every generatable task at its default complexity
(target under 60 s in total on the 2-core CPU) and scoring 10,000 responses over all 37 tasks
(target under 10 s), with the slowest tasks of each. The hardest level of each task is timed too,
as extra information.

    python bench/bench_symbench.py
    python bench/bench_symbench.py --n 100 --responses 10000 --data-dir tests/symbench-reference/dataset_gather

The responses are a third correct answers (the solver's, or the stored reference for the
file-only tasks), a third near misses (task.perturb) and a third garbage (no block, empty block,
words, a 100 kB number, a million '<<<', deep parentheses), each correct or near-miss answer
wrapped in a paragraph of reasoning text as a TaskLLM would write it. The file-only tasks take
their samples from --data-dir.
"""
import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import symbench  # noqa: E402

GENERATION_TARGET_S = 60.0
SCORING_TARGET_S = 10.0
TOP = 5

REASONING = ("Let me work through this step by step. First I restate the constraints, then I check "
             "each candidate against them and keep the one that satisfies all of them. ") * 3
GARBAGE = (
    "I could not solve this.",
    "<<<>>>",
    "The answer is <<<banana>>>",
    "<<<" + "9" * 100_000 + ">>>",
    "<<<" * 1_000_000,
    "<<<" + "(" * 5_000 + "1" + ")" * 5_000 + ">>>",
    "<<<[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[>>>",
    '<<<{"a": [1, 2, {"b": null}], "c": "\\u0000"}>>>',
    "<<<__import__('os').system('true')>>>",
    "<<<1e308*1e308 = 24>>>",
)


def seconds(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def time_generation(tasks, n):
    """{task id: (samples at the default level, seconds, hardest level, seconds at hardest)}."""
    rows = {}
    for task in tasks:
        samples, default_s = seconds(task.generate, n, seed=0)
        hardest = task.levels[-1]
        _, hardest_s = seconds(task.generate, n, complexity=hardest, seed=0)
        rows[task.id] = (samples, default_s, hardest, hardest_s)
    return rows


def build_responses(pools, count, rng):
    """`count` (sample, response text, kind) triples, round-robin over the tasks."""
    correct = {}
    for task_id, samples in pools.items():
        task = symbench.get_task(task_id)
        correct[task_id] = [task.solve(s) if task.generatable else s.answer for s in samples]
    task_ids = list(pools)
    responses = []
    for i in range(count):
        task_id = task_ids[i % len(task_ids)]
        index = rng.randrange(len(pools[task_id]))
        sample, answer = pools[task_id][index], correct[task_id][index]
        kind = rng.choice(("correct", "near miss", "garbage"))
        if kind == "correct":
            text = f"{REASONING}\n<<<{answer}>>>"
        elif kind == "near miss":
            text = f"{REASONING}\n<<<{symbench.get_task(task_id).perturb(sample, answer, rng)}>>>"
        else:
            text = rng.choice(GARBAGE)
        responses.append((sample, text, kind))
    return responses


def time_scoring(responses):
    """Per-task list of seconds per response, and the mean score of each kind of response."""
    per_task = defaultdict(list)
    by_kind = defaultdict(list)
    for sample, text, kind in responses:
        task = symbench.get_task(sample.task)
        score, elapsed = seconds(task.score, sample, text)
        per_task[sample.task].append(elapsed)
        by_kind[kind].append(score)
    return per_task, {kind: sum(scores) / len(scores) for kind, scores in by_kind.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--n", type=int, default=100, help="samples per task and level")
    parser.add_argument("--responses", type=int, default=10_000)
    parser.add_argument("--data-dir", default=str(ROOT / "tests" / "symbench-reference" / "dataset_gather"),
                        help="dataset_gather folder for the file-only tasks")
    args = parser.parse_args()

    generatable = [t for t in symbench.TASKS.values() if t.generatable]
    generation = time_generation(generatable, args.n)
    pools = {task_id: row[0] for task_id, row in generation.items()}
    for task in symbench.TASKS.values():
        if not task.generatable:
            if Path(args.data_dir).is_dir():
                pools[task.id] = symbench.load_original(task.id, args.data_dir)
            else:
                print(f"note: no {args.data_dir}; {task.id} is left out of the scoring run")
    pools = {task_id: pools[task_id] for task_id in symbench.TASKS if task_id in pools}  # registry order

    responses = build_responses(pools, args.responses, random.Random(0))
    (per_task, mean_by_kind), scoring_wall_s = seconds(time_scoring, responses)

    width = max(len(task_id) for task_id in symbench.TASKS)
    print(f"{'task':<{width}}  {'gen default':>11}  {'hardest':>7}  {'gen hardest':>11}  "
          f"{'scored':>6}  {'score total':>11}  {'per resp':>8}  {'worst':>8}")
    for task_id in symbench.TASKS:
        gen = generation.get(task_id)
        times = per_task.get(task_id, [])
        gen_cells = (f"{gen[1]:>10.3f}s  {gen[2]:>7}  {gen[3]:>10.3f}s" if gen
                     else f"{'file-only':>11}  {'':>7}  {'':>11}")
        score_cells = (f"{len(times):>6}  {sum(times):>10.3f}s  {1e3 * sum(times) / len(times):>6.2f}ms  "
                       f"{1e3 * max(times):>6.1f}ms" if times else f"{0:>6}")
        print(f"{task_id:<{width}}  {gen_cells}  {score_cells}")

    generation_s = sum(row[1] for row in generation.values())
    hardest_s = sum(row[3] for row in generation.values())
    scoring_s = sum(sum(times) for times in per_task.values())
    slowest_generation = sorted(generation, key=lambda t: generation[t][1], reverse=True)[:TOP]
    slowest_scoring = sorted(per_task, key=lambda t: sum(per_task[t]), reverse=True)[:TOP]
    print()
    print(f"generation: {args.n} samples x {len(generation)} tasks at the default level in "
          f"{generation_s:.2f} s (target < {GENERATION_TARGET_S:.0f} s: "
          f"{'met' if generation_s < GENERATION_TARGET_S else 'MISSED'})")
    print("  slowest: " + ", ".join(f"{t} {generation[t][1]:.2f} s" for t in slowest_generation))
    print(f"  hardest level of every task: {hardest_s:.2f} s in total; slowest: " + ", ".join(
        f"{t} {generation[t][3]:.2f} s" for t in sorted(generation, key=lambda t: generation[t][3],
                                                          reverse=True)[:TOP]))
    print(f"scoring: {len(responses)} responses over {len(per_task)} tasks in {scoring_s:.2f} s "
          f"({scoring_wall_s:.2f} s with the loop; target < {SCORING_TARGET_S:.0f} s: "
          f"{'met' if scoring_wall_s < SCORING_TARGET_S else 'MISSED'})")
    print("  slowest: " + ", ".join(f"{t} {sum(per_task[t]):.2f} s" for t in slowest_scoring))
    print("  mean score by kind: " + ", ".join(f"{kind} {mean:.3f}" for kind, mean in sorted(mean_by_kind.items())))


if __name__ == "__main__":
    main()
