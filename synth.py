"""Training data for the CodeSteerLLM, synthesized with the steering loop itself (spec B.2, B.4).

    python synth.py sft --tasks seen --n 50 --task-model gpt-4o --steer-model gpt-4o --out runs/synth-sft
    python synth.py dpo --tasks seen --n 50 --task-model gpt-4o --steer-model gpt-4o --out runs/synth-dpo
    python synth.py dpo --variant released ...        # the released script's procedure (B.4 variant 2)
    python synth.py sft ... --shard 2/4               # one of 4 processes or machines; then:
    python synth.py merge --out runs/synth runs/shard1 runs/shard2 runs/shard3 runs/shard4
    python synth.py sft --task game24 --keep all                # no key: the embedded Qwen2.5-Coder-0.5B, a local demo

sft: run the A.3 loop with an API-mode CodeSteer as the teacher (turn-0 paraphrase) and keep the trajectories whose
final answer is correct (--keep all: every finished one): OUT/sft.jsonl, one row per trajectory, TRL `messages`
(user = CodeSteer's short-form input, assistant = its guidance, every turn) or with --format llamafactory the
original alpaca-with-history rows.
dpo: per question a sampling tree: at each turn --branch guidances are sampled (temperature > 0) from the same prefix;
down to --max-depth every child is played one turn on and branches again, below that it is rolled out to the end.
A finished trajectory that is correct after t guidances scores 15 - t, a wrong one -t; an internal node scores the
mean of its children. Every two siblings with different scores give a row: OUT/dpo.jsonl in TRL conversational form
(prompt, chosen, rejected) or ShareGPT preference rows (--format llamafactory), with the scores.

Every model, loop and running flag is steer.py's (python steer.py --help): the same backends, concurrency, progress
and resume. Questions come from the generators with seeds (and, from --data-dir, files) disjoint from what steer.py
evaluates at each --test-seeds seed (default 0) and from the original test samples. A rerun with the same --out
resumes: SFT from OUT/results.jsonl, the DPO tree from OUT/tree.jsonl, which gets a line per node as it is finished.
OUT/summary.json holds the counts per task.

Tests and benchmark (CPU):
    python -m pytest tests/test_synth.py          # scripted servers; the embedded-model run is marked slow
    python bench/bench_synth.py
"""
import argparse
import copy
import hashlib
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, replace
from pathlib import Path

import requests
from tqdm import tqdm

import steer
import symbench
from checkpoints import load_tokenizer   # the tokenizer alone: rows are checked against the chat format they train with
from embedded import resolve_checkpoint
from llm import LLMError
from report import ResultsFile, _table, total_tokens, write_json_atomically

ROOT = Path(__file__).resolve().parent
REFERENCE_DIR = ROOT / "tests" / "symbench-reference" / "dataset_gather"   # the original test samples we ship
SYNTH_SEED_BASE = 1_000_000   # generator seed = this + --seed; evaluations use small seeds (steer.py: 0)
TEST_STREAM_N = 100           # each evaluation stream excluded at each level: steer.py's default n is 20
CORRECT_SCORE = 15            # B.4: correct after t guidances -> 15 - t, wrong -> -t
MAX_PREFIX_TOKENS = 7000      # B.4 step 5
MAX_LEN = 7024                # the SFT cutoff of B.5
RELEASED_ATTEMPTS = 4         # B.4 variant 2, step 3
DEMO_DEPTH = 1                # embedded demo: branch at turn 0 only


# ---------------------------------------------------------------------------------------------------------------
# Questions, disjoint from the test set

def fingerprints(sample: symbench.Sample) -> set[str]:
    """What makes two samples the same question: the question text, or the task data with the reference answer
    (the original files phrase some questions differently from our generators, e.g. Game of 24's CSV rows; the
    answer tells apart tasks whose data holds only the knobs)."""
    prints = {" ".join(sample.question.split())}
    if sample.meta:
        prints.add(json.dumps([sample.meta, sample.answer], sort_keys=True))
    return prints


