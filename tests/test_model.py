"""model.py against transformers (the reference oracle): logits, greedy tokens, tokenizer ids,
chat rendering, export; plus KV-cache and batching invariants and bad-input errors."""

import dataclasses
import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import byte_tokenizer

import checkpoints
from checkpoints import config_to_hf, hf_state_dict, load_model, load_tokenizer, save_hf
from generate import generate, KVCache, TextStream
from model import linear, PRESETS, rope_inv_freq, store_column_major, Transformer

transformers = pytest.importorskip("transformers")

TINY_CONFIGS = {
    "mha": dataclasses.replace(PRESETS["tiny"], n_kv_heads=4),
    "gqa": PRESETS["tiny"],
    "gqa-llama3-rope": dataclasses.replace(PRESETS["tiny"], rope_scaling=(8.0, 1.0, 4.0, 32), max_seq_len=512),
    "tied": dataclasses.replace(PRESETS["tiny"], tie_embeddings=True, n_kv_heads=1),
    "qwen2": dataclasses.replace(PRESETS["tiny"], qkv_bias=True, rope_theta=1e6, norm_eps=1e-6),
    "qwen2-tied": dataclasses.replace(PRESETS["tiny"], qkv_bias=True, tie_embeddings=True),
}


def random_model(config, seed=0):
    torch.manual_seed(seed)
    model = Transformer(config)
    model.init_weights(std=0.3)  # large enough that logits differ clearly between tokens
    return model.eval()


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_tiny_random_logits_match_transformers_after_save_hf(name, tmp_path):
    config = TINY_CONFIGS[name]
    ours = random_model(config)
    save_hf(ours, byte_tokenizer(), tmp_path / "ckpt")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32).eval()
    expected = "Qwen2ForCausalLM" if config.qkv_bias else "LlamaForCausalLM"
    assert type(theirs).__name__ == expected
    if config.qkv_bias:  # the biases are real, random and carried over
        bias = theirs.model.layers[0].self_attn.k_proj.bias
        assert bias.abs().sum() > 0 and torch.equal(bias, ours.layers[0].attention.wqkv.bias[64:96])
    tokens = torch.randint(0, config.vocab_size, (2, 200 if config.rope_scaling else 40))
    with torch.no_grad():
        diff = (ours(tokens) - theirs(tokens).logits).abs().max().item()
    assert diff < 1e-4, diff
    # and back: our loader reads the exported folder to the same weights
    reloaded = load_model(tmp_path / "ckpt", device="cpu")
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), reloaded.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_llama3_rope_scaling_changes_frequencies_like_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    config = PRESETS["llama-3.1-8b"]
    hf_config = transformers.LlamaConfig(**config_to_hf(config, torch.bfloat16))
    theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_config, "cpu")
    ours = rope_inv_freq(config)
    assert torch.allclose(ours, theirs.float(), rtol=1e-6)
    assert not torch.allclose(ours, rope_inv_freq(PRESETS["llama-3-8b"]))


def test_embedded_model_logits_match_transformers(embedded, hf_embedded):
    ours, tokenizer = embedded
    theirs, _ = hf_embedded
    ids = tokenizer.render_prompt([{"role": "user", "content": "def fib(n):\n    # return the n-th Fibonacci number"}])
    tokens = torch.tensor([ids])
    with torch.no_grad():
        diff = (ours(tokens) - theirs(tokens).logits).abs().max().item()
    assert diff < 1e-3, diff


def test_embedded_greedy_generation_matches_transformers(embedded, hf_embedded):
    ours, tokenizer = embedded
    theirs, _ = hf_embedded
    ids = tokenizer.render_prompt([{"role": "user", "content": "List three colours of the rainbow."}])
    new = generate(ours, [ids], 40, stop_ids=tokenizer.stop_ids)[0]
    prompt = torch.tensor([ids])
    with torch.no_grad():  # attention_mask is required: the pad id is <|im_end|>, see embedded-model.md
        reference = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=40,
                                    do_sample=False, eos_token_id=tokenizer.stop_ids)[0, len(ids):].tolist()
    reference = [t for t in reference if t not in tokenizer.stop_ids]
    assert len(new) >= 32
    assert new == reference


