"""An OpenAI-compatible HTTP server over a checkpoint: serves a trained CodeSteerLLM (or
the embedded SmolLM2-135M) to any OpenAI client, and lets tests exercise the HTTP path against a
real model.

    python serve.py                                   # embedded SmolLM2-135M at http://127.0.0.1:8000/v1
    python serve.py --ckpt qwen2.5-coder-0.5b         # an embedded model by name
    python serve.py --ckpt runs/dpo/final --model-name codesteer --port 8001
    CODESTEER_API_KEY=... python serve.py --host 0.0.0.0   # reachable from other machines: a key is required
    python serve.py --help

    curl http://127.0.0.1:8000/v1/models
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32}'
    python steer.py --task game24 --steer-base-url http://127.0.0.1:8000/v1 --steer-model codesteer

Endpoints: GET /v1/models; POST /v1/chat/completions with temperature, top_p, top_k, max_tokens
(or max_completion_tokens), seed, stop, stream and stream_options.include_usage; other OpenAI
fields are accepted and ignored, and any "model" name is answered by the one resident model.
Fields a request omits take the server's defaults (--temperature etc.; greedy by default).
Bad requests (no messages, unknown roles, roles out of order, a prompt longer than the context,
an unreadable Content-Length, JSON nested too deep) get HTTP 400 with an OpenAI-style error body;
unknown paths 404.

Safe to expose: with --api-key (or $CODESTEER_API_KEY), required unless the host is loopback,
every request must carry `Authorization: Bearer KEY` (else 401). A request whose Host or Origin
names another machine than the bound one gets 403 (a web page cannot drive the server, nor DNS
rebinding read it), and a POST that is not Content-Type application/json 415 (so no browser can
send one without a CORS preflight, which is never granted). At most --workers connections are
served at once (the rest wait in a listen backlog of 128), an idle or stalled connection is
closed after --timeout seconds, and a non-streamed generation ends when its client hangs up.

One model is resident; requests that arrive together are generated as one batch (LocalClient's
batching). A streamed reply is sent as server-sent events while it is generated, a piece per
token (less where a token ends inside a character or may start a stop string), ending with
`data: [DONE]`. Its headers go out with the first piece, so a request that fails before any
text still gets a plain error status. Pieces are queued for the socket, so a slow reader never
holds up the batch its chat is decoded in, and a reader that hangs up ends its chat.
"""
import argparse
import hmac
import ipaddress
import json
import os
import queue
import select
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import torch

from llm import DEFAULT_MAX_TOKENS, ContextLengthError, LocalClient, set_cpu_threads

ROLES = ("system", "user", "assistant")
MAX_BODY_BYTES = 32 * 2**20
MAX_STOP_STRINGS = 4
IDLE_TIMEOUT_S = 30.0   # a connection that sends nothing (or reads nothing) this long is closed
MAX_WORKERS = 32        # connections served at once
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARD_HOSTS = {"", "0.0.0.0", "::"}
API_KEY_ENV = "CODESTEER_API_KEY"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


