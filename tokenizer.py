"""Tokenizers and chat formats: a `tokenizers.Tokenizer` plus the chat format of its checkpoint
(Llama-3 headers or ChatML), with `render_conversation(messages) -> (ids, loss mask)` as the one
place where chat formatting and loss masks are decided. Tokenizers are built here from an HF
tokenizer.json or from the vocabulary a GGUF file carries (checkpoints.load_tokenizer reads the
files). This file imports no other project file.
"""

import json
import re
from pathlib import Path

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


def chat_format_of(template: str | None, tokenizer) -> tuple[str, str | None]:
    """Which chat format a checkpoint uses, and ChatML's default system message if it has one."""
    if (template and "<|start_header_id|>" in template) or tokenizer.token_to_id("<|eot_id|>") is not None:
        return "llama3", None
    default_system = None
    if template:
        ours = re.match(r'\{% set default_system = ("(?:[^"\\]|\\.)*") %\}', template)  # _CHATML_JINJA
        if ours:
            return "chatml", json.loads(ours.group(1)) or None
        # A literal system turn in the template; Qwen's writes its newline as an escaped "\n"
        # inside a Jinja string. Turns built from variables ({{ ... }} or +) are not defaults.
        for found in re.finditer(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", template, re.S):
            if "{{" not in found.group(1) and "+" not in found.group(1) and "'" not in found.group(1):
                default_system = found.group(1)
                break
    return "chatml", default_system


# Qwen2's pre-tokenizer regex (llama.cpp's "qwen2" pre-type): like GPT-4's, but digits one by one.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPECIAL_TOKEN_TYPES = (3, 4)  # GGUF token types: control (<|im_start|>, ...) and user-defined (<tool_call>)


def tokenizer_from_gguf_vocab(tokens: list[str], token_types: list[int], merges: list[str], pre: str, where: str = "GGUF"):
    """A byte-level BPE `tokenizers.Tokenizer` from a GGUF's vocabulary ('gpt2' model), with the
    pre-tokenizer llama.cpp names `pre`: 'gpt2', 'smollm' (digits one by one) or 'qwen2'."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    if pre not in ("smollm", "gpt2", "qwen2"):
        raise ValueError(f"{where}: unsupported GGUF pre-tokenizer {pre!r} (supported: gpt2, smollm, qwen2)")
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=pairs))
    if pre == "qwen2":
        splitters = [pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    else:
        splitters = [pre_tokenizers.ByteLevel(add_prefix_space=False)]
        if pre == "smollm":  # digits one by one, as SmolLM's own tokenizer does
            splitters.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(splitters)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                  for i, kind in enumerate(token_types) if kind in _SPECIAL_TOKEN_TYPES])
    return tokenizer
