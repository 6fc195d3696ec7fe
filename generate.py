"""Generation: a preallocated KV cache, sampling, batched decode of left-padded prompts (rows
leave the batch as they finish), CUDA-graph decode, token streaming, and a chat CLI.

    python generate.py --prompt "Write a python function that checks if a number is prime."
    python generate.py --ckpt qwen2.5-coder-0.5b --prompt "What is 17 * 23? Answer in python."
    python generate.py --ckpt path/to/hf_checkpoint_dir      # interactive chat
"""

import argparse
import sys
from typing import Callable

import torch

from checkpoints import load_model, load_tokenizer
from embedded import REGISTRY, resolve_checkpoint
from model import ModelConfig, Transformer


class KVCache:
    """Keys and values for every layer, preallocated for `max_len` slots.

    Left uninitialised by default: attention only reads slots already written. A captured CUDA
    graph attends over every slot (masked), and a masked slot must hold finite numbers, since
    0 * NaN is NaN: pass zeroed=True there."""

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device, dtype, zeroed: bool = False):
        shape = (config.n_layers, batch_size, config.n_kv_heads, max_len, config.head_dim)
        make = torch.zeros if zeroed else torch.empty
        self.k = make(shape, device=device, dtype=dtype)
        self.v = make(shape, device=device, dtype=dtype)