class TestSet:
    """The fingerprints of every question an evaluation may use: steer.py's generator stream of each evaluation
    seed (default 0) at a level, and the original test samples under each test data directory."""

    def __init__(self, test_dirs: list[Path], seeds=(0,)):
        self.test_dirs, self.seeds = test_dirs, tuple(seeds)
        self._cache: dict[tuple, set[str]] = {}

    def fingerprints(self, task: symbench.Task, level) -> set[str]:
        key = (task.id, level)
        if key not in self._cache:
            prints = set()
            if task.generatable and level in task.levels:
                for seed in self.seeds:
                    for sample in task.generate(TEST_STREAM_N, complexity=level, seed=seed):
                        prints |= fingerprints(sample)
            for folder in self.test_dirs:
                try:
                    originals = task.load_original(folder)
                except (FileNotFoundError, NotImplementedError):
                    continue
                for sample in originals:
                    prints |= fingerprints(sample)
            self._cache[key] = prints
        return self._cache[key]

    def overlaps(self, task: symbench.Task, sample: symbench.Sample) -> bool:
        return bool(fingerprints(sample) & self.fingerprints(task, sample.complexity))


def questions_in_test_set(rows: list[dict], test_set: TestSet) -> list[str]:
    """'task/question_id' of each synthesized row whose generated question is in the test set (a check for data
    synthesized before the test set grew, e.g. by a new evaluation seed). Generator streams are prefix-stable, so a
    row's question is regenerated from its seed, level and index; rows from the original files (seed None) were
    checked against the test data directories when they were drawn."""
    generated = [row for row in rows if row.get("seed") is not None]
    position = {id(row): int(row["question_id"].rsplit("-", 1)[1]) for row in generated}
    lengths: dict[tuple, int] = {}   # each stream is generated once, up to the furthest question a row needs
    for row in generated:
        key = (row["task"], row["level"], row["seed"])
        lengths[key] = max(lengths.get(key, 0), position[id(row)] + 1)
    streams = {(task, level, seed): symbench.get_task(task).generate(n, complexity=level, seed=seed)
               for (task, level, seed), n in lengths.items()}
    found = []
    for row in generated:
        sample = streams[row["task"], row["level"], row["seed"]][position[id(row)]]
        if sample.id != row["question_id"]:
            raise ValueError(f"cannot regenerate {row['task']}/{row['question_id']} (got {sample.id})")
        if test_set.overlaps(symbench.get_task(row["task"]), sample):
            found.append(f"{row['task']}/{row['question_id']}")
    return list(dict.fromkeys(found))


def plan_questions(tasks: list[symbench.Task], args, test_set: TestSet) -> list[tuple[symbench.Task, symbench.Sample]]:
    """args.n questions per task and level from steer.plan_samples at the synthesis seed, skipping any that is in
    the test set or repeats an earlier one (over-drawn, then cut, so the plan is deterministic), then --shard."""
    drawn = steer.plan_samples(tasks, argparse.Namespace(**{**vars(args), "seed": SYNTH_SEED_BASE + args.seed,
                                                            "n": 2 * args.n + 8, "shard": None}))
    kept, seen, counts = [], set(), {}
    for task, sample in drawn:
        group = (task.id, sample.complexity)
        prints = fingerprints(sample)
        if counts.get(group, 0) >= args.n or prints & seen or test_set.overlaps(task, sample):
            continue
        seen |= prints
        counts[group] = counts.get(group, 0) + 1
        kept.append((task, sample))
    return steer.take_shard(kept, args.shard)


def question_fields(sample: symbench.Sample, args) -> dict:
    """What every row records about its question."""
    return dict(task=sample.task, question_id=sample.id, level=sample.complexity,
                seed=None if args.data_dir else SYNTH_SEED_BASE + args.seed)


# ---------------------------------------------------------------------------------------------------------------
# Rows: the formats train_sft.py and train_dpo.py read, and the checks every row passes

def conversation(trajectory: steer.Trajectory, turns: int) -> list[dict]:
    """CodeSteer's short-form inputs and guidances of the first `turns` turns, ending with the last guidance."""
    return steer.alternate(trajectory.steer_inputs_short[:turns], trajectory.guidances[:turns - 1]) + \
        [{"role": "assistant", "content": trajectory.guidances[turns - 1]}]


def sft_row(messages: list[dict], fmt: str) -> dict:
    if fmt == "trl":
        return {"messages": messages}
    pairs = [[messages[i]["content"], messages[i + 1]["content"]] for i in range(0, len(messages), 2)]
    return {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1], "history": pairs[:-1]}


def dpo_row(prompt: list[dict], chosen: str, rejected: str, fmt: str) -> dict:
    if fmt == "trl":
        return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}]}
    names = {"user": "human", "assistant": "gpt"}
    return {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in prompt],
            "chosen": {"from": "gpt", "value": chosen}, "rejected": {"from": "gpt", "value": rejected}}


