"""The LLM access layer (spec A.7): one small interface over three backends.

    client = make_client("gpt-4o")                 # OpenAI, vLLM, llama.cpp, Ollama, serve.py ...
    reply = client.chat(messages, temperature=0)   # Reply(text, prompt_tokens, completion_tokens, ...)
    text = client(messages)                        # just the text: usable as checkers' `chat`
    client.usage                                   # Usage(calls, prompt_tokens, completion_tokens, ...)

Backends:
- OpenAIClient: raw HTTP to any OpenAI-compatible `{base_url}/chat/completions`.
- AnthropicClient: raw HTTP to the Messages API, the system prompt passed separately.
- LocalClient: a checkpoint (HF directory, .gguf or an embedded model by name) run
  in-process, loaded once and shared by every LocalClient of the same checkpoint.

make_client picks the backend; the rule is in its docstring. The HTTP clients retry connection
errors, timeouts and HTTP 408/409/429/5xx with exponential backoff and full jitter, honouring
Retry-After; any other 4xx fails at once with an LLMError that names the endpoint, the model,
the status and the server's message, and never the key. Every client is safe to call from many
threads; usage totals are kept under a lock. `client.probe()` is one cheap call that fails
fast when a client cannot work at all (wrong URL, no server, a corrupt checkpoint), and
`client.describe()` says what answers (backend, model, URL or checkpoint with its digest).

Local decoding on the CPU uses the torch thread count that measured fastest when the model
was loaded (a core that is busy elsewhere makes the default of one thread per core several
times slower); set_cpu_threads(n) or OMP_NUM_THREADS chooses it instead.

Tests (CPU, a few seconds plus loading the embedded model once):
    python -m pytest tests/test_llm.py tests/test_serve.py
"""
import copy
import email.utils
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import requests
import torch

from checkpoints import checkpoint_digest, load_model, load_tokenizer
from embedded import embedded_name, is_embedded, resolve_checkpoint
from generate import generate, TextStream
from model import linear, onednn_bf16_works, Transformer
from tokenizer import ChatTokenizer

# Spec A.1: TaskLLM and helper-LLM sampling.
DEFAULT_MAX_TOKENS = 2000
OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com/v1"
ANTHROPIC_VERSION = "2023-06-01"

# Retries. The original tried 25 times 1 s apart; we back off exponentially with full jitter.
MAX_RETRIES = 6
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
MAX_RETRY_AFTER_S = 300.0  # a server's Retry-After is honoured up to this, whatever backoff_cap is
REQUEST_TIMEOUT_S = 600.0
# What a role runs when it has no key and no base URL: the smallest embedded model that really
# solves tasks by writing code (SmolLM2-135M, "embedded", serves tests). Chosen by measurement:
# see BENCHMARKS.md.
DEMO_MODEL = "qwen2.5-coder-0.5b"
RETRY_STATUSES = {408, 409, 429}  # and every 5xx
PROBE_RETRIES = 1                 # a probe tries twice at most: a misconfiguration must not take minutes to report
PROBE_MESSAGES = [{"role": "user", "content": "Reply with one word."}]

# Models that take no sampling parameters (spec A.7: o1-family, DeepSeek-R1), recognised by the
# prefix of the name after any "provider/" part. gpt-5 rejects temperature and max_tokens too.
REASONING_MODEL_PREFIXES = ("o1", "o3", "o4", "gpt-5", "deepseek-reasoner")

# What chat(messages, **overrides) may override; None means "the client's default".
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_tokens", "seed", "stop")


