"""The executor against hostile code (issue 10): each test runs what a malicious TaskLLM would write inside the
real bubblewrap sandbox and checks on the host that it got nowhere. Skipped, with the reason, only where the
kernel forbids the sandbox's namespaces; a missing bwrap fails them (CI installs it).

    python -m pytest -q tests/test_sandbox.py
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

import checkers
from checkers import SandboxUnavailable, configure_executor, run_python

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = checkers.sandbox_problem()
needs_sandbox = pytest.mark.skipif(bool(PROBLEM and shutil.which("bwrap")),
                                   reason=f"the kernel does not let bwrap build its sandbox here: {PROBLEM}")


def host_processes_mentioning(text: str) -> list[int]:
    """Host pids of live (not zombie) processes whose command line holds `text`: how a test finds, from outside,
    the processes of a run whose own pids are those of its PID namespace."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            alive = entry.name.isdigit() and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
            if alive and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # it ended while we looked
            pass
    return found


def survivors(run_dir: str, wait_s: float = 1.0) -> list[int]:
    """Processes of the run (forks of its main.py) still alive on the host `wait_s` after it returned."""
    deadline = time.monotonic() + wait_s
    while (alive := host_processes_mentioning(f"{run_dir}/main.py")) and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in alive:  # never leave one behind for the next test
        os.kill(pid, 9)
    return alive


def test_host_scan_sees_a_live_process():
    marker = f"codesteer-test-{uuid.uuid4().hex}"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        deadline = time.monotonic() + 5
        while not host_processes_mentioning(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host_processes_mentioning(marker) == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()


@needs_sandbox
def test_runs_as_nobody_without_capabilities_and_imports_site_packages():
    code = ("import os, numpy\n"
            "print(os.getuid(), os.getgid())\n"
            "print([line for line in open('/proc/self/status') if line.startswith('CapEff')][0].split()[1])\n")
    assert run_python(code).stdout == "65534 65534\n0000000000000000\n"


@needs_sandbox
def test_proc_shows_no_environment_of_the_harness():
    # The harness is a process started with the key in its environment, as steer.py is: /proc/<pid>/environ shows
    # what a process was started with, so a key set later (monkeypatch.setenv) would prove nothing.
    secret = f"sk-test-{uuid.uuid4().hex}"
    code = ("import os\n"
            "print(sorted(int(name) for name in os.listdir('/proc') if name.isdigit()))\n"
            "for pid in {1, os.getppid(), *(int(name) for name in os.listdir('/proc') if name.isdigit())}:\n"
            "    try:\n"
            "        print(pid, open(f'/proc/{pid}/environ').read())\n"
            "    except OSError as error:\n"
            "        print(pid, error)\n")
    harness = f"import checkers\nresult = checkers.run_python({code!r})\nprint(result.stdout + result.stderr)"
    output = subprocess.run([sys.executable, "-c", harness], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "OPENAI_API_KEY": secret}).stdout
    assert secret not in output
    # It did read the environments it could see (so the test can fail), and saw only bwrap's init and itself.
    lines = output.splitlines()
    assert lines[0] == "[1, 2]" and any(line.startswith("1 ") and "HOME=" in line for line in lines)


@needs_sandbox
def test_private_host_files_are_out_of_sight():
    private = ["/etc/shadow", "/etc/passwd", str(ROOT / "checkers.py"), str(Path.home() / ".bashrc"), "/work"]
    code = ("import os\n"
            f"for path in {private!r}:\n"
            "    print(path, os.path.exists(path))\n"
            "print(sorted(os.listdir('/root')) if os.path.isdir('/root') else None)\n")
    lines = run_python(code).stdout.splitlines()
    assert lines[:-1] == [f"{path} False" for path in private]
    # /root holds at most the way down to a Python installed under it (pyenv), nothing else of the host's.
    under_root = {Path(path).relative_to("/root").parts[0] for path in (sys.prefix, sys.base_prefix)
                  if Path(path).is_relative_to("/root")}
    assert lines[-1] == (str(sorted(under_root)) if under_root else "None")