class RowChecks:
    """Drops (and counts, per task) duplicate rows, pairs with chosen == rejected, and rows that do not render with
    the tokenizer's chat format or do not fit in max_len tokens."""

    def __init__(self, tokenizer, max_len: int):
        self.tokenizer, self.max_len = tokenizer, max_len
        self.seen: set[str] = set()
        self.dropped: dict[str, dict[str, int]] = {}

    def keep(self, task_id: str, conversations: list[list[dict]], key) -> bool:
        """conversations: what training renders (the SFT row; a pair's prompt + chosen and prompt + rejected)."""
        reason = None
        digest = hashlib.sha256(json.dumps(key, ensure_ascii=False).encode()).hexdigest()
        if digest in self.seen:
            reason = "duplicate"
        elif len(conversations) == 2 and conversations[0][-1]["content"] == conversations[1][-1]["content"]:
            reason = "chosen_equals_rejected"
        else:
            try:
                if any(len(self.tokenizer.render_conversation(c)[0]) > self.max_len for c in conversations):
                    reason = "too_long"
            except (ValueError, AssertionError):
                reason = "does_not_render"
        if reason:
            counts = self.dropped.setdefault(task_id, {})
            counts[reason] = counts.get(reason, 0) + 1
            return False
        self.seen.add(digest)
        return True


def write_rows(path: Path, rows: list[dict]):
    temporary = path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    temporary.replace(path)


def parse_tree_line(line: bytes) -> dict | None:
    """A node or question record of tree.jsonl, or None for a line that holds neither (torn, binary, foreign)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    fields = {"node": ("key", "path", "leaf", "usage"), "question": ("key", "pairs"), "error": ("key", "error")}
    if not isinstance(value, dict) or value.get("kind") not in fields:
        return None
    return value if all(field in value for field in fields[value["kind"]]) else None


def load_row_tokenizer(source: str):
    """The tokenizer (only: no weights) of a checkpoint path or embedded model name."""
    return load_tokenizer(resolve_checkpoint(source))


# ---------------------------------------------------------------------------------------------------------------
# SFT (B.2): the harness's own runs, filtered

def synthesize_sft(args, planned, clients, settings, checks: RowChecks, out: Path) -> dict:
    results = ResultsFile(out / "results.jsonl")
    done = {steer.record_key(r): r for r in results.read(repair=True) if not r.get("error")}
    keys = [(task.id, sample.id, "codesteer", sample.complexity) for task, sample in planned]
    todo = [work for work, key in zip(planned, keys) if key not in done]
    print(f"{len(planned)} questions planned, {len(planned) - len(todo)} already in {results.path}, {len(todo)} to run",
          file=sys.stderr)
    new = steer.run_all(todo, "codesteer", clients, settings, results, args.concurrency, progress=not args.quiet)
    records = {**done, **{steer.record_key(r): r for r in new}}
    samples = {key: sample for key, (task, sample) in zip(keys, planned)}
    rows, counts = [], {}
    for key in keys:
        record = records.get(key)
        if record is None:
            continue
        entry = counts.setdefault(record["task"], dict(questions=0, trajectories=0, correct=0, kept=0, errors=0,
                                                       tokens=0))
        entry["questions"] += 1
        entry["tokens"] += total_tokens(record)
        if record["error"]:
            entry["errors"] += 1
            continue
        entry["trajectories"] += 1
        entry["correct"] += record["solved"]
        trajectory = steer.Trajectory(**record["trajectory"])
        if not trajectory.guidances or (args.keep == "correct" and not record["solved"]):
            continue
        messages = conversation(trajectory, len(trajectory.guidances))
        if not checks.keep(record["task"], [messages], messages):
            continue
        entry["kept"] += 1
        rows.append({**sft_row(messages, args.format), **question_fields(samples[key], args),
                     "score": record["score"], "tokens": total_tokens(record), "seconds": record["seconds"]})
    write_rows(out / "sft.jsonl", rows)
    return counts


# ---------------------------------------------------------------------------------------------------------------
# DPO (B.4): a sampling tree per question, written node by node

def leaf_score(correct: bool, guidances: int) -> int:
    return CORRECT_SCORE - guidances if correct else -guidances


def prefix_before(trajectory: steer.Trajectory, k: int) -> steer.Trajectory:
    """A copy of the trajectory cut just before guidance k: the loop continues it from there."""
    t = copy.deepcopy(trajectory)
    t.steer_inputs_short, t.steer_inputs_full = t.steer_inputs_short[:k + 1], t.steer_inputs_full[:k + 1]
    t.steer_outputs, t.guidances, t.turns = t.steer_outputs[:k], t.guidances[:k], t.turns[:k]
    t.task_messages = t.task_messages[:2 * k]
    t.stop_reason, t.final_text = "", t.turns[-1]["reply"] if t.turns else ""
    return t


def guidance_at(trajectory: steer.Trajectory, k: int) -> str:
    """Guidance k as stored for training, or CodeSteer's raw text where it gave none (no turn-0 choice)."""
    return trajectory.guidances[k] if k < len(trajectory.guidances) else trajectory.steer_outputs[k]


