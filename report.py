"""What an evaluation run writes and how runs are summarised: the run folder (one writer at a time, one
configuration, named in config.json), the append-only results file (safe to kill at any moment), summary.json, the
printed tables, a run's score-vs-complexity plots, and `steer.py compare`: the finished runs it reads (load_runs, with
an error for a missing folder or summary, an empty run, or runs over different tasks unless --common-tasks; A+B pools
two runs of one configuration, e.g. two seeds) and the paper's normalised-average table across methods (spec A.6.6).
Used by steer.py; the comparison's figures are in plots.py.
"""
import fcntl
import json
import os
import sys
import threading
from pathlib import Path
from typing import Callable

import symbench

def total_tokens(record: dict) -> int:
    return sum(role["prompt_tokens"] + role["completion_tokens"] for role in record.get("tokens", {}).values())


# ---------------------------------------------------------------------------------------------------------------
# A run folder: one writer, one configuration, an append-only results file

RECORD_KEY_FIELDS = ("task", "id", "method", "complexity")
RECORD_FIELDS = RECORD_KEY_FIELDS + ("score", "solved", "error", "seconds")


class FolderLock:
    """`with FolderLock(out):` makes this process the folder's only writer: an exclusive flock on OUT/.lock, which the
    kernel releases however the process ends (kill -9 included), so a stale lock cannot outlive its run."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self):
        self.file = open(self.folder / ".lock", "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise SystemExit(f"--out {self.folder} is in use by a run still going ({holder}); wait for it to end or "
                             "choose another --out") from None
        self.file.truncate(0)
        self.file.write(f"pid {os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        self.file.close()   # closing releases the lock


def config_differences(old, new, prefix: str = "") -> list[str]:
    """'field: old -> new' for every leaf that differs between two nested configurations."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [difference for key in sorted(set(old) | set(new), key=str)
                for difference in config_differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {json.dumps(old)} -> {json.dumps(new)}"]


def claim_folder(folder: Path, config: dict, append: bool, argv: list[str]):
    """OUT/config.json names the configuration the folder was started with, written once. A run of another
    configuration stops here, unless `append` (its records name their own configuration)."""
    path = folder / "config.json"
    if not path.exists():
        if (folder / "results.jsonl").exists() and not append:
            raise SystemExit(f"--out {folder} holds results but no config.json, so their configuration is unknown; "
                             "choose another --out, or pass --append to add to them anyway")
        write_json_atomically(path, {"config": config, "argv": argv})
        return
    try:
        started_with = json.loads(path.read_text()).get("config")
    except (ValueError, AttributeError):
        started_with = None
    differences = (config_differences(started_with, config) if isinstance(started_with, dict)
                   else [f"{path} names no configuration: written by an older version?"])
    if differences and not append:
        shown = "; ".join(differences[:6]) + ("; ..." if len(differences) > 6 else "")
        raise SystemExit(f"--out {folder} was started with another configuration ({shown}); choose another --out, "
                         "or pass --append to add these records to it anyway")


