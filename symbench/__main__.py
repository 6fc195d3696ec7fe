"""The SymBench command line: list the tasks, write samples to JSONL, score a JSONL of responses,
show one sample.

    python -m symbench list
    python -m symbench generate --tasks all --n 100 --seed 0 --out samples.jsonl
    python -m symbench generate --task game24 --task standard_sudoku --levels all --n 10 --out sweep.jsonl
    python -m symbench generate --tasks all --n 20 --data-dir path/to/dataset_gather --out all.jsonl
    python -m symbench score --samples samples.jsonl --responses responses.jsonl [--out scores.jsonl]
    python -m symbench show --task game24 --index 3 --seed 0 --complexity 2
    python -m symbench show --samples samples.jsonl --id gen-L3-seed0-0 [--task game24]

Files are JSONL. A samples file holds one `Sample.to_json()` per line. A responses file holds
{"task", "id", "response"} per line (the TaskLLM's final text, scored with `task.score`), or
{"task", "id", "answer"} for an answer already taken out of its <<< >>> block (scored as the
response "<<<answer>>>"). A sample is identified by (task, id): ids repeat across tasks.
"""

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

import symbench
import jsonl  # top level: shared with the training scripts
from symbench.core import Sample, Task

# Runs with fewer samples than this finish in well under a second: no progress bar.
PROGRESS_MIN_SAMPLES = 1000


class CommandError(Exception):
    """A problem with the user's input; main() prints it without a traceback."""


# ---- files ----------------------------------------------------------------------------------

def read_jsonl(path: str | Path):
    """core.read_jsonl, its errors as CommandError."""
    try:
        yield from jsonl.read_jsonl(path)
    except (OSError, ValueError) as error:
        raise CommandError(str(error)) from None


# What Sample.to_json() writes; a samples file from elsewhere is checked against it, since a list
# where a task id belongs would otherwise surface as a TypeError deep inside scoring.
SAMPLE_FIELD_TYPES = {"task": ((str,), "a string"), "id": ((str,), "a string"), "question": ((str,), "a string"),
                      "answer": ((str, type(None)), "a string or null"),
                      "complexity": ((int, type(None)), "an integer or null"), "meta": ((dict,), "an object")}


def read_samples(path: str | Path) -> dict[tuple[str, str], Sample]:
    samples = {}
    for where, record in read_jsonl(path):
        try:
            sample = Sample(**record)
        except TypeError as error:
            raise CommandError(f"{where}: not a sample: {error}") from None
        for name, (kinds, expected) in SAMPLE_FIELD_TYPES.items():
            value = getattr(sample, name)
            if not isinstance(value, kinds):
                raise CommandError(f"{where}: not a sample: '{name}' must be {expected}, got {type(value).__name__}")
        if sample.task not in symbench.TASKS:
            raise CommandError(f"{where}: unknown task {sample.task!r}")
        if (sample.task, sample.id) in samples:
            raise CommandError(f"{where}: duplicate sample (task {sample.task!r}, id {sample.id!r})")
        samples[sample.task, sample.id] = sample
    return samples


def write_lines(path: str, lines) -> int:
    """Write `lines` (an iterable of strings, possibly lazy) to path, or stdout for '-'; returns
    how many. A file is written to a temporary neighbour and renamed into place, so an
    interrupted or failed run never leaves a half-written file under the requested name."""
    def write_all(handle) -> int:
        count = 0
        for line in lines:
            handle.write(line + "\n")
            count += 1
        return count

    if path == "-":
        return write_all(sys.stdout)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            count = write_all(handle)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    return count


# ---- helpers --------------------------------------------------------------------------------

def selected_tasks(task_ids: list[str] | None, group: str | None) -> list[Task]:
    """The tasks named by --task and --tasks, in registry order."""
    if not task_ids and not group:
        raise CommandError("name tasks with --task ID (repeatable) or --tasks seen|unseen|all")
    wanted = set()
    for task_id in task_ids or []:
        if task_id not in symbench.TASKS:
            raise CommandError(f"unknown task {task_id!r}; `python -m symbench list` shows the ids")
        wanted.add(task_id)
    if group:
        wanted |= {t.id for t in symbench.TASKS.values()
                   if group == "all" or (group == "seen") == t.seen}
    return [task for task in symbench.TASKS.values() if task.id in wanted]


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def parse_levels(text: str) -> str | list[int]:
    if text == "all":
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or comma-separated integers, not {text!r}") from None


def levels_for(task: Task, complexity: int | None, levels: str | list[int] | None) -> list[int]:
    if levels == "all":
        return list(task.levels)
    wanted = levels if levels is not None else [task.default_level if complexity is None else complexity]
    unknown = [level for level in wanted if level not in task.levels]
    if unknown:
        raise CommandError(f"task {task.id!r}: complexity {unknown[0]} is not one of its levels "
                           f"{format_levels(task.levels)}")
    return wanted