def node_seed(key: str, path: tuple) -> int:
    """A sampling seed per node, so a resumed node asks for the same sample (on servers that honour seeds)."""
    return int.from_bytes(hashlib.sha256(f"{key}/{path}".encode()).digest()[:4], "big")


class QuestionTree:
    """Grows one question's tree. Each finished node is one line of OUT/tree.jsonl; on resume a node already there
    is read back instead of being run again."""

    def __init__(self, task, sample, args, clients, settings, tokenizer, nodes_file: ResultsFile, old_nodes: dict):
        self.task, self.sample, self.args, self.settings, self.tokenizer = task, sample, args, settings, tokenizer
        self.clients, self.nodes_file, self.nodes = clients, nodes_file, old_nodes
        self.key = f"{task.id}/{sample.id}/{sample.complexity}"
        self.calls = sum(node["usage"]["calls"] for node in old_nodes.values())

    def prefix_tokens(self, t: steer.Trajectory) -> int:
        return len(self.tokenizer.render_prompt(steer.alternate(t.steer_inputs_short, t.guidances)))

    def run_node(self, path: tuple, work, sampled: bool = True) -> dict:
        """The node at `path`: read back, or made by work(roles) -> (trajectory, leaf) and recorded. With `sampled`
        CodeSteer samples at --temperature with a seed of the node's own."""
        if path in self.nodes:
            return self.nodes[path]
        roles = self.clients.roles(self.settings)
        if sampled:
            roles.steer = steer.Role(self.clients.steer, temperature=self.args.temperature,
                                     seed=node_seed(self.key, path))
        started = time.perf_counter()
        trajectory, leaf = work(roles)
        node = dict(kind="node", key=self.key, path=list(path), leaf=leaf, trajectory=asdict(trajectory))
        if leaf:
            final = steer.final_answer(self.sample, self.task, trajectory, roles.helper, self.settings)
            node.update(correct=final["score"] >= 1.0, score=leaf_score(final["score"] >= 1.0,
                                                                       len(trajectory.steer_outputs)))
        usages = [r.usage() for r in (roles.task, roles.steer, roles.helper) if r is not None]
        node["usage"] = dict(calls=sum(u["calls"] for u in usages), seconds=round(time.perf_counter() - started, 3),
                             tokens=sum(u["prompt_tokens"] + u["completion_tokens"] for u in usages))
        self.calls += node["usage"]["calls"]
        self.nodes_file.append(node)
        self.nodes[path] = node
        return node

    def continue_loop(self, roles, t: steer.Trajectory, stop_before_guidance: int | None = None,
                      max_turns: int | None = None) -> steer.Trajectory:
        settings = replace(self.settings, max_turns=max_turns or self.settings.max_turns)
        return steer.steer(t.question, roles.task, roles.steer, roles.helper, settings, t, stop_before_guidance)

    def grow(self, path: tuple = (), prefix: steer.Trajectory | None = None) -> float | None:
        """Variant 1. The score of the node whose state, due guidance k, is `prefix` (the root: nothing done yet):
        the mean of its children's, each a sampled guidance k played on. None when the call budget ran out first."""
        prefix = prefix or steer.steer(self.sample.question, None, None, None, self.settings, stop_before_guidance=0)
        k = len(prefix.guidances)
        scores = []
        for j in range(self.args.branch):
            child = path + (j,)
            if child not in self.nodes and self.calls >= self.args.budget:
                break

            def play(roles, prefix=prefix):
                t = copy.deepcopy(prefix)
                if not steer.write_guidance(t, roles.steer, roles.helper, self.settings):
                    t.stop_reason = "no_choice"
                    return t, True
                if k + 1 >= self.args.max_depth:
                    return self.continue_loop(roles, t), True
                t = self.continue_loop(roles, t, stop_before_guidance=k + 1)
                if t.stop_reason == "paused" and self.prefix_tokens(t) > self.args.prefix_tokens:
                    return self.continue_loop(roles, t), True   # too long to branch on: roll out
                return t, t.stop_reason != "paused"

            node = self.run_node(child, play)
            score = node["score"] if node["leaf"] else self.grow(child, steer.Trajectory(**node["trajectory"]))
            if score is None:
                break
            node["mean"] = score
            scores.append(score)
        return sum(scores) / len(scores) if scores else None

    def released(self):
        """Variant 2, the released script (B.4 steps 1-5): regenerate guidance k of a failed original trajectory."""
        original = self.run_node(("original",), lambda roles: (
            steer.steer(self.sample.question, roles.task, roles.steer, roles.helper, self.settings), True),
            sampled=False)
        if original["correct"]:
            return
        t = steer.Trajectory(**original["trajectory"])
        for k in range(len(t.turns)):
            prefix = prefix_before(t, k)
            if self.prefix_tokens(prefix) > self.args.prefix_tokens:
                continue
            for attempt in range(RELEASED_ATTEMPTS):
                path = (k, attempt)
                if path not in self.nodes and self.calls >= self.args.budget:
                    return
                node = self.run_node(path, lambda roles, prefix=prefix: (
                    self.continue_loop(roles, copy.deepcopy(prefix), max_turns=k + steer.MAX_TURNS), True))
                if node["correct"]:
                    break

    def pairs(self) -> list[dict]:
        """The rows of this question (before the checks), from its recorded nodes."""
        if self.args.dpo_variant == "released":
            return self.released_pairs()
        rows = []
        parents = {tuple(node["path"][:-1]) for node in self.nodes.values()}
        for parent in sorted(parents):
            children = [self.nodes[p] for p in sorted(self.nodes) if p[:-1] == parent and "mean" in self.nodes[p]]
            for i, a in enumerate(children):
                for b in children[i + 1:]:
                    if a["mean"] != b["mean"]:
                        chosen, rejected = (a, b) if a["mean"] > b["mean"] else (b, a)
                        rows.append(self.pair(chosen, rejected, chosen["mean"], rejected["mean"], len(parent)))
        return rows

    def released_pairs(self) -> list[dict]:
        original = self.nodes.get(("original",))
        if original is None or original["correct"]:
            return []
        length = len(original["trajectory"]["guidances"])   # Fidelity note: both scores use the original's L
        return [self.pair(node, original, leaf_score(True, length), leaf_score(False, length), path[0])
                for path, node in sorted((p, n) for p, n in self.nodes.items() if p != ("original",))
                if node["correct"]]

    def pair(self, chosen: dict, rejected: dict, score_chosen, score_rejected, k: int) -> dict:
        t_chosen, t_rejected = (steer.Trajectory(**n["trajectory"]) for n in (chosen, rejected))
        prefix = prefix_before(t_chosen, k)
        spent = [self.subtree_usage(n) for n in (chosen, rejected)]
        return dict(prompt=steer.alternate(prefix.steer_inputs_short, prefix.guidances),
                    chosen=guidance_at(t_chosen, k), rejected=guidance_at(t_rejected, k), turn=k,
                    score_chosen=score_chosen, score_rejected=score_rejected,
                    tokens=sum(u["tokens"] for u in spent), seconds=round(sum(u["seconds"] for u in spent), 3))

    def subtree_usage(self, node: dict) -> dict:
        """What a node cost with everything below it."""
        path = tuple(node["path"])
        below = [n["usage"] for p, n in self.nodes.items() if p[:len(path)] == path]
        return dict(tokens=sum(u["tokens"] for u in below), seconds=sum(u["seconds"] for u in below))


