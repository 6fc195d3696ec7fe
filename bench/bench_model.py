"""Prefill and greedy-decode throughput of model.py against transformers on the same weights.

    python bench/bench_model.py                     # embedded SmolLM2-135M, fp32, CPU
    python bench/bench_model.py --model qwen2.5-coder-1.5b --batch 1 8   # an embedded model by name
    python bench/bench_model.py --llama8b           # Llama-3-8B-shaped random bf16 weights, CUDA
    python bench/bench_model.py --matvec            # CPU: one row times each embedded weight shape

Prefill = generate(max_new_tokens=1) on a prompt of --prompt-len tokens (the cache is built as in
real use). Decode tokens/s = (N - 1) * batch / (time of N new tokens - time of 1). The 8B run also
reports decode at batch 1 against the memory-bandwidth limit: weight bytes / HBM bandwidth, with
the bandwidth measured on the spot by a device-to-device copy. On the CPU the same limit is the
bytes of weights one token reads (every matrix once; of the embedding table one row) over the
bandwidth of a large copy; with `llama-cpp-python` installed the same GGUF is also run by
llama.cpp (greedy, the same number of threads), never a dependency.
"""

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checkpoints import config_to_hf, hf_state_dict, load_model  # noqa: E402
from embedded import resolve_checkpoint  # noqa: E402
from generate import generate  # noqa: E402
from model import linear, ModelConfig, PRESETS, Transformer  # noqa: E402


def elapsed(fn) -> float:
    """Wall seconds of one fn() call, GPU work included."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    return statistics.median(elapsed(fn) for _ in range(repeats))


def ours_runner(model, prompts, **flags):
    return lambda n: (lambda: generate(model, prompts, n, **flags))


def hf_runner(hf_model, prompts):
    tokens = torch.tensor(prompts, device=hf_model.device)

    def run(n):
        return lambda: hf_model.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=n,
                                         min_new_tokens=n, do_sample=False, pad_token_id=0)
    return run


def measure(run, batch: int, prompt_len: int, new_tokens: int, repeats: int) -> dict:
    t1 = timed(run(1), repeats)
    tn = timed(run(new_tokens), repeats)
    return {"prefill_tok_s": batch * prompt_len / t1, "decode_tok_s": batch * (new_tokens - 1) / (tn - t1),
            "decode_step_ms": 1000 * (tn - t1) / (new_tokens - 1)}


@functools.cache
def _copy_buffers(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.ones(2**30 if device == "cuda" else 2**29, dtype=torch.uint8, device=device)
    return x, torch.empty_like(x)


def copy_bandwidth(device: str) -> float:
    """Bytes/s of a large copy on `device`, counting bytes read plus written (the buffers are kept, so that a
    measurement taken between decode runs does not fault fresh pages in)."""
    x, y = _copy_buffers(device)
    seconds = timed(lambda: y.copy_(x), 10)
    return 2 * x.numel() / seconds


def bytes_read_per_token(model: Transformer) -> int:
    """Weight bytes one decode step reads: every parameter once, except the embedding table, of
    which one row is read (unless it is also the LM head)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if model.output is not None:
        table = model.tok_embeddings.weight
        total -= table.numel() * table.element_size() * (1 - 1 / table.shape[0])
    return int(total)


