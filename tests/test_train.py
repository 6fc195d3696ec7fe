"""train_sft.py and train_dpo.py: masks, losses against hand-worked numbers, data handling and bad
input, the data order, and real runs: SFT/DPO on the embedded model, torchrun DDP/FSDP2 against
one process, resume, export to transformers."""

import functools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, byte_tokenizer, write_jsonl

from checkpoints import load_model, load_tokenizer
from model import Transformer
import train_dpo as D
import train_sft as S

DATA = ROOT / "tests" / "data"
LN2 = math.log(2)


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


TINY_ARGS = ["--steps", "3", "--batch-size", "1", "--seq-len", "256", "--lr", "1e-3"]


# ------------------------------------------------------------------------------------------
# Masks and losses


def test_sft_targets_are_exactly_the_assistant_tokens(embedded):
    _, tokenizer = embedded
    messages = [{"role": "user", "content": "Is 221 prime?"}, {"role": "assistant", "content": "Use code. <<<Code>>>"},
                {"role": "user", "content": "The answer was wrong."}, {"role": "assistant", "content": "Return Answer"}]
    ids, mask = tokenizer.render_conversation(messages)
    targets = S.shifted_targets(torch.tensor(ids), torch.tensor(mask, dtype=torch.bool))
    supervised = targets[targets != S.IGNORE].tolist()
    expected = "Use code. <<<Code>>><|im_end|>Return Answer<|im_end|>"
    assert tokenizer.decode(supervised, skip_special_tokens=False) == expected
    # position t predicts token t + 1; nothing predicts past the end
    for t in range(len(ids) - 1):
        assert targets[t] == (ids[t + 1] if mask[t + 1] else S.IGNORE)
    assert targets[-1] == S.IGNORE


def test_dpo_targets_are_the_final_assistant_turn_only(embedded):
    _, tokenizer = embedded
    prompt = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<<<Text>>>"},
              {"role": "user", "content": "wrong"}]
    ids, mask = tokenizer.render_conversation(prompt + [{"role": "assistant", "content": "Switch to code."}])
    targets = S.shifted_targets(torch.tensor(ids), D.final_turn_mask(mask))
    supervised = targets[targets != S.IGNORE].tolist()
    assert tokenizer.decode(supervised, skip_special_tokens=False) == "Switch to code.<|im_end|>"


def fake_model(logits_table):
    """A 'model' whose tokens index rows of fixed logits, through the real target_logprobs."""
    def forward(tokens, targets, chunk_tokens=4096):
        selected = targets != S.IGNORE
        return S.target_logprobs(lambda h: h, logits_table[tokens[selected]], targets[selected], chunk_tokens)
    return forward


def test_sft_loss_is_the_token_mean_over_the_whole_accumulated_batch():
    # Logits are logs of counts, so probabilities are simple fractions:
    #   row 0: counts (1, 2, 1), target 1 -> p = 2/4 -> -log p = ln 2
    #   row 1: counts (5, 5, 5), no target (a prompt token)
    #   row 2: counts (1, 1, 2), target 0 -> p = 1/4 -> ln 4
    #   row 3: counts (3, 1, 4), target 2 -> p = 4/8 -> ln 2
    # Micro-batch 1 holds rows 0-1, micro-batch 2 rows 2-3. The loss of the accumulated batch is
    # (ln 2 + ln 4 + ln 2) / 3 = 4 ln 2 / 3 = 0.924196, not the mean of the micro-batch means
    # (ln 2 + 3 ln 2 / 2) / 2 = 0.866434.
    table = torch.tensor([[1, 2, 1], [5, 5, 5], [1, 1, 2], [3, 1, 4]], dtype=torch.float).log()
    batches = [{"tokens": torch.tensor([[0, 1]]), "targets": torch.tensor([[1, S.IGNORE]]), "n_targets": 1},
               {"tokens": torch.tensor([[2, 3]]), "targets": torch.tensor([[0, 2]]), "n_targets": 2}]
    counts = sum(S.SFTTask.counts(b) for b in batches)
    for chunk_tokens in (4096, 1):  # the recomputed-chunk path gives the same numbers
        model = functools.partial(fake_model(table), chunk_tokens=chunk_tokens)
        losses, stats = zip(*(S.SFTTask.loss(model, b, counts) for b in batches))
        assert sum(losses).item() == pytest.approx(4 * LN2 / 3, abs=1e-6)
        assert S.SFTTask.report(sum(stats), counts)["loss"] == pytest.approx(0.924196, abs=1e-6)