def synthesize_dpo(args, planned, clients, settings, checks: RowChecks, out: Path) -> dict:
    nodes_file = ResultsFile(out / "tree.jsonl", parse=parse_tree_line)
    by_question: dict[str, dict] = {}
    questions = {}
    for record in nodes_file.read(repair=True):
        if record["kind"] == "question":
            questions[record["key"]] = record
        elif record["kind"] == "node":
            by_question.setdefault(record["key"], {})[tuple(record["path"])] = record

    def grow(task, sample):
        tree = QuestionTree(task, sample, args, clients, settings, checks.tokenizer, nodes_file,
                            by_question.get(f"{task.id}/{sample.id}/{sample.complexity}", {}))
        try:
            tree.released() if args.dpo_variant == "released" else tree.grow()
        except LLMError as error:
            if error.status in steer.FATAL_STATUSES:
                raise steer.FatalLLMError(str(error)) from error
            return dict(kind="error", key=tree.key, task=task.id, error=f"{type(error).__name__}: {error}")
        leaves = [n for n in tree.nodes.values() if n["leaf"]]
        record = dict(kind="question", key=tree.key, task=task.id, question=question_fields(sample, args),
                      pairs=tree.pairs(), leaves=len(leaves), correct=sum(n["correct"] for n in leaves),
                      tokens=sum(n["usage"]["tokens"] for n in tree.nodes.values()))
        nodes_file.append(record)
        return record

    todo = [(task, sample) for task, sample in planned if f"{task.id}/{sample.id}/{sample.complexity}" not in questions]
    print(f"{len(planned)} questions planned, {len(planned) - len(todo)} already in {nodes_file.path}, {len(todo)} "
          f"to run", file=sys.stderr)
    errors = {}
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool, \
            tqdm(total=len(todo), disable=args.quiet or not todo, unit="question", file=sys.stderr) as bar:
        futures = [pool.submit(grow, task, sample) for task, sample in todo]
        try:
            for future in as_completed(futures):
                record = future.result()
                if record["kind"] == "error":
                    errors[record["task"]] = errors.get(record["task"], 0) + 1
                    print(f"{record['key']}: {record['error']} (rerun to retry)", file=sys.stderr)
                else:
                    questions[record["key"]] = record
                bar.update(1)
        except (steer.FatalLLMError, KeyboardInterrupt) as error:
            for future in futures:
                future.cancel()
            print("\nstopping: the finished nodes are saved; rerun with the same --out to resume", file=sys.stderr)
            if isinstance(error, KeyboardInterrupt):
                raise
            raise SystemExit(f"stopping the run: {error}") from None

    rows, counts = [], {}
    for task, sample in planned:
        record = questions.get(f"{task.id}/{sample.id}/{sample.complexity}")
        entry = counts.setdefault(task.id, dict(questions=0, trajectories=0, correct=0, kept=0, pairs=0,
                                                errors=errors.get(task.id, 0), tokens=0))
        if record is None:
            continue
        entry["questions"] += 1
        entry["trajectories"] += record["leaves"]
        entry["correct"] += record["correct"]
        entry["tokens"] += record["tokens"]
        entry["pairs"] += len(record["pairs"])
        for pair in record["pairs"]:
            prompt, chosen, rejected = pair["prompt"], pair["chosen"], pair["rejected"]
            rendered = [prompt + [{"role": "assistant", "content": text}] for text in (chosen, rejected)]
            if not checks.keep(task.id, rendered, [prompt, chosen, rejected]):
                continue
            entry["kept"] += 1
            rows.append({**dpo_row(prompt, chosen, rejected, args.format), **record["question"],
                         **{k: pair[k] for k in ("turn", "score_chosen", "score_rejected", "tokens", "seconds")}})
    write_rows(out / "dpo.jsonl", rows)
    return counts


