"""synth.py against scripted OpenAI-compatible servers (tests/fixture_server.py): a TaskLLM that answers correctly
only after code guidance, a CodeSteer whose samples are fixed by the request's seed, so that SFT filtering, the DPO
tree's scores and pairs (worked out by hand below) and kill-and-resume are exact. One slow test runs the embedded
model and takes a training step on what it wrote."""

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import checkers
import steer
import symbench
import synth
import train_dpo
import train_sft
from fixture_server import fixture_server

ROOT = Path(__file__).resolve().parents[1]
GAME24 = symbench.get_task("game24")
WRONG = "1+2+3+4 = 24"


@pytest.fixture(autouse=True)
def no_real_endpoints(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tokenizer(embedded_path):
    return synth.load_row_tokenizer(str(embedded_path))


def planned(n: int, task=GAME24, **overrides) -> list[symbench.Sample]:
    args = argparse.Namespace(n=n, seed=0, complexity=None, data_dir=None, shard=None, **overrides)
    return [sample for _, sample in synth.plan_questions([task], args, synth.TestSet([synth.REFERENCE_DIR]))]


def task_reply(messages, samples: dict) -> str:
    """Correct code after code guidance (the canned P_code or a paraphrase naming Python), a wrong text otherwise."""
    question = next(q for q in samples if any(m["content"].endswith(q) for m in messages))
    if "python" in messages[-1]["content"].lower():
        return f"Search it.\n```python\nprint('<<<{GAME24.solve(samples[question])}>>>')\n```"
    return f"By hand: <<<{WRONG}>>>"


def guidances_so_far(messages) -> int:
    return sum(m["role"] == "assistant" for m in messages)


def scripted(steer_reply, samples: dict, paraphrase: str = "Solve it with Python code, printing the answer.\n\n"):
    """One reply function for all roles, told apart by their prompts; steer_reply(messages, seed) -> text."""
    def reply(messages, body):
        first = messages[0]["content"]
        if first.startswith(steer.CHOICE_PROMPT):
            return steer_reply(messages, body.get("seed"))
        if first.startswith("Rewrite the instruction below"):
            return paraphrase if "Python" in first else "Reason in text, step by step.\n\n"
        if first.startswith("Below is a response"):
            return f"<<<{WRONG}>>>"
        if messages[-1]["content"].startswith(checkers.CHECK_PROMPT):
            return "```python\nprint('Correct')\n```"
        return task_reply(messages, samples)
    return reply


@pytest.fixture
def server_for():
    """server_for(reply(messages, body)) -> a running fixture server that also passes the request body."""
    servers = []

    def start(reply, delay: float = 0.0):
        box = {}

        def answer(messages):
            return reply(messages, box["server"].requests[-1])
        context = fixture_server(answer, delay=delay)
        box["server"] = context.__enter__()
        servers.append(context)
        return box["server"]
    yield start
    for context in servers:
        context.__exit__(None, None, None)


def run_synth(argv, server, out, tokenizer_path) -> dict:
    urls = [f"--{role}-base-url={server.url}" for role in ("task", "steer", "helper")]
    synth.main([*argv, "--out", str(out), "--tokenizer", str(tokenizer_path), "--quiet", *urls])
    return json.loads((out / "summary.json").read_text())


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------------------
# SFT

def test_sft_keeps_exactly_the_successful_trajectories_and_train_sft_loads_them(server_for, tmp_path, embedded_path,
                                                                                tokenizer):
    samples = {s.question: s for s in planned(4)}
    code_questions = {q for q, s in samples.items() if sum(s.meta["numbers"]) % 2 == 0}
    assert 0 < len(code_questions) < 4     # both outcomes occur

    def steer_reply(messages, seed):
        if guidances_so_far(messages) == 0:
            question = messages[0]["content"]
            return "Searching is safer. <<<Code>>>" if any(q in question for q in code_questions) \
                else "Plain reasoning will do. <<<Text>>>"
        return "The answer looks right. <<<Return Answer>>>"

    server = server_for(scripted(steer_reply, samples))
    summary = run_synth(["sft", "--task", "game24", "--n", "4"], server, tmp_path / "sft", embedded_path)
    kept = rows(tmp_path / "sft" / "sft.jsonl")
    assert {row["question_id"] for row in kept} == {samples[q].id for q in code_questions}
    assert summary["tasks"]["game24"] | {"dropped": {}} == summary["tasks"]["game24"]
    assert (summary["tasks"]["game24"]["trajectories"], summary["tasks"]["game24"]["kept"]) == (4, len(kept))
    for row in kept:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant", "user", "assistant"]
        assert row["messages"][0]["content"].startswith(steer.CHOICE_PROMPT)        # short form, turn 0
        assert row["messages"][1]["content"].startswith("Solve it with Python")     # the teacher's paraphrase
        assert row["messages"][2]["content"].startswith("The TaskLLM answered:")    # B_1, no P_decision
        assert row["messages"][3]["content"] == "Return Answer"
        assert row["seed"] == synth.SYNTH_SEED_BASE and row["level"] == GAME24.default_level and row["tokens"] > 0
    loaded = train_sft.SFTTask([tmp_path / "sft" / "sft.jsonl"], tokenizer, 2048)
    assert loaded.stats.samples == len(kept)

    # --keep all and --format llamafactory: every trajectory, alpaca rows that train_sft reads to the same tokens.
    run_synth(["sft", "--task", "game24", "--n", "4", "--keep", "all", "--format", "llamafactory"], server,
              tmp_path / "sft", embedded_path)
    alpaca = rows(tmp_path / "sft" / "sft.jsonl")
    assert len(alpaca) == 4 and all(set(r) >= {"instruction", "output", "history"} for r in alpaca)
    as_messages = {r["question_id"]: train_sft.sft_messages(r, "row") for r in alpaca}
    assert all(as_messages[r["question_id"]] == r["messages"] for r in kept)


# ---------------------------------------------------------------------------------------------------------------
# DPO, variant 1: the tree

TREE_OPTIONS = {0: ["<<<Code>>>", "<<<Text>>>"], 1: ["<<<Return Answer>>>", "<<<Code>>>"],
                2: ["<<<Return Answer>>>", "<<<Code>>>"]}


def tree_script(sample: symbench.Sample, depth: int = 3, branch: int = 2):
    """CodeSteer's j-th sample at a node is TREE_OPTIONS[turn][j] (j read from the node's seed); after the
    branching turns it returns the answer."""
    key = f"{sample.task}/{sample.id}/{sample.complexity}"
    child_of_seed = {}
    paths = [()]
    for _ in range(depth):
        paths = [p + (j,) for p in paths for j in range(branch)]
        child_of_seed.update({synth.node_seed(key, p): p[-1] for p in paths})

    def steer_reply(messages, seed):
        k = guidances_so_far(messages)
        return TREE_OPTIONS[k][child_of_seed[seed]] if k in TREE_OPTIONS else "<<<Return Answer>>>"
    return steer_reply


def test_dpo_tree_gives_the_hand_worked_pairs_and_scores(server_for, tmp_path, embedded_path, tokenizer):
    """Three levels, branch 2. A leaf correct after t guidances scores 15 - t, a wrong one -t:
    root -> A (Code: right answer)                     mean(13, 11.5) = 12.25
              A0 Return Answer: leaf, t=2               13
              A1 Code: right again                      mean(12, 11) = 11.5
                 A10 Return Answer (rolled out): t=3    12
                 A11 Code, then Return Answer: t=4      11
         -> B (Text: wrong answer)                     mean(-2, 11.5) = 4.75
              B0 Return Answer: leaf, wrong, t=2        -2
              B1 Code: right                            11.5 (as A1)
    """
    sample = planned(1)[0]
    server = server_for(scripted(tree_script(sample), {sample.question: sample}))
    summary = run_synth(["dpo", "--task", "game24", "--n", "1", "--branch", "2", "--max-depth", "3", "--no-helper"],
                        server, tmp_path / "dpo", embedded_path)
    got = [(r["turn"], r["chosen"][0]["content"], r["rejected"][0]["content"], r["score_chosen"], r["score_rejected"])
           for r in rows(tmp_path / "dpo" / "dpo.jsonl")]
    code, text = steer.CODE_PROMPT, steer.TEXT_PROMPT
    assert sorted(got) == sorted([(0, code, text, 12.25, 4.75),
                                  (1, "Return Answer", "Code", 13, 11.5), (2, "Return Answer", "Code", 12, 11),
                                  (1, "Code", "Return Answer", 11.5, -2), (2, "Return Answer", "Code", 12, 11)])
    rows_ = rows(tmp_path / "dpo" / "dpo.jsonl")
    by_turn = {(r["turn"], r["score_rejected"]): r for r in rows_}
    under_a, under_b = by_turn[(1, 11.5)], by_turn[(1, -2)]
    assert [m["role"] for m in under_a["prompt"]] == ["user", "assistant", "user"]
    assert under_a["prompt"][1]["content"] == code and under_b["prompt"][1]["content"] == text
    assert under_a["prompt"][2]["content"].startswith("The TaskLLM answered:")
    entry = summary["tasks"]["game24"]
    assert (entry["questions"], entry["trajectories"], entry["pairs"], entry["kept"]) == (1, 6, 5, 5)
    assert entry["correct"] == 5      # every leaf but B0
    nodes = [r for r in rows(tmp_path / "dpo" / "tree.jsonl") if r["kind"] == "node"]
    assert len(nodes) == 10 and len({tuple(n["path"]) for n in nodes}) == 10

    # train_dpo reads the rows as they are, in both formats.
    assert len(dpo_examples(tmp_path / "dpo" / "dpo.jsonl", tokenizer)) == 5
    run_synth(["dpo", "--task", "game24", "--n", "1", "--no-helper", "--format", "llamafactory"], server,
              tmp_path / "dpo", embedded_path)
    sharegpt = rows(tmp_path / "dpo" / "dpo.jsonl")
    assert len(sharegpt) == 5 and all(r["chosen"]["from"] == "gpt" for r in sharegpt)
    assert len(dpo_examples(tmp_path / "dpo" / "dpo.jsonl", tokenizer)) == 5


def dpo_examples(path: Path, tokenizer) -> list:
    args = argparse.Namespace(data=[path], seq_len=4096, beta=0.1, label_smoothing=0.0, nll_weight=0.0,
                              max_row_bytes=train_sft.MAX_LINE_BYTES)
    return train_dpo.DPOTask(args, tokenizer, None).examples


# ---------------------------------------------------------------------------------------------------------------
# DPO, variant 2: the released script

def test_released_variant_scores_pairs_with_the_original_trajectory_length(server_for, tmp_path, embedded_path):
    """The original (greedy, unseeded) trajectory: Text, Text, Return Answer -> wrong with L = 3 guidances, 2 replies.
    k = 0: attempt 0 says Text (wrong again), attempt 1 says Code and succeeds -> one pair, then k = 1.
    k = 1: attempt 0 says Code and succeeds. Each pair scores 15 - 3 and -3, the lengths of the new trajectories
    (2 and 3 guidances) notwithstanding."""
    sample = planned(1)[0]
    key = f"{sample.task}/{sample.id}/{sample.complexity}"
    attempt_of_seed = {synth.node_seed(key, (k, a)): (k, a) for k in range(3) for a in range(4)}
    first_guidance = {(0, 0): "<<<Text>>>", (0, 1): "<<<Code>>>", (1, 0): "<<<Code>>>"}

    def steer_reply(messages, seed):
        k = guidances_so_far(messages)
        if seed is None:   # the original trajectory
            return ["<<<Text>>>", "<<<Text>>>"][k] if k < 2 else "<<<Return Answer>>>"
        attempt = attempt_of_seed[seed]
        return first_guidance[attempt] if k == attempt[0] else "<<<Return Answer>>>"

    server = server_for(scripted(steer_reply, {sample.question: sample}))
    run_synth(["dpo", "--variant", "released", "--task", "game24", "--n", "1", "--no-helper"], server,
              tmp_path / "dpo", embedded_path)
    got = [(r["turn"], r["chosen"][0]["content"], r["rejected"][0]["content"], r["score_chosen"], r["score_rejected"])
           for r in rows(tmp_path / "dpo" / "dpo.jsonl")]
    assert got == [(0, steer.CODE_PROMPT, steer.TEXT_PROMPT, 12, -3), (1, "Code", "Text", 12, -3)]
    paths = [tuple(r["path"]) for r in rows(tmp_path / "dpo" / "tree.jsonl") if r["kind"] == "node"]
    assert sorted(paths, key=str) == sorted([("original",), (0, 0), (0, 1), (1, 0)], key=str)


# ---------------------------------------------------------------------------------------------------------------
# Resuming, sharding, merging

def test_a_killed_dpo_run_resumes_to_the_same_rows_once_each(server_for, tmp_path, embedded_path):
    sample = planned(1)[0]
    server = server_for(scripted(tree_script(sample), {sample.question: sample}), delay=0.05)
    argv = ["dpo", "--task", "game24", "--n", "1", "--no-helper", "--tokenizer", str(embedded_path), "--quiet",
            *[f"--{role}-base-url={server.url}" for role in ("task", "steer", "helper")]]
    whole = tmp_path / "whole"
    synth.main([*argv, "--out", str(whole)])
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(ROOT / "synth.py"), *argv, "--out", str(killed)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree = killed / "tree.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not tree.exists() or len(tree.read_text().splitlines()) < 4):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = [json.loads(line) for line in tree.read_text().splitlines() if line.endswith("}")]
    assert 4 <= len(written) < 10 and all(r["kind"] == "node" for r in written)   # killed mid-tree
    requests_before = len(server.requests)
    synth.main([*argv, "--out", str(killed)])
    # The finished nodes are not asked again: the rerun costs what the whole run cost minus those nodes.
    whole_calls = sum(r["usage"]["calls"] for r in rows(whole / "tree.jsonl") if r["kind"] == "node")
    resumed_nodes = [r for r in rows(killed / "tree.jsonl") if r["kind"] == "node"]
    assert len(resumed_nodes) == 10 and len({tuple(r["path"]) for r in resumed_nodes}) == 10
    assert len(server.requests) - requests_before <= whole_calls - sum(r["usage"]["calls"] for r in written[:3])
    assert without_seconds(killed / "dpo.jsonl") == without_seconds(whole / "dpo.jsonl")
    synth.main([*argv, "--out", str(killed)])                       # a finished run: nothing more, nothing twice
    assert without_seconds(killed / "dpo.jsonl") == without_seconds(whole / "dpo.jsonl")


