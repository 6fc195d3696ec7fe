"""Everything done to the TaskLLM's code: extract it, run it in a sandbox, analyse it, self-check the answer.

Spec Part A: the execution feedback of the loop (A.3 step 1), the Symbolic Checker (A.4), the Self-answer
Checker (A.5) and the code run behind final-answer extraction (A.6 step 1). Linux only: the sandbox is bubblewrap
(`bwrap`), with prlimit (util-linux), pidfd and, where writable, cgroups.
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
import site
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
MEMORY_LIMIT_BYTES = 2 * 1024**3        # address space per process; a 4 GB allocation raises MemoryError
TOTAL_MEMORY_LIMIT_BYTES = 4 * 1024**3  # all of a run's processes and tmpfs files together (where a cgroup is)
MAX_PROCESSES = 128                     # tasks (threads count too) a run may have at once, bwrap's two included
MAX_FILE_BYTES = 16 * 1024**2           # largest file the code may write
MAX_OUTPUT_BYTES = 1024**2              # kept per stream; the rest is read and dropped
DRAIN_GRACE_S = 0.5                     # after the kill, how long to wait for the pipes to close

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


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here and the caller did not accept the unsandboxed fallback."""


# Set by configure_executor (steer.py --unsafe-executor): where the sandbox cannot run, run the code anyway with
# the per-process limits only. Never set silently: run_python refuses otherwise.
UNSAFE_EXECUTOR = False
SANDBOX_UID = 65534                  # "nobody" inside the sandbox's user namespace
UNSAFE_FLAG = "--unsafe-executor"
# Like `python -I` (no user site, script folder not on sys.path) but without `site`: its .pth files (an editable
# install's finder, certifi hooks) cost ~40 ms per run here, for nothing the code needs. The site-packages
# folders come in through PYTHONPATH, the one PYTHON* variable of an environment we build ourselves.
INTERPRETER_FLAGS = ("-s", "-S", "-P")


def run_python(code: str, timeout: float = EXEC_TIMEOUT_S, *, memory_bytes: int = MEMORY_LIMIT_BYTES,
               total_memory_bytes: int = TOTAL_MEMORY_LIMIT_BYTES, max_processes: int = MAX_PROCESSES,
               max_file_bytes: int = MAX_FILE_BYTES, max_output_bytes: int = MAX_OUTPUT_BYTES) -> ExecResult:
    """Run `code` as a script in a fresh interpreter inside a bubblewrap sandbox, in a throw-away run directory.

    The sandbox (kernel namespaces, set up by bwrap):
    - own user, PID, mount, network, IPC, UTS and cgroup namespaces; the code runs as uid/gid 65534 with no
      capabilities (inside its user namespace; the kernel still counts it as our user outside);
    - a filesystem of its own: read-only /usr, /lib*, /bin, the dynamic linker's cache and the Python installation
      with its site-packages (numpy and the like import); a fresh /proc showing only the sandbox's processes (so no
      /proc/<pid>/environ of ours); a minimal /dev; an empty tmpfs /tmp of max_file_bytes; nothing else of the host
      (no /sys, /home, repository; of /etc and /root only what is listed); the run directory, at the same path as
      outside, is the only host directory it can write;
    - no network: only a loopback interface of its own;
    - when its main process exits or we kill bwrap, the PID namespace's init dies and the kernel kills every
      process of the sandbox (--die-with-parent also covers our own death).
    Refused (SandboxUnavailable) where bwrap or the kernel's namespaces are missing, unless UNSAFE_EXECUTOR is set
    (configure_executor): then the code runs as our user with the limits below only.

    Also guaranteed:
    - the timeout is wall clock: the child is SIGKILLed at it, and the call returns within timeout + 1 s
      (cleanup waits at most DRAIN_GRACE_S for the pipes and DRAIN_GRACE_S per cgroup);
    - `python -s -S -P` (INTERPRETER_FLAGS: no user site, no .pth files), stdin closed, an environment of PATH, LANG, and HOME and
      TMPDIR both pointing at the run directory (no API keys; bwrap adds PWD);
    - per process (prlimit, inherited by everything in the run): address space <= memory_bytes (allocations fail
      with MemoryError), CPU <= timeout + 1 s, files written <= max_file_bytes ("File too large"), no core dumps;
    - at most max_output_bytes kept per stream; the rest is drained so the child never blocks;
    - the run directory is deleted afterwards.
    The whole run's memory (total_memory_bytes: processes and tmpfs files; over it the kernel's OOM killer ends one
    of them) and task count (max_processes), where a cgroup can be created (root on a host or VM, not a container
    with a read-only cgroup filesystem): the run enters its own cgroup(s) before bwrap starts, cannot leave them (no
    /sys inside, no privilege), and everything in them is killed, and waited for, before the call returns. Without
    such a cgroup, the equivalent is weaker: a non-root user gets RLIMIT_NPROC at its current task count +
    max_processes (root is exempt); memory is only capped per process; processes end with the PID namespace.
    """
    problem = sandbox_problem()
    if problem and not UNSAFE_EXECUTOR:
        raise SandboxUnavailable(_refusal(problem))
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="codesteer-run-"))
    cgroups = _new_cgroups(max_processes, total_memory_bytes)
    try:
        script = workdir / "main.py"
        script.write_text(code, encoding="utf-8", errors="replace")
        command = [sys.executable, *INTERPRETER_FLAGS, str(script)]
        if not problem:
            command = _bwrap_args(workdir, max_file_bytes) + command
        # No preexec_fn: a fork of our (large, threaded) process per run is slow and unsafe, so a shell joins the
        # cgroups and prlimit sets the limits, each exec'ing the next.
        command = _cgroup_joiner(cgroups) + _prlimit_args(timeout, memory_bytes, max_processes, max_file_bytes) \
            + command
        env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8",
               "HOME": str(workdir), "TMPDIR": str(workdir), "PYTHONPATH": os.pathsep.join(site.getsitepackages())}
        stdout, stderr = _CappedCapture(max_output_bytes), _CappedCapture(max_output_bytes)
        with subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True) as process, \
                selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ, stdout)
            selector.register(process.stderr, selectors.EVENT_READ, stderr)
            try:
                exited = _pump_until_exit(selector, process.pid, started + timeout)
            finally:
                # The child is not reaped yet, so its pid still names its group: no risk of hitting a stranger.
                _kill_process_group(process.pid)
                for cgroup in cgroups:
                    _kill_cgroup(cgroup)
            _pump(selector, time.monotonic() + DRAIN_GRACE_S)
        returncode = process.returncode
        if not problem and 128 < returncode < 128 + signal.NSIG:  # bwrap reports death by signal N as 128 + N
            returncode = 128 - returncode
        return ExecResult(stdout=stdout.data.decode("utf-8", errors="replace"),
                          stderr=stderr.data.decode("utf-8", errors="replace"),
                          returncode=returncode, timed_out=not exited,
                          seconds=time.monotonic() - started, truncated=stdout.truncated or stderr.truncated)
    finally:
        for cgroup in cgroups:
            _kill_cgroup(cgroup)  # no-op after a run; removes the cgroup when Popen failed
        shutil.rmtree(workdir, ignore_errors=True)