def format_levels(levels: tuple) -> str:
    if not levels:
        return "-"
    if list(levels) == list(range(levels[0], levels[-1] + 1)):
        return f"{levels[0]}-{levels[-1]}"
    if len(levels) > 6:
        return f"{levels[0]},{levels[1]},...,{levels[-1]} ({len(levels)} codes)"
    return ",".join(map(str, levels))


def solver_answer(task: Task, sample: Sample) -> str | None:
    try:
        return task.solve(sample)
    except NotImplementedError:
        return None


def read_originals(task: Task, data_dir: str) -> list[Sample]:
    try:
        return symbench.load_original(task.id, data_dir)
    except (OSError, ValueError) as error:
        raise CommandError(f"{task.id}: cannot read the original samples: {error}") from None


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


# ---- subcommands ----------------------------------------------------------------------------

def cmd_list(args) -> None:
    tasks = list(symbench.TASKS.values())
    width = max(len(t.id) for t in tasks)
    print(f"{'task':<{width}}  {'split':<6}  {'source':<9}  {'levels':<26}  {'default':<7}  answer format")
    for task in tasks:
        default = str(task.default_level) if task.levels else "-"
        answer_format = task.answer_format.replace("\n", "\\n")
        print(f"{task.id:<{width}}  {'seen' if task.seen else 'unseen':<6}  "
              f"{'generated' if task.generatable else 'file-only':<9}  "
              f"{format_levels(task.levels):<26}  {default:<7}  {answer_format}")
    seen = sum(t.seen for t in tasks)
    generatable = sum(t.generatable for t in tasks)
    print(f"{len(tasks)} tasks: {seen} seen, {len(tasks) - seen} unseen; "
          f"{generatable} generatable, {len(tasks) - generatable} file-only")


def cmd_generate(args) -> None:
    jobs = []  # (task, level) to generate, or (task, None) to read from the original files
    for task in selected_tasks(args.task, args.tasks):
        if task.generatable:
            jobs += [(task, level) for level in levels_for(task, args.complexity, args.levels)]
        elif args.data_dir:
            jobs.append((task, None))
        else:
            note(f"skipping {task.id}: file-only task (give --data-dir to read its original samples)")
    if not jobs:
        raise CommandError("nothing to generate")

    def samples():
        with tqdm(total=args.n * len(jobs), unit="sample", file=sys.stderr,
                  disable=True if args.n * len(jobs) < PROGRESS_MIN_SAMPLES else None) as progress:
            for task, level in jobs:
                if level is None:
                    batch = read_originals(task, args.data_dir)[:args.n]
                    if len(batch) < args.n:
                        note(f"{task.id}: only {len(batch)} original samples in {args.data_dir}")
                else:
                    batch = task.generate(args.n, complexity=level, seed=args.seed)
                for sample in batch:
                    if args.with_solution and sample.answer is None:
                        sample.answer = solver_answer(task, sample)
                    yield sample.to_json()
                progress.update(len(batch))

    count = write_lines(args.out, samples())
    tasks = len({task.id for task, _ in jobs})
    print(f"wrote {count} samples of {tasks} tasks to {args.out}", file=sys.stderr)


def cmd_score(args) -> None:
    samples = read_samples(args.samples)
    scores = []  # (task, id, score) per response line
    for where, record in read_jsonl(args.responses):
        task_id, sample_id = record.get("task"), record.get("id")
        if not isinstance(task_id, str) or not isinstance(sample_id, str):
            raise CommandError(f"{where}: needs string fields 'task' and 'id'")
        if ("response" in record) == ("answer" in record):
            raise CommandError(f"{where}: needs exactly one of 'response' and 'answer'")
        sample = samples.get((task_id, sample_id))
        if sample is None:
            raise CommandError(f"{where}: no sample with task {task_id!r} and id {sample_id!r} "
                               f"in {args.samples}")
        if "response" in record:
            text = record["response"]
            if not isinstance(text, str):
                raise CommandError(f"{where}: 'response' must be a string")
        else:
            answer = record["answer"]
            if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
                raise CommandError(f"{where}: 'answer' must be a string or a number")
            text = f"<<<{answer if isinstance(answer, str) else json.dumps(answer)}>>>"
        scores.append((task_id, sample_id, symbench.get_task(task_id).score(sample, text, args.variant)))
    if not scores:
        raise CommandError(f"{args.responses}: no responses")

    by_task = defaultdict(list)
    for task_id, _, score in scores:
        by_task[task_id].append(score)
    width = max(len(task_id) for task_id in by_task)
    print(f"{'task':<{width}}  {'responses':>9}  {'mean':>6}")
    task_means = []
    for task_id in symbench.TASKS:
        if task_id in by_task:
            task_means.append(sum(by_task[task_id]) / len(by_task[task_id]))
            print(f"{task_id:<{width}}  {len(by_task[task_id]):>9}  {task_means[-1]:>6.3f}")
    overall = sum(score for _, _, score in scores) / len(scores)
    print(f"overall mean {overall:.3f} over {len(scores)} responses; "
          f"mean of the {len(task_means)} task means {sum(task_means) / len(task_means):.3f} "
          f"(variant {args.variant})")
    unanswered = len(samples.keys() - {(task_id, sample_id) for task_id, sample_id, _ in scores})
    if unanswered:
        note(f"{unanswered} of {len(samples)} samples have no response")
    if args.out:
        write_lines(args.out, (json.dumps({"task": task_id, "id": sample_id, "score": score})
                               for task_id, sample_id, score in scores))