def test_cached_decoding_equals_full_forward():
    config = TINY_CONFIGS["gqa-llama3-rope"]
    model = random_model(config, seed=1)
    prompt = torch.randint(0, config.vocab_size, (1, 7))
    generated = generate(model, [prompt[0].tolist()], 12)[0]
    sequence = torch.tensor([prompt[0].tolist() + generated])
    with torch.no_grad():
        full = model(sequence)
    # teacher forcing on the whole sequence predicts exactly the tokens decoded one by one
    assert full[0, 6:6 + len(generated)].argmax(-1).tolist() == generated

    # and the cached logits equal the full-forward logits step by step
    S = sequence.shape[1]
    cache = KVCache(config, 1, S, "cpu", torch.float32)
    slots = torch.arange(S)
    mask = (slots[None, :] <= slots[:, None])[None, None]
    with torch.no_grad():
        prefill = model(sequence[:, :7], cache, slots[:7], slots[None, :7], mask[:, :, :7])
        steps = [model(sequence[:, t:t + 1], cache, slots[t:t + 1], slots[None, t:t + 1], mask[:, :, t:t + 1])
                 for t in range(7, S)]
    cached = torch.cat([prefill] + steps, dim=1)
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("rows", [1, 5, 32, 33])
def test_split_k_linear_equals_f_linear(threads, rows):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(40, 96, generator=generator)
    column_major = weight.t().contiguous().t()
    x = torch.randn(2, rows, 96, generator=generator)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = linear(x[:1], column_major)  # one sequence: `rows` rows, split-K up to 32 of them
        got_batched = linear(x, column_major)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(got, F.linear(x[:1], weight), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_batched, F.linear(x, weight), atol=1e-5, rtol=1e-5)


def test_bf16_decode_linear_matches_an_fp32_product_for_every_shape_and_row_count():
    """The inductor kernel for bf16 weights: one compile serves many weight shapes and row counts
    (more combinations than dynamo's recompile limit of 8), accumulates in fp32, adds the bias."""
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for out_features, in_features in [(40, 96), (96, 40), (136, 64), (64, 4160), (72, 48), (48, 72)]:
            layer = torch.nn.Linear(in_features, out_features).bfloat16()
            for rows in (1, 2, 7):
                x = torch.randn(rows, in_features, generator=generator).bfloat16()
                reference = F.linear(x.double(), layer.weight.double(), layer.bias.double())
                got = linear(x, layer.weight, layer.bias)
                assert got.dtype == torch.bfloat16 and got.shape == (rows, out_features)
                # bf16 rounding of the output only (fp32 accumulation); rows > 2 take the bf16 GEMM
                torch.testing.assert_close(got.double(), reference, atol=0.02, rtol=0.01)


@pytest.mark.parametrize("name", ["qwen2", "tied"])
def test_bf16_weights_packed_for_onednn_give_the_same_logits_and_unpack_exactly(name):
    """pack_for_cpu_inference (what load_model does for bf16 on the CPU): the same logits as the unpacked bf16
    model for one row, two, several and a prefill past the split-K threshold, with and without q/k/v biases and a
    tied head (the embedding table stays unpacked); hf_state_dict gives back the exact weights."""
    import model as M
    if not M.onednn_bf16_works():
        pytest.skip("this torch build or CPU has no oneDNN bf16 product")
    config = TINY_CONFIGS[name]
    dense = random_model(config).bfloat16()
    packed = random_model(config).bfloat16()
    linears = sum(isinstance(m, torch.nn.Linear) for m in packed.modules())
    assert M.pack_for_cpu_inference(packed) == linears and M.pack_for_cpu_inference(packed) == 0  # once
    assert packed.layers[0].feed_forward.w13.weight.is_mkldnn and not packed.tok_embeddings.weight.is_mkldnn
    with torch.inference_mode():
        for batch, length in [(1, 1), (2, 1), (5, 1), (1, 40)]:
            tokens = torch.randint(0, config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(1))
            reference = random_model(config)(tokens)   # fp32
            got, unpacked = packed(tokens).float(), dense(tokens).float()
            # bf16 rounding through the layers (up to ~0.8 on logits of ~9 here): packed is no farther from fp32
            # than the unpacked bf16 model, and the two differ by rounding only
            assert (got - reference).abs().max() <= 2 * (unpacked - reference).abs().max() + 0.05
            assert (got - unpacked).abs().max() <= 0.02 * reference.abs().max()
    for key, value in hf_state_dict(packed).items():
        assert torch.equal(value, hf_state_dict(dense)[key]), key


