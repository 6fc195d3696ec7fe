"""serve.py on the embedded model: the HTTP path gives the same text as the in-process client."""
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

import llm
from serve import ChatServer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # the real embedded model

MESSAGES = [{"role": "user", "content": "Name a prime number."}]


@pytest.fixture(scope="module")
def served(embedded):
    """A server on an ephemeral port over the session's embedded model, and the reference: the
    greedy 8-token reply of an independent in-process LocalClient over the same weights."""
    transformer, tokenizer = embedded
    served_client = llm.LocalClient(transformer=transformer, tokenizer=tokenizer, name="smollm2-test", max_tokens=8)
    expected = llm.LocalClient(transformer=transformer, tokenizer=tokenizer).chat(MESSAGES, max_tokens=8)
    assert expected.text.strip()
    with ChatServer(served_client, port=0) as server:
        yield server, expected


def test_models_endpoint(served):
    server, _ = served
    assert server.url.startswith("http://127.0.0.1:")
    models = requests.get(f"{server.url}/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["smollm2-test"]


def test_chat_over_http_equals_local_greedy_text(served):
    server, expected = served
    for stream in (False, True):
        client = llm.OpenAIClient("smollm2-test", base_url=server.url, max_tokens=8, stream=stream)
        reply = client.chat(MESSAGES)
        assert (reply.text, reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == \
            (expected.text, expected.prompt_tokens, expected.completion_tokens, expected.finish_reason)


def test_stream_wire_format(served):
    server, expected = served
    body = {"model": "whatever", "messages": MESSAGES, "max_tokens": 8, "stream": True,
            "stream_options": {"include_usage": True}}
    with requests.post(f"{server.url}/chat/completions", json=body, stream=True, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        raw = response.text
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "smollm2-test" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    with_choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert "".join(c["delta"].get("content", "") for c in with_choices) == expected.text
    assert len(with_choices) > 2  # sent in pieces, not as one block
    assert with_choices[-1]["finish_reason"] == expected.finish_reason
    assert chunks[-1]["usage"]["completion_tokens"] == expected.completion_tokens


def test_stream_is_sent_while_generating_and_a_hang_up_ends_generation(served):
    server, _ = served
    failures = server.client.usage.failures
    long_reply = [{"role": "user", "content": "List every country in the world with its capital."}]
    body = {"messages": long_reply, "max_tokens": 2000, "stream": True}  # runs past 600 tokens
    with requests.post(f"{server.url}/chat/completions", json=body, stream=True, timeout=60) as response:
        lines = response.iter_lines(decode_unicode=True)
        first = json.loads(next(line for line in lines if line.startswith("data: "))[len("data: "):])
        assert first["choices"][0]["delta"]["role"] == "assistant"
    # The client hung up after the first event: the server's next writes fail and generation
    # ends with that error, recorded as a failed call (a reply generated before sending would
    # be a successful call, its writes failing only afterwards).
    deadline = time.monotonic() + 60
    while server.client.usage.failures == failures and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.client.usage.failures == failures + 1


def test_max_tokens_and_stop_are_honoured(served):
    server, expected = served
    client = llm.OpenAIClient("smollm2-test", base_url=server.url)
    short = client.chat(MESSAGES, max_tokens=3)
    assert (short.completion_tokens, short.finish_reason) == (3, "length")
    assert expected.text.startswith(short.text)
    stop = expected.text.strip().split()[-1]
    stopped = client.chat(MESSAGES, max_tokens=8, stop=stop)
    assert stopped.text == expected.text[:expected.text.index(stop)] and stopped.finish_reason == "stop"
    response = requests.post(f"{server.url}/chat/completions", timeout=60,
                             json={"messages": MESSAGES, "max_tokens": 2}).json()
    assert response["usage"] == {"prompt_tokens": expected.prompt_tokens, "completion_tokens": 2,
                                 "total_tokens": expected.prompt_tokens + 2}


@pytest.mark.parametrize("body, param", [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, None),  # the template needs user turns
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, None),
    ({"messages": MESSAGES, "temperature": "hot"}, "temperature"),
    ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
    ({"messages": MESSAGES, "n": 2}, "n"),
    ({"messages": MESSAGES, "stop": [1]}, "stop"),
])
def test_bad_requests_get_400(served, body, param):
    server, _ = served
    response = requests.post(f"{server.url}/chat/completions", json=body, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"] and error["param"] == param


def test_invalid_json_and_too_long_prompt_get_400(served):
    server, _ = served
    response = requests.post(f"{server.url}/chat/completions", data=b"{not json", timeout=10)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    too_long = [{"role": "user", "content": "7 " * 9000}]  # digits are single tokens: ~18000 > 8192
    response = requests.post(f"{server.url}/chat/completions", json={"messages": too_long}, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    client = llm.OpenAIClient("smollm2-test", base_url=server.url, backoff_base=0.01)
    with pytest.raises(llm.LLMError, match="400.*context"):
        client.chat(too_long)
    assert client.usage.retries == 0


def test_unknown_paths_get_404(served):
    server, _ = served
    assert requests.get(f"{server.url}/nothing", timeout=10).status_code == 404
    response = requests.post(f"{server.url}/completions", json={"prompt": "x"}, timeout=10)
    assert response.status_code == 404 and "error" in response.json()


class FailingClient:
    """Sends some text, then fails, as a model that breaks mid-generation would."""
    model = "failing"

    def chat(self, messages, on_text=None, **overrides):
        if on_text is not None:
            on_text("partial ")
        raise RuntimeError("the accelerator fell over")


def test_a_failure_mid_stream_ends_the_stream_with_an_error():
    with ChatServer(FailingClient(), port=0) as server:
        response = requests.post(f"{server.url}/chat/completions", timeout=10,
                                 json={"messages": MESSAGES, "stream": True})
        assert response.status_code == 200  # the headers went out with the first piece
        events = [json.loads(e[len("data: "):]) for e in response.text.split("\n\n") if e]
        assert events[1]["choices"][0]["delta"]["content"] == "partial "
        assert "fell over" in events[-1]["error"]["message"]
        client = llm.OpenAIClient("failing", base_url=server.url, stream=True, max_retries=0)
        with pytest.raises(llm.LLMError, match="fell over"):
            client.chat(MESSAGES)
        response = requests.post(f"{server.url}/chat/completions", json={"messages": MESSAGES}, timeout=10)
        assert response.status_code == 500 and "fell over" in response.json()["error"]["message"]


class ChattyClient:
    """Streams 10 MB in 5,000 pieces, far more than socket buffers hold."""
    model = "chatty"

    def __init__(self):
        self.finished = threading.Event()

    def chat(self, messages, on_text=None, **overrides):
        for _ in range(5000):
            on_text("x" * 2000)
        self.finished.set()
        return llm.Reply("x" * 10_000_000, 1, 5000, 0.0, self.model, "stop")


def test_a_reader_that_does_not_read_never_holds_up_generation():
    # Generation hands pieces over without waiting for the socket: with a local model, the
    # chat is decoded in one batch with others, which a stalled reader must not stop.
    client = ChattyClient()
    with ChatServer(client, port=0) as server:
        body = {"messages": MESSAGES, "stream": True}
        with requests.post(f"{server.url}/chat/completions", json=body, stream=True, timeout=60) as response:
            assert response.status_code == 200
            assert client.finished.wait(30)  # while nothing has been read past the headers


def test_help():
    result = subprocess.run([sys.executable, "serve.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert all(flag in result.stdout for flag in ("--ckpt", "--host", "--port", "--model-name"))