def without_seconds(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows(path)]


def sft_server(server_for, n: int):
    samples = {s.question: s for s in planned(n)}

    def steer_reply(messages, seed):
        return "<<<Code>>>" if guidances_so_far(messages) == 0 else "<<<Return Answer>>>"
    return server_for(scripted(steer_reply, samples))


def test_shards_partition_the_questions_and_merge_joins_them(server_for, tmp_path, embedded_path):
    server = sft_server(server_for, 5)
    argv = ["sft", "--task", "game24", "--n", "5"]
    run_synth(argv, server, tmp_path / "all", embedded_path)
    for k in (1, 2):
        run_synth([*argv, "--shard", f"{k}/2"], server, tmp_path / f"shard{k}", embedded_path)
    shard_ids = [{r["question_id"] for r in rows(tmp_path / f"shard{k}" / "sft.jsonl")} for k in (1, 2)]
    assert not shard_ids[0] & shard_ids[1] and len(shard_ids[0]) == 3 and len(shard_ids[1]) == 2
    synth.main(["merge", "--out", str(tmp_path / "merged"), str(tmp_path / "shard1"), str(tmp_path / "shard2")])
    def by_question(path):
        return sorted(without_seconds(path), key=lambda row: row["question_id"])
    assert by_question(tmp_path / "merged" / "sft.jsonl") == by_question(tmp_path / "all" / "sft.jsonl")
    merged = json.loads((tmp_path / "merged" / "summary.json").read_text())
    assert merged["tasks"]["game24"]["questions"] == 5 and merged["rows"] == 5

    run_synth([*argv, "--shard", "2/2", "--max-turns", "3"], server, tmp_path / "other", embedded_path)
    with pytest.raises(SystemExit) as stop:
        synth.main(["merge", "--out", str(tmp_path / "bad"), str(tmp_path / "shard1"), str(tmp_path / "other")])
    assert stop.value.code == 2


