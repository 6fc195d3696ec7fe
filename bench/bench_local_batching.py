"""Concurrent chats on one local model: batched (LocalClient's default) against one at a time.

    python bench/bench_local_batching.py [--chats 8] [--max-tokens 48]   # embedded SmolLM2-135M, CPU
    python bench/bench_local_batching.py --ckpt runs/dpo/final            # a trained CodeSteerLLM

The alternative a user would otherwise have is the same client serving one chat at a time (what
LocalClient did before batching, and what `max_batch=1` still does). Both runs send the same
`--chats` greedy chats from as many threads at once; tokens/s counts completion tokens.
"""
import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import llm  # noqa: E402
from checkpoints import load_model, load_tokenizer  # noqa: E402
from embedded import resolve_checkpoint  # noqa: E402

QUESTIONS = ["Write a haiku about the sea.", "What is 7 times 8? Explain.", "Name three colors and a fruit.",
             "Give me a tip for writing Python.", "Describe a cat in two sentences.", "What is a prime number?",
             "Tell me a short joke.", "How do plants grow?"]


def run(client: llm.LocalClient, chats: int) -> tuple[float, int, list[str]]:
    """Seconds, completion tokens and texts of `chats` chats sent at once."""
    messages = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(chats)]
    start = time.perf_counter()
    with ThreadPoolExecutor(chats) as pool:
        replies = list(pool.map(client.chat, messages))
    return time.perf_counter() - start, sum(r.completion_tokens for r in replies), [r.text for r in replies]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="embedded")
    parser.add_argument("--chats", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()

    path = resolve_checkpoint(args.ckpt)
    # One resident that loads on its worker thread, as LocalClient(ckpt) does, so the main thread
    # stays free of torch work (llm._Resident says why that matters on the CPU); the two runs
    # differ only in its max_batch.
    resident = llm._Resident(lambda: (load_model(path), load_tokenizer(path)))
    client = llm.LocalClient(max_tokens=args.max_tokens)
    client._resident = resident
    print(f"{path.name}, {next(resident.transformer.parameters()).device}, {args.chats} concurrent "
          f"greedy chats, up to {args.max_tokens} tokens each")
    results = {}
    for name, max_batch in (("one at a time", 1), ("batched", llm.MAX_LOCAL_BATCH)):
        resident.max_batch, resident.batches = max_batch, 0
        run(client, 2)  # warm-up
        results[name] = run(client, args.chats)
        seconds, tokens, _ = results[name]
        print(f"{name:<14} {seconds:7.2f} s  {tokens:5d} tokens  {tokens / seconds:7.1f} tok/s  "
              f"({resident.batches} generate calls)")
    (t1, n1, texts1), (tb, nb, texts_b) = results["one at a time"], results["batched"]
    print(f"batched / one at a time: {(nb / tb) / (n1 / t1):.2f}x tokens/s; "
          f"same replies: {sum(a == b for a, b in zip(texts1, texts_b))}/{args.chats}")


if __name__ == "__main__":
    main()