def llama_cpp_decode(path: Path, prompts: list[list[int]], new_tokens: int, repeats: int) -> dict | None:
    """Greedy decode tokens/s of llama.cpp on the same GGUF at batch 1, or None if not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(path), n_ctx=len(prompts[0]) + new_tokens + 8, n_threads=torch.get_num_threads(),
                n_batch=512, verbose=False)

    def run(n):
        def generate_n():
            llm.reset()
            llm.eval(prompts[0])
            for _ in range(n):
                llm.eval([llm.sample(temp=0.0)])
        return generate_n
    return measure(run, 1, len(prompts[0]), new_tokens, repeats)


def matvec_table(config: ModelConfig, rows: int = 1):
    """GB/s of weights read by `rows` rows times every weight shape of `config`, in fp32: F.linear
    on nn.Linear's (out, in) layout, F.linear on the column-major layout load_model keeps on
    CPU, and model.linear (split-K over the threads) on that layout. Each shape is repeated to
    ~256 MB so caches do not help."""
    H, KVH, D = config.n_heads, config.n_kv_heads, config.head_dim
    shapes = {"wqkv": ((H + 2 * KVH) * D, config.dim), "wo": (config.dim, H * D),
              "w13": (2 * config.intermediate_size, config.dim), "w2": (config.dim, config.intermediate_size),
              "lm head": (config.vocab_size, config.dim)}
    print(f"\n{rows} row(s) times a weight, GB/s of weights read, {torch.get_num_threads()} threads")
    print(f"{'weight':<8} {'shape':>12} {'F.linear (out,in)':>18} {'F.linear col-major':>19} "
          f"{'model.linear':>13} {'speed-up':>9}")
    for name, (out_features, in_features) in shapes.items():
        copies = max(1, 64_000_000 // (out_features * in_features))
        weights = [torch.randn(out_features, in_features) for _ in range(copies)]
        column_major = [w.t().contiguous().t() for w in weights]
        x = torch.randn(rows, in_features)
        row_major, col_major, split_k = (read_rate(matmul, x, ws) for matmul, ws in (
            (torch.nn.functional.linear, weights), (torch.nn.functional.linear, column_major),
            (linear, column_major)))
        print(f"{name:<8} {str((out_features, in_features)):>12} {row_major:>18.1f} "
              f"{col_major:>19.1f} {split_k:>13.1f} {split_k / row_major:>8.2f}x")


def read_rate(matmul, x, weights) -> float:
    """GB/s of weights read by matmul(x, w) over all weights."""
    seconds = timed(lambda: [matmul(x, w) for w in weights], 5)
    return sum(w.numel() * w.element_size() for w in weights) / seconds / 1e9


def report_agreement(models: dict, path: Path, new_tokens: int = 64):
    """Greedy token agreement and max logit error of each model against the first, on fixed chat prompts."""
    from checkpoints import load_tokenizer
    tokenizer = load_tokenizer(path)
    prompts = [tokenizer.render_prompt([{"role": "user", "content": text}]) for text in (
        "Write python code that prints the product of -7, -881 and 3947.",
        "Combine 1 2 5 10 into an expression equal to 24 using + - * / and parentheses.")]
    reference_name, reference = next(iter(models.items()))
    for name, model in list(models.items())[1:]:
        agree, total, error = 0, 0, 0.0
        for ids in prompts:
            a, b = generate(reference, [ids], new_tokens)[0], generate(model, [ids], new_tokens)[0]
            same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            agree, total = agree + same, total + len(a)
            with torch.inference_mode():
                tokens = torch.tensor([ids])
                error = max(error, (reference(tokens).float() - model(tokens).float()).abs().max().item())
        print(f"{name} vs {reference_name}: greedy tokens equal up to the first difference {agree}/{total}, "
              f"max prompt logit error {error:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama8b", action="store_true", help="Llama-3-8B shape, random bf16 weights, CUDA")
    parser.add_argument("--model", default="embedded", help="embedded model name or checkpoint path (CPU runs)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                        help="weight dtypes of our model to time (CPU runs; the first is the reference)")
    parser.add_argument("--prompt-len", type=int, default=500)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-hf", action="store_true", help="skip transformers")
    parser.add_argument("--matvec", action="store_true",
                        help="only time one row (and 8 rows) times each embedded weight shape on CPU")
    args = parser.parse_args()

    if args.matvec:
        for rows in (1, 8):
            matvec_table(PRESETS["smollm2-135m"], rows)
        return

    if args.llama8b:
        device, dtype = "cuda", torch.bfloat16
        config = PRESETS["llama-3-8b"]
        with torch.device(device):
            ours = Transformer(config).to(dtype)
        ours.init_weights(std=0.02)
        ours.eval()
        variants = {"ours (eager)": (ours, {}), "ours (cuda graph)": (ours, {"cuda_graph": True}),
                    "ours (compile + cuda graph)": (ours, {"compile": True})}
    else:
        device, dtype = "cpu", torch.float32
        path = resolve_checkpoint(args.model)
        models = {name: load_model(path, device=device, dtype=getattr(torch, name)) for name in args.dtypes}
        ours = models[args.dtypes[0]]
        config = ours.config
        variants = {f"ours {name}": (model, {}) for name, model in models.items()}
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, "
          f"threads {torch.get_num_threads()}, {config.num_params / 1e6:.0f}M params, "
          f"{dtype if args.llama8b else ', '.join(args.dtypes)}")

    hf_model = None
    if not args.no_hf:
        import transformers
        if args.llama8b:
            torch.set_default_dtype(dtype)  # build directly in bf16 on the GPU
            with torch.device(device):
                hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config_to_hf(config, dtype)))
            torch.set_default_dtype(torch.float32)
            hf_model.eval()
            with torch.no_grad():  # same weights in both
                hf_model.load_state_dict(hf_state_dict(ours))
        else:
            hf_model = transformers.AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=dtype).eval()

    generator = torch.Generator().manual_seed(0)
    if args.llama8b:  # the captured and compiled decode steps must give the eager tokens
        prompt = torch.randint(100, config.vocab_size - 100, (1, 32), generator=generator).tolist()
        eager = generate(ours, prompt, 32)
        for name, (model, flags) in variants.items():
            same = sum(a == b for a, b in zip(eager[0], generate(model, prompt, 32, **flags)[0]))
            print(f"greedy tokens equal to eager: {name}: {same}/32")
    elif len(variants) > 1:  # narrower weights must stay close to the fp32 reference
        report_agreement(models, path)
    rows = []
    for batch in args.batch:
        prompts = torch.randint(100, config.vocab_size - 100, (batch, args.prompt_len), generator=generator).tolist()
        results = {name: measure(ours_runner(model, prompts, **flags), batch, args.prompt_len, args.new_tokens,
                                 args.repeats)
                   for name, (model, flags) in variants.items()}
        if hf_model is not None:
            results["transformers"] = measure(hf_runner(hf_model, prompts), batch, args.prompt_len,
                                              args.new_tokens, args.repeats)
        if batch == 1 and not args.llama8b and path.suffix == ".gguf":
            llama_cpp = llama_cpp_decode(path, prompts, args.new_tokens, args.repeats)
            if llama_cpp is not None:
                results["llama.cpp (same GGUF)"] = llama_cpp
        for name, r in results.items():
            rows.append((batch, name, r))

    print(f"\nprompt {args.prompt_len} tokens, {args.new_tokens} new tokens, median of {args.repeats}")
    print(f"{'batch':>5} {'implementation':<30} {'prefill tok/s':>14} {'decode tok/s':>13} {'step ms':>8}"
          f" {'prefill x':>9} {'decode x':>9}")
    for batch, name, r in rows:
        base = next((r2 for b2, n2, r2 in rows if b2 == batch and n2 == "transformers"), None)
        ratio_p = f"{r['prefill_tok_s'] / base['prefill_tok_s']:.2f}" if base else "-"
        ratio_d = f"{r['decode_tok_s'] / base['decode_tok_s']:.2f}" if base else "-"
        print(f"{batch:>5} {name:<30} {r['prefill_tok_s']:>14.1f} {r['decode_tok_s']:>13.1f} "
              f"{r['decode_step_ms']:>8.2f} {ratio_p:>9} {ratio_d:>9}")

    if 1 in args.batch:
        weight_bytes = bytes_read_per_token(ours)
        print(f"\nweights read per token {weight_bytes / 1e9:.2f} GB; batch-1 decode against the limit copy "
              f"bandwidth / bytes, the bandwidth measured just before and after each of {max(args.repeats, 5)} "
              f"decode runs")
        prompt = torch.randint(100, config.vocab_size - 100, (args.prompt_len,), generator=generator).tolist()
        for name, (model, flags) in variants.items():
            if not name.startswith("ours"):
                continue
            shares, bandwidths, rates = paired_streaming_share(ours_runner(model, [prompt], **flags), device,
                                                               bytes_read_per_token(model), args.new_tokens,
                                                               max(args.repeats, 5))
            print(f"  {name:<30} {statistics.median(rates):7.1f} tok/s = {100 * statistics.median(shares):5.1f}% of "
                  f"the limit for its {next(model.parameters()).dtype} weights (median; runs {100 * min(shares):.1f}-"
                  f"{100 * max(shares):.1f}%, copy bandwidth {min(bandwidths) / 1e9:.1f}-{max(bandwidths) / 1e9:.1f} "
                  f"GB/s)")


def paired_streaming_share(run, device: str, weight_bytes: int, new_tokens: int, repeats: int):
    """Per decode run: its tokens/s over the weight-streaming limit (copy bandwidth / weight bytes), with the
    bandwidth measured just before and just after that run. The VM's bandwidth drifts (24.7 to 61 GB/s within
    minutes here), so a bandwidth measured once, apart from the decode, makes the share say more about the minute
    than about the code. Returns (shares, bandwidths, tokens/s), one per run."""
    one, many = run(1), run(new_tokens)
    many()  # warm-up
    shares, bandwidths, rates = [], [], []
    for _ in range(repeats):
        before = copy_bandwidth(device)
        rate = (new_tokens - 1) / (elapsed(many) - elapsed(one))
        bandwidth = (before + copy_bandwidth(device)) / 2
        shares.append(rate / (bandwidth / weight_bytes))
        bandwidths.append(bandwidth)
        rates.append(rate)
    return shares, bandwidths, rates


if __name__ == "__main__":
    main()