class LLMError(RuntimeError):
    """A request that failed for good. `status` is the HTTP status (None for connection errors
    and local failures)."""

    def __init__(self, message: str, *, url: str | None = None, model: str | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.url, self.model, self.status = url, model, status


class ContextLengthError(LLMError, ValueError):
    """The prompt alone does not fit the local model's context."""


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float          # wall time of the whole call, retries included
    model: str
    finish_reason: str      # "stop" or "length" (other values as the server sent them)


@dataclass(frozen=True)
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    retries: int = 0
    failures: int = 0


class LLMClient:
    """chat(messages, **overrides) -> Reply and client(messages) -> str, with usage totals.

    messages are OpenAI-style [{"role": "system"|"user"|"assistant", "content": str}, ...].
    chat(..., on_text=f) also hands the reply's text to f in pieces that add up to Reply.text:
    token by token from LocalClient, in one piece from the HTTP clients (a streamed HTTP reply
    may be retried from the start, so its pieces are not passed on as they come).
    Subclasses set `self.model` (the name replies report) and implement `_complete`."""

    backend = "?"

    def __init__(self, model: str, *, temperature=0.0, top_p=1.0, top_k=None,
                 max_tokens=DEFAULT_MAX_TOKENS, seed=None, stop=None):
        self.model = model
        self.defaults = dict(temperature=temperature, top_p=top_p, top_k=top_k,
                             max_tokens=max_tokens, seed=seed, stop=stop)
        self.fallback_reason: str | None = None  # set by make_client when it fell back to the embedded model
        self._usage = Usage()
        self._usage_lock = threading.Lock()

    def chat(self, messages: list[dict], on_text: Callable[[str], None] | None = None, **overrides) -> Reply:
        unknown = set(overrides) - set(SAMPLING_KEYS)
        if unknown:
            raise TypeError(f"unknown sampling parameters {sorted(unknown)}; allowed: {SAMPLING_KEYS}")
        params = dict(self.defaults)
        params.update({k: v for k, v in overrides.items() if v is not None})
        start = time.perf_counter()
        try:
            text, prompt_tokens, completion_tokens, finish_reason = self._complete(messages, params, on_text)
        except Exception:
            self._record(Usage(failures=1, seconds=time.perf_counter() - start))
            raise
        seconds = time.perf_counter() - start
        self._record(Usage(calls=1, prompt_tokens=prompt_tokens,
                           completion_tokens=completion_tokens, seconds=seconds))
        return Reply(text, prompt_tokens, completion_tokens, seconds, self.model, finish_reason)

    def __call__(self, messages: list[dict]) -> str:
        return self.chat(messages).text

    def probe(self) -> None:
        """One cheap call (a 1-token reply, left out of usage) that raises LLMError when this
        client cannot work at all; a run checks each of its clients this way before sample 1."""
        self._trial().chat(PROBE_MESSAGES, max_tokens=1)

    def _trial(self) -> "LLMClient":
        return copy.copy(self)  # shares the connection and the model, keeps usage of its own

    def describe(self) -> dict:
        """What answers this client's calls, as a run's records name it."""
        return {"backend": self.backend, "model": self.model}

    @property
    def usage(self) -> Usage:
        with self._usage_lock:
            return self._usage

    def _record(self, delta: Usage):
        with self._usage_lock:
            u = self._usage
            self._usage = Usage(u.calls + delta.calls, u.prompt_tokens + delta.prompt_tokens,
                                u.completion_tokens + delta.completion_tokens, u.seconds + delta.seconds,
                                u.retries + delta.retries, u.failures + delta.failures)

    def _complete(self, messages, params, on_text) -> tuple[str, int, int, str]:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.model!r})"