def cmd_show(args) -> None:
    if args.samples:
        if not args.id:
            raise CommandError("--samples needs --id")
        matches = [s for (task_id, sample_id), s in read_samples(args.samples).items()
                   if sample_id == args.id and (args.task is None or task_id == args.task)]
        if not matches:
            raise CommandError(f"{args.samples}: no sample with id {args.id!r}"
                               + (f" and task {args.task!r}" if args.task else ""))
        if len(matches) > 1:
            raise CommandError(f"{args.samples}: id {args.id!r} belongs to several tasks "
                               f"({', '.join(s.task for s in matches)}); add --task")
        sample = matches[0]
    else:
        if not args.task:
            raise CommandError("show needs --task, or --samples FILE --id ID")
        task = selected_tasks([args.task], None)[0]
        if task.generatable:
            level = levels_for(task, args.complexity, None)[0]
            sample = task.generate(args.index + 1, complexity=level, seed=args.seed)[args.index]
        elif args.data_dir:
            originals = read_originals(task, args.data_dir)
            if args.index >= len(originals):
                raise CommandError(f"{task.id}: only {len(originals)} original samples")
            sample = originals[args.index]
        else:
            raise CommandError(f"{task.id} is file-only: give --data-dir to read its original samples")
    task = symbench.get_task(sample.task)
    solved = solver_answer(task, sample)
    print(f"task {sample.task} ({'seen' if task.seen else 'unseen'})  id {sample.id}  "
          f"complexity {sample.complexity}")
    print("---- question ----")
    print(sample.question)
    print("---- reference answer ----")
    print(sample.answer if sample.answer is not None else "(none)")
    print("---- solver's answer ----")
    if solved is None:
        print(f"(task {task.id} has no programmatic solver)")
    else:
        print(solved)
        print(f"(scores {task.score(sample, f'<<<{solved}>>>'):.3f})")


# ---- entry point ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m symbench", description=__doc__.split("\n\n")[0].replace("\n", " "),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("list", help="every task: seen/unseen, source, levels, answer format")

    generate = commands.add_parser("generate", help="write samples as JSONL")
    generate.add_argument("--task", action="append", metavar="ID", help="a task id (repeatable)")
    generate.add_argument("--tasks", choices=("seen", "unseen", "all"), help="a group of tasks")
    generate.add_argument("--n", type=non_negative_int, default=10, help="samples per task and level (default 10)")
    level_choice = generate.add_mutually_exclusive_group()
    level_choice.add_argument("--complexity", type=int, help="one level (default: each task's default)")
    level_choice.add_argument("--levels", type=parse_levels,
                              help="'all' for a complexity sweep over each task's levels, or K1,K2,...")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--data-dir", metavar="DIR",
                          help="dataset_gather folder: file-only tasks contribute their first N original samples")
    generate.add_argument("--with-solution", action="store_true",
                          help="fill missing reference answers with the task's solver")
    generate.add_argument("--out", required=True, metavar="FILE", help="output JSONL ('-' for stdout)")

    score = commands.add_parser("score", help="score a JSONL of responses against a JSONL of samples")
    score.add_argument("--samples", required=True, metavar="FILE")
    score.add_argument("--responses", required=True, metavar="FILE",
                       help='lines {"task", "id", "response"} or {"task", "id", "answer"}')
    score.add_argument("--variant", choices=("corrected", "paper"), default="corrected",
                       help="'paper' reproduces the original scorer where the spec has a Fidelity note")
    score.add_argument("--out", metavar="FILE", help='write {"task", "id", "score"} per response line')

    show = commands.add_parser("show", help="print one sample's question, reference and solver answers")
    show.add_argument("--task", metavar="ID")
    show.add_argument("--index", type=non_negative_int, default=0)
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--complexity", type=int)
    show.add_argument("--data-dir", metavar="DIR", help="dataset_gather folder, for file-only tasks")
    show.add_argument("--samples", metavar="FILE", help="take the sample from this JSONL instead")
    show.add_argument("--id", metavar="ID", help="the sample id, with --samples")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"list": cmd_list, "generate": cmd_generate, "score": cmd_score, "show": cmd_show}
    try:
        command[args.command](args)
    except CommandError as error:
        print(f"python -m symbench: error: {error}", file=sys.stderr)
        return 2  # argparse's status for a usage error
    except BrokenPipeError:  # `python -m symbench list | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