# ---------------------------------------------------------------------------------------------------------------
# Accounting

def make_summary(command: str, counts: dict, dropped: dict, wall_seconds: float) -> dict:
    tasks = {}
    for task_id, entry in counts.items():
        tasks[task_id] = {**entry, "success_rate": entry["correct"] / entry["trajectories"]
                          if entry["trajectories"] else None, "dropped": dropped.get(task_id, {})}
    return dict(command=command, tasks=tasks, rows=sum(e["kept"] for e in counts.values()),
                tokens=sum(e["tokens"] for e in counts.values()), wall_seconds=round(wall_seconds, 3))


def format_summary(summary: dict) -> str:
    columns = ["questions", "trajectories", "kept"] + (["pairs"] if summary["command"] == "dpo" else []) + \
        ["errors", "tokens"]
    rows = [("task",) + tuple(columns) + ("teacher success", "dropped")]
    for task_id, e in summary["tasks"].items():
        rate = "-" if e["success_rate"] is None else f"{100 * e['success_rate']:.1f} %"
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(e["dropped"].items())) or "-"
        rows.append((task_id,) + tuple(str(e[c]) for c in columns) + (rate, dropped))
    return (_table(rows) + f"\n{summary['rows']} rows, {summary['tokens']} tokens, "
            f"{summary['wall_seconds']:.1f} s wall")


# ---------------------------------------------------------------------------------------------------------------
# Merging shards

RUN_ONLY_KEYS = ("shard", "out", "argv", "concurrency", "quiet", "retry_errors", "folders")  # not the data's config