# ------------------------------------------------------------------------------------------
# HTTP backends


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date (seconds from now). None if absent or
    unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(response: requests.Response) -> str:
    """The error message of an OpenAI-, Anthropic-, vLLM- or Ollama-style error body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason or ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return json.dumps(body)[:500]


class HTTPClient(LLMClient):
    """POST JSON with retries. Each thread keeps its own requests.Session (sessions are not
    guaranteed thread-safe, and one pool per thread keeps connections alive under concurrency)."""

    def __init__(self, model: str, base_url: str, path: str, headers: dict, secret: str | None, *,
                 timeout: float = REQUEST_TIMEOUT_S, max_retries: int = MAX_RETRIES,
                 backoff_base: float = BACKOFF_BASE_S, backoff_cap: float = BACKOFF_CAP_S, **sampling):
        super().__init__(model, **sampling)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{base_url!r} is not an http:// or https:// base URL")
        self.base_url, self.url = base_url, base_url + path
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._headers = {"Content-Type": "application/json", **headers}
        self._secret = secret
        self._local = threading.local()

    def _trial(self) -> "HTTPClient":
        trial = super()._trial()
        trial.max_retries = min(self.max_retries, PROBE_RETRIES)
        return trial

    def describe(self) -> dict:
        return {**super().describe(), "url": self.url}

    def _session(self) -> requests.Session:
        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
        return self._local.session

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _fail(self, what: str, status: int | None = None) -> LLMError:
        return LLMError(self._scrub(f"{self.backend} request to {self.url} for model {self.model!r} {what}"),
                        url=self.url, model=self.model, status=status)

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        return random.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2 ** retry))

    def _post(self, body: dict, stream: bool = False) -> dict:
        """The decoded JSON reply (for a stream: the chunks assembled into one completion)."""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            retry_after, last = None, None
            try:
                with self._session().post(self.url, json=body, headers=self._headers,
                                          timeout=self.timeout, stream=stream) as response:
                    if 200 <= response.status_code < 300:
                        try:
                            return assemble_stream(response) if stream else response.json()
                        except ValueError as e:
                            raise self._fail(f"got an unreadable reply: {e}", 200) from None
                    status = response.status_code
                    last = f"HTTP {status}: {_server_message(response)}"
                    if status not in RETRY_STATUSES and status < 500:
                        raise self._fail(f"failed with {last}", status)
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                    if retry_after is None and response.headers.get("retry-after-ms"):
                        retry_after = retry_after_seconds(response.headers["retry-after-ms"])
                        retry_after = None if retry_after is None else retry_after / 1000
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                status, last = None, f"{type(e).__name__}: {e}"
            except requests.RequestException as e:  # an unusable URL (a bad port, say): no retry helps
                raise self._fail(f"could not be sent: {type(e).__name__}: {e}") from None
            if attempt == attempts - 1:
                raise self._fail(f"failed after {attempts} attempts; last error: {last}", status)
            self._record(Usage(retries=1))
            time.sleep(self._backoff(attempt, retry_after))
        raise AssertionError("unreachable")


def assemble_stream(response: requests.Response) -> dict:
    """Read an OpenAI server-sent-event stream into the shape of a non-streamed completion."""
    pieces, finish_reason, usage = [], None, None
    for line in response.iter_lines(decode_unicode=True):
        if not line or not line.startswith("data:"):
            continue
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("error"):  # a server that failed after the stream began
            raise ValueError(f"the stream broke off with an error: {json.dumps(chunk['error'])[:300]}")
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            pieces.append((choice.get("delta") or {}).get("content") or "")
            finish_reason = choice.get("finish_reason") or finish_reason
    return {"choices": [{"message": {"role": "assistant", "content": "".join(pieces)},
                         "finish_reason": finish_reason}], "usage": usage or {}}


def is_reasoning_model(name: str) -> bool:
    return name.rsplit("/", 1)[-1].lower().startswith(REASONING_MODEL_PREFIXES)


class OpenAIClient(HTTPClient):
    """An OpenAI-compatible chat-completions endpoint: OpenAI itself, vLLM, llama.cpp server,
    Ollama (http://localhost:11434/v1), our serve.py.

    base_url: arg, else $OPENAI_BASE_URL, else https://api.openai.com/v1. api_key: arg, else
    $OPENAI_API_KEY; without one no Authorization header is sent (local servers).
    system_message: None sends the messages as given; a string (the original used "") is put
    first as a system message unless the conversation already starts with one.
    reasoning_model: None decides by name (REASONING_MODEL_PREFIXES); such models get no
    temperature, top_p, max_tokens or system message, as in the original.
    stream: ask for server-sent events and assemble them (same Reply)."""

    backend = "openai"

    def __init__(self, model: str = "gpt-4o", base_url: str | None = None, api_key: str | None = None, *,
                 system_message: str | None = None, reasoning_model: bool | None = None,
                 stream: bool = False, temperature=0.0, top_p=1.0, top_k=None,
                 max_tokens=DEFAULT_MAX_TOKENS, seed=None, stop=None, **http):
        base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).rstrip("/")
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(model, base_url, "/chat/completions", headers, api_key, temperature=temperature,
                         top_p=top_p, top_k=top_k, max_tokens=max_tokens, seed=seed, stop=stop, **http)
        self.system_message = system_message
        self.reasoning_model = is_reasoning_model(model) if reasoning_model is None else reasoning_model
        self.stream = stream

    def request_body(self, messages: list[dict], params: dict) -> dict:
        messages = list(messages)
        if self.reasoning_model:
            body = {"model": self.model, "messages": messages}
        else:
            if self.system_message is not None and (not messages or messages[0]["role"] != "system"):
                messages.insert(0, {"role": "system", "content": self.system_message})
            body = {"model": self.model, "messages": messages, "temperature": params["temperature"],
                    "top_p": params["top_p"], "max_tokens": params["max_tokens"]}
            # Sent only when set: OpenAI itself rejects top_k (vLLM and llama.cpp accept it).
            body.update({k: params[k] for k in ("top_k", "seed", "stop") if params[k] is not None})
        if self.stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return body

    def _complete(self, messages, params, on_text):
        data = self._post(self.request_body(messages, params), stream=self.stream)
        choices = data.get("choices") or []
        if not choices:
            raise self._fail(f"got a reply without choices: {json.dumps(data)[:300]}", 200)
        usage = data.get("usage") or {}  # servers that omit usage count as 0 tokens
        text = (choices[0].get("message") or {}).get("content") or ""
        if on_text is not None:
            on_text(text)
        return (text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                choices[0].get("finish_reason") or "stop")


class AnthropicClient(HTTPClient):
    """Anthropic's Messages API. System messages are joined and passed as `system`; the rest
    go in `messages`. The API has no seed: a seed override is ignored."""

    backend = "anthropic"
    FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}

    def __init__(self, model: str = "claude-3-5-sonnet-20241022", api_key: str | None = None,
                 base_url: str | None = None, *, temperature=0.0, top_p=None, top_k=None,
                 max_tokens=DEFAULT_MAX_TOKENS, stop=None, **http):
        base_url = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL).rstrip("/")
        api_key = api_key or os.environ.get("ANTHROPIC_API_KEY") or None
        headers = {"anthropic-version": ANTHROPIC_VERSION, **({"x-api-key": api_key} if api_key else {})}
        super().__init__(model, base_url, "/messages", headers, api_key, temperature=temperature,
                         top_p=top_p, top_k=top_k, max_tokens=max_tokens, stop=stop, **http)

    def request_body(self, messages: list[dict], params: dict) -> dict:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        body = {"model": self.model, "max_tokens": params["max_tokens"], "temperature": params["temperature"],
                "messages": [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]}
        if system:  # the API rejects an empty system text
            body["system"] = system
        body.update({k: params[k] for k in ("top_p", "top_k") if params[k] is not None})
        if params["stop"] is not None:
            body["stop_sequences"] = [params["stop"]] if isinstance(params["stop"], str) else list(params["stop"])
        return body

    def _complete(self, messages, params, on_text):
        data = self._post(self.request_body(messages, params))
        text = "".join(block.get("text", "") for block in data.get("content") or [] if block.get("type") == "text")
        if on_text is not None:
            on_text(text)
        usage = data.get("usage") or {}
        finish = self.FINISH_REASONS.get(data.get("stop_reason"), data.get("stop_reason") or "stop")
        return text, int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0), finish


# ------------------------------------------------------------------------------------------
# Local backend


MAX_LOCAL_BATCH = 16  # concurrent chats on one local model decoded together at the most
GATHER_S = 0.01       # how long a batch waits for company before it starts

# CPU decoding runs many small parallel regions (one per matrix-vector product), and each waits
# for its slowest thread. torch's default of one thread per core is right on an idle machine,
# but a core busy elsewhere deschedules one thread of every region: on the 2-core CI machine
# with one core busy, 2 threads decoded 4.5 tokens/s and 1 thread 21. So the count is measured
# where the model is loaded, once per process, unless set_cpu_threads or OMP_NUM_THREADS set it.
_cpu_threads: int | None = None
_cpu_threads_lock = threading.Lock()


def set_cpu_threads(n: int | None) -> None:
    """The torch thread count for local CPU decoding from now on (None: measure it)."""
    global _cpu_threads
    if n is not None and n < 1:
        raise ValueError(f"the thread count must be >= 1, got {n}")
    _cpu_threads = n


def busy_cores_elsewhere(window_s: float = 0.3) -> float:
    """How many cores other processes keep busy now: all CPU time spent over a short window
    (/proc/stat) minus this process's (/proc/self/stat). Not the load average, which counts this
    process too: just after loading a model it reads ~1.4 on an idle 2-core machine, and
    decoding would then get one thread (measured: 256 tokens in 37 s instead of 26 s).
    0 where /proc is missing: the timing trials alone then choose."""
    def sample():
        with open("/proc/stat") as f:
            ticks = [int(n) for n in f.readline().split()[1:9]]   # user nice system idle iowait irq softirq steal
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()               # after the command name, which may hold spaces
        return sum(ticks) - ticks[3] - ticks[4], int(own[11]) + int(own[12]), time.monotonic()   # utime + stime
    try:
        busy0, own0, t0 = sample()
        time.sleep(window_s)
        busy1, own1, t1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    return max(0.0, (busy1 - busy0 - (own1 - own0)) / ticks_per_s / (t1 - t0))


def measure_cpu_threads(repeats: int = 8, trials: int = 5) -> int:
    """The thread count for decoding now: of 1, 2, 4, ... up to the cores that other processes
    leave idle, the one under which a decode-shaped matrix-vector product (one row, through
    model.linear's multi-threaded path, as decoding runs them) runs fastest, by the median of a few
    short trials (~0.1 s per candidate): a lucky trial, while a busy core's other work waited, must
    not decide. The matrix (64 MB) is larger than the last-level cache, since decoding streams its
    weights from memory: a cache-sized one (SmolLM2's MLP, 3.5 MB) chose 1 thread on an idle 2-core
    EPYC where 2 decode the 0.5B twice as fast."""
    idle = max(1, round((os.cpu_count() or 1) - busy_cores_elsewhere()))
    candidates = sorted({min(2 ** i, idle) for i in range(idle.bit_length() + 1)})
    if candidates == [1]:
        return 1
    vector, weight = torch.randn(1, 4096), torch.randn(4096, 4096).t()   # (out, in), stored column-major
    medians = {}
    for n in candidates:
        torch.set_num_threads(n)
        linear(vector, weight)  # warm up this thread team
        seconds = []
        for _ in range(trials):
            start = time.perf_counter()
            for _ in range(repeats):
                linear(vector, weight)
            seconds.append(time.perf_counter() - start)
        medians[n] = sorted(seconds)[trials // 2]
    return min(medians, key=medians.get)


def cpu_threads() -> int | None:
    """The thread count for CPU decoding in this process: set, measured once, or None when
    OMP_NUM_THREADS already chose it."""
    global _cpu_threads
    with _cpu_threads_lock:
        if _cpu_threads is None and not os.environ.get("OMP_NUM_THREADS"):
            _cpu_threads = measure_cpu_threads()
        return _cpu_threads


@dataclass
class _Request:
    """One chat's generation, waiting for or inside a batch."""
    ids: list[int]
    budget: int
    params: dict
    reply: "_StreamedReply"
    tokens: list = field(default_factory=list)
    ended: bool = False
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def batch_key(self):
        """Requests with equal keys may share a batch. A seeded request gets a key of its own:
        its sample must not depend on its batch-mates."""
        sampling = tuple(self.params[k] for k in ("temperature", "top_p", "top_k"))
        return sampling if self.params["seed"] is None else (id(self),)

    def take(self, token: int) -> bool:
        """Record this row's newest token (-1: a stop id came); True once the row has ended."""
        if token >= 0:
            self.tokens.append(token)
        try:
            stopped = self.reply.step([token])
        except Exception as e:  # its on_text failed (a client hung up, say): end this row only
            self.error, stopped = e, True
        self.ended = stopped or token < 0 or len(self.tokens) >= self.budget
        return self.ended


class _Resident:
    """One loaded checkpoint, and the worker thread that runs every generation on it.

    Chats that reach the model while a batch is running wait for it to end and then go
    together in the next one, so N concurrent callers decode at batch ~N: on the 2-core CPU
    batch 8 decodes ~3.5x the tokens/s of batch 1 and an H100 ~8x (BENCHMARKS.md). Requests
    share a batch when they sample alike and fit the context together; each keeps its own
    budget, stop strings and streaming.

    `load()` -> (transformer, tokenizer) runs on the worker too, so that with a checkpoint
    loaded here one thread does all of the model's torch work. That matters on the CPU: an
    idle thread that once ran torch's OpenMP work keeps its thread team, and libgomp, counting
    more threads than cores, stops spinning between parallel regions. Decoding from any other
    thread then runs ~25% slower (measured: 48 vs 35 tokens/s, embedded model)."""

    def __init__(self, load: Callable[[], tuple[Transformer, ChatTokenizer]], max_batch: int = MAX_LOCAL_BATCH):
        self.max_batch = max_batch
        self.batches = 0  # generate calls so far
        self._pending: list[_Request] = []
        self._wake = threading.Condition()
        loaded, failure = threading.Event(), []
        threading.Thread(target=self._work, args=(load, loaded, failure), name="local-generation",
                         daemon=True).start()
        loaded.wait()
        if failure:
            raise failure[0]

    def generate(self, request: _Request) -> list[int]:
        """The request's new tokens, once its batch has ended; raises what failed it."""
        with self._wake:
            self._pending.append(request)
            self._wake.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.tokens

    def _work(self, load, loaded: threading.Event, failure: list):
        try:
            self.transformer, self.tokenizer = load()
            threads = cpu_threads() if next(self.transformer.parameters()).device.type == "cpu" else None
            if threads is not None:  # on this thread: each thread that runs torch work has its own team
                torch.set_num_threads(threads)
        except BaseException as e:
            failure.append(e)
            return
        finally:
            loaded.set()
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
            time.sleep(GATHER_S)  # chats sent at the same moment are still rendering their prompts
            with self._wake:
                batch = self._next_batch()
            self._run(batch)

    def _next_batch(self) -> list[_Request]:
        """The oldest pending request and the later ones that can go with it."""
        first = self._pending[0]
        batch, longest, budget = [], 0, 0
        for request in list(self._pending):
            fits = (max(longest, len(request.ids)) + max(budget, request.budget)
                    <= self.transformer.config.max_seq_len)
            if request.batch_key() == first.batch_key() and fits and len(batch) < self.max_batch:
                batch.append(request)
                longest, budget = max(longest, len(request.ids)), max(budget, request.budget)
                self._pending.remove(request)
        return batch

    def _run(self, batch: list[_Request]):
        self.batches += 1
        params = batch[0].params

        def on_step(tokens):
            ended = [request.ended or request.take(token) for request, token in zip(batch, tokens)]
            return all(ended) or ended
        try:
            generate(self.transformer, [r.ids for r in batch], max(r.budget for r in batch),
                       temperature=float(params["temperature"]), top_p=float(params["top_p"]),
                       top_k=int(params["top_k"] or 0), stop_ids=self.tokenizer.stop_ids,
                       seed=params["seed"], on_step=on_step)
        except BaseException as e:  # the worker lives on; the batch's callers get the error
            for request in batch:
                request.error = request.error or e
        finally:
            for request in batch:
                request.done.set()


_residents: dict[tuple, _Resident] = {}
_residents_lock = threading.Lock()


def _load_resident(ckpt, device, dtype) -> _Resident:
    path = resolve_checkpoint(ckpt)
    key = (str(Path(path).resolve()), str(device), str(dtype))
    with _residents_lock:  # loads are rare; holding the lock makes "loaded once" simple
        if key not in _residents:
            _residents[key] = _Resident(lambda: (load_model(path, device=device, dtype=dtype),
                                                 load_tokenizer(path)))
        return _residents[key]


def _stop_strings(stop) -> list[str]:
    return [s for s in ([stop] if isinstance(stop, str) else list(stop or [])) if s]


def cut_at_stop(text: str, stop) -> tuple[str, bool]:
    """Text up to the earliest of the stop strings, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in _stop_strings(stop)) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


def stop_prefix_length(text: str, stop) -> int:
    """Length of the longest end of `text` that could still grow into a stop string: streamed
    text holds it back until the next tokens settle it. Being the longest, it holds the start
    of any stop string that later text completes, so the text before it is final."""
    return max((k for s in _stop_strings(stop) for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


class LocalClient(LLMClient):
    """A checkpoint run in-process with its own chat template (render_prompt).

    ckpt: an embedded model's name (embedded.REGISTRY; "embedded" is SmolLM2-135M-Instruct), an
    HF checkpoint directory or a .gguf file. It is
    loaded on first use, once per process, and shared by all LocalClients of that checkpoint;
    or pass an already loaded `transformer` and `tokenizer`. Chats that threads send to one
    model at the same time are generated together in batches (see _Resident).

    Context: max_tokens is reduced to what fits after the prompt (the reply then ends with
    finish_reason "length"); a prompt that leaves no room at all raises ContextLengthError.
    `stop` strings are watched for in the text as it is decoded, and generation ends at the
    first. temperature 0 is greedy; top_k None or 0 means no top-k filter."""

    backend = "local"

    def __init__(self, ckpt="embedded", *, name: str | None = None, transformer: Transformer | None = None,
                 tokenizer: ChatTokenizer | None = None, device=None, dtype=None, temperature=0.0,
                 top_p=1.0, top_k=None, max_tokens=DEFAULT_MAX_TOKENS, seed=None, stop=None):
        if (transformer is None) != (tokenizer is None):
            raise ValueError("pass both transformer and tokenizer, or neither")
        default_name = embedded_name(ckpt) if is_embedded(ckpt) else Path(ckpt).name
        super().__init__(name or default_name, temperature=temperature, top_p=top_p, top_k=top_k,
                         max_tokens=max_tokens, seed=seed, stop=stop)
        self.ckpt = ckpt if transformer is None else None  # None: nothing to load, the model was handed over
        self.device, self.dtype = device, dtype
        self._resident = None if transformer is None else _Resident(lambda: (transformer, tokenizer))

    def resident(self) -> _Resident:
        if self._resident is None:
            self._resident = _load_resident(self.ckpt, self.device, self.dtype)
        return self._resident

    def probe(self) -> None:
        try:
            self.resident()
        except Exception as e:  # a missing, truncated or foreign file fails in many ways, all the user's to fix
            raise LLMError(f"cannot load the checkpoint {self.ckpt}: {type(e).__name__}: {e}", model=self.model) from e
        super().probe()

    def describe(self) -> dict:
        if self.ckpt is None:  # a model handed over in memory
            return super().describe()
        path = resolve_checkpoint(self.ckpt)
        return {**super().describe(), "ckpt": str(self.ckpt), "digest": checkpoint_digest(path)}

    @property
    def tokenizer(self) -> ChatTokenizer:
        return self.resident().tokenizer

    @property
    def context_length(self) -> int:
        return self.resident().transformer.config.max_seq_len

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Rendered prompt; ValueError for a conversation the chat template rejects."""
        return self.tokenizer.render_prompt(messages)

    def _complete(self, messages, params, on_text):
        resident = self.resident()
        ids = self.prompt_ids(messages)
        room = self.context_length - len(ids)
        if room < 1:
            raise ContextLengthError(f"prompt of {len(ids)} tokens leaves no room in {self.model}'s context "
                                     f"of {self.context_length} tokens", model=self.model)
        budget = min(int(params["max_tokens"]), room)
        reply = _StreamedReply(resident.tokenizer, params["stop"], on_text)
        new = resident.generate(_Request(ids, budget, params, reply))
        text = reply.finish()
        # generate drops the stop token, so a full budget means no stop token came.
        finish_reason = "stop" if reply.stopped or len(new) < budget else "length"
        return text, len(ids), len(new), finish_reason


class _StreamedReply:
    """The text of one generation as its tokens arrive: cut at the first stop string (which
    ends the generation), and passed on to `on_text` as far as it is settled."""

    def __init__(self, tokenizer: ChatTokenizer, stop, on_text: Callable[[str], None] | None):
        self.decoder = TextStream(tokenizer)
        self.stop, self.on_text = stop, on_text
        self.text, self.sent, self.stopped = "", 0, False

    def step(self, tokens: list[int]) -> bool:
        if tokens[0] >= 0:  # -1: the row hit a stop id and generate is about to end
            self._extend(self.decoder.add(tokens[0]), final=False)
        return self.stopped

    def finish(self) -> str:
        if not self.stopped:
            self._extend(self.decoder.finish(), final=True)
        return self.text[:self.sent]

    def _extend(self, piece: str, final: bool):
        self.text += piece
        settled, self.stopped = cut_at_stop(self.text, self.stop)
        if not (self.stopped or final):
            settled = settled[:len(settled) - stop_prefix_length(settled, self.stop)]
        if len(settled) > self.sent:  # settled text only grows: see stop_prefix_length
            if self.on_text is not None:
                self.on_text(settled[self.sent:])
            self.sent = len(settled)


# ------------------------------------------------------------------------------------------
# Choosing a backend


def demo_dtype() -> torch.dtype:
    """What an embedded model runs in: bf16 on a GPU or on a CPU where oneDNN multiplies bf16 (there, with the
    weights packed, decode 1.5-1.8x and prefill 2.2x fp32 on a 2-core AVX-512 EPYC, greedy tokens alike); fp32
    elsewhere (on an AVX2-only EPYC, bf16 prefill ran 5x slower than fp32). BENCHMARKS.md has both."""
    return torch.bfloat16 if torch.cuda.is_available() or onednn_bf16_works() else torch.float32


def make_client(model: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                ckpt=None, **options) -> LLMClient:
    """The client for a model name, endpoint or checkpoint. The first rule that applies wins:

    1. ckpt given ("embedded", an HF directory or a .gguf)  -> LocalClient(ckpt)
       or model an embedded model's name, no base URL        -> LocalClient(model), in demo_dtype()
    2. model starts with "claude", no base_url, an Anthropic key (api_key or
       $ANTHROPIC_API_KEY)                                   -> AnthropicClient
    3. a base URL (base_url or $OPENAI_BASE_URL), with or
       without a key                                         -> OpenAIClient at that URL
    4. not claude and an OpenAI key (api_key or $OPENAI_API_KEY) -> OpenAIClient at api.openai.com
    5. otherwise (no key, no base URL)                       -> LocalClient(DEMO_MODEL), with
       `fallback_reason` saying why, so the caller can tell the user once.

    `options` go to the chosen client's constructor (sampling defaults, timeout, retries, ...)."""
    if ckpt is not None:
        return LocalClient(ckpt, name=model, **_local_options(options))
    if model and is_embedded(model) and not (base_url or os.environ.get("OPENAI_BASE_URL")):   # --task-model NAME
        return LocalClient(model, dtype=demo_dtype(), **_local_options(options))
    claude = (model or "").lower().startswith("claude")
    if claude and base_url is None and (api_key or os.environ.get("ANTHROPIC_API_KEY")):
        anthropic_options = _drop(options, "system_message", "reasoning_model", "stream", "seed")
        return AnthropicClient(model, api_key=api_key, **anthropic_options)
    if base_url or os.environ.get("OPENAI_BASE_URL") or (not claude and (api_key or os.environ.get("OPENAI_API_KEY"))):
        return OpenAIClient(model or "gpt-4o", base_url=base_url, api_key=api_key, **options)
    client = LocalClient(DEMO_MODEL, dtype=demo_dtype(), **_local_options(options))
    wanted = "ANTHROPIC_API_KEY" if claude else "OPENAI_API_KEY or OPENAI_BASE_URL"
    client.fallback_reason = (f"no {wanted} is set, so {model or 'the LLM'} is replaced by the embedded "
                              f"{client.model}")
    return client


def _drop(options: dict, *keys) -> dict:
    return {k: v for k, v in options.items() if k not in keys}


def _local_options(options: dict) -> dict:
    return _drop(options, "system_message", "reasoning_model", "stream", "timeout", "max_retries",
                 "backoff_base", "backoff_cap")
