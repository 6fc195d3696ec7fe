"""Training throughput of train_sft.py's step, against a plain transformers loop on CPU and as MFU
on a GPU, plus a memory estimate for full Llama-3-8B SFT and DPO.

    python bench/bench_train.py                  # embedded SmolLM2-135M, fp32, CPU: ours vs transformers
    python bench/bench_train.py --gpu            # Llama-3-8B shape with 8 layers, random weights, one GPU
    torchrun --nproc_per_node=8 bench/bench_train.py --gpu --layers 32   # the real 8B, FSDP2 over 8 GPUs
    python bench/bench_train.py --memory-only    # just the 8B memory table

CPU: both sides train the same embedded model on the same right-padded multi-turn batch with the
same AdamW and clipping, fp32; the first-step losses are printed to show they compute the same
thing. Tokens/s counts non-padding tokens, median of --steps timed steps after one warm-up step, the
two implementations' steps interleaved.

GPU: train_sft.train_step (the one the training scripts run) on random tokens, every position
supervised, fp32 master weights with bf16 compute, in variants: FSDP2 (one rank unless under
torchrun) or plain autocast, with/without torch.compile (blocks, and the fused head + cross-entropy),
activation checkpointing and resharding after forward. MFU uses
train_sft.training_flops (6 x matmul params per token + causal attention) against the bf16 dense
peak of the card (H100 SXM: 989 TFLOP/s). Needs only torch and CUDA: no downloads.
"""

import argparse
import dataclasses
import functools
import gc
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checkpoints import load_tokenizer, read_config
from embedded import fetch
from model import ModelConfig, PRESETS
import train_sft as S

# ------------------------------------------------------------------------------------------
# Memory estimate

GPU_MEMORY_GB = 80


def activation_bytes_per_token_layer(config: ModelConfig) -> int:
    """Rough bf16 bytes one block keeps for backward per token: norms (input, fp32 copy, output),
    q/k/v before and after RoPE, attention output, and the MLP's gate/up, SiLU and product."""
    return 2 * (14 * config.dim + 4 * config.intermediate_size)


def memory_estimate(config: ModelConfig, n_gpus: int, tokens_per_gpu: int, activation_checkpointing: bool,
                    live_reference: bool = False, chunk_tokens: int = 4096) -> dict:
    """GB per GPU for FSDP2 training with fp32 master weights, bf16 compute and AdamW."""
    P = config.num_params
    head = config.vocab_size * config.dim
    block = (P - head * (1 if config.tie_embeddings else 2)) / config.n_layers
    states = 16 * P / n_gpus                           # fp32 weights, grads, AdamW m and v, sharded
    working = 2 * (2 * head + 2 * block)               # bf16 unsharded root and ~2 blocks in flight
    per_layer = activation_bytes_per_token_layer(config)
    if activation_checkpointing:                       # block inputs, plus one block being recomputed
        activations = tokens_per_gpu * (config.n_layers * 2 * config.dim + per_layer)
    else:
        activations = tokens_per_gpu * config.n_layers * per_layer
    logits = min(tokens_per_gpu, chunk_tokens) * config.vocab_size * (2 + 4 + 4)  # bf16, fp32, grad
    reference = 4 * P / n_gpus + working if live_reference else 0
    gb = {"states": states, "working": working, "activations": activations, "logits": logits, "reference": reference}
    gb = {k: v / 1e9 for k, v in gb.items()}
    gb["total"] = sum(gb.values())
    return gb


def print_memory_table(seq_len: int = 7024):
    config = PRESETS["llama-3-8b"]
    print(f"\nMemory estimate per GPU, full Llama-3-8B ({config.num_params / 1e9:.2f}B params), FSDP2, fp32 master "
          f"weights + AdamW, bf16 compute, batch 1 x {seq_len} tokens (DPO: chosen + rejected = 2 x {seq_len})")
    print(f"{'run':<32} {'GPUs':>4} {'states':>7} {'working':>7} {'activ.':>7} {'logits':>7} {'ref':>6} "
          f"{'total GB':>9}  fits {GPU_MEMORY_GB} GB")
    runs = [("SFT, activation checkpointing", seq_len, True, False), ("SFT, no checkpointing", seq_len, False, False),
            ("DPO, cached reference, AC", 2 * seq_len, True, False),
            ("DPO, --live-reference, AC", 2 * seq_len, True, True)]
    for name, tokens, ac, live in runs:
        for n in (1, 2, 4, 8):
            gb = memory_estimate(config, n, tokens, ac, live)
            print(f"{name:<32} {n:>4} {gb['states']:>7.1f} {gb['working']:>7.1f} {gb['activations']:>7.1f} "
                  f"{gb['logits']:>7.1f} {gb['reference']:>6.1f} {gb['total']:>9.1f}  "
                  f"{'yes' if gb['total'] < 0.9 * GPU_MEMORY_GB else 'no'}")