@needs_sandbox
def test_nothing_is_written_outside_the_run_dir():
    name = f"codesteer-escape-{uuid.uuid4().hex}"
    targets = [str(ROOT / name), f"/tmp/{name}", f"/root/{name}", f"/usr/{name}", f"/{name}"]
    code = ("import os\n"
            f"for path in {targets!r}:\n"
            "    try:\n"
            "        open(path, 'w').write('escaped')\n"
            "        print(path, 'written')\n"
            "    except OSError as error:\n"
            "        print(path, type(error).__name__)\n")
    result = run_python(code)
    assert f"/tmp/{name} written" in result.stdout  # the sandbox's own tmpfs, thrown away
    assert not [path for path in targets if Path(path).exists()]


@needs_sandbox
def test_scratch_tmp_holds_at_most_max_file_bytes():
    # Its pages are memory: many files each under the file size limit must not fill the host's RAM.
    code = ("for n in range(4):\n"
            "    try:\n"
            "        open(f'/tmp/{n}', 'wb').write(b'x' * 400 * 1024)\n"
            "    except OSError as error:\n"
            "        print(n, error.strerror)\n")
    assert run_python(code, max_file_bytes=1024**2).stdout == "2 No space left on device\n3 No space left on device\n"


@needs_sandbox
def test_a_concurrent_run_dir_is_invisible():
    secret = uuid.uuid4().hex
    # The first run writes its secret and waits (at most 10 s) for the host to say the second run is over.
    waiting = (f"import os, time\nopen('secret.txt', 'w').write({secret!r})\n"
               "for _ in range(1000):\n    if os.path.exists('done'):\n        break\n    time.sleep(0.01)\n")
    first = threading.Thread(target=run_python, args=(waiting,), kwargs={"timeout": 10})
    first.start()
    try:
        deadline = time.monotonic() + 10
        while not (found := [path for path in Path(tempfile.gettempdir()).glob("codesteer-run-*/secret.txt")
                             if path.read_text() == secret]) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert found, "the first run never wrote its secret"
        other = found[0]
        code = ("import glob, os\n"
                "print(glob.glob(os.path.join(os.path.dirname(os.getcwd()), 'codesteer-run-*')) == [os.getcwd()])\n"
                f"print(os.path.exists({str(other)!r}))\n")
        assert run_python(code).stdout == "True\nFalse\n"
    finally:
        for path in found or []:
            (path.parent / "done").touch()
        first.join()


@needs_sandbox
def test_loopback_server_of_the_host_is_unreachable():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = ("import socket\n"
                "try:\n"
                f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                "    print('connected')\n"
                "except OSError as error:\n"
                "    print(type(error).__name__)\n")
        result = run_python(code)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # nobody knocked
            server.accept()
    assert result.stdout == "ConnectionRefusedError\n"  # its own loopback, where nothing listens


@needs_sandbox
@pytest.mark.parametrize("ending", ["exit", "timeout"])
def test_no_process_outlives_the_run(ending):
    # Tries to leave for the root cgroup, then double-forks a sleeper into a new session.
    code = ("import os, time\n"
            "print(os.getcwd(), flush=True)\n"
            "for procs in ('/sys/fs/cgroup/cgroup.procs', '/sys/fs/cgroup/pids/cgroup.procs'):\n"
            "    try:\n"
            "        open(procs, 'w').write(str(os.getpid()))\n"
            "        print('left the cgroup via', procs, flush=True)\n"
            "    except OSError:\n"
            "        pass\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        print('sleeper', os.getpid(), flush=True)\n"
            "        time.sleep(100)\n"
            "    os._exit(0)\n"
            "time.sleep(0.5)\n"
            + ("time.sleep(100)\n" if ending == "timeout" else ""))
    result = run_python(code, timeout=2)
    assert result.timed_out == (ending == "timeout") and result.seconds < 3
    run_dir, *rest = result.stdout.splitlines()
    assert [line.split()[0] for line in rest] == ["sleeper"]  # it never left the cgroup, and the sleeper started
    assert survivors(run_dir) == []


