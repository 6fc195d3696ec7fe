"""The method end to end on one machine: synthesize -> SFT -> DPO -> evaluate every method -> compare.

    python reproduce.py                                   # the CPU-scale recipe (~3 h on 2 cores): runs/reproduce
    python reproduce.py --out runs/repro-api --preset paper --task-model gpt-4o --steer-model gpt-4o \\
        --steer-init /ckpt/Meta-Llama-3-8B-Instruct --launcher "torchrun --nproc_per_node=4" \\
        --train-flags "--fsdp --activation-checkpointing --batch-size 1 --grad-accum 2"

Each stage runs one of the project's own CLIs (synth.py, train_sft.py, train_dpo.py, steer.py) as a subprocess, in
its own folder under --out, and is entered in OUT/stages.json (command, wall seconds) when it finishes. A rerun skips
the finished stages and resumes the unfinished one: synth.py and steer.py from their results files, training from
its last checkpoint. So the recipe can span sessions that end every process they started.

The stages:
  synth-sft   synth.py sft on the seen tasks (questions disjoint from the test set): TaskLLM + API-mode teacher
  train-sft   train_sft.py of the small CodeSteerLLM (--steer-init) on synth-sft/sft.jsonl
  synth-dpo   synth.py dpo, the sampling tree, on other questions of the seen tasks, guidances sampled from the
              SFT steerer
  train-dpo   train_dpo.py from train-sft/final on synth-dpo/dpo.jsonl
  eval-*      steer.py on held-out samples of the seen and unseen tasks, one folder per method: the five baselines,
              CodeSteer with the untrained API-mode steerer, with the SFT steerer and with the SFT+DPO steerer
  report      steer.py compare with figures (a method's evaluation seeds pooled into one column), and
              OUT/RESULTS.md: the table, stage times, data sizes, commands

Flags this script does not know go to every synth.py and steer.py command as they are (models, loop, --timeout,
...): see python steer.py --help.
"""
import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from plots import load_training
from report import ResultsFile, total_tokens, write_json_atomically
from synth import TestSet, questions_in_test_set

ROOT = Path(__file__).resolve().parent
HEARTBEAT_S = 30   # how often a running stage's seconds are saved to OUT/stages.json

# The CPU preset, sized by measurement on a 2-core VM with Qwen2.5-Coder-0.5B (bf16) in every role but the trained
# steerer. A pilot of all_code at complexity 1 (4 samples per task, 256 tokens) found the tasks the 0.5B solves at
# all: navigation 3/4, web_of_lies 1/4, new_operator 1/4, number_multiply 1/1; it scored 0/4 on game24,
# statistical_counting, matrix_transformation, pooling, string_insertion and string_deletion_and_modification, where
# neither the teacher's trajectories nor the tree's leaves would ever succeed. One single-call sample costs ~20 s at
# concurrency 8, a two-turn CodeSteer sample several times that, so: few questions, two TaskLLM turns, short replies.
# The steerer is SmolLM2-135M: an SFT step of ~1.6k tokens takes ~8 s on this CPU (BENCHMARKS.md), ~5x less than
# the 0.5B would, and its Adam state fits beside the resident TaskLLM.
PRESETS = {
    "cpu": dict(seen="navigation,web_of_lies,new_operator", unseen="number_multiply,letters", complexity="1",
                n_sft=5, n_dpo=4, n_eval=4, max_tokens=320, max_turns=2, concurrency=16, branch=3, max_depth=1,
                steer_init="smollm2-135m", sft_epochs=3, dpo_epochs=2, lr=5e-5, dpo_lr=1e-5, seq_len=2048,
                batch_size=2),
    # The paper's sizes (spec B.2-B.5): every task at its default level, 50 questions per seen task to synthesize,
    # the held-out 20 per task to evaluate, the loop's full budgets, Llama-3-8B trained as in B.5.
    "paper": dict(seen="seen", unseen="unseen", complexity=None, n_sft=50, n_dpo=50, n_eval=20,
                  max_tokens=None, max_turns=None, concurrency=16, branch=2, max_depth=3,
                  steer_init=None, sft_epochs=12, dpo_epochs=1, lr=1e-5, dpo_lr=5e-7, seq_len=7024, batch_size=1),
}
STEER_API_FLAGS = ("--steer-model", "--steer-base-url", "--steer-mode")
BASELINES = ["only_question", "all_text", "all_code", "code_text_choice", "code_interpreter"]


@dataclass
class Stage:
    name: str
    argv: list[str]
    folder: Path
    done: Path   # the file whose existence means the stage's command finished


