"""Checkpoint IO: HF safetensors folders (single or sharded) and GGUF files in, HF folders out.

    model, tokenizer = load_model(path), load_tokenizer(path)   # an HF folder or a .gguf file
    save_hf(model, tokenizer, "runs/sft/final")                  # transformers and vLLM load it

One table per format maps each of our parameters to its source tensors, with the GGUF q/k
permutation written once next to it. Both Llama (LlamaForCausalLM, `llama` GGUFs) and Qwen2
(Qwen2ForCausalLM, `qwen2` GGUFs) checkpoints are read and written.
"""

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from embedded import known_sha256, sha256_of
from gguf_file import GGUFFile, dequantize
from model import ModelConfig, pack_for_cpu_inference, Transformer, store_column_major
from tokenizer import ChatTokenizer, chat_format_of, tokenizer_from_gguf_vocab

# ------------------------------------------------------------------------------------------
# HF config.json

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
    "use_sliding_window", "sliding_window", "max_window_layers", "layer_types",  # checked below
}
_HF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def config_from_hf(hf: dict, source: str = "config.json") -> ModelConfig:
    unknown = sorted(set(hf) - set(_HF_CONFIG_KEYS) - _HF_CONFIG_IGNORED)
    if unknown:
        raise ValueError(f"{source}: unknown config fields {unknown}")
    model_type = hf.get("model_type", "llama")
    unsupported = {k: hf[k] for k, ok in [
        ("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False), ("pretraining_tp", 1),
        ("use_sliding_window", False)] if k in hf and hf[k] != ok}
    if model_type not in _HF_ARCHITECTURES:
        unsupported["model_type"] = model_type
    if any(kind != "full_attention" for kind in hf.get("layer_types") or []):
        unsupported["layer_types"] = sorted(set(hf["layer_types"]))
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
    return ModelConfig(**values, rope_scaling=scaling, qkv_bias=model_type == "qwen2")  # Qwen2: always biased


def config_to_hf(config: ModelConfig, dtype: torch.dtype) -> dict:
    model_type = "qwen2" if config.qkv_bias else "llama"
    hf = {"architectures": [_HF_ARCHITECTURES[model_type]], "model_type": model_type, "hidden_act": "silu",
          "torch_dtype": str(dtype).removeprefix("torch.")}
    if model_type == "llama":
        hf.update(attention_bias=False, mlp_bias=False)
    else:
        hf.update(use_sliding_window=False, max_window_layers=config.n_layers)
    hf.update({theirs: getattr(config, ours) for theirs, ours in _HF_CONFIG_KEYS.items()})
    if config.rope_scaling:
        factor, low, high, original = config.rope_scaling
        hf["rope_scaling"] = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                              "high_freq_factor": high,
                              "original_max_position_embeddings": original}
    return hf


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
    "layers.{i}.attention.wqkv.bias": ["model.layers.{i}.self_attn.q_proj.bias",
                                       "model.layers.{i}.self_attn.k_proj.bias",
                                       "model.layers.{i}.self_attn.v_proj.bias"],
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
    "layers.{i}.attention.wqkv.bias": ["blk.{i}.attn_q.bias", "blk.{i}.attn_k.bias", "blk.{i}.attn_v.bias"],
    "layers.{i}.attention.wo.weight": ["blk.{i}.attn_output.weight"],
    "layers.{i}.ffn_norm.weight": ["blk.{i}.ffn_norm.weight"],
    "layers.{i}.feed_forward.w13.weight": ["blk.{i}.ffn_gate.weight", "blk.{i}.ffn_up.weight"],
    "layers.{i}.feed_forward.w2.weight": ["blk.{i}.ffn_down.weight"],
}


def checkpoint_names(config: ModelConfig, table: dict) -> dict[str, list[str]]:
    """Our parameter name -> source tensor names, expanded over layers."""
    names = {}
    for ours, theirs in table.items():
        if (ours == "output.weight" and config.tie_embeddings) or (ours.endswith(".bias") and not config.qkv_bias):
            continue
        layers = range(config.n_layers) if "{i}" in ours else [None]
        for i in layers:
            names[ours.format(i=i)] = [t.format(i=i) for t in theirs]
    return names


def split_sizes(config: ModelConfig, name: str) -> list[int]:
    """Row counts of the sources of a (possibly fused) parameter."""
    D = config.head_dim
    if name.endswith(("wqkv.weight", "wqkv.bias")):
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


