"""Everything done to the TaskLLM's code: extract it, run it in a sandbox, analyse it, self-check the answer.

Spec Part A: the execution feedback of the loop (A.3 step 1), the Symbolic Checker (A.4), the Self-answer
Checker (A.5) and the code run behind final-answer extraction (A.6 step 1). Linux only (pidfd, rlimits, cgroups).
Imports nothing from the project.

    code = extract_code(task_reply)
    if code:
        task_reply += execution_feedback(run_python(code))
        summary = symbolic_summary(code)
    check = self_answer_check(question, task_reply, chat)    # chat(messages) -> str, any LLM client

Tests and benchmark (CPU, a few seconds):
    python -m pytest tests/test_checkers.py
    python bench/bench_executor.py
"""
import ast
import functools
import math
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

# Spec A.1.
EXEC_TIMEOUT_S = 10.0          # TaskLLM code inside the loop
ANSWER_TIMEOUT_S = 15.0        # final-answer code at scoring time (A.6)
CHECK_TIMEOUT_S = 10.0         # Self-answer Checker code
DISPLAY_LIMIT_TOKENS = 2000    # execution output longer than this is not shown to CodeSteer
LOW_COMPLEXITY_SCORE = 2       # the Symbolic Checker warns at or below this score
CHECK_ROUNDS = 3               # Self-answer Checker: rounds of "write checking code, run it"
CHECK_CODE_TRIES = 5           # ... and replies asked for per round until one holds code

# Sandbox limits. Ours: the original ran the code with no limit but the timeout.
MEMORY_LIMIT_BYTES = 2 * 1024**3     # address space per process; a 4 GB allocation raises MemoryError
MAX_PROCESSES = 128                  # tasks (threads count too) the code may have at once
MAX_FILE_BYTES = 16 * 1024**2        # largest file the code may write
MAX_OUTPUT_BYTES = 1024**2           # kept per stream; the rest is read and dropped
DRAIN_GRACE_S = 0.5                  # after the kill, how long to wait for the pipes to close

ANSWER_NAMES = ("result", "Answer", "answer")
PATH_PLANNING_ANSWER_NAMES = ("Waypoints", "waypoints", "trajectory")

# ---------------------------------------------------------------------------------------------------------------
# Extraction

