"""LLM clients against the scripted fixture server (retries, errors, request shapes, usage) and
the local backend on the embedded model."""
import dataclasses
import io
import os
import socket
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import llm
from generate import generate
from model import PRESETS, Transformer
from conftest import byte_tokenizer
from fixture_server import fixture_server

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]
FAST = dict(backoff_base=0.01, backoff_cap=0.05, timeout=5)  # retries without real waiting


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_retries_429_with_retry_after_then_500_then_succeeds():
    statuses = [(429, {"Retry-After": "1"}), 500]
    with fixture_server(["four"], statuses=statuses) as server:
        client = llm.OpenAIClient("gpt-4o", base_url=server.url, **FAST)
        reply = client.chat(QUESTION)
    assert reply.text == "four"
    assert len(server.requests) == 3
    # Backoff alone is capped at 0.05 s here: the 1 s gap can only come from Retry-After.
    assert 0.95 <= server.times[1] - server.times[0] < 2.0
    assert server.times[2] - server.times[1] < 0.5
    assert client.usage.retries == 2 and client.usage.calls == 1 and client.usage.failures == 0


def test_retry_after_http_date_and_backoff_bounds():
    assert llm.retry_after_seconds("2.5") == 2.5
    in_three = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3))
    assert 1.5 < llm.retry_after_seconds(in_three) <= 3.0
    assert llm.retry_after_seconds("soon") is None
    client = llm.OpenAIClient("m", base_url="http://127.0.0.1:9", backoff_base=1.0, backoff_cap=60.0)
    delays = [client._backoff(3, None) for _ in range(200)]
    assert 0 <= min(delays) and max(delays) <= 8.0 and max(delays) > 4.0  # full jitter over [0, 2^3]
    assert client._backoff(20, None) <= 60.0 and client._backoff(0, 7.0) == 7.0


def test_gives_up_after_max_retries_with_a_clear_error():
    with fixture_server(["never"], statuses=[503] * 10) as server:
        client = llm.OpenAIClient("gpt-4o", base_url=server.url, max_retries=2, **FAST)
        with pytest.raises(llm.LLMError) as caught:
            client.chat(QUESTION)
    assert len(server.requests) == 3
    message = str(caught.value)
    assert "3 attempts" in message and "HTTP 503" in message and "scripted HTTP 503" in message
    assert server.url in message and "gpt-4o" in message
    assert caught.value.status == 503
    assert client.usage.failures == 1 and client.usage.calls == 0