def parse_record(line: bytes) -> dict | None:
    """The record a results line holds, or None when it holds none (torn, binary, or JSON of another shape)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):   # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(value, dict) or not all(field in value for field in RECORD_FIELDS):
        return None
    if not all(isinstance(value[field], (str, int, type(None))) for field in RECORD_KEY_FIELDS):
        return None   # the resume key must be hashable and comparable
    return value if isinstance(value["score"], (int, float)) else None


class ResultsFile:
    """OUT/results.jsonl. Each record is one line written with one write, flushed and fsynced under a lock, so a
    crash leaves at most a torn last line. A line that holds no record is reported by number and skipped, and it
    stays in the file: only a torn last line is cut off (by `read(repair=True)`, so that the next record starts on a
    line of its own), and a complete last record that lacks its newline gets one."""

    def __init__(self, path: Path, parse: Callable[[bytes], dict | None] = None):
        """parse: a line's record or None (default parse_record: evaluation records; synth.py's tree has its own)."""
        self.path = path
        self.parse = parse or parse_record
        self._lock = threading.Lock()

    def read(self, repair: bool = False) -> list[dict]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        *lines, tail = data.split(b"\n")   # tail: what follows the last newline
        records, skipped = [], []
        for number, line in enumerate(lines, 1):
            record = self.parse(line) if line.strip() else None
            if record is not None:
                records.append(record)
            elif line.strip():
                skipped.append(number)
        if skipped:
            shown = ", ".join(map(str, skipped[:10])) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
            print(f"{self.path}: skipping {len(skipped)} lines that hold no record (lines {shown}); they are left in "
                  "the file", file=sys.stderr)
        last = self.parse(tail) if tail.strip() else None
        if last is not None:
            records.append(last)
        elif tail.strip():
            print(f"{self.path}: dropping a torn last line ({len(tail)} bytes) from an interrupted run", file=sys.stderr)
        if repair and tail:
            with open(self.path, "r+b") as file:
                if last is None:
                    file.truncate(len(data) - len(tail))
                else:
                    file.seek(0, os.SEEK_END)
                    file.write(b"\n")
                os.fsync(file.fileno())
        return records

    def append(self, record: dict):
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self._lock, open(self.path, "ab") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())

    def drop(self, unwanted) -> int:
        """Remove, atomically, the records for which unwanted(record) holds, keeping every other line as it is (used
        to drop errored records before retrying them); returns how many went."""
        with self._lock:
            lines = self.path.read_bytes().splitlines(keepends=True)
            kept = [line for line in lines if (record := parse_record(line)) is None or not unwanted(record)]
            temporary = self.path.with_suffix(".jsonl.tmp")
            with open(temporary, "wb") as file:
                file.write(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in kept))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        return len(lines) - len(kept)


def write_json_atomically(path: Path, payload):
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------------------------
# Summaries, the runs compared, the compare table (A.6.6) and sweep plots

def summarize(method: str, records: list[dict]) -> dict:
    """summary.json: per task the mean score, n, and per-sample means of tokens and seconds; averages over tasks."""
    by_task: dict[str, list[dict]] = {}
    for record in records:
        by_task.setdefault(record["task"], []).append(record)
    tasks = {}
    for task_id in [t for t in symbench.TASK_IDS if t in by_task]:
        group = by_task[task_id]
        entry = dict(score=_mean(r["score"] for r in group), n=len(group),
                     tokens=_mean(total_tokens(r) for r in group), seconds=_mean(r["seconds"] for r in group),
                     solved=_mean(float(r["solved"]) for r in group), errors=sum(bool(r["error"]) for r in group))
        levels = sorted({r["complexity"] for r in group if r["complexity"] is not None})
        if len(levels) > 1:
            entry["by_complexity"] = {str(level): dict(score=_mean(r["score"] for r in group
                                                                   if r["complexity"] == level),
                                                       n=sum(r["complexity"] == level for r in group))
                                      for level in levels}
        tasks[task_id] = entry
    scores = {task_id: entry["score"] for task_id, entry in tasks.items()}
    return dict(method=method, tasks=tasks, n=len(records), errors=sum(bool(r["error"]) for r in records),
                average=_mean(scores.values()),
                seen_average=_mean(s for t, s in scores.items() if t in symbench.SEEN_TASK_IDS),
                unseen_average=_mean(s for t, s in scores.items() if t in symbench.UNSEEN_TASK_IDS))


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_summary(summary: dict) -> str:
    rows = [("task", "n", "score", "solved", "errors", "tokens/sample", "s/sample")]
    for task_id, e in summary["tasks"].items():
        rows.append((task_id, str(e["n"]), _percent(e["score"]), _percent(e["solved"]), str(e["errors"]),
                     f"{e['tokens']:.0f}", f"{e['seconds']:.1f}"))
        for level, by_level in e.get("by_complexity", {}).items():
            rows.append((f"  complexity {level}", str(by_level["n"]), _percent(by_level["score"]), "", "", "", ""))
    rows.append(("",) * 7)
    for name in ("seen_average", "unseen_average", "average"):
        rows.append((name.replace("_", " "), "", _percent(summary[name]), "", "", "", ""))
    return f"method: {summary['method']} (scores x100)\n" + _table(rows)


def _table(rows: list[tuple]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    def line(row):
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
    return "\n".join(line(row).rstrip() for row in rows)


def normalized_averages(scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """The paper's Ave. Norm. (A.6.6): per task, each method's score over the best method's score on that task,
    averaged over the tasks of a group (seen, unseen, all) and multiplied by 100. `scores` is {method: {task: score}};
    only tasks every method ran count, and a task on which every method scored 0 is left out (0/0)."""
    common = set.intersection(*(set(s) for s in scores.values())) if scores else set()
    best = {task: max(s[task] for s in scores.values()) for task in common}
    counted = [task for task in symbench.TASK_IDS if task in common and best[task] > 0]
    groups = {"seen": [t for t in counted if t in symbench.SEEN_TASK_IDS],
              "unseen": [t for t in counted if t in symbench.UNSEEN_TASK_IDS], "all": counted}
    return {method: {group: (100 * sum(s[t] / best[t] for t in tasks) / len(tasks) if tasks else None)
                     for group, tasks in groups.items()}
            for method, s in scores.items()}


def load_runs(run_dirs: list[str], common_tasks: bool = False) -> dict[str, dict]:
    """{label: summary.json} of the runs `steer.py compare` compares; the label is the method, or the folder's name
    where several runs share a method (e.g. CodeSteer with different steerers). An argument A+B+... pools runs of one
    configuration over different samples (e.g. two evaluation seeds) into one column (pool_runs). Runs that cover
    different tasks stop here, naming what each lacks, unless common_tasks (then compare and the figures use the
    tasks every run has, and compare's note names the others)."""
    loaded = []
    for run_dir in run_dirs:
        parts = [run_dir] if Path(run_dir).is_dir() or "+" not in run_dir else run_dir.split("+")
        runs = [(Path(part), load_summary(part)) for part in parts]
        loaded.append(runs[0] if len(runs) == 1 else (runs[0][0], pool_runs(runs)))
    methods = [summary["method"] for _, summary in loaded]
    summaries = {}
    for folder, summary in loaded:
        label = summary["method"] if methods.count(summary["method"]) == 1 else folder.name
        if label in summaries:
            label = str(folder)
        summaries[label] = summary
    every_task = set().union(*(summary["tasks"] for summary in summaries.values()))
    lacking = {label: [t for t in symbench.TASK_IDS if t in every_task and t not in summary["tasks"]]
               for label, summary in summaries.items()}
    if any(lacking.values()) and not common_tasks:
        named = "; ".join(f"{label} lacks {', '.join(tasks)}" for label, tasks in lacking.items() if tasks)
        raise SystemExit(f"compare: the runs cover different tasks ({named}); pass --common-tasks to compare only "
                         "the tasks every run has")
    if not shared_tasks(summaries):
        raise SystemExit("compare: no task is common to every run")
    return summaries


def load_summary(run_dir: str) -> dict:
    """A finished run's summary.json, or a SystemExit that says what the folder lacks."""
    folder = Path(run_dir)
    path = folder / "summary.json"
    if not folder.is_dir():
        raise SystemExit(f"compare: {run_dir}: no such folder")
    if not path.is_file():
        unfinished = ResultsFile(folder / "results.jsonl").read()   # summary.json is written when a run ends
        why = (f"results.jsonl holds {len(unfinished)} samples of a run that has not finished: rerun it to write "
               "its summary" if unfinished else f"run steer.py with --out {run_dir} first")
        raise SystemExit(f"compare: {run_dir}: no summary.json here ({why})")
    try:
        summary = json.loads(path.read_text())
    except ValueError as error:
        raise SystemExit(f"compare: {path}: not JSON ({error})") from None
    if not sum(entry["n"] for entry in summary["tasks"].values()):
        raise SystemExit(f"compare: {path}: the run holds no finished sample")
    return summary


def pool_runs(runs: list[tuple[Path, dict]]) -> dict:
    """One summary over the samples of several finished runs, as if one run had held them all. The runs must share
    method and configuration (steer.py's seed is not part of it), hold different samples (or the pooled means would
    count a sample twice), and each hold in results.jsonl just the samples its summary counts."""
    names = " + ".join(str(folder) for folder, _ in runs)
    (first, base), owners, records = runs[0], {}, []
    for folder, summary in runs:
        differences = config_differences(base.get("config", {"method": base["method"]}),
                                         summary.get("config", {"method": summary["method"]}))
        if differences:
            raise SystemExit(f"compare: cannot pool {names}: {folder} differs from {first} "
                             f"({'; '.join(differences[:3])})")
        own = ResultsFile(folder / "results.jsonl").read()
        if {t: e["n"] for t, e in summarize(summary["method"], own)["tasks"].items()} != \
                {t: e["n"] for t, e in summary["tasks"].items()}:
            raise SystemExit(f"compare: cannot pool {names}: {folder}/results.jsonl holds other samples than its "
                             "summary.json counts (a run with --append?)")
        for record in own:
            sample = f"{record['task']}/{record['id']} (complexity {record['complexity']})"
            if owners.setdefault(sample, folder) != folder:
                raise SystemExit(f"compare: cannot pool {names}: both {owners[sample]} and {folder} hold {sample}")
        records += own
    return {**summarize(base["method"], records), "config": base.get("config"),
            "pooled": [str(folder) for folder, _ in runs]}


def shared_tasks(summaries: dict[str, dict]) -> list[str]:
    """The tasks every run has, in SymBench's order: the ones compared."""
    return [t for t in symbench.TASK_IDS if all(t in summary["tasks"] for summary in summaries.values())]


def compare(summaries: dict[str, dict]) -> str:
    """The table printed by `steer.py compare` over load_runs' summaries: raw scores per task and the Ave. Norm.
    rows."""
    scores = {label: {task: entry["score"] for task, entry in summary["tasks"].items()}
              for label, summary in summaries.items()}
    norm = normalized_averages(scores)
    common = shared_tasks(summaries)
    methods = list(scores)
    rows = [("task",) + tuple(methods)]
    rows += [(task,) + tuple(_percent(scores[m][task]) for m in methods) for task in common]
    rows.append(("",) * (len(methods) + 1))
    for group in ("seen", "unseen", "all"):
        rows.append((f"Ave. Norm. ({group})",) + tuple("-" if norm[m][group] is None else f"{norm[m][group]:.1f}"
                                                      for m in methods))
    for group, ids in (("seen", symbench.SEEN_TASK_IDS), ("unseen", symbench.UNSEEN_TASK_IDS),
                       ("all", symbench.TASK_IDS)):
        rows.append((f"Average raw ({group})",) + tuple(_percent(_mean(scores[m][t] for t in common if t in ids))
                                                       for m in methods))
    notes = []
    skipped = sorted(set().union(*(set(s) for s in scores.values())) - set(common))
    if skipped:
        notes.append(f"not in every run, left out: {', '.join(skipped)}")
    pooled = [f"{label} ({len(summary['pooled'])} runs, {summary['n']} samples)"
              for label, summary in summaries.items() if summary.get("pooled")]
    if pooled:
        notes.append(f"columns pooled over several runs: {', '.join(pooled)}")
    zeros = [t for t in common if max(scores[m][t] for m in methods) == 0]
    if zeros:
        notes.append(f"every method scored 0, left out of Ave. Norm.: {', '.join(zeros)}")
    return "scores x100; Ave. Norm. = mean over tasks of score / best score on the task\n" + _table(rows) + \
        "".join(f"\nnote: {n}" for n in notes)


def plot_sweeps(summary: dict, out: Path) -> list[Path]:
    """OUT/sweep_<task>.png: score against complexity for every task run at more than one level."""
    sweeps = {t: e["by_complexity"] for t, e in summary["tasks"].items() if "by_complexity" in e}
    if not sweeps:
        return []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed, so no sweep plots were drawn (pip install matplotlib); the numbers are in "
              f"{out / 'summary.json'} under by_complexity", file=sys.stderr)
        return []
    paths = []
    for task_id, by_level in sweeps.items():
        levels = sorted(by_level, key=float)
        figure, axes = plt.subplots(figsize=(5, 3.5))
        x = [float(level) for level in levels]
        axes.plot(x, [100 * by_level[level]["score"] for level in levels], "o-")
        axes.set_xticks(x, levels)
        axes.set(xlabel="complexity", ylabel="score (%)", ylim=(-5, 105),
                 title=f"{task_id}: {summary['method']}")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        path = out / f"sweep_{task_id}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def show(run_dir: str, sample_id: str | None = None) -> str:
    """One sample's steering conversation as text (`steer.py show OUT [--id [TASK/]ID]`): the first sample, or the
    last record of sample ID. Generated ids repeat across tasks (gen-L1-seed0-2 in every task), so an id that more
    than one task has needs its task."""
    path = Path(run_dir) / "results.jsonl"
    if not path.is_file():
        raise SystemExit(f"{run_dir}: no results.jsonl here; give the --out folder of a run")
    records = ResultsFile(path).read()
    if not records:
        raise SystemExit(f"{path}: no finished sample yet")
    if sample_id is None:
        return format_trajectory(records[0])
    task, _, bare_id = sample_id.rpartition("/")
    matches = [r for r in records if str(r["id"]) == bare_id and task in ("", r["task"])]
    if not matches:
        ids = ", ".join(dict.fromkeys(f"{r['task']}/{r['id']}" for r in records[:10]))
        raise SystemExit(f"no sample {sample_id!r} in {path}; its first ids: {ids}")
    tasks = list(dict.fromkeys(r["task"] for r in matches))
    if len(tasks) > 1:
        raise SystemExit(f"{bare_id!r} is a sample of {len(tasks)} tasks in {path}: give one of "
                         + ", ".join(f"{t}/{bare_id}" for t in tasks))
    return format_trajectory(matches[-1])


