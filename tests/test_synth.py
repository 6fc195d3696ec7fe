"""synth.py against scripted OpenAI-compatible servers (tests/fixture_server.py): a TaskLLM that answers correctly
only after code guidance, a CodeSteer whose samples are fixed by the request's seed, so that SFT filtering, the DPO
tree's scores and pairs (worked out by hand below) and kill-and-resume are exact. One slow test runs the embedded
model and takes a training step on what it wrote."""

import argparse
import json
import os
import re
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
            return "Searching is safer. <<<Code>>>" if any(question.endswith(q) for q in code_questions) \
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
    args = argparse.Namespace(data=[path], seq_len=4096, beta=0.1, label_smoothing=0.0, nll_weight=0.0)
    return train_dpo.DPOTask(args, tokenizer, None).examples