def test_without_onednn_nothing_is_packed_and_bf16_decoding_still_works(monkeypatch):
    import model as M
    monkeypatch.setattr(M, "onednn_bf16_works", lambda: False)
    model = random_model(TINY_CONFIGS["qwen2"]).bfloat16()
    assert M.pack_for_cpu_inference(model) == 0 and not any(p.is_mkldnn for p in model.parameters())
    assert len(generate(model, [[1, 2, 3]], 4)[0]) == 4


def test_forward_traces_as_one_graph():
    # torch.compile on CUDA (decode graphs, FSDP2 training) must not break at every linear.
    model = random_model(TINY_CONFIGS["gqa"], seed=3)
    store_column_major(model)  # the CPU layout, so linear's split-K branch is in play
    tokens = torch.randint(0, model.config.vocab_size, (1, 5))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(tokens), model(tokens), atol=1e-5, rtol=1e-5)


def test_batched_generation_equals_one_by_one(embedded):
    model, tokenizer = embedded
    questions = ["Hi!", "Write a haiku about the sea and the wind at night.", "What is 7 times 8?"]
    prompts = [tokenizer.render_prompt([{"role": "user", "content": q}]) for q in questions]
    assert len({len(p) for p in prompts}) == 3
    batched = generate(model, prompts, 16, stop_ids=tokenizer.stop_ids)
    single = [generate(model, [p], 16, stop_ids=tokenizer.stop_ids)[0] for p in prompts]
    assert batched == single


def test_sampling_is_reproducible_with_a_seed_and_stops(embedded):
    model, tokenizer = embedded
    prompt = tokenizer.render_prompt([{"role": "user", "content": "Tell me a story."}])
    a = generate(model, [prompt], 12, temperature=0.9, top_p=0.8, top_k=50, seed=3)
    b = generate(model, [prompt], 12, temperature=0.9, top_p=0.8, top_k=50, seed=3)
    assert a == b
    first = generate(model, [prompt], 1)[0][0]
    assert generate(model, [prompt], 5, stop_ids=[first]) == [[]]


ASCII_SAMPLES = [
    "Hello, world!", "def add(a, b):\n    return a + b\n", "1234567890 + 987 = 99999",
    "   leading and trailing spaces   ", "tabs\tand\nnewlines\r\n", "x**2 - 3*x + 2 == 0",
    "<<<Step 1: [(10, [0, 1])]>>>", "<|im_start|>user\nhi<|im_end|>", "{'a': [1, 2.5e-3]}",
    "CamelCase snake_case kebab-case", "!!!???...,,,;;;", "",
]


def test_on_step_sees_every_step_and_can_end_generation(embedded):
    model, tokenizer = embedded
    prompts = [tokenizer.render_prompt([{"role": "user", "content": q}]) for q in ("Hi!", "What is 7 times 8?")]
    full = generate(model, prompts, 6)
    steps = []
    assert generate(model, prompts, 6, on_step=lambda tokens: steps.append(tokens)) == full
    assert [list(row) for row in zip(*steps)] == full
    calls = []

    def end_at_third(tokens):
        calls.append(tokens)
        return len(calls) == 3
    assert generate(model, prompts, 6, on_step=end_at_third) == [row[:3] for row in full]
    first = full[0][0]
    seen = []
    generate(model, prompts, 3, stop_ids=[first], on_step=seen.append)
    assert seen[0][0] == -1  # a stopped row is reported as -1


def test_rows_that_finish_leave_the_batch_and_the_others_go_on_unchanged(embedded):
    model, tokenizer = embedded
    questions = ["Hi!", "What is 7 times 8?", "Name a color.", "Write a haiku about the sea."]
    prompts = [tokenizer.render_prompt([{"role": "user", "content": q}]) for q in questions]
    single = [generate(model, [p], 10)[0] for p in prompts]
    stop_first = single[0][0]  # row 0 stops at once, at its first token
    assert all(stop_first not in row for row in single[1:])
    steps = []

    def end_row_2_early(tokens):
        steps.append(tokens)
        return [False, False, len(steps) == 3, False]
    batched = generate(model, prompts, 10, stop_ids=[stop_first], on_step=end_row_2_early)
    assert batched == [[], single[1], single[2][:3], single[3]]
    assert all(step[0] == -1 for step in steps) and all(step[2] == -1 for step in steps[3:])