@needs_sandbox
def test_bounded_fork_loop_is_contained():
    # At most 2**7 = 128 processes even if nothing contained it, so a failure cannot take the machine down.
    code = ("import os, time\n"
            "print(os.getcwd(), flush=True)\n"
            "for _ in range(7):\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        pass\n"
            "print(os.getpid(), flush=True)\n"
            "time.sleep(100)\n")
    result = run_python(code, timeout=2, max_processes=16)
    assert result.timed_out and result.seconds < 3
    run_dir, *pids = result.stdout.splitlines()
    assert pids and survivors(run_dir) == []
    if checkers._cgroup_parents():
        assert len(pids) <= 16


@needs_sandbox
@pytest.mark.skipif(not checkers._cgroup_parents(), reason="no writable memory and pids cgroup here")
def test_children_share_one_memory_cap():
    # Four children of 1.2 GB each: each passes the per-process limit (2 GiB), together they pass the run's cap.
    code = ("import os, time\n"
            "children = []\n"
            "for _ in range(4):\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        block = b'x' * 1_200_000_000\n"
            "        time.sleep(1)\n"
            "        os._exit(0)\n"
            "    children.append(pid)\n"
            "print([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children])\n")
    result = run_python(code, timeout=60, total_memory_bytes=2 * 1024**3)  # takes ~8 s on 2 busy cores
    assert not result.timed_out
    assert result.returncode != 0 or result.stdout != "[0, 0, 0, 0]\n"  # the OOM killer or MemoryError stepped in
    assert run_python("print(1)").stdout == "1\n"


# -- without the sandbox -------------------------------------------------------------------------------------------

def test_missing_sandbox_refuses_to_run_without_the_flag(monkeypatch):
    monkeypatch.setattr(checkers, "UNSAFE_EXECUTOR", False)
    monkeypatch.setattr(checkers, "sandbox_problem", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(SandboxUnavailable, match="--unsafe-executor"):
        run_python("print(1)")
    with pytest.raises(SandboxUnavailable, match="bwrap"):
        configure_executor(allow_unsafe=False)
    assert "UNSANDBOXED" in configure_executor(allow_unsafe=True)
    result = run_python("import os\nprint(os.getuid() == os.geteuid(), os.path.exists('/proc/1/environ'))")
    assert result.stdout == "True True\n"  # the host's /proc: not sandboxed, as the warning says


def test_start_up_warns_where_no_cgroup_caps_the_run(monkeypatch):
    monkeypatch.setattr(checkers, "UNSAFE_EXECUTOR", False)
    monkeypatch.setattr(checkers, "sandbox_problem", lambda: None)
    monkeypatch.setattr(checkers, "_cgroup_parents", lambda: ())
    assert "capped per process only" in configure_executor(allow_unsafe=False)


def test_steer_refuses_at_start_up_without_bwrap(tmp_path):
    # No bwrap on PATH: one argparse-style line naming the flag, exit 2, before any model is loaded.
    result = subprocess.run([sys.executable, str(ROOT / "steer.py"), "--task", "game24", "--out", str(tmp_path)],
                            env={"PATH": str(tmp_path)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("steer.py: error: bubblewrap (bwrap) is not installed") and "--unsafe-executor" in last


def test_a_child_that_exited_in_time_is_no_timeout_when_the_host_wakes_up_past_the_deadline():
    """A host suspended while the code ran (the parent SIGSTOPped, a laptop asleep) wakes up past the deadline: the
    child that finished meanwhile is reported as finished, one that still runs as timed out, at once."""
    import selectors

    def pump(argv, until_exited: bool) -> tuple[bool, bytes, float]:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            if until_exited:  # exited, not reaped: its pid still names it, as in run_python
                os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
            capture = checkers._CappedCapture(1000)
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ, capture)
                selector.register(process.stderr, selectors.EVENT_READ, checkers._CappedCapture(1000))
                started = time.monotonic()
                exited = checkers._pump_until_exit(selector, process.pid, deadline=started - 5)
                return exited, capture.data, time.monotonic() - started
        finally:
            process.kill()
            process.wait()
    exited, output, _ = pump([sys.executable, "-c", "print('finished in time')"], until_exited=True)
    assert exited and b"finished in time" in output
    exited, _, seconds = pump([sys.executable, "-c", "import time; time.sleep(30)"], until_exited=False)
    assert not exited and seconds < 1