# ---------------------------------------------------------------------------------------------------------------
# Questions never overlap the test set

def test_questions_are_disjoint_from_steers_default_evaluation_and_the_original_samples(monkeypatch):
    tasks = [t for t in symbench.TASKS.values() if t.generatable]
    args = argparse.Namespace(n=3, seed=0, complexity=None, data_dir=None, shard=None)
    questions = synth.plan_questions(tasks, args, synth.TestSet([synth.REFERENCE_DIR]))
    assert len(questions) == 3 * len(tasks)
    # Independently of synth's filter: steer.py's default plan and the shipped original test samples.
    evaluated = steer.plan_samples(tasks, argparse.Namespace(n=20, seed=0, complexity=None, data_dir=None))
    test_texts = {" ".join(s.question.split()) for _, s in evaluated}
    test_data = {json.dumps(s.meta, sort_keys=True) for _, s in evaluated if s.task != "logical_equation"}
    for task in tasks:
        originals = symbench.load_original(task.id, synth.REFERENCE_DIR)
        test_texts |= {" ".join(s.question.split()) for s in originals}
        test_data |= {json.dumps(s.meta, sort_keys=True) for s in originals if s.meta and s.task != "logical_equation"}
    assert not {" ".join(s.question.split()) for _, s in questions} & test_texts
    # (logical_equation's data is only its value set, shared by all its questions)
    assert not {json.dumps(s.meta, sort_keys=True) for _, s in questions if s.meta} & test_data
    assert all(f"seed{synth.SYNTH_SEED_BASE}-" in s.id for _, s in questions)

    # The filter is what keeps them apart: at the evaluation's own seed every drawn question is refused.
    monkeypatch.setattr(synth, "SYNTH_SEED_BASE", 0)
    assert planned(3) == []
    # File-only tasks: the shipped originals are test samples, so none of them is used.
    math = symbench.get_task("math_geometry")
    assert synth.plan_questions([math], argparse.Namespace(n=3, seed=0, complexity=None, shard=None,
                                                           data_dir=str(synth.REFERENCE_DIR)),
                                synth.TestSet([synth.REFERENCE_DIR])) == []