def ends_row_0_at_step(step):
    """An on_step that ends row 0 at `step` (1-based) and leaves the other rows alone."""
    seen = []

    def on_step(tokens):
        seen.append(tokens)
        return [len(seen) == step] + [False] * (len(tokens) - 1)
    return on_step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("flags", [{}, {"cuda_graph": True}])
def test_cuda_generation_with_stops_and_ended_rows_matches_cpu(flags):
    model = random_model(TINY_CONFIGS["gqa"], seed=4)
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13], [20, 21]]
    free = generate(model, prompts, 8)
    stop = [free[1][2]]  # row 1 stops at its third token
    cpu = generate(model, prompts, 8, stop_ids=stop, on_step=ends_row_0_at_step(4))
    on_gpu = generate(model.cuda(), prompts, 8, stop_ids=stop, on_step=ends_row_0_at_step(4), **flags)
    assert on_gpu == cpu and cpu[1] == free[1][:2] and len(cpu[0]) == 4


@pytest.mark.parametrize("text", ["Grüße aus Köln, 東京 und 🦙🦙 — ok?", "def f(x):\n    return x ** 2  # ✓\n"])
def test_text_stream_pieces_add_up_and_never_split_a_character(embedded, text):
    _, tokenizer = embedded
    ids = tokenizer.encode(text)
    stream = TextStream(tokenizer)
    pieces = [stream.add(token) for token in ids] + [stream.finish()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in piece for piece in pieces)
    assert sum(1 for piece in pieces if piece) > len(text.split()) // 2  # handed out as it comes


def test_tokenizer_ids_equal_transformers(embedded, hf_embedded):
    _, ours = embedded
    _, theirs = hf_embedded
    for text in ASCII_SAMPLES:
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False), text
        assert ours.decode(ours.encode(text), skip_special_tokens=False) == text


CONVERSATION = [
    {"role": "user", "content": "Solve 3 + 4."},
    {"role": "assistant", "content": "Use code.\n```python\nprint(3 + 4)\n```"},
    {"role": "user", "content": "The output was 7."},
    {"role": "assistant", "content": "<<<7>>>"},
]


def assistant_text(tokenizer, ids, mask):
    return tokenizer.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)


def test_render_conversation_masks_exactly_the_assistant_tokens(embedded, hf_embedded):
    _, tokenizer = embedded
    _, hf_tokenizer = hf_embedded
    ids, mask = tokenizer.render_conversation(CONVERSATION)
    reference = hf_tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
    assert ids == list(reference)
    assert len(mask) == len(ids)
    assert assistant_text(tokenizer, ids, mask) == "Use code.\n```python\nprint(3 + 4)\n```<|im_end|><<<7>>><|im_end|>"
    # the generation prompt is the conversation so far plus the assistant header
    prompt = tokenizer.render_prompt(CONVERSATION[:3])
    assert prompt == list(hf_tokenizer.apply_chat_template(CONVERSATION[:3], add_generation_prompt=True,
                                                           tokenize=True, return_dict=False))


def test_llama3_format_masks_and_matches_its_jinja(tmp_path):
    tokenizer = byte_tokenizer("llama3")
    ids, mask = tokenizer.render_conversation([{"role": "system", "content": "Be brief."}] + CONVERSATION)
    assert tokenizer.decode(ids, skip_special_tokens=False).startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>")
    assert assistant_text(tokenizer, ids, mask) == "Use code.\n```python\nprint(3 + 4)\n```<|eot_id|><<<7>>><|eot_id|>"
    config = dataclasses.replace(PRESETS["tiny"])
    save_hf(random_model(config), tokenizer, tmp_path / "ckpt")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    assert list(hf_tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)) == \
        tokenizer.render_conversation(CONVERSATION)[0]
    reloaded = load_tokenizer(tmp_path / "ckpt")
    assert reloaded.chat_format == "llama3" and reloaded.render_prompt(CONVERSATION[:1]) == tokenizer.render_prompt(CONVERSATION[:1])


