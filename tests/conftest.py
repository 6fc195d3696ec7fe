"""Shared fixtures. The embedded model (SmolLM2-135M-Instruct) is loaded once per test session,
by us and, where a test compares against it, by transformers."""

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from checkpoints import load_model, load_tokenizer, save_hf  # noqa: E402
from embedded import fetch  # noqa: E402
from model import PRESETS, Transformer  # noqa: E402
from tokenizer import ChatTokenizer  # noqa: E402

torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def embedded_path():
    return fetch()


@pytest.fixture(scope="session")
def embedded(embedded_path):
    """(our model, our tokenizer) for the embedded GGUF, fp32 on CPU."""
    return load_model(embedded_path, device="cpu", dtype=torch.float32), load_tokenizer(embedded_path)


@pytest.fixture(scope="session")
def hf_embedded(embedded_path):
    """transformers' model and tokenizer for the same GGUF file (the reference oracle)."""
    transformers = pytest.importorskip("transformers")
    folder, name = str(embedded_path.parent), embedded_path.name
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny-preset model with the byte tokenizer, saved as an HF folder."""
    model = Transformer(PRESETS["tiny"])
    model.init_weights(generator=torch.Generator().manual_seed(0))
    return save_hf(model, byte_tokenizer(), tmp_path_factory.mktemp("tiny") / "ckpt")


def write_jsonl(path: Path, rows) -> Path:
    """One line per row: a string as it is (to write broken lines), anything else as JSON."""
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def byte_tokenizer(chat_format: str = "chatml") -> "ChatTokenizer":
    """A tiny byte-level BPE tokenizer (256 byte tokens, no merges, plus the chat control
    tokens) for random-weight test models."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(alphabet))}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = (["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"]
                if chat_format == "llama3" else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return ChatTokenizer(tokenizer, chat_format, default_system="You are a test." if chat_format == "chatml" else None)