def test_every_evaluation_seed_is_held_out_and_rows_made_before_a_seed_was_added_are_found():
    navigation = symbench.get_task("navigation")   # a small question space: streams of different seeds overlap
    args = argparse.Namespace(n=60, seed=0, complexity="1", data_dir=None, shard=None)
    seed0_only = synth.plan_questions([navigation], args, synth.TestSet([], seeds=[0]))
    both = synth.plan_questions([navigation], args, synth.TestSet([], seeds=[0, 1]))
    seed1 = navigation.generate(synth.TEST_STREAM_N, complexity=1, seed=1)
    seed1_prints = set().union(*(synth.fingerprints(s) for s in seed1))
    leaked = [s for _, s in seed0_only if synth.fingerprints(s) & seed1_prints]
    assert leaked and len(both) == 60   # held out only with --test-seeds 0 1, and replaced by other questions
    assert not any(synth.fingerprints(s) & seed1_prints for _, s in both)

    rows = [dict(task="navigation", question_id=s.id, level=1, seed=synth.SYNTH_SEED_BASE) for _, s in seed0_only]
    rows.append(dict(task="navigation", question_id="some-file-id", level=1, seed=None))   # from the original files
    assert synth.questions_in_test_set(rows, synth.TestSet([], seeds=[0])) == []
    assert synth.questions_in_test_set(rows, synth.TestSet([], seeds=[0, 1])) == [f"navigation/{s.id}"
                                                                                     for s in leaked]


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv, message", [
    (["sft", "--task", "no_such_task"], "unknown task 'no_such_task'"),
    (["dpo", "--branch", "1"], "--branch: expected an integer >= 2"),
    (["dpo", "--temperature", "0"], "--temperature must be > 0"),
    (["sft", "--task-base-url", "http://127.0.0.1:{port}/v1"], "cannot reach the TaskLLM at http://127.0.0.1:{port}"),
    (["merge", "--out", "x", "/no/such/folder"], "/no/such/folder/config.json not found"),
])
def test_bad_inputs_give_one_error_line_and_exit_2(argv, message, tmp_path, capsys):
    port = free_port()
    argv = [a.format(port=port) for a in argv] + (["--out", str(tmp_path / "out")] if argv[0] != "merge" else [])
    with pytest.raises(SystemExit) as stop:
        synth.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message.format(port=port) in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------------