# Exactly "```python" and a newline: blocks labelled py, Python or nothing count as no code (A.3 invariant 5).
# The closing fence must start a line, as in the original's pattern.
PYTHON_BLOCK = re.compile(r"```python\n(.*?)\n```", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The body of the first python block in `text`, or None."""
    match = PYTHON_BLOCK.search(text)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------------------------------
# Sandboxed execution

@dataclass
class ExecResult:
    stdout: str
    stderr: str
    returncode: int          # negative: killed by that signal
    timed_out: bool
    seconds: float
    truncated: bool          # output beyond MAX_OUTPUT_BYTES was dropped

    @property
    def errors(self) -> str:
        """stderr, plus why the process died when it could not say so itself (a timeout, a signal)."""
        if self.timed_out:
            death = f"Timed out after {self.seconds:.1f} seconds and was killed."
        elif self.returncode < 0:
            death = f"Killed by signal {signal.Signals(-self.returncode).name}."
        else:
            return self.stderr
        return "\n".join(part for part in (self.stderr.rstrip("\n"), death) if part)


@dataclass
class _CappedCapture:
    limit: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes):
        room = self.limit - len(self.data)
        self.data += chunk[:room]
        self.truncated |= len(chunk) > room


def run_python(code: str, timeout: float = EXEC_TIMEOUT_S, *, memory_bytes: int = MEMORY_LIMIT_BYTES,
               max_processes: int = MAX_PROCESSES, max_file_bytes: int = MAX_FILE_BYTES,
               max_output_bytes: int = MAX_OUTPUT_BYTES) -> ExecResult:
    """Run `code` as a script in a fresh interpreter and a throw-away working directory.

    Guaranteed:
    - the timeout is wall clock: the child is SIGKILLed at it, and the call returns within timeout + 1 s
      (cleanup waits at most DRAIN_GRACE_S for the pipes and DRAIN_GRACE_S for the cgroup);
    - the child runs `python -I` (no user site, no PYTHON* variables) in its own session, with stdin closed and
      an environment of PATH, LANG, and HOME and TMPDIR both pointing at the working directory (no API keys);
    - its whole process group is SIGKILLed on timeout and also after a normal exit, so background children die;
    - per process: address space <= memory_bytes (allocations fail with MemoryError), CPU <= timeout + 1 s,
      files written <= max_file_bytes (the write fails with "File too large"), no core dumps;
    - at most max_output_bytes kept per stream; the rest is drained so the child never blocks;
    - the working directory is deleted afterwards.
    Process count (fork bombs), best available of:
    - root with a writable cgroup-v1 pids hierarchy: the child runs in its own pids cgroup capped at
      max_processes tasks, and everything in it is killed at the end, even processes that left the group (setsid);
    - not root: RLIMIT_NPROC at the user's current task count + max_processes (the kernel counts all of the
      user's threads); processes that left the group survive;
    - root without such a cgroup: no cap (the kernel ignores RLIMIT_NPROC for root). A fork bomb runs until the
      deadline, then the group kill ends it; processes that left the group survive.
    Not isolated: the filesystem (the code runs as our user), the network, memory summed over processes.
    """
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="codesteer-run-"))
    cgroup = _new_pids_cgroup(max_processes)
    cgroup_procs = None
    limits = [(resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CPU, math.ceil(timeout) + 1),
              (resource.RLIMIT_FSIZE, max_file_bytes), (resource.RLIMIT_CORE, 0)]
    if os.getuid() != 0:
        limits.append((resource.RLIMIT_NPROC, _tasks_of_user(os.getuid()) + max_processes))
    limits = [(kind, _within_hard_limit(kind, value)) for kind, value in limits]

    def confine_child():  # runs in the child between fork and exec: keep it to plain system calls
        for kind, value in limits:
            resource.setrlimit(kind, value)
        if cgroup_procs is not None:
            os.write(cgroup_procs, b"0")  # "0" moves the writing process

    try:
        if cgroup:
            cgroup_procs = os.open(cgroup / "cgroup.procs", os.O_WRONLY)
        script = workdir / "main.py"
        script.write_text(code, encoding="utf-8", errors="replace")
        env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8",
               "HOME": str(workdir), "TMPDIR": str(workdir)}
        stdout, stderr = _CappedCapture(max_output_bytes), _CappedCapture(max_output_bytes)
        with subprocess.Popen([sys.executable, "-I", str(script)], cwd=workdir, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True, preexec_fn=confine_child) as process, \
                selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ, stdout)
            selector.register(process.stderr, selectors.EVENT_READ, stderr)
            try:
                exited = _pump_until_exit(selector, process.pid, started + timeout)
            finally:
                # The child is not reaped yet, so its pid still names its group: no risk of hitting a stranger.
                _kill_process_group(process.pid)
                if cgroup:
                    _kill_cgroup(cgroup)
            _pump(selector, time.monotonic() + DRAIN_GRACE_S)
        return ExecResult(stdout=stdout.data.decode("utf-8", errors="replace"),
                          stderr=stderr.data.decode("utf-8", errors="replace"),
                          returncode=process.returncode, timed_out=not exited,
                          seconds=time.monotonic() - started, truncated=stdout.truncated or stderr.truncated)
    finally:
        if cgroup_procs is not None:
            os.close(cgroup_procs)
        if cgroup:
            _kill_cgroup(cgroup)  # no-op after a run; removes the cgroup when Popen failed
        shutil.rmtree(workdir, ignore_errors=True)


def _pump_until_exit(selector: selectors.BaseSelector, pid: int, deadline: float) -> bool:
    """Pump output until process `pid` exits (True) or the deadline passes (False)."""
    exit_signal = os.pidfd_open(pid)  # readable once the process exits, before it is reaped
    try:
        selector.register(exit_signal, selectors.EVENT_READ, None)
        return _pump(selector, deadline)
    finally:
        selector.unregister(exit_signal)
        os.close(exit_signal)


def _pump(selector: selectors.BaseSelector, deadline: float) -> bool:
    """Copy ready pipe data into each pipe's capture until the registered pidfd fires (True), nothing is left to
    watch, or the deadline passes (False)."""
    while selector.get_map():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        for key, _ in selector.select(remaining):
            if key.data is None:
                return True
            chunk = os.read(key.fd, 65536)
            if chunk:
                key.data.add(chunk)
            else:
                selector.unregister(key.fileobj)
    return False


def _kill_process_group(pgid: int):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is empty, or a member is not ours to kill
        pass


def _within_hard_limit(kind: int, value: int) -> tuple[int, int]:
    """(soft, hard) for setrlimit: an unprivileged child cannot raise its hard limit, so never ask for more."""
    _, hard = resource.getrlimit(kind)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    return value, value


def _tasks_of_user(uid: int) -> int:
    """Threads the user runs now: RLIMIT_NPROC counts all of them, not just the sandbox's."""
    count = 0
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                count += len(os.listdir(f"/proc/{entry.name}/task"))
        except OSError:  # the process ended while we looked
            pass
    return count


@functools.cache
def _pids_cgroup_parent() -> Path | None:
    """Our own cgroup-v1 pids cgroup if we may create children in it (in practice: root on a host or VM, not in a
    container, whose cgroup filesystem is read-only)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            parent = Path("/sys/fs/cgroup/pids") / path.lstrip("/")
            return parent if os.access(parent, os.W_OK) else None
    return None


def _new_pids_cgroup(max_processes: int) -> Path | None:
    parent = _pids_cgroup_parent()
    if parent is None:
        return None
    cgroup = parent / f"codesteer-{uuid.uuid4().hex}"
    try:
        cgroup.mkdir()
        (cgroup / "pids.max").write_text(str(max_processes))
        return cgroup
    except OSError:
        _kill_cgroup(cgroup)
        return None


def _kill_cgroup(cgroup: Path):
    """SIGKILL everything in the cgroup, including processes that left the process group, then remove it."""
    deadline = time.monotonic() + DRAIN_GRACE_S
    while cgroup.exists() and time.monotonic() < deadline:
        try:
            for pid in (cgroup / "cgroup.procs").read_text().split():
                _kill_pid(int(pid))
            cgroup.rmdir()  # EBUSY until the killed processes have exited
        except OSError:
            time.sleep(0.001)


def _kill_pid(pid: int):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------------------------
# Execution feedback for CodeSteer (A.3 step 1)

WORD_OR_SYMBOL = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Stand-in for the original's tiktoken count: words and punctuation marks, or a quarter of the characters,
    whichever is larger (so that neither long words nor long runs of whitespace hide a long output)."""
    return max(len(WORD_OR_SYMBOL.findall(text)), len(text) // 4)


def execution_feedback(result: ExecResult) -> str:
    """The text appended to the TaskLLM reply that CodeSteer reads; only CodeSteer ever sees it."""
    if estimate_tokens(result.stdout + result.errors) > DISPLAY_LIMIT_TOKENS:
        return "\nRunning the generated code produced more output than can be shown here."
    return f"\nRunning the generated code gave:\noutput: {result.stdout}, errors: {result.errors}"


# ---------------------------------------------------------------------------------------------------------------
# Symbolic Checker (A.4): static analysis, nothing is executed

LOOP_NOTE = "has a loop that searches systematically"
ITERTOOLS_NOTE = "imports itertools to enumerate candidates"
EVAL_NOTE = "builds expressions and evaluates them with eval/exec"
FORMAT_NOTE = "builds expressions with string formatting"
ARITHMETIC_NOTE = "computes with arithmetic operators directly"
LOW_COMPLEXITY_WARNING = ("The generated code may be too simple to solve the task by symbolic computing "
                          "(search, enumeration or symbolic manipulation).")


def analyze_code(code: str, itertools_fix: bool = True) -> tuple[str, float]:
    """(summary, complexity score) of the TaskLLM's code, section by section as in A.4.

    The score counts raw regex hits in the source, so identifiers, strings and comments count too ("format"
    holds "for"), plus 0.25 per binary operation. Each loop and each operation gets its own note line.
    itertools_fix=False reproduces the original, which looked only at the first imported name of a statement and
    so missed `from itertools import ...` and `import os, itertools`.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:  # what ast.parse raises on bad input
        return f"Invalid Python code: {error}", 0
    search_notes, symbolic_notes, arithmetic_notes = [], [], []
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.While)):
            search_notes.append(LOOP_NOTE)
        elif _imports_itertools(node, itertools_fix):
            search_notes.append(ITERTOOLS_NOTE)
        elif isinstance(node, ast.BinOp):
            arithmetic_notes.append(ARITHMETIC_NOTE)
    if "eval(" in code or "exec(" in code:
        symbolic_notes.append(EVAL_NOTE)
    if any(marker in code for marker in ("format", 'f"', "f'")):
        symbolic_notes.append(FORMAT_NOTE)

    score = sum(len(re.findall(pattern, code)) for pattern in ("for|while", "if|elif|else", "try|except"))
    score += 0.25 * len(arithmetic_notes)
    lines = []  # blank lines before the later sections, as in the original layout
    for heading, notes in (("Search, because the code:", search_notes),
                           ("\nSymbolic computing, because the code:", symbolic_notes),
                           ("\nNumerical computing, because the code:", arithmetic_notes)):
        if notes:
            lines += [heading] + [f"- {note}" for note in notes]
    lines.append(f"\nComplexity score: {score}")
    return "\n".join(lines), score


def _imports_itertools(node: ast.AST, itertools_fix: bool) -> bool:
    if not itertools_fix:  # the original: for a from-import, names[0] is the imported name, not the module
        return isinstance(node, (ast.Import, ast.ImportFrom)) and "itertools" in node.names[0].name
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "itertools" for alias in node.names)
    return isinstance(node, ast.ImportFrom) and node.module == "itertools"


def symbolic_summary(code: str, itertools_fix: bool = True) -> str:
    """The summary CodeSteer reads: the analysis, plus a warning when the code looks too simple."""
    summary, score = analyze_code(code, itertools_fix)
    return summary + "\n" + LOW_COMPLEXITY_WARNING if score <= LOW_COMPLEXITY_SCORE else summary


# ---------------------------------------------------------------------------------------------------------------
# Self-answer Checker (A.5)

CHECK_PROMPT = ("Below are a question and another model's response to it. Write Python code that checks whether "
                "the answer in the response satisfies every constraint stated in the question. The code must print "
                "\"Correct\" if it does, and otherwise print why the answer is wrong. Put the code in one ```python "
                "block.")
CHECK_FAILED = "The checking code did not run successfully this round, so there is no check result."
NO_CHECK_CODE = "The checker's attempts did not produce any code."


def self_answer_check(question: str, response: str, chat: Callable[[list[dict]], str],
                      timeout: float = CHECK_TIMEOUT_S) -> str:
    """Have an LLM write code that tests `response` against `question`, run it and return what it says.

    `chat` takes OpenAI-style messages and returns the reply text. The prompt is the same every round, as in the
    original: a new round relies on the model answering differently. A timeout counts as an error.
    """
    messages = [{"role": "user", "content": f"{CHECK_PROMPT}\nThe question is:\n{question}\n"
                                            f"The response is:\n{response}\nYour checking code:\n"}]
    for _ in range(CHECK_ROUNDS):
        for _ in range(CHECK_CODE_TRIES):
            code = extract_code(chat(messages))
            if code:
                break
        else:  # the original gives up at once, even after earlier rounds produced code
            return "errors: " + NO_CHECK_CODE
        result = run_python(code, timeout)
        if not result.errors:
            return f"output: {result.stdout}"
    if estimate_tokens(result.stdout) > DISPLAY_LIMIT_TOKENS:
        return CHECK_FAILED
    return f"output: {result.stdout}\nerrors: {result.errors}"


# ---------------------------------------------------------------------------------------------------------------
# Final-answer run (A.6 step 1)

# Runs inside the sandbox: the code, then a marker line, then the name and value of the first of `names` it
# defined. try/finally, so that a SystemExit or an exception after the answer was set still reports it.
ANSWER_RUNNER = """\
namespace = dict(__name__="__main__")
try:
    exec(compile({source!r}, "answer.py", "exec"), namespace)
finally:
    print({marker!r})
    for name in {names!r}:
        if name in namespace:
            print(name)
            print(namespace[name])
            break
"""


def run_for_answer(code: str, names: tuple[str, ...] = ANSWER_NAMES,
                   timeout: float = ANSWER_TIMEOUT_S) -> ExecResult:
    """Run the final reply's code for answer extraction; path planning passes PATH_PLANNING_ANSWER_NAMES.

    Its stdout is, as in the original (which ran `exec(code); print(result)`, then Answer, then answer, until
    something was printed): what the code printed followed by the value of names[0] if defined; if that is
    empty, the value of the first later name the code defined.
    """
    marker = f"<<codesteer-answer-{uuid.uuid4().hex}>>"
    result = run_python(ANSWER_RUNNER.format(source=code, marker=marker, names=tuple(names)), timeout)
    own_output, found, epilogue = result.stdout.partition(marker + "\n")
    if not found:  # killed, or its output truncated, before the epilogue ran
        return result
    name, _, value = epilogue.partition("\n")
    return replace(result, stdout=own_output + value if name == names[0] or not own_output else own_output)