def merge(args) -> dict:
    configs, folders = [], [Path(f) for f in args.folders]
    for folder in folders:
        path = folder / "config.json"
        if not path.is_file():
            raise SystemExit(f"merge: {path} not found (not a synth.py output folder)")
        configs.append(json.loads(path.read_text()))
    base = {k: v for k, v in configs[0].items() if k not in RUN_ONLY_KEYS}
    for folder, config in zip(folders[1:], configs[1:]):
        other = {k: v for k, v in config.items() if k not in RUN_ONLY_KEYS}
        if other != base:
            key = next(k for k in sorted(set(base) | set(other)) if base.get(k) != other.get(k))
            raise SystemExit(f"merge: {folder} was made with another configuration than {folders[0]} "
                             f"({key}: {other.get(key)!r} vs {base.get(key)!r})")
    shards = [tuple(c["shard"]) if c.get("shard") else None for c in configs]
    if None in shards or len(set(shards)) != len(shards):
        raise SystemExit(f"merge: expected distinct shards of one run, got {[c.get('shard') for c in configs]}")
    missing = sorted(set(range(1, shards[0][1] + 1)) - {k for k, _ in shards})
    if missing:
        print(f"merge: shards {missing} of {shards[0][1]} are missing", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = base["command"]
    rows_name, records_name = ("sft.jsonl", "results.jsonl") if command == "sft" else ("dpo.jsonl", "tree.jsonl")
    for name in (rows_name, records_name):
        seen, lines = set(), []
        for folder in folders:
            for line in (folder / name).read_text().splitlines() if (folder / name).is_file() else []:
                if line.strip() and line not in seen:
                    seen.add(line)
                    lines.append(line)
        (out / name).write_text("".join(line + "\n" for line in lines))
    summaries = [json.loads((f / "summary.json").read_text()) for f in folders]
    counts, dropped = {}, {}
    for summary in summaries:
        for task_id, entry in summary["tasks"].items():
            total = counts.setdefault(task_id, {})
            for name, value in entry.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    total[name] = total.get(name, 0) + value
            for reason, n in entry["dropped"].items():
                dropped.setdefault(task_id, {})[reason] = dropped.get(task_id, {}).get(reason, 0) + n
    summary = make_summary(command, counts, dropped, max(s["wall_seconds"] for s in summaries))
    write_json_atomically(out / "config.json", {**base, "shard": None, "merged_from": [str(f) for f in folders]})
    write_json_atomically(out / "summary.json", summary)
    print(format_summary(summary))
    return summary


# ---------------------------------------------------------------------------------------------------------------
# The command line

def check_reachable(clients) -> None:
    """Fail at once, not after every retry of every question, when an HTTP endpoint does not answer at all."""
    for name, client in (("TaskLLM", clients.task), ("CodeSteerLLM", clients.steer), ("helper LLM", clients.helper)):
        url = getattr(client, "url", None)
        if url is None:
            continue
        try:
            requests.head(url, timeout=10)   # any HTTP answer, even an error status, means someone is there
        except requests.RequestException as error:
            raise SystemExit(f"cannot reach the {name} at {url}: {type(error).__name__}") from None


def synthesize(args) -> dict:
    started = time.perf_counter()
    tasks = steer.select_tasks(args)
    if not tasks:
        raise SystemExit("no task to synthesize on")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise SystemExit(f"--data-dir {args.data_dir}: no such directory")
    args.steer_mode = args.steer_mode or "api"   # B.2, B.4: the teacher is an API CodeSteer
    clients, mode, used = steer.build_clients(args)
    demo = all(getattr(clients, name).fallback_reason for name in used)   # every role runs the embedded model
    if demo:
        print(steer.DEMO_NOTICE.format(model=clients.task.model, n=steer.DEMO_N, max_tokens=steer.DEMO_MAX_TOKENS,
                                       max_turns=steer.DEMO_MAX_TURNS, out=args.out), file=sys.stderr)
        if args.max_tokens is None:
            args.max_tokens = steer.DEMO_MAX_TOKENS
            clients, mode, _ = steer.build_clients(args)
        args.max_turns = args.max_turns or steer.DEMO_MAX_TURNS
    args.n = args.n if args.n is not None else steer.DEMO_N if demo else 20
    if args.command == "dpo" and args.max_depth is None:
        args.max_depth = DEMO_DEPTH if demo else 3
    check_reachable(clients)
    settings = steer.loop_settings(args, mode)
    test_set = TestSet([Path(d) for d in [REFERENCE_DIR, *(args.test_data_dir or [])]], args.test_seeds)
    planned = plan_questions(tasks, args, test_set)
    if not planned:
        raise SystemExit("no question left to synthesize on (all are in the test set)")
    tokenizer = load_row_tokenizer(args.tokenizer or args.steer_ckpt or "embedded")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / "config.json", {**vars(args), "settings": asdict(settings), "argv": sys.argv[1:]})
    checks = RowChecks(tokenizer, args.max_len)
    run = synthesize_sft if args.command == "sft" else synthesize_dpo
    counts = run(args, planned, clients, settings, checks, out)
    summary = make_summary(args.command, counts, checks.dropped, time.perf_counter() - started)
    write_json_atomically(out / "summary.json", summary)
    print(format_summary(summary))
    return summary