# The embedded model, end to end into training

@pytest.mark.slow
def test_embedded_rows_train_one_step_each(server_for, tmp_path):
    def run(*argv):
        finished = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=900,
                                  env={**os.environ, "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
        assert finished.returncode == 0, finished.stderr[-3000:]
        return finished

    # SFT: every role is the embedded SmolLM2 (a fine-tuned-mode CodeSteer, so that its first reply is used as is).
    run("synth.py", "sft", "--task", "game24", "--n", "1", "--keep", "all", "--steer-mode", "finetuned",
        "--max-turns", "1", "--max-tokens", "32", "--no-helper", "--out", str(tmp_path / "sft"), "--quiet")
    sft_rows = rows(tmp_path / "sft" / "sft.jsonl")
    assert len(sft_rows) == 1 and sft_rows[0]["messages"][0]["content"].startswith(steer.CHOICE_PROMPT)

    # DPO: the embedded model samples the guidances; a scripted TaskLLM succeeds on some of them (by a hash of the
    # guidance), so that siblings differ.
    sample = planned(1)[0]

    def task(messages, body):
        guidance = messages[-1]["content"]
        if hash_of(guidance) % 2:
            return f"```python\nprint('<<<{GAME24.solve(sample)}>>>')\n```"
        return f"<<<{WRONG}>>>"
    server = server_for(task)
    run("synth.py", "dpo", "--task", "game24", "--n", "1", "--branch", "4", "--max-depth", "1", "--max-turns", "1",
        "--max-tokens", "32", "--steer-ckpt", "embedded", "--steer-mode", "finetuned", f"--task-base-url={server.url}",
        "--no-helper",
        "--out", str(tmp_path / "dpo"), "--quiet")
    dpo_rows = rows(tmp_path / "dpo" / "dpo.jsonl")
    assert dpo_rows and all({r["score_chosen"], r["score_rejected"]} == {14, -1} for r in dpo_rows)

    for script, data in (("train_sft.py", tmp_path / "sft" / "sft.jsonl"),
                         ("train_dpo.py", tmp_path / "dpo" / "dpo.jsonl")):
        out = tmp_path / f"train-{script}"
        run(script, "--init", "embedded", "--data", str(data), "--out", str(out), "--steps", "1", "--seq-len", "2048",
            "--no-export", "--device", "cpu")
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def hash_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