def configure_executor(allow_unsafe: bool) -> str | None:
    """Start-up check (once per process): a warning to print, or None when the full sandbox is available.

    Raises SandboxUnavailable, with what to do, where the sandbox cannot run and allow_unsafe is False; with
    allow_unsafe, run_python falls back to running the code as our user with the per-process limits only.
    """
    global UNSAFE_EXECUTOR
    UNSAFE_EXECUTOR = allow_unsafe
    problem = sandbox_problem()
    if problem and not allow_unsafe:
        raise SandboxUnavailable(_refusal(problem))
    if problem:
        return (f"{problem}: model-written code runs UNSANDBOXED ({UNSAFE_FLAG}), as this user, with its files and "
                f"network; only per-process limits and the timeout apply")
    if not _cgroup_parents():
        return ("no writable memory and pids cgroup (not root, or a container): a run's total memory and process "
                "count are capped per process only")
    return None


def _refusal(problem: str) -> str:
    return (f"{problem}, so model-written code cannot be sandboxed; install bubblewrap (apt-get install bubblewrap) "
            f"and allow user namespaces, or pass {UNSAFE_FLAG} to run it with per-process limits only")


@functools.cache
def sandbox_problem() -> str | None:
    """Why the bubblewrap sandbox cannot run here (probed once by starting one), or None when it can."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    with tempfile.TemporaryDirectory(prefix="codesteer-probe-") as workdir:
        try:
            command = _bwrap_args(Path(workdir), MAX_FILE_BYTES) + [sys.executable, *INTERPRETER_FLAGS, "-c", "pass"]
            probe = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return "bwrap did not start a sandbox within 30 s"
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
        return f"bwrap cannot create a sandbox here ({reason})"
    return None


def _bwrap_args(workdir: Path, tmp_bytes: int) -> list[str]:
    """bwrap and its options, up to the command: see run_python for what they give. The tmpfs /tmp holds at most
    tmp_bytes: its pages are memory, which only a cgroup would cap otherwise."""
    # --unshare-all only tries the user namespace; ask for it outright so that a failure is an error. No
    # --new-session (against TIOCSTI on our terminal): run_python starts bwrap in a new session already, so the
    # sandbox has no controlling terminal, and bwrap's own setsid cost ~5 ms a run here.
    return ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), *_read_only_view(),
            "--proc", "/proc", "--dev", "/dev", "--size", str(tmp_bytes), "--tmpfs", "/tmp",
            "--bind", str(workdir), str(workdir), "--chdir", str(workdir), "--"]


@functools.cache
def _read_only_view() -> tuple[str, ...]:
    """bwrap options binding, read-only, what the interpreter needs and nothing else: /usr and the top-level links
    into it, the dynamic linker's cache, and the Python installation with its site-packages. These may live under
    a private directory (pyenv's in /root): only they appear there, the rest of it stays out of sight."""
    args = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    needed = ["/usr", "/etc/ld.so.cache", "/etc/alternatives", sys.base_prefix, sys.prefix, sys.executable,
              *site.getsitepackages()]
    bound: list[str] = []
    for path in sorted({os.path.abspath(path) for path in needed}, key=len):  # parents before their children
        if os.path.exists(path) and not any(path.startswith(parent + "/") for parent in bound):
            bound.append(path)
            args += ["--ro-bind", path, path]
    return tuple(args)


def _prlimit_args(timeout: float, memory_bytes: int, max_processes: int, max_file_bytes: int) -> list[str]:
    limits = [("as", resource.RLIMIT_AS, memory_bytes), ("cpu", resource.RLIMIT_CPU, math.ceil(timeout) + 1),
              ("fsize", resource.RLIMIT_FSIZE, max_file_bytes), ("core", resource.RLIMIT_CORE, 0)]
    if os.getuid() != 0:  # the kernel exempts root from RLIMIT_NPROC
        limits.append(("nproc", resource.RLIMIT_NPROC, _tasks_of_user(os.getuid()) + max_processes))
    return ["prlimit", *(f"--{name}={_within_hard_limit(kind, value)}" for name, kind, value in limits), "--"]


def _within_hard_limit(kind: int, value: int) -> str:
    """soft:hard for prlimit: an unprivileged process cannot raise its hard limit, so never ask for more."""
    _, hard = resource.getrlimit(kind)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    return f"{value}:{value}"


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
    watch, or the deadline passes (False). Past the deadline it still looks once, without waiting: a host that was
    suspended (SIGSTOP, a laptop's sleep) wakes up past the deadline of a child that exited in time."""
    while selector.get_map():
        remaining = deadline - time.monotonic()
        for key, _ in selector.select(max(remaining, 0)):
            if key.data is None:
                return True
            chunk = os.read(key.fd, 65536)
            if chunk:
                key.data.add(chunk)
            else:
                selector.unregister(key.fileobj)
        if remaining <= 0:
            return False
    return False


def _kill_process_group(pgid: int):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is empty, or a member is not ours to kill
        pass


# The first thing a run executes: join each cgroup named before "--" ("0" moves the writing process), then become
# the command after it, so that every process of the run is born inside.
JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; exec "$@"'


def _cgroup_joiner(cgroups: list[Path]) -> list[str]:
    if not cgroups:
        return []
    return ["/bin/sh", "-c", JOIN_CGROUPS, "sh", *(str(cgroup / "cgroup.procs") for cgroup in cgroups), "--"]


@functools.cache
def _cgroup_parents() -> tuple[Path, ...]:
    """Where a run's cgroups go, if we may create them there: the cgroup-v1 memory and pids hierarchies' copies of
    our own cgroup, or our cgroup-v2 cgroup where it hands both controllers to its children; else ()."""
    v1, v2 = {}, None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        for controller in {"memory", "pids"} & set(controllers.split(",")):
            v1[controller] = Path("/sys/fs/cgroup", controller, path.lstrip("/"))
        if hierarchy == "0":
            v2 = Path("/sys/fs/cgroup", path.lstrip("/"))
    if len(v1) == 2:
        parents = (v1["memory"], v1["pids"])
    else:
        try:
            delegated = set((v2 / "cgroup.subtree_control").read_text().split()) if v2 else set()
        except OSError:
            delegated = set()
        parents = (v2,) if {"memory", "pids"} <= delegated else ()
    return parents if all(os.access(parent, os.W_OK) for parent in parents) else ()


def _new_cgroups(max_processes: int, total_memory_bytes: int) -> list[Path]:
    """One cgroup per parent, capped; [] where that fails. Swap counts as memory, so the cap cannot be dodged."""
    limits = {"pids.max": max_processes, "memory.limit_in_bytes": total_memory_bytes,  # v1
              "memory.memsw.limit_in_bytes": total_memory_bytes, "memory.max": total_memory_bytes,  # v1, v2
              "memory.swap.max": 0}  # v2
    cgroups = []
    try:
        for parent in _cgroup_parents():
            cgroup = parent / f"codesteer-{uuid.uuid4().hex}"
            cgroup.mkdir()
            cgroups.append(cgroup)
            for name, value in limits.items():  # in this order: v1 wants memsw >= the memory limit set before it
                if (cgroup / name).exists():
                    (cgroup / name).write_text(str(value))
        return cgroups
    except OSError:
        for cgroup in cgroups:
            _kill_cgroup(cgroup)
        return []


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