def test_sft_loss_matches_cross_entropy_on_full_logits(tiny_checkpoint):
    """TokenLogProbs (head only on supervised positions) against F.cross_entropy on the model's
    full logits with ignore_index."""
    model = load_model(tiny_checkpoint, "cpu", torch.float32)
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (2, 12), generator=generator)
    targets = torch.where(torch.rand(2, 12, generator=generator) < 0.5, torch.roll(tokens, -1, 1), S.IGNORE)
    batch = {"tokens": tokens, "targets": targets, "n_targets": int((targets != S.IGNORE).sum())}
    loss, _ = S.SFTTask.loss(S.TokenLogProbs(model), batch, S.SFTTask.counts(batch))
    expected = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten(), ignore_index=S.IGNORE)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_dpo_loss_hand_worked_numbers():
    # log-ratios: chosen -10 - (-11) = 1, rejected -12 - (-11) = -1, so h = 2 and beta h = 1:
    # loss = -log sigmoid(1) = log(1 + e^-1) = 0.313262; rewards 0.5 and -0.5.
    # label smoothing 0.1: 0.9 * 0.313262 + 0.1 * log(1 + e) = 0.9 * 0.313262 + 0.1 * 1.313262 = 0.413262.
    chosen = torch.tensor([-10.0], requires_grad=True)
    args = (torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0]))
    losses, chosen_rewards, rejected_rewards = D.dpo_loss(chosen, *args, beta=0.5)
    assert losses.item() == pytest.approx(0.313262, abs=1e-6)
    assert (chosen_rewards.item(), rejected_rewards.item()) == (pytest.approx(0.5), pytest.approx(-0.5))
    # d loss / d log pi(y_w) = -beta * sigmoid(-beta h) = -0.5 * 0.268941 = -0.134471
    losses.sum().backward()
    assert chosen.grad.item() == pytest.approx(-0.134471, abs=1e-6)
    smoothed, _, _ = D.dpo_loss(chosen.detach(), *args, beta=0.5, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(0.413262, abs=1e-6)


def test_dpo_loss_symmetries():
    generator = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5, generator=generator) * 3 for _ in range(4))
    losses, cr, rw = D.dpo_loss(pc, pr, rc, rr, beta=0.3)
    swapped, cr2, rw2 = D.dpo_loss(pr, pc, rr, rc, beta=0.3)
    # swapping the responses swaps the rewards, and -log s(x) + log s(-x) = -x
    assert torch.equal(cr, rw2) and torch.equal(rw, cr2)
    assert torch.allclose(losses - swapped, -(cr - rw), atol=1e-6)
    # a policy equal to its reference: zero rewards, loss ln 2 whatever the smoothing
    same, c0, r0 = D.dpo_loss(pc, pr, pc, pr, beta=0.3, label_smoothing=0.2)
    assert torch.allclose(same, torch.full_like(same, LN2)) and not c0.any() and not r0.any()
    # the reference only enters through the log-ratios: shifting both by a constant changes nothing
    shifted, _, _ = D.dpo_loss(pc + 4, pr + 4, rc + 4, rr + 4, beta=0.3)
    assert torch.allclose(shifted, losses, atol=1e-6)