def test_render_conversation_rejects_bad_roles(embedded):
    _, tokenizer = embedded
    with pytest.raises(ValueError, match="roles"):
        tokenizer.render_conversation([{"role": "assistant", "content": "hi"}])
    with pytest.raises(ValueError, match="roles"):
        tokenizer.render_conversation([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_sharded_export_loads_in_transformers_and_back(tmp_path):
    config = TINY_CONFIGS["gqa"]
    ours = random_model(config, seed=2)
    out = save_hf(ours, byte_tokenizer(), tmp_path / "sharded", max_shard_bytes=100_000)
    assert load_tokenizer(out).default_system == "You are a test."  # ChatML default survives the export
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens = torch.randint(0, config.vocab_size, (1, 30))
    with torch.no_grad():
        assert (ours(tokens) - theirs(tokens).logits).abs().max().item() < 1e-4
        reloaded = load_model(out, device="cpu")
        assert (reloaded(tokens) - ours(tokens)).abs().max().item() < 1e-4
    for name, param in reloaded.named_parameters():
        assert torch.equal(param, ours.get_parameter(name)), name


def test_embedded_model_exports_and_reloads(embedded, tmp_path):
    model, tokenizer = embedded
    out = save_hf(model, tokenizer, tmp_path / "smol")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert list(hf_tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)) == \
        tokenizer.render_conversation(CONVERSATION)[0]
    tokens = torch.tensor([tokenizer.encode("The quick brown fox")])
    with torch.no_grad():
        assert (model(tokens) - theirs(tokens).logits).abs().max().item() < 1e-3


# ---- bad input ----------------------------------------------------------------------------

def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "empty")


def test_unknown_config_fields_are_named(tmp_path):
    out = save_hf(random_model(PRESETS["tiny"]), byte_tokenizer(), tmp_path / "ckpt")
    config = json.loads((out / "config.json").read_text())
    config["sliding_window_size"] = 4096
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json.*sliding_window_size"):
        load_model(out)


def test_mismatched_tensors_are_named(tmp_path):
    from safetensors.torch import load_file, save_file
    out = save_hf(random_model(PRESETS["tiny"]), byte_tokenizer(), tmp_path / "ckpt")
    state = load_file(out / "model.safetensors")
    renamed = dict(state)
    renamed["model.layers.0.self_attn.query.weight"] = renamed.pop("model.layers.0.self_attn.q_proj.weight")
    save_file(renamed, out / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing \['model.layers.0.self_attn.q_proj.weight'\].*query"):
        load_model(out)
    reshaped = dict(state)
    reshaped["model.norm.weight"] = torch.ones(3)
    save_file(reshaped, out / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.norm.weight has shape \(3,\)"):
        load_model(out)


def test_empty_and_overlong_prompts_are_rejected():
    model = random_model(PRESETS["tiny"])
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[]], 4)
    with pytest.raises(ValueError, match="context"):
        generate(model, [[1] * 250], 10)
    with pytest.raises(ValueError, match="token ids"):
        generate(model, [[100_000]], 4)


def test_a_checkpoint_digest_changes_with_any_file_of_it_and_survives_a_copy(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(bytes(10))
    first = checkpoints.checkpoint_digest(tmp_path)
    assert checkpoints.checkpoint_digest(tmp_path) == first and first.startswith("sha256:")
    (tmp_path / "model.safetensors").write_bytes(bytes(11))
    assert checkpoints.checkpoint_digest(tmp_path) != first
    # the same files elsewhere, written later (a copy, a retraining in another session): the same checkpoint
    copy = tmp_path.parent / f"{tmp_path.name}-copy"
    shutil.copytree(tmp_path, copy)
    os.utime(copy / "model.safetensors", ns=(1, 1))
    assert checkpoints.checkpoint_digest(copy) == checkpoints.checkpoint_digest(tmp_path)
    # too large to hash: names, sizes and dates
    monkeypatch.setattr(checkpoints, "CONTENT_DIGEST_MAX_BYTES", 5)
    assert checkpoints.checkpoint_digest(copy) != checkpoints.checkpoint_digest(tmp_path)