def sample_next(logits, temperature: float, top_p: float, top_k: int, generator):
    """Next token ids (B,) from last-position logits (B, V)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Drop tokens once the mass before them already reaches top_p (the first always stays).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(model: Transformer, prompts: list[list[int]], max_new_tokens: int,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
             stop_ids=(), seed: int | None = None, cuda_graph: bool = False,
             compile: bool = False, on_step: Callable[[list[int]], bool | list[bool]] | None = None
             ) -> list[list[int]]:
    """Continue each prompt by up to max_new_tokens; return only the new tokens of each row,
    cut before its first stop id.

    on_step, if given, is called after every step with each row's new token (-1 for a row that
    has stopped). It returns True to end the generation there, or one bool per row to end just
    those rows (each keeps the token just reported): for streaming, for stop strings that only
    the decoded text can show, and for rows with smaller budgets than the batch's.

    Prompts of different lengths are left-padded into one batch: every row writes the same
    cache slot at each step, padding slots are masked out, and RoPE positions count from each
    row's first real token, so a row's result does not depend on its batch-mates. Rows leave
    the batch as they finish.

    On CUDA, cuda_graph=True replays each decode step as one captured CUDA graph (at batch 1
    the step is otherwise bound by kernel-launch overhead) and compile=True fuses its kernels
    with torch.compile first."""
    config = model.config
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and no prompt may be empty")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > config.max_seq_len:
        raise ValueError(f"prompt of {longest} tokens + {max_new_tokens} new tokens exceeds the "
                         f"model's context of {config.max_seq_len} tokens")
    if any(t < 0 or t >= config.vocab_size for p in prompts for t in p):
        raise ValueError(f"prompt token ids must be in [0, {config.vocab_size})")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    B, P, S = len(prompts), longest, longest + max_new_tokens
    pad = torch.tensor([P - len(p) for p in prompts], device=device)
    tokens = torch.tensor([[0] * (P - len(p)) + list(p) for p in prompts], device=device)
    captured = (cuda_graph or compile) and max_new_tokens > 1
    if captured and device.type != "cuda":
        raise ValueError("cuda_graph and compile need a CUDA model")
    cache = KVCache(config, B, S, device, dtype, zeroed=captured)
    slot_ids = torch.arange(S, device=device)
    real_slot = slot_ids[None, :] >= pad[:, None]                       # (B, S)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    # Prefill: causal over real tokens; padding queries see only themselves (finite garbage
    # that no real token ever attends to). Without padding, plain causal attention does it.
    mask = None
    if any(len(p) != P for p in prompts):
        prompt_slots = slot_ids[:P]
        causal = prompt_slots[None, :] <= prompt_slots[:, None]          # (P, P)
        mask = (causal[None] & real_slot[:, None, :P]) | torch.eye(P, dtype=torch.bool, device=device)[None]
        mask = mask[:, None]                                             # (B, 1, P, P)
    positions = (slot_ids[None, :P] - pad[:, None]).clamp(min=0)
    # Only the last position's logits are needed: skip the LM head on the rest of the prompt.
    hidden = model(tokens, cache, slot_ids[:P], positions, mask, return_hidden=True)
    logits = model.lm_head(hidden[:, -1])

    decode_step = model
    if captured:
        decode_step = _captured_decode_step(model, cache, B, S, compile)
    stop = torch.tensor(sorted(set(stop_ids)) or [-1], device=device)
    new_tokens = [[] for _ in prompts]
    live = list(range(B))  # the prompt of each row still in the batch
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        next_token = sample_next(logits, temperature, top_p, top_k, generator)
        finished = finished | torch.isin(next_token, stop)
        reported = [-1] * B
        for prompt, token, done in zip(live, next_token.tolist(), finished.tolist()):
            if not done:
                reported[prompt] = token
                new_tokens[prompt].append(token)
        if on_step is not None:
            ended = on_step(reported)
            if ended is True:
                break
            if ended:
                finished = finished | torch.tensor([ended[prompt] for prompt in live], device=device)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        if bool(finished.any()) and not captured:
            # Drop the finished rows, so the batch costs what its live rows need. (A captured
            # graph has a fixed batch: its finished rows run on, reported as -1.)
            keep = (~finished).nonzero().squeeze(1)
            cache.k, cache.v = cache.k.index_select(1, keep), cache.v.index_select(1, keep)
            next_token, pad, real_slot, finished = next_token[keep], pad[keep], real_slot[keep], finished[keep]
            live = [live[i] for i in keep.tolist()]
        slot = P + step
        if captured:  # static shapes: every slot, the future ones masked
            mask = (real_slot & (slot_ids <= slot))[:, None, None, :]    # (B, 1, 1, S)
        else:
            mask = real_slot[:, None, None, :slot + 1]                   # (B, 1, 1, slot + 1)
        positions = (slot - pad)[:, None]
        logits = decode_step(next_token[:, None], cache, slot_ids[slot:slot + 1], positions, mask)[:, -1]
    return new_tokens


def _captured_decode_step(model, cache, B: int, S: int, compile: bool):
    """A drop-in for `model(tokens, cache, slots, positions, mask)` at T=1 that copies its
    inputs into static buffers and replays a CUDA graph captured once."""
    device = cache.k.device
    tokens = torch.zeros(B, 1, dtype=torch.long, device=device)
    # Warm-up runs really execute: point them at the last slot, which no decode step reads
    # before writing it.
    slots = torch.full((1,), S - 1, dtype=torch.long, device=device)
    positions = torch.zeros(B, 1, dtype=torch.long, device=device)
    mask = torch.ones(B, 1, 1, S, dtype=torch.bool, device=device)  # warm-up writes stay finite
    forward = torch.compile(model, dynamic=False) if compile else model
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            forward(tokens, cache, slots, positions, mask)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logits = forward(tokens, cache, slots, positions, mask)

    def step(new_tokens, _cache, new_slots, new_positions, new_mask):
        tokens.copy_(new_tokens)
        slots.copy_(new_slots)
        positions.copy_(new_positions)
        mask.copy_(new_mask)
        graph.replay()
        return logits
    return step


class TextStream:
    """The text of a growing reply, handed out in pieces as its tokens arrive.

    Each piece is the decoded text of a short window of recent tokens minus the window's text
    before the newest one, so a token costs a few tokens' decoding, not the whole reply's. A
    piece never ends inside a character: while the last bytes decode to U+FFFD (an unfinished
    multi-byte character) nothing is handed out."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.start = 0   # the window's first token
        self.shown = 0   # tokens whose text has been handed out

    def add(self, token: int) -> str:
        """Append one token; return the text it completes (maybe "")."""
        self.ids.append(token)
        return self._advance(final=False)

    def finish(self) -> str:
        """Whatever is still held back, unfinished characters included."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        before = self.tokenizer.decode(self.ids[self.start:self.shown])
        after = self.tokenizer.decode(self.ids[self.start:])
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""
        self.start, self.shown = self.shown, len(self.ids)
        return after[len(before):]


# ------------------------------------------------------------------------------------------
# Command line: chat with a checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description="Chat with a checkpoint (Llama-3 or Qwen2 family).")
    parser.add_argument("--ckpt", default="embedded",
                        help=f"HF checkpoint directory, .gguf file or embedded model ({', '.join(REGISTRY)}; "
                             "default: embedded, the smallest)")
    parser.add_argument("--prompt", help="one message to answer; without it, an interactive chat")
    parser.add_argument("--system", help="optional system message")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    path = resolve_checkpoint(args.ckpt)
    model, tokenizer = load_model(path, device=args.device), load_tokenizer(path)
    messages = [{"role": "system", "content": args.system}] if args.system else []

    def reply(text: str):
        """Answer `text`, printing the answer as it is generated."""
        messages.append({"role": "user", "content": text})
        ids = tokenizer.render_prompt(messages)
        budget = min(args.max_new_tokens, model.config.max_seq_len - len(ids))
        stream = TextStream(tokenizer)

        def show(tokens):
            if tokens[0] >= 0:
                print(stream.add(tokens[0]), end="", flush=True)
        generate(model, [ids], budget, temperature=args.temperature, top_p=args.top_p,
                 stop_ids=tokenizer.stop_ids, seed=args.seed, on_step=show)
        print(stream.finish())
        messages.append({"role": "assistant", "content": tokenizer.decode(stream.ids)})

    if args.prompt is not None:
        if not args.prompt.strip():
            parser.error("--prompt is empty")
        reply(args.prompt)
        return
    print(f"Chatting with {path} (empty line or Ctrl-D to quit)", file=sys.stderr)
    while True:
        try:
            text = input("> ").strip()
        except EOFError:
            break
        if not text:
            break
        reply(text)


if __name__ == "__main__":
    main()