def task_flags(spec: str) -> list[str]:
    """'seen' / 'unseen' / 'all' -> --tasks GROUP; 'a,b,c' -> --task a --task b --task c."""
    if spec in ("seen", "unseen", "all"):
        return ["--tasks", spec]
    return [flag for task in spec.split(",") for flag in ("--task", task)]


def without_flags(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """argv without the given flags and their values (`--flag value` or `--flag=value`)."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in names:
            skip = True
        elif not item.startswith(tuple(f"{name}=" for name in names)):
            kept.append(item)
    return kept


def relative(path: Path) -> str:
    """A path as the commands name it: relative to the repository (the commands' working folder) where it lies
    inside, else absolute."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def build_stages(args, passthrough: list[str]) -> list[Stage]:
    out = Path(args.out).resolve()
    python = [sys.executable]
    launcher = shlex.split(args.launcher) if args.launcher else python
    loop = passthrough + ["--concurrency", str(args.concurrency)]
    for flag, value in (("--complexity", args.complexity), ("--max-tokens", args.max_tokens),
                        ("--max-turns", args.max_turns)):
        if value is not None:
            loop += [flag, str(value)]
    synth = python + ["synth.py"]
    synth_common = task_flags(args.seen) + loop + ["--tokenizer", args.steer_init, "--max-len", str(args.seq_len),
                                                   "--test-seeds", *map(str, args.eval_seeds), "--quiet"]
    train_common = shlex.split(args.train_flags) + ["--seq-len", str(args.seq_len), "--batch-size",
                                                     str(args.batch_size), "--save-every", "5",
                                                     "--keep-checkpoints", "1", "--seed", str(args.seed)]
    sft_data, dpo_data = out / "synth-sft" / "sft.jsonl", out / "synth-dpo" / "dpo.jsonl"
    sft_model = relative(out / "train-sft" / "final")
    stages = [
        Stage("synth-sft", synth + ["sft", *synth_common, "--n", str(args.n_sft), "--seed", str(args.seed),
                                    "--out", relative(out / "synth-sft")],
              out / "synth-sft", out / "synth-sft" / "summary.json"),
        Stage("train-sft", launcher + ["train_sft.py", "--init", args.steer_init, "--data", relative(sft_data),
                                       "--epochs", str(args.sft_epochs), "--lr", str(args.lr), *train_common,
                                       "--out", relative(out / "train-sft")],
              out / "train-sft", out / "train-sft" / "final" / "config.json"),
        # The tree samples its alternative guidances from the SFT steerer (on-policy data for DPO, which starts from
        # it), at another synthesis seed so that its questions are not the SFT questions again. An API teacher's
        # alternatives differ only in its Code/Text choice, since the paraphrase of each is fixed, so a teacher that
        # nearly always picks Code gives almost no pair.
        Stage("synth-dpo", synth + [
            "dpo", *without_flags(synth_common, STEER_API_FLAGS), "--steer-ckpt", sft_model, "--steer-mode", "finetuned",
            "--n", str(args.n_dpo),
            "--seed", str(args.seed + 1), "--branch", str(args.branch), "--max-depth", str(args.max_depth),
            "--out", relative(out / "synth-dpo")],
              out / "synth-dpo", out / "synth-dpo" / "summary.json"),
        Stage("train-dpo", launcher + ["train_dpo.py", "--init", sft_model, "--data", relative(dpo_data),
                                       "--epochs", str(args.dpo_epochs), "--lr", str(args.dpo_lr), *train_common,
                                       "--out", relative(out / "train-dpo")],
              out / "train-dpo", out / "train-dpo" / "final" / "config.json"),
    ]
    evaluate = python + ["steer.py", *task_flags(args.seen), *task_flags(args.unseen), *loop,
                         "--n", str(args.n_eval), "--quiet"]
    # The trained steerers run in-process: the flags that name an API steerer (the teacher) are not theirs.
    trained = without_flags(evaluate, STEER_API_FLAGS)
    methods = [(m, evaluate + ["--method", m]) for m in BASELINES] + [
        ("codesteer_untrained", evaluate + ["--method", "codesteer"]),
        ("codesteer_sft", trained + ["--method", "codesteer", "--steer-ckpt", sft_model]),
        ("codesteer_dpo", trained + ["--method", "codesteer", "--steer-ckpt",
                                     relative(out / "train-dpo" / "final")])]
    for seed in args.eval_seeds:
        suffix = "" if seed == args.eval_seeds[0] else f"-seed{seed}"
        for label, command in methods:
            folder = out / "eval" / f"{label}{suffix}"
            stages.append(Stage(f"eval-{label}{suffix}", command + ["--seed", str(seed), "--out", relative(folder)],
                                folder, folder / "summary.json"))
    return stages


def shown(command: list[str]) -> str:
    """A command as a person would type it in the repository."""
    return shlex.join(["python" if word == sys.executable else word for word in command])


def count_rows(path: Path) -> int:
    return sum(1 for line in open(path) if line.strip()) if path.is_file() else 0


def training_command(stage: Stage) -> list[str]:
    """A training stage's command as it can run now: a batch no larger than the data synthesized (a small synthesis
    may keep fewer rows than --batch-size), and --resume where a checkpoint was left."""
    command = list(stage.argv)
    rows = count_rows(ROOT / command[command.index("--data") + 1])
    at = command.index("--batch-size") + 1
    command[at] = str(max(1, min(int(command[at]), rows)))
    if (stage.folder / "checkpoints" / "latest").is_file():
        command.append("--resume")
    return command


def run_stage(stage: Stage, log_dir: Path, heartbeat: Callable[[float], None]) -> list[str]:
    """Run (or resume) one stage's command, its output appended to OUT/logs/NAME.log; heartbeat(seconds) is called
    every HEARTBEAT_S while it runs, so a stage killed midway still has its time counted. Returns the command."""
    command = training_command(stage) if stage.name.startswith("train-") else stage.argv
    log_path = log_dir / f"{stage.name}.log"
    print(f"[{time.strftime('%H:%M:%S')}] {stage.name}: {shown(command)}\n    log: {log_path}", flush=True)
    start = time.time()
    with open(log_path, "a") as log:
        log.write(f"\n$ {shown(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        while True:
            try:
                code = process.wait(timeout=HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                heartbeat(time.time() - start)
    heartbeat(time.time() - start)
    # steer.py exits 1 when some samples erred but the run finished (its summary exists): the table counts them.
    if code != 0 and not (code == 1 and stage.name.startswith("eval-") and stage.done.is_file()):
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise SystemExit(f"stage {stage.name} failed with exit code {code}; the end of {log_path}:\n{tail}"
                         f"fix the cause and rerun the same command: finished stages are kept")
    return command


def check_data(stage: Stage):
    """Training needs rows: say what synthesis produced instead of letting training fail on an empty file."""
    name = {"synth-sft": "sft.jsonl", "synth-dpo": "dpo.jsonl"}.get(stage.name)
    if name is None:
        return
    path = stage.folder / name
    if count_rows(path) == 0:
        tasks = json.loads((stage.folder / "summary.json").read_text())["tasks"]
        rates = ", ".join(f"{task} {entry['correct']}/{entry['trajectories']}" for task, entry in tasks.items())
        raise SystemExit(f"{stage.name} produced no training rows ({path}); correct trajectories per task: {rates}. "
                         "The TaskLLM never (or, for pairs, always) succeeded on these questions: raise "
                         "--n-sft/--n-dpo or choose tasks it sometimes solves")


def extends(old: dict, new: dict) -> bool:
    """Whether a rerun with settings `new` continues the run started with `old`: the same settings, except that more
    evaluation seeds may follow the ones already run (a second seed for the variance, added in a later session)."""
    seeds, old_seeds = new["eval_seeds"], old["eval_seeds"]
    same = {k: v for k, v in old.items() if k != "eval_seeds"} == {k: v for k, v in new.items() if k != "eval_seeds"}
    return same and seeds[:len(old_seeds)] == old_seeds


def main(argv: list[str] | None = None):
    args, passthrough = parse_args(argv)
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    stages_path = out / "stages.json"
    finished = json.loads(stages_path.read_text()) if stages_path.is_file() else {}
    stages = build_stages(args, passthrough)
    recipe_path = out / "recipe.json"
    recipe = dict(argv=sys.argv[1:] if argv is None else argv, settings=vars(args), passthrough=passthrough)
    if recipe_path.is_file() and not extends(json.loads(recipe_path.read_text())["settings"], recipe["settings"]):
        raise SystemExit(f"{out} was started with other settings ({recipe_path}); choose another --out (only "
                         "--eval-seeds may grow, keeping the seeds already run first)")
    write_json_atomically(recipe_path, recipe)
    held_out_checked = False   # once, after synthesis and before the first evaluation this run starts
    for stage in stages:
        entry = finished.get(stage.name, {})
        if entry.get("finished") and stage.done.exists():
            continue
        if stage.name.startswith("eval-") and not held_out_checked:
            check_held_out(out, args.eval_seeds)
            held_out_checked = True
        earlier = entry.get("seconds", 0.0)   # time spent in runs of this stage that were killed (or undone)

        def heartbeat(seconds: float, name=stage.name, earlier=earlier):
            finished[name] = dict(finished.get(name, {}), seconds=round(earlier + seconds, 1), finished=None)
            write_json_atomically(stages_path, finished)
        command = run_stage(stage, out / "logs", heartbeat)
        check_data(stage)
        finished[stage.name].update(command=shown(command), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json_atomically(stages_path, finished)
        print(f"    finished in {finished[stage.name]['seconds'] / 60:.1f} min", flush=True)
    write_report(out, stages, finished)


def check_held_out(out: Path, eval_seeds: list[int]):
    """Stop before an evaluation whose test samples the steerers were trained on. synth.py leaves out the test
    samples of the evaluation seeds it was given; this catches seeds added after synthesis (--eval-seeds grown)."""
    rows = [json.loads(line) for name in ("synth-sft/sft.jsonl", "synth-dpo/dpo.jsonl") if (out / name).is_file()
            for line in open(out / name) if line.strip()]
    found = questions_in_test_set(rows, TestSet([], eval_seeds))
    if found:
        raise SystemExit(f"the training data holds {len(found)} test questions of --eval-seeds "
                         f"{' '.join(map(str, eval_seeds))} ({', '.join(found[:5])}{', ...' if len(found) > 5 else ''})"
                         ": evaluating on them would flatter the trained steerers; choose other --eval-seeds")


def write_report(out: Path, stages: list[Stage], finished: dict):
    """OUT/RESULTS.md from the finished stages: the compare table and figures, per-method statistics, data sizes,
    training, and each stage's wall time and command."""
    evals = [s.folder for s in stages if s.name.startswith("eval-")]
    compare = [sys.executable, "steer.py", "compare", *compare_columns(evals), "--plots", relative(out / "figures"),
               "--training", relative(out / "train-sft"), relative(out / "train-dpo")]
    printed = subprocess.run(compare, capture_output=True, text=True, cwd=ROOT)
    if printed.returncode != 0:
        raise SystemExit(f"steer.py compare failed: {printed.stderr.strip()}")
    table = "\n".join(line for line in printed.stdout.splitlines() if not line.startswith("plot: "))
    print(table)
    lines = [f"# CodeSteer reproduction: {relative(out)}", "", f"{time.strftime('%Y-%m-%d')}, {machine()}", "",
             "## Ave. Norm. and raw scores", "", f"`{shown(compare)}`", "", "```", table, "```", "",
             "## Per method", "", *method_table(evals), "", "## Figures", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in sorted((out / "figures").glob("*.png"))]
    lines += ["", "## Data and training", "", *data_table(out), "", "## Stages", "",
              "| stage | wall | command |", "| --- | --- | --- |"]
    for stage in stages:
        entry = finished[stage.name]
        lines.append(f"| {stage.name} | {entry['seconds'] / 60:.1f} min | `{entry['command']}` |")
    total = sum(finished[stage.name]["seconds"] for stage in stages)
    lines += [f"| all | {total / 3600:.2f} h | |", ""]
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'RESULTS.md'}")


def seed_groups(evals: list[Path]) -> list[list[Path]]:
    """The evaluation folders of each method: METHOD, METHOD-seed1, ..."""
    groups: dict[str, list[Path]] = {}
    for folder in evals:
        groups.setdefault(re.sub(r"-seed\d+$", "", folder.name), []).append(folder)
    return list(groups.values())


def compare_columns(evals: list[Path]) -> list[str]:
    """steer.py compare's arguments: one column per method, pooling its evaluation seeds (FOLDER+FOLDER-seed1), so
    that Ave. Norm. weighs every sample of a method and normalizes against the best method, not the best seed."""
    return ["+".join(map(relative, folders)) for folders in seed_groups(evals)]


def method_table(evals: list[Path]) -> list[str]:
    """Per evaluation run, then per method over its pooled seeds: samples, mean score with its standard error over
    samples (how far two methods must be apart before the gap means anything), turns, how often the TaskLLM's replies
    held code, tokens and seconds."""
    rows = ["| method | samples | score (%) ± s.e. | errors | TaskLLM turns | replies with code | tokens/sample | "
            "s/sample |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    records = {folder: ResultsFile(folder / "results.jsonl").read() for folder in evals}
    rows += [method_row(folder.name, records[folder]) for folder in evals]
    for folders in seed_groups(evals):
        if len(folders) > 1:
            rows.append(method_row(f"{folders[0].name}, {len(folders)} seeds",
                                   [r for folder in folders for r in records[folder]]))
    return rows


def method_row(name: str, records: list[dict]) -> str:
    n = len(records)
    scores = [r["score"] for r in records]
    mean = sum(scores) / n
    spread = (sum((x - mean) ** 2 for x in scores) / (n - 1)) ** 0.5 / n ** 0.5 if n > 1 else float("nan")
    replies = [turn for r in records for turn in (r.get("trajectory") or {}).get("turns", [])]
    with_code = sum(bool(turn.get("code")) for turn in replies) / len(replies) if replies else float("nan")
    return (f"| {name} | {n} | {100 * mean:.1f} ± {100 * spread:.1f} | {sum(bool(r['error']) for r in records)} | "
            f"{sum(r['turns'] or 0 for r in records) / n:.2f} | {100 * with_code:.0f}% | "
            f"{sum(total_tokens(r) for r in records) / n:.0f} | {sum(r['seconds'] for r in records) / n:.1f} |")


def data_table(out: Path) -> list[str]:
    rows = ["| stage | questions | trajectories | correct | rows | tokens | wall |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in ("synth-sft", "synth-dpo"):
        summary = json.loads((out / name / "summary.json").read_text())
        tasks = summary["tasks"].values()
        count = {key: sum(entry.get(key, 0) for entry in tasks) for key in ("questions", "trajectories", "correct")}
        rows.append(f"| {name} | {count['questions']} | {count['trajectories']} | {count['correct']} | "
                    f"{summary['rows']} | {summary['tokens']} | {summary['wall_seconds'] / 60:.1f} min |")
    rows.append("")
    for name, metrics in load_training([str(out / "train-sft"), str(out / "train-dpo")]).items():
        last = metrics[-1]
        extra = f", reward accuracy {last['reward_accuracy']:.2f}, margin {last['reward_margin']:.3f}" \
            if "reward_margin" in last else ""
        rows.append(f"- {name}: {last['step']} steps, loss {metrics[0]['loss']:.4f} -> {last['loss']:.4f}{extra}")
    return rows


def machine() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Unknown flags go to every synth.py and steer.py command.")
    parser.add_argument("--out", default="runs/reproduce", help="the recipe's folder (default runs/reproduce); "
                        "rerun with it to resume")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="sizes: cpu (~3 h on a 2-core CPU, embedded models) or paper (spec B.2-B.5)")
    sizes = parser.add_argument_group("sizes (default: the preset's)")
    sizes.add_argument("--seen", help="seen tasks to synthesize on and evaluate: a comma list or 'seen'")
    sizes.add_argument("--unseen", help="unseen tasks to evaluate: a comma list or 'unseen'")
    sizes.add_argument("--complexity", help="steer.py's --complexity for every stage")
    sizes.add_argument("--n-sft", type=int, help="questions per seen task for SFT trajectories")
    sizes.add_argument("--n-dpo", type=int, help="questions per seen task for the DPO tree")
    sizes.add_argument("--n-eval", type=int, help="held-out test samples per task and method")
    sizes.add_argument("--eval-seeds", type=int, nargs="+", default=[0],
                       help="evaluation seeds; each after the first adds a folder per method (variance). A "
                       "finished run may be rerun with more seeds after its own")
    sizes.add_argument("--max-tokens", type=int)
    sizes.add_argument("--max-turns", type=int)
    sizes.add_argument("--concurrency", type=int)
    sizes.add_argument("--branch", type=int)
    sizes.add_argument("--max-depth", type=int)
    training = parser.add_argument_group("training the CodeSteerLLM")
    training.add_argument("--steer-init", help="the model to fine-tune (default: the preset's)")
    training.add_argument("--sft-epochs", type=int)
    training.add_argument("--dpo-epochs", type=int)
    training.add_argument("--lr", type=float, help="SFT peak learning rate")
    training.add_argument("--dpo-lr", type=float, help="DPO peak learning rate")
    training.add_argument("--seq-len", type=int)
    training.add_argument("--batch-size", type=int)
    training.add_argument("--seed", type=int, default=0, help="synthesis and training seed")
    training.add_argument("--launcher", help="how to start training, e.g. 'torchrun --nproc_per_node=4' "
                          "(default: this Python)")
    training.add_argument("--train-flags", default="", help="more flags for train_sft.py and train_dpo.py")
    args, passthrough = parser.parse_known_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.steer_init is None:
        parser.error(f"--preset {args.preset} needs --steer-init (the model to train as the CodeSteerLLM, e.g. a "
                     "Meta-Llama-3-8B-Instruct folder)")
    return args, passthrough


if __name__ == "__main__":
    main()
