"""The Qwen2 family on the real embedded Qwen2.5-Coder GGUFs, against transformers' own GGUF
loader (the reference oracle): logits, greedy tokens, tokenizer ids, chat template, export.

The 0.5B runs in CI; the 1.5B sits behind the `large` marker: `python -m pytest -m large`."""

import pytest
import torch

from checkpoints import load_model, load_tokenizer, save_hf
from embedded import fetch
from generate import generate

transformers = pytest.importorskip("transformers")

PROMPT = [{"role": "user", "content": "Compute -7*-881*3947 with python code."}]
TOKENIZER_SAMPLES = [
    "def f(x):\n    return x**2  # square\n",
    "    if a == b:\r\n\t\treturn None",
    "12345678 + 0.5e-3 = ?", "x   =    1\n\n\n\ny",
    "don't I'll we've THEY'RE", "f'{value!r:>10}' and \"quotes\"",
    "naïve café, Größe, 日本語のテキスト, emoji 🙂👍🏽",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|fim_prefix|>def <|fim_suffix|> pass<|fim_middle|>", "<tool_call>{\"a\": 1}</tool_call>",
    "٣٤٥ arabic digits, Ⅻ roman", "trailing spaces   ",
]


def load_pair(name):
    path = fetch(name)
    ours = load_model(path, device="cpu", dtype=torch.float32), load_tokenizer(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    theirs = model, transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return ours, theirs


@pytest.fixture(scope="module")
def qwen05():
    return load_pair("qwen2.5-coder-0.5b")


def check_against_transformers(pair, tolerance):
    (ours, tokenizer), (theirs, hf_tokenizer) = pair
    ids = tokenizer.render_prompt(PROMPT)
    assert ids == list(hf_tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True,
                                                         return_dict=False))
    tokens = torch.tensor([ids])
    with torch.no_grad():
        ours_logits = ours(tokens)
        their_logits = theirs(tokens, attention_mask=torch.ones_like(tokens)).logits
    assert ours_logits.abs().max() > 10  # real logits, so the tolerance means something
    assert (ours_logits - their_logits).abs().max().item() < tolerance
    greedy = generate(ours, [ids], 32)[0]
    reference = theirs.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=32,
                                do_sample=False)[0, len(ids):].tolist()
    assert greedy == reference, (tokenizer.decode(greedy), tokenizer.decode(reference))


@pytest.mark.slow
def test_qwen05_logits_and_greedy_tokens_match_transformers(qwen05):
    check_against_transformers(qwen05, tolerance=5e-3)


@pytest.mark.slow
def test_qwen05_tokenizer_ids_equal_transformers(qwen05):
    (_, ours), (_, theirs) = qwen05
    for text in TOKENIZER_SAMPLES:
        ids = ours.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False), text
        assert ours.decode(ids, skip_special_tokens=False) == text
    assert ours.encode("<|im_end|>") == [151645] and ours.stop_ids[0] == 151645
    assert ours.encode("123") == [16, 17, 18]  # digits one by one


@pytest.mark.slow
def test_qwen05_chat_template_inserts_qwens_default_system_line(qwen05):
    (_, ours), (_, theirs) = qwen05
    assert ours.default_system == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    conversation = PROMPT + [{"role": "assistant", "content": "```python\nprint(-7*-881*3947)\n```"}]
    for messages in (conversation, [{"role": "system", "content": "Be brief."}] + conversation):
        ids, mask = ours.render_conversation(messages)
        assert ids == list(theirs.apply_chat_template(messages, tokenize=True, return_dict=False))
        assert ours.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False) == \
            "```python\nprint(-7*-881*3947)\n```<|im_end|>"


@pytest.mark.slow
def test_qwen05_exports_as_qwen2_and_transformers_reads_the_same_logits(qwen05, tmp_path):
    (ours, tokenizer), _ = qwen05
    save_hf(ours, tokenizer, tmp_path / "qwen")
    config = (tmp_path / "qwen" / "config.json").read_text()
    assert '"Qwen2ForCausalLM"' in config and '"tie_word_embeddings": false' in config
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "qwen", dtype=torch.float32).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "qwen")
    ids = tokenizer.render_prompt(PROMPT)
    assert ids == list(hf_tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True,
                                                         return_dict=False))
    tokens = torch.tensor([ids])
    with torch.no_grad():
        assert (ours(tokens) - theirs(tokens).logits).abs().max().item() < 1e-3
    reloaded_tokenizer = load_tokenizer(tmp_path / "qwen")
    assert reloaded_tokenizer.default_system == tokenizer.default_system
    assert reloaded_tokenizer.render_prompt(PROMPT) == ids


@pytest.mark.large
def test_qwen15_logits_and_greedy_tokens_match_transformers():
    check_against_transformers(load_pair("qwen2.5-coder-1.5b"), tolerance=5e-3)
