"""A scripted OpenAI- and Anthropic-compatible HTTP server for tests and benchmarks.

    from fixture_server import fixture_server

    with fixture_server(["first reply", "second reply"]) as server:
        client = OpenAIClient("any-model", base_url=server.url)   # server.url = http://127.0.0.1:PORT/v1
        client(messages)                                          # -> "first reply"
        server.requests[0]["messages"]                            # every request body, in arrival order

    fixture_server(lambda messages: "echo: " + messages[-1]["content"])   # a function of the messages
    fixture_server(["ok"], statuses=[(429, {"Retry-After": "1"}), 500])   # errors first, then replies
    fixture_server(["ok"], delay=0.2)                                     # every answer 200 ms late
    fixture_server(raw=(200, "text/html", b"<html>login</html>"))         # not an API at all

Endpoints: POST /v1/chat/completions (OpenAI shape), POST /v1/messages (Anthropic shape), GET
/v1/models. The server listens on 127.0.0.1 on an ephemeral port and answers from a thread per
connection, so concurrent requests are delayed concurrently.

- replies: a list of texts answered in order (a request after the last one gets HTTP 400 "script
  exhausted", which clients do not retry), a single text answered every time, or a function
  messages -> text.
- statuses: answered first, one per request: a status, (status, headers) or (status, headers,
  message); the body is an OpenAI-style error {"error": {"message", "type", "code"}}.
  A reply function that raises is answered with HTTP 400 naming the exception.
- delay: seconds to wait before every answer, errors included.
- raw: (status, content type, body bytes) sent as the answer to every chat request instead of
  any reply or status (a proxy's login page, a reply of the wrong shape).
- Recorded for every request, scripted errors included: .requests (decoded JSON bodies),
  .headers (lower-cased header dicts), .paths and .times (time.monotonic() at arrival).
- Usage counts words, not tokens: prompt_tokens = words in all message contents,
  completion_tokens = words in the reply.
"""
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error"}


def _words(text) -> int:
    return len(str(text).split())


class FixtureServer:
    def __init__(self, replies=("ok",), statuses=(), delay: float = 0.0, model: str = "fixture-model", raw=None):
        self.replies = replies if callable(replies) or isinstance(replies, str) else list(replies)
        self.raw = raw
        self.statuses = [s if isinstance(s, tuple) else (s,) for s in statuses]
        self.delay = delay
        self.model = model
        self.requests, self.headers, self.paths, self.times = [], [], [], []
        self._lock = threading.Lock()
        self._next_reply = 0
        self._httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self._httpd.fixture = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        # A short poll interval makes shutdown (and so each `with` block) end quickly.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def start(self):
        self._thread.start()
        return self

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def _record(self, path, headers, body):
        """Record a request and decide its answer: ("status", (code, headers, message)) or ("text", reply)."""
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in headers.items()})
            self.paths.append(path)
            self.times.append(time.monotonic())
            if self.raw is not None:
                return "raw", self.raw
            if self.statuses:
                code, *rest = self.statuses.pop(0)
                extra = rest[0] if rest else {}
                message = rest[1] if len(rest) > 1 else f"scripted HTTP {code}"
                return "status", (code, extra, message)
            if callable(self.replies):
                return "call", self.replies
            if isinstance(self.replies, str):
                return "text", self.replies
            if self._next_reply >= len(self.replies):
                return "status", (400, {}, f"fixture script exhausted after {len(self.replies)} replies")
            self._next_reply += 1
            return "text", self.replies[self._next_reply - 1]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that timed out and hung up is expected in tests; nothing to report


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real API servers do

    def log_message(self, *args):
        pass

    def _send_json(self, status: int, payload: dict, headers: dict | None = None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        fixture = self.server.fixture
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": fixture.model, "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found_error"}})

    def do_POST(self):
        fixture = self.server.fixture
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path not in ("/v1/chat/completions", "/v1/messages"):
            return self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found_error"}})
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        kind, answer = fixture._record(self.path, dict(self.headers), body)
        if fixture.delay:
            time.sleep(fixture.delay)
        if kind == "raw":
            status, content_type, data = answer
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return self.wfile.write(data)
        if kind == "status":
            code, headers, message = answer
            error = {"message": message, "type": ERROR_TYPES.get(code, "server_error"), "code": code}
            return self._send_json(code, {"error": error}, headers)
        messages = body.get("messages") or []
        try:
            text = answer(messages) if kind == "call" else answer
        except Exception as e:  # a bug in the test's reply function: fail fast (400 is not retried)
            return self._send_json(400, {"error": {"message": f"fixture reply function raised {e!r}",
                                                   "type": "invalid_request_error"}})
        prompt_words = sum(_words(m.get("content", "")) for m in messages) + _words(body.get("system", ""))
        if self.path == "/v1/chat/completions":
            self._send_json(200, {
                "id": "chatcmpl-fixture", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", fixture.model),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_words, "completion_tokens": _words(text),
                          "total_tokens": prompt_words + _words(text)}})
        else:
            self._send_json(200, {
                "id": "msg_fixture", "type": "message", "role": "assistant",
                "model": body.get("model", fixture.model), "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": prompt_words, "output_tokens": _words(text)}})


@contextmanager
def fixture_server(replies=("ok",), *, statuses=(), delay: float = 0.0, model: str = "fixture-model", raw=None):
    """A running FixtureServer (see the module docstring); shut down on exit."""
    server = FixtureServer(replies, statuses, delay, model, raw).start()
    try:
        yield server
    finally:
        server.close()