def positive(minimum: int):
    def parse(text: str) -> int:
        if not text.lstrip("-").isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, not {text!r}")
        return int(text)
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Synthesize SFT trajectories and DPO guidance pairs with the CodeSteer loop.",
        epilog="sft and dpo also take every flag of steer.py (models, loop, --concurrency, --shard, --quiet, ...): "
               "see python steer.py --help.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("sft", "multi-turn trajectories of an API CodeSteer teacher (B.2)"),
                       ("dpo", "guidance preference pairs from a sampling tree (B.4)")):
        command = commands.add_parser(name, help=text, description=text, epilog=parser.epilog)
        command.add_argument("--out", default=f"runs/synth-{name}", help="output folder; rerun with it to resume")
        command.add_argument("--format", choices=["trl", "llamafactory"], default="trl",
                             help="trl: messages / prompt-chosen-rejected rows; llamafactory: alpaca-with-history "
                                  "/ ShareGPT preference rows (default trl)")
        command.add_argument("--tokenizer", help="chat format every row must render with (default: --steer-ckpt, "
                                                 "else the embedded model's)")
        command.add_argument("--max-len", type=positive(1), default=MAX_LEN,
                             help=f"drop rows longer than this many tokens (default {MAX_LEN})")
        command.add_argument("--test-data-dir", action="append",
                             help="an original dataset_gather folder whose samples must not be used (repeatable; "
                                  "the shipped tests/symbench-reference is always excluded)")
        command.add_argument("--test-seeds", type=int, nargs="+", default=[0], metavar="SEED",
                             help="steer.py --seed values whose generated test samples must not be used: the first "
                                  f"{TEST_STREAM_N} of each seed's stream at each level (default 0)")
        if name == "sft":
            command.add_argument("--keep", choices=["correct", "all"], default="correct",
                                 help="which finished trajectories become rows (default correct)")
        else:
            command.add_argument("--variant", dest="dpo_variant", choices=["tree", "released"], default="tree",
                                 help="tree: the paper's sampling tree; released: the released script (B.4 variant "
                                      "2, scores from the original trajectory's length)")
            command.add_argument("--branch", type=positive(2), default=2, help="guidances sampled per node "
                                                                                 "(default 2)")
            command.add_argument("--max-depth", type=positive(1),
                                 help="turns that branch; below, children are rolled out (default 3, embedded demo "
                                      f"{DEMO_DEPTH})")
            command.add_argument("--prefix-tokens", type=positive(1), default=MAX_PREFIX_TOKENS,
                                 help=f"do not branch on a prefix longer than this (default {MAX_PREFIX_TOKENS})")
            command.add_argument("--budget", type=positive(1), default=400, help="LLM calls per question (default 400)")
            command.add_argument("--temperature", type=float, default=1.0,
                                 help="CodeSteer's sampling temperature for alternatives (default 1.0, spec A.1)")
    merging = commands.add_parser("merge", help="join the output folders of the shards of one run")
    merging.add_argument("--out", required=True)
    merging.add_argument("folders", nargs="+")
    args, rest = parser.parse_known_args(argv)
    if args.command == "merge":
        if rest:
            parser.error(f"merge takes no other flags: {' '.join(rest)}")
        return args
    if "--method" in rest or "--out" in rest:
        parser.error("--method is fixed (codesteer); give --out after the subcommand")
    loop_args = steer.parse_args(rest)
    for name, value in vars(args).items():
        setattr(loop_args, name, value)
    if args.command == "dpo":
        if args.temperature <= 0:
            parser.error("--temperature must be > 0: siblings are samples from one prefix")
    return loop_args


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        if args.command == "merge":
            merge(args)
        else:
            synthesize(args)
    except SystemExit as stop:
        if isinstance(stop.code, str):   # a user mistake or a stopped run: one line, exit 2
            print(f"error: {stop.code}", file=sys.stderr)
            raise SystemExit(2) from None
        raise


if __name__ == "__main__":
    main()
