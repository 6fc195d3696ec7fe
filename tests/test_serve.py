"""serve.py: on the embedded model the HTTP path gives the same text as the in-process client (slow); with scripted
clients, what makes it safe to expose (keys, Host and content-type checks, timeouts, bounded workers, cancelling)."""
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

import llm
import serve
from serve import ChatServer

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.mark.slow
def test_models_endpoint(served):
    server, _ = served
    assert server.url.startswith("http://127.0.0.1:")
    models = requests.get(f"{server.url}/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["smollm2-test"]


@pytest.mark.slow
def test_chat_over_http_equals_local_greedy_text(served):
    server, expected = served
    for stream in (False, True):
        client = llm.OpenAIClient("smollm2-test", base_url=server.url, max_tokens=8, stream=stream)
        reply = client.chat(MESSAGES)
        assert (reply.text, reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == \
            (expected.text, expected.prompt_tokens, expected.completion_tokens, expected.finish_reason)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_invalid_json_and_too_long_prompt_get_400(served):
    server, _ = served
    response = requests.post(f"{server.url}/chat/completions", data=b"{not json", timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    too_long = [{"role": "user", "content": "7 " * 9000}]  # digits are single tokens: ~18000 > 8192
    response = requests.post(f"{server.url}/chat/completions", json={"messages": too_long}, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    client = llm.OpenAIClient("smollm2-test", base_url=server.url, backoff_base=0.01)
    with pytest.raises(llm.LLMError, match="400.*context"):
        client.chat(too_long)
    assert client.usage.retries == 0


@pytest.mark.slow
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


@pytest.mark.slow
def test_help():
    result = subprocess.run([sys.executable, "serve.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert all(flag in result.stdout for flag in ("--ckpt", "--host", "--port", "--model-name"))


# ---------------------------------------------------------------------------------------------------------------
# Safe to expose (scripted clients: no model needed)

class EchoClient:
    """Answers with the last message, after `seconds`; streams it in one piece."""
    model = "echo"

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds

    def chat(self, messages, on_text=None, **overrides):
        time.sleep(self.seconds)
        text = messages[-1]["content"]
        if on_text is not None:
            on_text(text)
        return llm.Reply(text, 1, 1, self.seconds, self.model, "stop")


def post(url: str, **kwargs) -> requests.Response:
    return requests.post(f"{url}/chat/completions", json={"messages": MESSAGES}, timeout=30, **kwargs)


def test_a_key_is_required_when_set_and_when_binding_beyond_loopback(capsys):
    with ChatServer(EchoClient(), port=0, api_key="s3cret") as server:
        assert post(server.url).status_code == 401
        assert post(server.url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert requests.get(f"{server.url}/models", timeout=10).status_code == 401
        answer = post(server.url, headers={"Authorization": "Bearer s3cret"})
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == MESSAGES[0]["content"]
        client = llm.OpenAIClient("echo", base_url=server.url, api_key="s3cret")
        assert client(MESSAGES) == MESSAGES[0]["content"]
    with pytest.raises(SystemExit) as stop:
        serve.main(["--host", "0.0.0.0", "--port", "0"])
    assert stop.value.code == 2 and "--api-key" in capsys.readouterr().err


def test_a_foreign_host_or_origin_gets_403_and_a_non_json_body_415():
    with ChatServer(EchoClient(), port=0) as server:
        port = server.url.split(":")[2].split("/")[0]
        for headers in ({"Host": "evil.example"}, {"Host": f"rebound.example:{port}"},
                        {"Origin": "http://evil.example"}, {"Host": "[::1"}):
            response = post(server.url, headers=headers)
            assert response.status_code == 403 and response.json()["error"]["type"] == "permission_error"
        assert post(server.url, headers={"Host": f"localhost:{port}", "Origin": f"http://127.0.0.1:{port}"}).ok
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            response = requests.post(f"{server.url}/chat/completions", data=json.dumps({"messages": MESSAGES}),
                                     headers=headers, timeout=10)
            assert response.status_code == 415, content_type


def raw_request(url: str, data: bytes, timeout: float = 10) -> bytes:
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(data)
        return connection.recv(65536)


def test_a_bad_content_length_and_json_nested_too_deep_get_400():
    with ChatServer(EchoClient(), port=0) as server:
        for length in ("abc", "-5", "1e3", "²"):
            answer = raw_request(server.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 b"Content-Type: application/json\r\nContent-Length: " + length.encode() + b"\r\n\r\n{}")
            assert answer.startswith(b"HTTP/1.1 400") and b"Content-Length" in answer, answer[:200]
        response = requests.post(f"{server.url}/chat/completions", data=b"[" * 100_000, timeout=10,
                                 headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and "nests too deep" in response.json()["error"]["message"]


def test_an_idle_connection_is_closed_after_the_timeout():
    with ChatServer(EchoClient(), port=0, timeout=0.5) as server:
        host, port = server.url.split("//")[1].split("/")[0].split(":")
        with socket.create_connection((host, int(port)), timeout=20) as idle:
            started = time.monotonic()
            assert idle.recv(1) == b""   # closed by the server, long before our own 20 s
            assert time.monotonic() - started < 15
        assert post(server.url).ok   # and the worker it held is free again


def test_a_burst_of_32_connections_is_answered_by_few_workers():
    with ChatServer(EchoClient(seconds=0.05), port=0, workers=4) as server:
        statuses, threads = [], []
        for _ in range(32):
            thread = threading.Thread(target=lambda: statuses.append(post(server.url).status_code))
            threads.append(thread)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert statuses == [200] * 32


class EndlessClient:
    """Generates a piece every 10 ms for up to 60 s, unless on_text raises (its client hung up)."""
    model = "endless"

    def __init__(self):
        self.started, self.cancelled = threading.Event(), threading.Event()

    def chat(self, messages, on_text=None, **overrides):
        self.started.set()
        for _ in range(6000):
            try:
                on_text("x")
            except ConnectionError:
                self.cancelled.set()
                raise
            time.sleep(0.01)
        return llm.Reply("x" * 6000, 1, 6000, 60.0, self.model, "stop")


def test_a_vanished_non_streaming_client_stops_its_generation():
    client = EndlessClient()
    with ChatServer(client, port=0) as server:
        host, port = server.url.split("//")[1].split("/")[0].split(":")
        body = json.dumps({"messages": MESSAGES}).encode()
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                               b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert client.started.wait(10)
        assert client.cancelled.wait(10)


@pytest.mark.parametrize("argv, message", [
    (["--max-tokens", "-5"], "--max-tokens"),
    (["--temperature", "-3"], "--temperature"),
    (["--top-p", "7"], "--top-p"),
    (["--host", "no.such.host.invalid", "--api-key", "k"], "cannot listen on no.such.host.invalid"),
    (["--port", "{busy}"], "cannot listen on 127.0.0.1:"),
])
def test_bad_server_settings_end_with_one_error_line(capsys, argv, message):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        argv = [a.replace("{busy}", str(busy.getsockname()[1])) for a in argv]
        with pytest.raises(SystemExit) as stop:
            serve.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if "error: " in line] == [err.splitlines()[-1]]
    assert message in err.splitlines()[-1]