def _text_of(content, index: int) -> str:
    """Message content as a string: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise BadRequest(f"messages[{index}].content must be a string or a list of text parts",
                     f"messages[{index}].content")


def _number(body: dict, name: str, low: float, high: float, integer: bool = False):
    value = body.get(name)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise BadRequest(f"{name} must be {kind} in [{low}, {high}], got {value!r}", name)
    return value


def parse_chat_request(body) -> tuple[list[dict], dict, bool, bool]:
    """(messages, sampling overrides, stream, include_usage) of a chat-completions body."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", "messages")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            role = message.get("role") if isinstance(message, dict) else None
            raise BadRequest(f"messages[{i}].role must be one of {list(ROLES)}, got {role!r}", f"messages[{i}].role")
        clean.append({"role": message["role"], "content": _text_of(message.get("content"), i)})
    if body.get("n") not in (None, 1):
        raise BadRequest("only n=1 is supported", "n")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > MAX_STOP_STRINGS
                             or not all(isinstance(s, str) and s for s in stop)):
        raise BadRequest(f"stop must be a string or a list of at most {MAX_STOP_STRINGS} non-empty strings", "stop")
    max_tokens = _number(body, "max_tokens", 1, 10**9, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_completion_tokens", 1, 10**9, integer=True)
    top_k = _number(body, "top_k", -1, 10**9, integer=True)
    overrides = {"temperature": _number(body, "temperature", 0, 2), "top_p": _number(body, "top_p", 0, 1),
                 "top_k": None if top_k is None else max(top_k, 0),  # vLLM: -1 means no top-k
                 "max_tokens": max_tokens, "seed": _number(body, "seed", -2**63, 2**64 - 1, integer=True),
                 "stop": stop}
    if overrides["top_p"] == 0:
        raise BadRequest("top_p must be > 0", "top_p")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean", "stream")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return clean, {k: v for k, v in overrides.items() if v is not None}, stream, include_usage


def _usage(reply) -> dict:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


class _EventStream:
    """The server-sent events of one streamed completion, written as the text comes."""

    def __init__(self, handler: BaseHTTPRequestHandler, head: dict):
        self.handler = handler
        self.chunk = {**head, "object": "chat.completion.chunk"}
        self.started = False

    def __call__(self, piece: str):
        self.send_delta({"content": piece})

    def send_delta(self, delta: dict, finish_reason: str | None = None):
        self.send({**self.chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

    def send(self, event: dict):
        if not self.started:
            self.started = True
            handler = self.handler
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Cache-Control", "no-cache")
            handler.send_header("Connection", "close")  # no Content-Length: the end of the stream ends the body
            handler.end_headers()
            handler.close_connection = True
            self.send_delta({"role": "assistant", "content": ""})
        self.handler.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.handler.wfile.flush()

    def close(self, finish_reason: str, usage: dict | None):
        self.send_delta({}, finish_reason)
        if usage is not None:
            self.send({**self.chunk, "choices": [], "usage": usage})
        self.handler.wfile.write(b"data: [DONE]\n\n")
        self.handler.wfile.flush()


def _host_name(value: str) -> str | None:
    """The host name in a Host header ("name:port", "[v6]:port") or an Origin ("scheme://name:port")."""
    try:
        return urlsplit(value if "//" in value else f"//{value}").hostname
    except ValueError:   # an unbalanced "[" and the like: no name of ours
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        self.timeout = self.server.chat_server.timeout   # applied to the socket by setup
        super().setup()

    def log_message(self, format, *args):
        if self.server.chat_server.verbose:
            super().log_message(format, *args)

    def _refused(self) -> bool:
        """Send the error for a request from where none may come (a foreign Host or Origin, a missing or wrong
        key) and say so."""
        server = self.server.chat_server
        for header in ("Host", "Origin"):
            value = self.headers.get(header)
            if value is not None and not server.allows_host(_host_name(value)):
                self.close_connection = True
                self._send_error(403, f"{header} {value!r} is not this server", "permission_error")
                return True
        if server.api_key is not None:
            offered = self.headers.get("Authorization", "")
            if not hmac.compare_digest(offered.encode(), f"Bearer {server.api_key}".encode()):
                self._send_error(401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error")
                return True
        return False

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering a body that cannot be read (the connection then closes)."""
        self.close_connection = True   # unless the body is read in full below
        text = self.headers.get("Content-Length") or "0"
        if not (text.isascii() and text.isdigit()):
            self._send_error(400, f"Content-Length must be a byte count, got {text!r}", "invalid_request_error")
            return None
        if int(text) > MAX_BODY_BYTES:   # the body is left unread
            self._send_error(413, f"request body over {MAX_BODY_BYTES} bytes", "invalid_request_error")
            return None
        raw = self.rfile.read(int(text))
        self.close_connection = len(raw) < int(text)
        return None if self.close_connection else raw

    def _client_gone(self) -> bool:
        """Whether the client closed its side while its reply is generated: a readable socket that yields no bytes."""
        try:   # poll first: a socket with a timeout waits for data in recv, whatever its flags
            poller = select.poll()
            poller.register(self.connection, select.POLLIN)
            return bool(poller.poll(0)) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _unless_gone(self, piece: str):
        if self._client_gone():
            raise ConnectionError("the client hung up")   # ends this chat's generation

    def _send_json(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, kind: str, param=None, code=None):
        self._send_json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

    def do_GET(self):
        server = self.server.chat_server
        if self._refused():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "codesteer"}]})
        else:
            self._send_error(404, f"unknown path {self.path}", "not_found_error")

    def do_POST(self):
        if self._refused():
            return
        if self.headers.get_content_type() != "application/json":
            self.close_connection = True   # the body is left unread
            return self._send_error(415, "the body must be JSON, sent as Content-Type: application/json",
                                    "invalid_request_error")
        raw = self._read_body()
        if raw is None:
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send_error(404, f"unknown path {self.path}", "not_found_error")
        server = self.server.chat_server
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": server.model_name}
        try:
            try:
                body = json.loads(raw or b"null")
            except RecursionError:
                raise BadRequest("the JSON body nests too deep") from None
            messages, overrides, stream, include_usage = parse_chat_request(body)
            if stream:
                return self._stream(server.client, messages, overrides, include_usage, head)
            reply = server.client.chat(messages, on_text=self._unless_gone, **overrides)
        except ConnectionError:   # the client hung up: nobody to answer
            self.close_connection = True
            return
        except Exception as e:
            return self._send_exception(e)
        self._send_json(200, {**head, "object": "chat.completion", "usage": _usage(reply), "choices": [
            {"index": 0, "message": {"role": "assistant", "content": reply.text},
             "finish_reason": reply.finish_reason}]})

    def _stream(self, client, messages, overrides, include_usage: bool, head: dict):
        """Generate in a thread of its own and write the pieces from this one: the chat is
        decoded in a batch with others, and a slow reader must not hold that batch up."""
        pieces, hung_up = queue.Queue(), threading.Event()  # text pieces, then the Reply or the error

        def forward(piece):
            if hung_up.is_set():
                raise ConnectionError("the client hung up")  # ends this chat's generation
            pieces.put(piece)

        def run():
            try:
                pieces.put(client.chat(messages, on_text=forward, **overrides))
            except Exception as e:
                pieces.put(e)
        threading.Thread(target=run, name="chat", daemon=True).start()
        events = _EventStream(self, head)
        try:
            while isinstance(item := pieces.get(), str):
                events(item)
            if not isinstance(item, Exception):
                events.close(item.finish_reason, _usage(item) if include_usage else None)
            elif events.started:  # too late for a status: end the stream with the error
                events.send({"error": {"message": f"{type(item).__name__}: {item}", "type": "server_error"}})
            else:
                self._send_exception(item)
        except OSError:  # the client hung up or stopped reading
            hung_up.set()
            self.close_connection = True

    def _send_exception(self, e: Exception):
        if isinstance(e, ContextLengthError):
            self._send_error(400, str(e), "invalid_request_error", "messages", "context_length_exceeded")
        elif isinstance(e, BadRequest):
            self._send_error(400, str(e), "invalid_request_error", e.param, e.code)
        elif isinstance(e, ValueError):  # invalid JSON, or a conversation the chat template rejects
            self._send_error(400, str(e), "invalid_request_error")
        else:
            self._send_error(500, f"{type(e).__name__}: {e}", "server_error")


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most `workers` at once: the accept loop waits for a free one, and connections
    that come meanwhile wait in the listen backlog (a burst beyond a backlog of 5 was reset)."""
    request_queue_size = 128

    def __init__(self, address, handler, workers: int):
        self._free_workers = threading.BoundedSemaphore(workers)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        self._free_workers.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._free_workers.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._free_workers.release()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up or timing out is not our error
            super().handle_error(request, client_address)


class ChatServer:
    """The HTTP server around one LocalClient. `with ChatServer(client, port=0) as server:` runs it
    in a background thread; `server.url` is the base URL for OpenAIClient (…/v1)."""

    def __init__(self, client: LocalClient, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False,
                 api_key: str | None = None, timeout: float = IDLE_TIMEOUT_S, workers: int = MAX_WORKERS):
        self.client = client
        self.model_name = client.model
        self.verbose = verbose
        self.api_key, self.timeout = api_key, timeout
        self.created = int(time.time())
        self._httpd = _Server((host, port), _Handler, workers)
        self._httpd.chat_server = self
        bound_host, bound_port = self._httpd.server_address[:2]
        self.host_names = LOOPBACK_NAMES | {host.lower(), bound_host.lower()}
        self.any_host = host in WILDCARD_HOSTS   # every name of this machine is its own: the key guards it
        self.url = f"http://{bound_host}:{bound_port}/v1"
        self._thread = None

    def allows_host(self, name: str | None) -> bool:
        """Whether a Host or Origin names this server (a page elsewhere, or a rebound DNS name, does not)."""
        return self.any_host or (name or "").lower() in self.host_names

    def serve_forever(self, poll_interval: float = 0.1):
        self._httpd.serve_forever(poll_interval)

    def start(self) -> "ChatServer":
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self):
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve a checkpoint over an OpenAI-compatible HTTP API.")
    parser.add_argument("--ckpt", default="embedded",
                        help="HF checkpoint directory, .gguf file or embedded model name (smollm2-135m, "
                             "qwen2.5-coder-0.5b, qwen2.5-coder-1.5b; default: embedded, the SmolLM2-135M)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--model-name", help="the name /v1/models reports (default: from the checkpoint)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--temperature", type=float, default=0.0, help="default when a request sets none (0: greedy)")
    parser.add_argument("--top-p", type=float, default=1.0, help="default when a request sets none")
    parser.add_argument("--top-k", type=int, default=0, help="default when a request sets none (0: off)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help="default when a request sets none; always cut to what fits the context")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"the Bearer token every request must carry (default ${API_KEY_ENV}); required unless "
                             "--host is loopback")
    parser.add_argument("--timeout", type=float, default=IDLE_TIMEOUT_S,
                        help=f"seconds an idle or stalled connection is kept (default {IDLE_TIMEOUT_S:.0f})")
    parser.add_argument("--workers", type=int, default=MAX_WORKERS,
                        help=f"connections served at once (default {MAX_WORKERS})")
    parser.add_argument("--threads", type=int, help="torch CPU threads for decoding (default: measured at load)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    # The server's defaults obey the rules of a request's fields, checked now rather than blamed on each client.
    defaults = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, max_tokens=args.max_tokens)
    try:
        parse_chat_request({"messages": [{"role": "user", "content": "-"}], **defaults})
    except BadRequest as e:
        parser.error(f"--{e.param.replace('_', '-')}: {e}")
    if not 0 <= args.port <= 65535 or not args.timeout > 0 or args.workers < 1 or (args.threads or 1) < 1:
        parser.error("--port must be in 0..65535, --timeout > 0, --workers and --threads >= 1")
    if not is_loopback(args.host) and not args.api_key:
        parser.error(f"--host {args.host} lets other machines in: set --api-key or ${API_KEY_ENV}")

    set_cpu_threads(args.threads)
    client = LocalClient(args.ckpt, name=args.model_name, device=args.device,
                         dtype=getattr(torch, args.dtype) if args.dtype else None, temperature=args.temperature,
                         top_p=args.top_p, top_k=args.top_k, max_tokens=args.max_tokens)
    try:   # bound before the model loads, so that a port in use is reported at once
        server = ChatServer(client, args.host, args.port, verbose=not args.quiet, api_key=args.api_key,
                            timeout=args.timeout, workers=args.workers)
    except OSError as e:
        parser.exit(2, f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}\n")
    print(f"loading {args.ckpt} ...", file=sys.stderr)
    client.resident()
    print(f"serving {server.model_name} at {server.url} (Ctrl-C to stop)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