def test_401_names_endpoint_and_model_but_not_the_key():
    key = "sk-test-5ecret-key-0123456789"
    statuses = [(401, {}, f"Incorrect API key provided: {key}")]  # some servers echo the key
    with fixture_server(["unused"], statuses=statuses) as server:
        client = llm.OpenAIClient("gpt-4o-mini", base_url=server.url, api_key=key, **FAST)
        with pytest.raises(llm.LLMError) as caught:
            client.chat(QUESTION)
    assert server.headers[0]["authorization"] == f"Bearer {key}"
    message = str(caught.value)
    assert f"{server.url}/chat/completions" in message and "gpt-4o-mini" in message and "401" in message
    assert "Incorrect API key provided" in message
    assert key not in message and key not in repr(caught.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_4xx_are_not_retried(status):
    with fixture_server(["unused"], statuses=[status]) as server:
        client = llm.OpenAIClient("gpt-4o", base_url=server.url, **FAST)
        with pytest.raises(llm.LLMError) as caught:
            client.chat(QUESTION)
    assert len(server.requests) == 1 and caught.value.status == status


def test_connection_errors_are_retried_then_reported():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = llm.OpenAIClient("gpt-4o", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, **FAST)
    with pytest.raises(llm.LLMError) as caught:
        client.chat(QUESTION)
    assert "3 attempts" in str(caught.value) and "ConnectionError" in str(caught.value)
    assert client.usage.retries == 2


def test_timeouts_are_retried():
    with fixture_server(["late"], delay=0.5) as server:
        client = llm.OpenAIClient("gpt-4o", base_url=server.url, max_retries=1, **{**FAST, "timeout": 0.1})
        with pytest.raises(llm.LLMError, match="ReadTimeout"):
            client.chat(QUESTION)
    assert len(server.requests) == 2


def test_openai_request_shape_and_overrides():
    with fixture_server(["a", "b", "c"]) as server:
        client = llm.OpenAIClient("gpt-4o", base_url=server.url, system_message="")
        client.chat(QUESTION)
        client.chat(QUESTION, temperature=0.7, max_tokens=5, seed=3, stop=["\n"])
        llm.OpenAIClient("o1-preview", base_url=server.url, system_message="").chat(QUESTION)
    first, second, reasoning = server.requests
    assert first == {"model": "gpt-4o", "temperature": 0.0, "top_p": 1.0, "max_tokens": 2000,
                     "messages": [{"role": "system", "content": ""}] + QUESTION}
    assert (second["temperature"], second["max_tokens"], second["seed"], second["stop"]) == (0.7, 5, 3, ["\n"])
    assert reasoning == {"model": "o1-preview", "messages": QUESTION}
    assert "authorization" not in server.headers[0]  # no key: local servers need none
    with pytest.raises(TypeError, match="frequency_penalty"):
        client.chat(QUESTION, frequency_penalty=1.0)


def test_reasoning_models_are_recognised_by_name():
    assert all(llm.is_reasoning_model(n) for n in ("o1", "o1-mini", "o3-mini", "openai/o4-mini", "deepseek-reasoner"))
    assert not any(llm.is_reasoning_model(n) for n in ("gpt-4o", "claude-3-5-sonnet", "deepseek-chat", "llama-3"))


def test_anthropic_request_shape():
    messages = [{"role": "system", "content": "Be brief."}, *QUESTION]
    with fixture_server(["4"]) as server:
        client = llm.AnthropicClient("claude-3-5-sonnet-20241022", api_key="ak-123", base_url=server.url)
        reply = client.chat(messages)
    assert server.paths == ["/v1/messages"]
    assert server.headers[0]["x-api-key"] == "ak-123"
    assert server.headers[0]["anthropic-version"] == "2023-06-01"
    assert server.requests[0] == {"model": "claude-3-5-sonnet-20241022", "max_tokens": 2000, "temperature": 0.0,
                                  "system": "Be brief.", "messages": QUESTION}
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == ("4", 7, 1, "stop")


def test_usage_and_latency_under_concurrent_calls():
    all_in_flight = threading.Barrier(8, timeout=60)

    def reply(messages):
        all_in_flight.wait()  # passes only if the 8 requests are open at the same time
        return "echo " + messages[-1]["content"]

    with fixture_server(reply, delay=0.25) as server:
        client = llm.OpenAIClient("gpt-4o", base_url=server.url)
        replies = [None] * 8

        def call(i):
            replies[i] = client.chat([{"role": "user", "content": f"question {i}"}])
        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [r.text for r in replies] == [f"echo question {i}" for i in range(8)]
    assert all(r.seconds >= 0.25 and r.model == "gpt-4o" for r in replies)
    usage = client.usage
    assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (8, 16, 24)
    assert usage.seconds == pytest.approx(sum(r.seconds for r in replies))


def test_client_is_a_plain_chat_callable():
    with fixture_server(["```python\nprint(4)\n```"]) as server:
        assert llm.OpenAIClient("m", base_url=server.url)(QUESTION) == "```python\nprint(4)\n```"


@pytest.mark.parametrize("cuda, onednn_bf16, dtype", [(False, True, torch.bfloat16), (False, False, torch.float32),
                                                      (True, False, torch.bfloat16)])
def test_embedded_models_run_in_bf16_only_where_it_is_fast(monkeypatch, cuda, onednn_bf16, dtype):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(llm, "onednn_bf16_works", lambda: onednn_bf16)
    assert llm.demo_dtype() == dtype and llm.make_client("qwen2.5-coder-0.5b").dtype == dtype


def test_make_client_backend_rule(monkeypatch, tmp_path):
    assert isinstance(llm.make_client("gpt-4o", ckpt=tmp_path), llm.LocalClient)
    fallback = llm.make_client("gpt-4o")
    assert isinstance(fallback, llm.LocalClient) and fallback.ckpt == llm.DEMO_MODEL == fallback.model
    assert "OPENAI_API_KEY" in fallback.fallback_reason
    assert isinstance(llm.make_client("claude-3-5-sonnet"), llm.LocalClient)
    named = llm.make_client("qwen2.5-coder-1.5b")   # an embedded model by name, in any role: in-process, no fallback
    assert isinstance(named, llm.LocalClient) and named.ckpt == named.model == "qwen2.5-coder-1.5b"
    assert named.dtype == llm.demo_dtype() and not getattr(named, "fallback_reason", None)
    served = llm.make_client("qwen2.5-coder-1.5b", base_url="http://127.0.0.1:8000/v1")   # a server of that name
    assert isinstance(served, llm.OpenAIClient)
    local_server = llm.make_client("qwen", base_url="http://127.0.0.1:8000/v1")
    assert isinstance(local_server, llm.OpenAIClient)
    assert local_server.url == "http://127.0.0.1:8000/v1/chat/completions"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    openai = llm.make_client("gpt-4o", max_retries=2)
    assert isinstance(openai, llm.OpenAIClient) and openai.base_url == llm.OPENAI_BASE_URL and openai.max_retries == 2
    assert isinstance(llm.make_client("claude-3-5-sonnet"), llm.LocalClient)  # an OpenAI key is not a Claude key
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ak-x")
    assert isinstance(llm.make_client("claude-3-5-sonnet", system_message=""), llm.AnthropicClient)
    assert isinstance(llm.make_client("claude-3-5-sonnet", base_url="http://proxy/v1"), llm.OpenAIClient)


@pytest.mark.slow
def test_local_client_matches_generate_on_the_embedded_model(embedded):
    transformer, tokenizer = embedded
    client = llm.LocalClient(transformer=transformer, tokenizer=tokenizer, max_tokens=8)
    reply = client.chat(QUESTION)
    expected = generate(transformer, [tokenizer.render_prompt(QUESTION)], 8, stop_ids=tokenizer.stop_ids)[0]
    assert reply.text == tokenizer.decode(expected) and reply.text.strip()
    assert reply.prompt_tokens == len(tokenizer.render_prompt(QUESTION))
    assert reply.completion_tokens == len(expected)
    assert reply.finish_reason == ("length" if len(expected) == 8 else "stop")
    assert client(QUESTION) == reply.text  # greedy: the same again
    assert client.usage.calls == 2


@pytest.fixture(scope="module")
def tiny_client():
    """A random 2-layer model with a 64-token context and a byte-level tokenizer."""
    tokenizer = byte_tokenizer()
    config = dataclasses.replace(PRESETS["tiny"], vocab_size=tokenizer.vocab_size, max_seq_len=64)
    transformer = Transformer(config)
    transformer.init_weights(generator=torch.Generator().manual_seed(0))
    return llm.LocalClient(transformer=transformer.eval(), tokenizer=tokenizer, name="tiny", max_tokens=100)


def test_local_client_fits_max_tokens_to_the_context(tiny_client):
    messages = [{"role": "user", "content": "x" * 10}]
    prompt = len(tiny_client.prompt_ids(messages))
    reply = tiny_client.chat(messages)
    assert reply.prompt_tokens == prompt
    assert reply.finish_reason == "stop" or reply.completion_tokens == 64 - prompt
    with pytest.raises(llm.ContextLengthError, match="64 tokens"):
        tiny_client.chat([{"role": "user", "content": "x" * 64}])


def test_local_client_stop_strings_and_seeded_sampling(tiny_client):
    messages = [{"role": "user", "content": "hi"}]
    sampled = tiny_client.chat(messages, temperature=1.0, max_tokens=20, seed=1)
    assert tiny_client.chat(messages, temperature=1.0, max_tokens=20, seed=1).text == sampled.text
    assert sampled.completion_tokens > 0
    greedy = tiny_client.chat(messages, max_tokens=20).text
    cut = greedy[len(greedy) // 2:len(greedy) // 2 + 1]
    stopped = tiny_client.chat(messages, max_tokens=20, stop=[cut])
    assert stopped.text == greedy[:greedy.index(cut)] and stopped.finish_reason == "stop"


@pytest.mark.slow
def test_local_client_streams_pieces_and_ends_generation_at_a_stop_string(embedded):
    transformer, tokenizer = embedded
    client = llm.LocalClient(transformer=transformer, tokenizer=tokenizer, max_tokens=20)
    pieces = []
    full = client.chat(QUESTION, on_text=pieces.append)
    assert "".join(pieces) == full.text and len(pieces) > 10  # token by token, not in one block
    boundary = len("".join(pieces[:6]))
    stop = full.text[boundary - 1:boundary + 2]  # begins in one streamed piece, ends in the next
    assert full.text.index(stop) == boundary - 1
    pieces = []
    stopped = client.chat(QUESTION, stop=[stop, "never"], on_text=pieces.append)
    # Nothing of the stop string was sent before it was complete, and generation ended there.
    assert "".join(pieces) == stopped.text == full.text[:full.text.index(stop)]
    assert stopped.finish_reason == "stop" and stopped.completion_tokens < full.completion_tokens


def test_stop_prefix_length():
    assert llm.stop_prefix_length("answer: 4\n\nAns", ["Answer:", "\n\nAnswer"]) == 5
    assert llm.stop_prefix_length("answer", "xyz") == 0
    assert llm.stop_prefix_length("ab", ["b", "abc"]) == 2  # a whole one-char stop is not a prefix


@pytest.mark.slow
def test_concurrent_local_chats_go_as_one_batch_and_keep_their_own_limits(embedded):
    transformer, tokenizer = embedded
    client = llm.LocalClient(transformer=transformer, tokenizer=tokenizer, max_tokens=12)
    questions = [[{"role": "user", "content": q}] for q in
                 ("Hi!", "What is 7 times 8?", "Name a color.", "Write a haiku about the sea.", "Say yes.")]
    budgets = [12, 5, 12, 9, 12]
    alone = [client.chat(q, max_tokens=b) for q, b in zip(questions, budgets)]
    stop = alone[2].text[3:6]  # a stop string for the third chat only

    def hang_up(piece):
        raise ConnectionError("client went away")
    calls = [dict(max_tokens=b) for b in budgets]
    calls[2]["stop"] = stop
    calls[4]["on_text"] = hang_up

    # Hold the model inside a first chat until all five others are queued, so they form one batch.
    running, release, resident = threading.Event(), threading.Event(), client.resident()

    def hold(piece):
        running.set()
        release.wait()
    with ThreadPoolExecutor(6) as pool:
        try:
            blocker = pool.submit(client.chat, QUESTION, max_tokens=2, on_text=hold)
            assert running.wait(60)
            futures = [pool.submit(client.chat, q, **kw) for q, kw in zip(questions, calls)]
            deadline = time.monotonic() + 60
            while len(resident._pending) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            batches = resident.batches
        finally:
            release.set()  # never leave the pool waiting on the held chat
        blocker.result()
        results = [f.exception() or f.result() for f in futures]
    assert resident.batches == batches + 1
    for i in (0, 1, 3):  # as alone, budgets included
        assert (results[i].text, results[i].completion_tokens, results[i].finish_reason) == \
            (alone[i].text, alone[i].completion_tokens, alone[i].finish_reason)
    assert results[2].text == alone[2].text[:alone[2].text.index(stop)] and results[2].finish_reason == "stop"
    assert isinstance(results[4], ConnectionError)  # only the chat whose reader failed


def test_a_local_model_loads_on_its_generation_thread_and_load_errors_reach_the_caller(tiny_client, tmp_path):
    # One thread does all of a loaded model's torch work (llm._Resident says why).
    loaders = []
    resident = tiny_client.resident()

    def load():
        loaders.append(threading.current_thread().name)
        return resident.transformer, resident.tokenizer
    llm._Resident(load)
    assert loaders == ["local-generation"] and loaders[0] != threading.current_thread().name
    with pytest.raises(FileNotFoundError, match="nowhere"):
        llm.LocalClient(ckpt=tmp_path / "nowhere").chat([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("base_url", ["not-a-url", "ftp://example.com/v1", "http://", "localhost:8000/v1"])
def test_a_base_url_that_is_not_http_is_refused_at_once(base_url):
    with pytest.raises(ValueError, match="is not an http:// or https:// base URL"):
        llm.OpenAIClient("m", base_url=base_url)
    with pytest.raises(ValueError, match="base URL"):
        llm.AnthropicClient("claude-x", base_url=base_url, api_key="k")


def test_a_probe_is_one_short_call_that_fails_fast_and_is_left_out_of_usage(tmp_path):
    with fixture_server(["pong"]) as server:
        client = llm.OpenAIClient("m", base_url=server.url, **FAST)
        client.probe()
        assert server.requests[0]["max_tokens"] == 1 and client.usage == llm.Usage()
        assert client.describe() == {"backend": "openai", "model": "m", "url": f"{server.url}/chat/completions"}
    with fixture_server(statuses=[500] * 10) as server:
        with pytest.raises(llm.LLMError, match="HTTP 500"):
            llm.OpenAIClient("m", base_url=server.url, **FAST).probe()
        assert len(server.requests) == 1 + llm.PROBE_RETRIES   # not MAX_RETRIES: a misconfiguration reports quickly
    corrupt = tmp_path / "model.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(llm.LLMError, match="cannot load the checkpoint .*model.gguf"):
        llm.LocalClient(corrupt).probe()


def test_busy_cores_elsewhere_counts_other_processes_not_this_one(monkeypatch):
    # This process's own work (a model just loaded, say) must not take a thread from decoding; the load average,
    # which counted it, gave one thread on an idle 2-core machine. Fake /proc readings over a 0.5 s window at 100
    # ticks a second: the machine spent 120 busy ticks (user 70, nice 10, system 20, irq 10, softirq 5, steal 5;
    # idle and iowait do not count), this process 45 of them (utime 30 + stime 15), so others kept 1.5 cores busy.
    readings = {"/proc/stat": iter(["cpu  1000 100 500 9000 50 10 10 0 0 0\n",
                                    "cpu  1070 110 520 9100 80 20 15 5 0 0\n"]),
                "/proc/self/stat": iter(["7 (python (x) y) R " + " ".join(["0"] * 10) + " 200 100 0 0\n",
                                         "7 (python (x) y) R " + " ".join(["0"] * 10) + " 230 115 0 0\n"])}
    monkeypatch.setattr(llm, "open", lambda path: io.StringIO(next(readings[path])), raising=False)
    monkeypatch.setattr(llm, "time", types.SimpleNamespace(sleep=lambda s: None, monotonic=iter([10.0, 10.5]).__next__))
    monkeypatch.setattr(llm.os, "sysconf", lambda name: 100)
    assert llm.busy_cores_elsewhere() == pytest.approx(1.5)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc")
def test_busy_cores_elsewhere_reads_this_machine():
    assert 0.0 <= llm.busy_cores_elsewhere(window_s=0.05) <= (os.cpu_count() or 1) + 0.5


def test_local_decoding_gets_its_thread_count_measured_once_or_as_set(tiny_client, monkeypatch):
    assert 1 <= llm.measure_cpu_threads(repeats=2, trials=1) <= (os.cpu_count() or 1)
    resident = tiny_client.resident()
    measured, set_calls = [], []
    monkeypatch.setattr(llm, "_cpu_threads", None)
    monkeypatch.setattr(llm, "measure_cpu_threads", lambda: measured.append(1) or 1)
    monkeypatch.setattr(llm.torch, "set_num_threads", lambda n: set_calls.append((n, threading.current_thread().name)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    load = lambda: (resident.transformer, resident.tokenizer)   # noqa: E731
    llm._Resident(load)
    llm._Resident(load)
    assert measured == [1] and set_calls == [(1, "local-generation")] * 2   # measured once, set on each decoder
    llm.set_cpu_threads(2)
    llm._Resident(load)
    assert measured == [1] and set_calls[-1] == (2, "local-generation")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    llm.set_cpu_threads(None)
    llm._Resident(load)
    assert len(set_calls) == 3   # OMP_NUM_THREADS chose already
    with pytest.raises(ValueError, match=">= 1"):
        llm.set_cpu_threads(0)