# ------------------------------------------------------------------------------------------
# CPU: ours vs a plain transformers loop

WORDS = ("the solver should write python code that searches all cases and prints the answer check each "
         "constraint carefully then return the final result in angle brackets text reasoning may fail "
         "here because the numbers are large so count step by step").split()


def synthetic_conversation(rng: random.Random, turns: int, user_words: int, assistant_words: int) -> list[dict]:
    """A CodeSteer-shaped conversation: long user turns (question, feedback), short guidance."""
    messages = []
    for _ in range(turns):
        messages.append({"role": "user", "content": " ".join(rng.choices(WORDS, k=user_words))})
        messages.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=assistant_words))})
    return messages


def timed_steps(step, steps: int) -> float:
    """Median seconds per call after one warm-up call."""
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_cpu(args):
    import transformers
    run = S.init_distributed("cpu")
    path = fetch()
    config, tokenizer = read_config(path), load_tokenizer(path)
    rng = random.Random(0)
    rows = []
    for i in range(args.batch):  # different lengths, so the batch has right padding
        ids, mask = tokenizer.render_conversation(synthetic_conversation(rng, 3, 70 + 15 * i, 20))
        rows.append((torch.tensor(ids), torch.tensor(mask, dtype=torch.bool)))
    tokens, targets = S.pad_rows([(ids, S.shifted_targets(ids, mask)) for ids, mask in rows], "cpu")
    lengths = [len(ids) for ids, _ in rows]
    batch = {"tokens": tokens, "targets": targets, "lengths": lengths, "n_targets": int((targets != S.IGNORE).sum())}
    # transformers shifts labels itself: label t is the token at t, scored by logits at t - 1.
    labels = torch.full_like(tokens, S.IGNORE)
    attention_mask = torch.zeros_like(tokens)
    for i, (ids, mask) in enumerate(rows):
        labels[i, :len(ids)] = torch.where(mask, ids, S.IGNORE)
        attention_mask[i, :len(ids)] = 1
    real_tokens = sum(lengths)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, cpu, "
          f"threads {torch.get_num_threads()}, "
          f"{config.num_params / 1e6:.0f}M params, fp32")
    print(f"batch {args.batch} conversations, lengths {lengths}, {batch['n_targets']} supervised tokens")

    ours = S.build_model(path, config, run)
    optimizer = torch.optim.AdamW(ours.parameters(), lr=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def ours_step():
        stats, counts, _ = S.train_step(ours, S.SFTTask, [batch], optimizer, scheduler, run, False, 1.0)
        return S.SFTTask.report(stats, counts)["loss"]

    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    hf.train()
    hf_optimizer = torch.optim.AdamW(hf.parameters(), lr=1e-5)

    def hf_step():
        loss = hf(input_ids=tokens, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        hf_optimizer.step()
        hf_optimizer.zero_grad(set_to_none=True)
        return loss.item()

    ours_loss, hf_loss = ours_step(), hf_step()  # also the warm-up
    times = {"ours": [], "hf": []}
    for _ in range(args.steps):  # interleaved, so a busy machine slows both alike
        for name, step in [("ours", ours_step), ("hf", hf_step)]:
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    ours_s, hf_s = statistics.median(times["ours"]), statistics.median(times["hf"])

    print(f"first-step loss: ours {ours_loss:.6f}, transformers {hf_loss:.6f}")
    print(f"\n{'implementation':<28} {'step s':>8} {'tokens/s':>9}")
    for name, seconds in [("ours (train_sft.train_step)", ours_s), ("transformers loop", hf_s)]:
        print(f"{name:<28} {seconds:>8.2f} {real_tokens / seconds:>9.1f}")
    print(f"ratio ours / transformers: {hf_s / ours_s:.2f}x")


# ------------------------------------------------------------------------------------------
# GPU: tokens/s and MFU of the 8B shape

VARIANTS = {  # name: (fsdp, compile, activation checkpointing, reshard after forward, seq_len)
    "fsdp": (True, False, False, True, 4096),
    "fsdp+compile": (True, True, False, True, 4096),
    "fsdp+compile+noreshard": (True, True, False, False, 4096),
    "fsdp+compile+ac": (True, True, True, True, 4096),
    "fsdp+compile@8192": (True, True, False, True, 8192),
    "fsdp+compile+ac@8192": (True, True, True, True, 8192),
    "plain": (False, False, False, True, 4096),
    "plain+compile": (False, True, False, True, 4096),
}


HEADER = f"{'variant':<24} {'seq':>5} {'step s':>7} {'tokens/s/GPU':>12} {'MFU':>6} {'peak GB':>8}"


def format_row(name, seq_len, seconds, tokens_per_s, mfu, memory) -> str:
    return f"{name:<24} {seq_len:>5} {seconds:>7.3f} {tokens_per_s:>12.0f} {100 * mfu:>5.1f}% {memory:>8.1f}"


def gpu_step(model, batches, optimizer, scheduler, run, fsdp):
    S.train_step(model, S.SFTTask, batches, optimizer, scheduler, run, fsdp, 1.0)
    torch.cuda.synchronize()


def bench_gpu(args):
    run = S.init_distributed("cuda", single_process_group=True)
    config = dataclasses.replace(PRESETS["llama-3-8b"], n_layers=args.layers)
    peak = S.peak_flops(run.device)
    S.print0(f"torch {torch.__version__}, {torch.cuda.get_device_name()} x {run.world_size}, peak bf16 "
             f"{peak / 1e12 if peak else float('nan'):.0f} TFLOP/s, Llama-3-8B shape with {config.n_layers} layers "
             f"({config.num_params / 1e9:.2f}B params), batch {args.batch_size} x grad accum {args.grad_accum}")
    generator = torch.Generator().manual_seed(0)
    rows = []
    S.print0(HEADER)
    for name in args.variants:
        fsdp, compile, ac, reshard, seq_len = VARIANTS[name]
        if not fsdp and run.world_size > 1:
            continue
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            model = S.build_model(None, config, run, fsdp, ac, compile, reshard_after_forward=reshard)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
            batches = []
            for _ in range(args.grad_accum):
                tokens = torch.randint(0, config.vocab_size, (args.batch_size, seq_len + 1), generator=generator)
                batches.append({"tokens": tokens[:, :-1].to(run.device), "targets": tokens[:, 1:].to(run.device),
                                "lengths": [seq_len] * args.batch_size, "n_targets": args.batch_size * seq_len})
            flops = sum(S.training_flops(config, b["lengths"], b["n_targets"]) for b in batches)

            step = functools.partial(gpu_step, model, batches, optimizer, scheduler, run, fsdp)
            step()  # compile and allocator warm-up
            seconds = timed_steps(step, args.steps)
            tokens_per_s = args.batch_size * args.grad_accum * seq_len / seconds
            mfu = flops / seconds / peak if peak else float("nan")
            rows.append((name, seq_len, seconds, tokens_per_s, mfu, torch.cuda.max_memory_allocated() / 1e9))
        except Exception as error:  # out of memory, a compile failure: report it, go on with the next
            S.print0(f"{name}: {type(error).__name__}: {str(error)[:300]}")
            rows.append((name, seq_len, float("nan"), float("nan"), float("nan"), float("nan")))
        finally:
            model = optimizer = scheduler = batches = step = None
            gc.collect()
            torch._dynamo.reset()
        S.print0(format_row(*rows[-1]))
    estimate = memory_estimate(config, run.world_size, args.batch_size * 4096, False)["total"]
    S.print0(f"\n{HEADER}")
    for row in rows:
        S.print0(format_row(*row))
    S.print0(f"(memory estimate for this shape at 4096 tokens without checkpointing: {estimate:.1f} GB)")
    S.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="Llama-3-8B-shaped model on CUDA (random weights)")
    parser.add_argument("--memory-only", action="store_true", help="print the 8B memory estimate and exit")
    parser.add_argument("--layers", type=int, default=8, help="GPU: number of blocks of the 8B shape")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="GPU variants")
    parser.add_argument("--batch-size", type=int, default=1, help="GPU: sequences per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=2, help="GPU: micro-batches per step")
    parser.add_argument("--batch", type=int, default=4, help="CPU: conversations per batch")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    args = parser.parse_args()
    if not args.memory_only:
        bench_gpu(args) if args.gpu else bench_cpu(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print_memory_table()


if __name__ == "__main__":
    main()