def _gguf_file(path: Path) -> GGUFFile:
    """A parsed GGUF header, shared by the model and tokenizer loaders: the tensors are memory-mapped, so one per
    file (and version of it) is enough."""
    stat = Path(path).stat()
    return _cached_gguf_file(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _cached_gguf_file(path: str, mtime_ns: int, size: int) -> GGUFFile:
    return GGUFFile(path)


class _GGUFSource:
    """Tensors of a GGUF file, dequantized to float32 on access."""

    def __init__(self, path: Path):
        file = _gguf_file(path)
        meta = file.metadata
        arch = meta.get("general.architecture")
        if arch not in ("llama", "qwen2"):
            raise ValueError(f"{path}: architecture {arch!r} is neither llama nor qwen2")
        tensors = file.tensors
        heads = int(meta[f"{arch}.attention.head_count"])
        self.config = ModelConfig(
            vocab_size=int(meta.get(f"{arch}.vocab_size", len(meta["tokenizer.ggml.tokens"]))),
            dim=int(meta[f"{arch}.embedding_length"]), n_layers=int(meta[f"{arch}.block_count"]),
            n_heads=heads, n_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
            intermediate_size=int(meta[f"{arch}.feed_forward_length"]),
            rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
            norm_eps=float(meta[f"{arch}.attention.layer_norm_rms_epsilon"]),
            max_seq_len=int(meta[f"{arch}.context_length"]),
            tie_embeddings="output.weight" not in tensors, qkv_bias=arch == "qwen2")
        # llama.cpp's converter permutes llama q/k rows for its pairwise RoPE; qwen2 files are
        # stored as HF has them (un-permuting those puts the logits off by ~45).
        self.permuted_rope = arch == "llama"
        self.tensors = tensors
        self.names = checkpoint_names(self.config, _GGUF_NAMES)
        self.where = str(path)

    def available(self) -> set[str]:
        return set(self.tensors)

    def get(self, name: str) -> torch.Tensor:
        tensor = self.tensors[name]
        weight = dequantize(tensor)
        if self.permuted_rope and name.endswith("attn_q.weight"):
            weight = unpermute_gguf_rope(weight, self.config.n_heads)
        elif self.permuted_rope and name.endswith("attn_k.weight"):
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
    """A Transformer with the weights of an HF checkpoint directory or a .gguf file, for inference.
    dtype defaults to float32 on CPU and bfloat16 on CUDA. On the CPU the weights are laid out
    for decoding: fp32 column-major, bf16 packed for oneDNN (see model.linear)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    source = _open_checkpoint(path)  # opened once: reading a GGUF's metadata takes ~2 s
    with torch.device("meta"):
        model = Transformer(source.config)
    model = model.to(dtype).to_empty(device=device)   # cast on meta: no full-size fp32 copy to convert
    if device.type == "cpu" and dtype == torch.float32:
        store_column_major(model, keep_values=False)   # the copy below fills them, transposing as it goes
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in _validated_tensors(source, source.config):
            params[name].copy_(tensor)
    if device.type == "cpu" and dtype == torch.bfloat16:
        pack_for_cpu_inference(model)
    return model.eval()


# ------------------------------------------------------------------------------------------
# Writing HF checkpoints


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """The model's weights under HF Llama names, fused parameters split back (views, no copy,
    except for weights packed for CPU inference, which are unpacked)."""
    state = {}
    for ours, sources in checkpoint_names(model.config, _HF_NAMES).items():
        weight = model.get_parameter(ours)
        weight = weight.to_dense() if weight.is_mkldnn else weight
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
# Tokenizers


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
        meta = _gguf_file(path).metadata
        kind = meta["tokenizer.ggml.model"]
        if kind != "gpt2":
            raise ValueError(f"{path}: unsupported GGUF tokenizer model {kind!r} (supported: gpt2)")
        tokenizer = tokenizer_from_gguf_vocab(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"],
                                              meta["tokenizer.ggml.merges"], meta["tokenizer.ggml.pre"], str(path))
        template = meta.get("tokenizer.chat_template")
    else:
        raise ValueError(f"{path}: expected an HF checkpoint directory or a .gguf file")
    if isinstance(template, list):  # some configs hold several named templates
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    chat_format, default_system = chat_format_of(template, tokenizer)
    return ChatTokenizer(tokenizer, chat_format, default_system, template)


CONTENT_DIGEST_MAX_BYTES = 4 << 30   # sha256 reads ~1 GB/s here: contents up to this size, names and dates above


def checkpoint_digest(path: Path) -> str:
    """A fingerprint of a checkpoint file or directory: sha256 over each file's name and the sha256 of its
    contents, so that a copy, a fresh fetch or a bit-identical retraining on another machine (a recipe resumed in a
    later session) is the same checkpoint. A checkpoint over CONTENT_DIGEST_MAX_BYTES (an 8B model: 16 GB, minutes
    to hash) is fingerprinted by its files' names, sizes and modification times instead."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    by_contents = sum(p.stat().st_size for p in files) <= CONTENT_DIGEST_MAX_BYTES
    listing = "\n".join(f"{p.relative_to(path) if path.is_dir() else p.name} "
                         + (_file_sha256(p, *_identity(p)) if by_contents else " ".join(map(str, _identity(p))))
                         for p in files)
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()


def _identity(p: Path) -> tuple[int, int]:
    stat = p.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=64)   # every role of a run describes the same resident checkpoint
def _file_sha256(p: Path, size: int, mtime_ns: int) -> str:
    return known_sha256(p) or sha256_of(p)