def format_trajectory(record: dict) -> str:
    """Turn by turn: what CodeSteer said, what the TaskLLM was told and answered, its code, the code's output, the
    Symbolic and Self-answer Checkers' verdicts; then the final answer and its score."""
    trajectory = record.get("trajectory") or {}
    lines = [f"{record['task']} / {record['id']} ({record['method']}, complexity {record['complexity']}): "
             f"score {record['score']}, answer {record.get('answer')!r}, reference {record.get('reference')!r}"]
    if record.get("error"):
        lines.append(f"error: {record['error']}")

    def section(title: str, text) -> None:
        if text:
            lines.append(f"  {title}:")
            lines.extend("    " + line for line in str(text).strip().splitlines())

    section("question", trajectory.get("question"))
    steer_outputs = trajectory.get("steer_outputs") or []
    for k, turn in enumerate(trajectory.get("turns") or []):
        lines.append(f"--- turn {k}")
        section("CodeSteer's reply", steer_outputs[k] if k < len(steer_outputs) else None)
        section("to the TaskLLM", turn.get("prompt"))
        section("TaskLLM's reply", turn.get("reply"))
        section("code", turn.get("code"))
        execution = turn.get("execution") or {}
        section("output", execution.get("stdout"))
        section("errors", execution.get("errors"))
        section("symbolic checker", turn.get("symbolic_summary"))
        section("self-answer checker", turn.get("check"))
    lines.append(f"--- end: {trajectory.get('stop_reason', 'single call')}")
    final = record.get("final") or {}
    section("final code", final.get("code"))
    lines.append(f"  final answer {final.get('answer', record.get('answer'))!r}, score {record['score']}")
    return "\n".join(lines)