def test_training_flops_agree_with_torch_flop_counter(tiny_checkpoint):
    """Our formula against torch's FlopCounterMode on a real forward + backward. Attention runs
    on the math backend, which the counter sees as matmuls over the full T x T square; the causal
    half we count is what flash attention computes."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    model = S.TokenLogProbs(load_model(tiny_checkpoint, "cpu", torch.float32))
    config, T = model.model.config, 32
    tokens = torch.randint(0, 256, (1, T))
    targets = torch.roll(tokens, -1, 1)
    targets[0, :10] = S.IGNORE
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(tokens, targets).sum().backward()
    full_square_attention = 6 * config.n_layers * config.dim * T * T  # the half we do not count
    assert counter.get_total_flops() == S.training_flops(config, [T], T - 10) + full_square_attention


def test_cosine_schedule_with_warmup():
    values = [S.cosine_with_warmup(step, warmup_steps=2, total_steps=6, min_lr_ratio=0.1) for step in range(6)]
    assert values[:3] == [0.5, 1.0, 1.0]
    assert values[3] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 3)))
    assert values[-1] == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------
# Data formats, truncation and bad input


def test_alpaca_and_sharegpt_rows_become_messages():
    alpaca = {"instruction": "Q2", "input": "ctx", "output": "A2", "history": [["Q1", "A1"]], "system": "S"}
    assert S.sft_messages(alpaca, "f:1") == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2\nctx"}, {"role": "assistant", "content": "A2"}]
    sharegpt = {"conversations": [{"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"},
                                  {"from": "human", "value": "Q2"}],
                "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}}
    prompt, chosen, rejected = D.dpo_messages(sharegpt, "f:1")
    assert [m["role"] for m in prompt] == ["user", "assistant", "user"] and prompt[2]["content"] == "Q2"
    assert chosen == {"role": "assistant", "content": "good"} and rejected["content"] == "bad"
    trl = {"prompt": "Q", "chosen": [{"role": "assistant", "content": "good"}], "rejected": "bad"}
    assert D.dpo_messages(trl, "f:1") == ([{"role": "user", "content": "Q"}], chosen, rejected)


@pytest.mark.parametrize("line, message", [
    ('{"messages": [', r"bad\.jsonl:2: invalid JSON"),
    ('[1, 2]', r"bad\.jsonl:2: expected a JSON object"),
    ('{"text": "hi"}', r"bad\.jsonl:2: expected a 'messages' list"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}',
     r"bad\.jsonl:2: roles must alternate"),
    ('{"messages": [{"role": "user", "content": "a"}]}', r"bad\.jsonl:2: no assistant turn"),
    (('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, '
      '{"role": "user", "content": "c"}]}'),
     r"bad\.jsonl:2: must end with a assistant turn"),
    ('{"messages": [{"role": "tool", "content": "a"}]}', r"bad\.jsonl:2: unknown role 'tool'"),
    ('{"messages": [{"role": "user", "content": 3}]}', r"bad\.jsonl:2: message content must be a string"),
])
def test_malformed_sft_rows_are_errors_with_file_and_line(tmp_path, line, message):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(ValueError, match=message):
        S.SFTTask([path], byte_tokenizer(), 256)


def test_overlong_conversations_keep_their_earliest_turns_or_are_skipped(tmp_path):
    tokenizer = byte_tokenizer()  # one token per byte
    def turn(n):
        return [{"role": "user", "content": "q" * n}, {"role": "assistant", "content": "a" * n}]
    rows = [{"messages": turn(10) + turn(10)},   # fits whole
            {"messages": turn(10) + turn(80)},   # keeps its first turn only
            {"messages": turn(100)}]             # even the first turn is too long
    task = S.SFTTask([write_jsonl(tmp_path / "d.jsonl", rows)], tokenizer, seq_len=120)
    assert (task.stats.rows, task.stats.samples, task.stats.truncated, task.stats.skipped) == (3, 2, 1, 1)
    first_only, _ = tokenizer.render_conversation(turn(10))
    assert task.examples[1][0].tolist() == first_only
    assert all(length <= 120 for length in task.lengths)


def test_dpo_identical_pairs_and_overlong_pairs_are_counted_skips(tmp_path):
    def row(chosen, rejected, prompt="Q"):
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    path = write_jsonl(tmp_path / "p.jsonl", [row("good", "bad"), row("same", "same"), row("x" * 300, "bad")])
    args = S.build_parser("", 1e-6).parse_args(["--data", str(path), "--out", "x", "--seq-len", "200"])
    args.beta, args.label_smoothing, args.nll_weight = 0.1, 0.0, 0.0
    task = D.DPOTask(args, byte_tokenizer(), None)
    assert (task.stats.samples, task.stats.skipped) == (1, 2)
    assert task.stats.skip_reasons == {"chosen equals rejected": 1, "prompt + response longer than 200 tokens": 1}
    prompt = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": prompt, "chosen": "c", "rejected": "d"}])
    args.data = [bad]
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: must end with a user turn"):
        D.DPOTask(args, byte_tokenizer(), None)


def test_data_plan_splits_global_batches_the_same_for_any_world_size():
    lengths = [(7 * i) % 50 + 1 for i in range(40)]
    one = S.DataPlan(lengths, batch_size=2, grad_accum=2, world_size=1, seed=3)
    two = S.DataPlan(lengths, batch_size=2, grad_accum=1, world_size=2, seed=3)
    seen = []
    for step in range(2 * one.steps_per_epoch):  # two epochs
        micro = one.micro_batches(step, 0)
        assert micro == [two.micro_batches(step, 0)[0], two.micro_batches(step, 1)[0]]
        seen += [i for batch in micro for i in batch]
    assert sorted(seen[:40]) == list(range(40)) and sorted(seen[40:]) == list(range(40))
    assert seen[:40] != seen[40:]  # reshuffled every epoch
    assert lengths[one.micro_batches(0, 0)[0][0]] == max(lengths)  # longest first: OOM shows at once
    with pytest.raises(ValueError, match="fewer than one global batch"):
        S.DataPlan(lengths[:3], batch_size=2, grad_accum=2, world_size=1, seed=0)


# ------------------------------------------------------------------------------------------
# Checkpoints


def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_checkpoint, tmp_path, monkeypatch):
    args = ["--init", str(tiny_checkpoint), "--data", str(DATA / "sft_small.jsonl"), "--steps", "5",
            "--batch-size", "2", "--seq-len", "256", "--lr", "1e-3", "--save-every", "2"]
    S.main(args + ["--out", str(tmp_path / "whole")])

    real_step, calls = S.train_step, []

    def crashing_step(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        return real_step(*a, **k)
    monkeypatch.setattr(S, "train_step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        S.main(args + ["--out", str(tmp_path / "split")])
    monkeypatch.setattr(S, "train_step", real_step)
    assert (tmp_path / "split" / "checkpoints" / "latest").read_text() == "step_00000002"
    S.main(args + ["--out", str(tmp_path / "split"), "--resume"])

    whole, split = metrics(tmp_path / "whole"), metrics(tmp_path / "split")
    assert [m["step"] for m in split] == [1, 2, 3, 4, 5]
    def values(rows):
        return [(m["loss"], m["grad_norm"], m["lr"]) for m in rows]
    assert values(split) == values(whole)
    a, b = load_model(tmp_path / "whole" / "final", "cpu"), load_model(tmp_path / "split" / "final", "cpu")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_checkpoints_are_atomic_and_resume_errors_are_clear(tiny_checkpoint, tmp_path, monkeypatch):
    import torch.distributed.checkpoint as dcp
    args = ["--init", str(tiny_checkpoint), "--data", str(DATA / "sft_small.jsonl"), "--out", str(tmp_path / "run"),
            *TINY_ARGS, "--save-every", "1", "--no-export"]
    with pytest.raises(S.InputError, match="no checkpoint to resume from"):
        S.main(args + ["--resume"])

    def failing_save(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(dcp, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        S.main(args)
    monkeypatch.undo()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert not list(checkpoints.glob("step_*")) and not (checkpoints / "latest").exists()

    S.main(args)  # a complete run leaves step_1 and step_2
    with pytest.raises(ValueError, match=r"incompatible with this run: global_batch: checkpoint 1 vs now 2"):
        S.main(args + ["--batch-size", "2", "--resume"])
    with pytest.raises(S.InputError, match="not a complete checkpoint"):
        S.main(args + ["--resume", str(tmp_path)])


# ------------------------------------------------------------------------------------------
# Real runs


def test_dpo_reference_cache_follows_the_init_checkpoints_contents_not_its_path(tiny_checkpoint, tmp_path, capsys):
    def run(init, out):
        capsys.readouterr()
        D.main(["--init", str(init), "--data", str(DATA / "dpo_small.jsonl"), *TINY_ARGS, "--no-export",
                "--reference-cache", str(tmp_path / "refs"), "--out", str(tmp_path / out)])
        return capsys.readouterr().out
    assert "reference log-probs: loaded" not in run(tiny_checkpoint, "first")
    copy = tmp_path / "copy"   # the same files elsewhere, written later: a resumed recipe on a new machine
    shutil.copytree(tiny_checkpoint, copy)
    for file in copy.iterdir():
        os.utime(file, ns=(1, 1))
    assert "reference log-probs: loaded" in run(copy, "second")
    (copy / "notes.txt").write_text("another file: another checkpoint")
    assert "reference log-probs: loaded" not in run(copy, "third")


def test_dpo_reference_cache_is_reused_and_equals_a_live_reference(tiny_checkpoint, tmp_path, capsys):
    args = ["--init", str(tiny_checkpoint), "--data", str(DATA / "dpo_small.jsonl"), *TINY_ARGS, "--no-export"]
    D.main(args + ["--out", str(tmp_path / "cached")])
    D.main(args + ["--out", str(tmp_path / "cached")])
    assert "reference log-probs: loaded" in capsys.readouterr().out
    D.main(args + ["--out", str(tmp_path / "live"), "--live-reference"])
    cached, live = metrics(tmp_path / "cached"), metrics(tmp_path / "live")
    assert cached[0]["loss"] == pytest.approx(LN2, abs=1e-6)
    assert cached[0]["reward_margin"] == pytest.approx(0, abs=1e-6)
    for a, b in zip(cached, live):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["reward_margin"] == pytest.approx(b["reward_margin"], abs=1e-6)


def _torchrun(script: str, args: list[str]):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *args]
    result = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("script, data, mode", [("train_sft.py", "sft_small.jsonl", "ddp"),
                                                ("train_sft.py", "sft_small.jsonl", "fsdp"),
                                                ("train_dpo.py", "dpo_small.jsonl", "fsdp")])
def test_torchrun_two_ranks_match_one_process(tiny_checkpoint, tmp_path, script, data, mode):
    """Global batch 2 either way: one process accumulates two micro-batches, two ranks take one
    each; losses and gradient norms must agree step by step."""
    args = ["--init", str(tiny_checkpoint), "--data", str(DATA / data), *TINY_ARGS, "--no-export"]
    main = S.main if script == "train_sft.py" else D.main
    main(args + ["--out", str(tmp_path / "one"), "--grad-accum", "2"])
    _torchrun(script, args + ["--out", str(tmp_path / "two")] + (["--fsdp"] if mode == "fsdp" else []))
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)


def _set_loss(model: Transformer, task: S.SFTTask) -> float:
    """Mean NLL of all assistant tokens of the data set."""
    batch = task.collate(list(range(len(task.examples))), "cpu")
    with torch.no_grad():
        return S.SFTTask.loss(S.TokenLogProbs(model), batch, S.SFTTask.counts(batch))[0].item()


@pytest.mark.slow
def test_sft_on_embedded_model_lowers_loss_and_exports_for_transformers(embedded, tmp_path):
    transformers = pytest.importorskip("transformers")
    initial, tokenizer = embedded
    out = tmp_path / "sft"
    S.main(["--init", "embedded", "--data", str(DATA / "sft_small.jsonl"), "--out", str(out), "--steps", "4",
            "--batch-size", "4", "--seq-len", "256", "--lr", "1e-4", "--warmup-ratio", "0"])
    task = S.SFTTask([DATA / "sft_small.jsonl"], tokenizer, 256)
    trained = load_model(out / "final", "cpu", torch.float32)
    before, after = _set_loss(initial, task), _set_loss(trained, task)
    assert after < 0.5 * before, (before, after)
    assert metrics(out)[-1]["loss"] < metrics(out)[0]["loss"]

    hf = transformers.AutoModelForCausalLM.from_pretrained(out / "final", dtype=torch.float32).eval()
    ids = torch.tensor([task.examples[0][0].tolist()])
    with torch.no_grad():
        assert (hf(ids).logits - trained(ids)).abs().max().item() < 1e-3
    assert load_tokenizer(out / "final").render_conversation(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]) == tokenizer.render_conversation(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])


@pytest.mark.slow
def test_dpo_on_embedded_model_raises_reward_accuracy_and_margin(tmp_path):
    out = tmp_path / "dpo"
    D.main(["--init", "embedded", "--data", str(DATA / "dpo_small.jsonl"), "--out", str(out), "--steps", "4",
            "--batch-size", "4", "--seq-len", "256", "--lr", "5e-5", "--warmup-ratio", "0", "--no-export"])
    steps = metrics(out)
    assert steps[0]["reward_accuracy"] == 0 and abs(steps[0]["reward_margin"]) < 1e-4  # policy == reference
    assert steps[-1]["reward_accuracy"] >= 0.75 and steps[-1]["reward_margin"] > 0.1
    assert steps[-1]["loss"] < LN2
