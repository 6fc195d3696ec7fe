"""What the sandbox costs: median wall time of run_python("print(1)") in the bubblewrap sandbox, on the old
unsandboxed path (what --unsafe-executor falls back to: the same limits and cgroups, no bwrap) and as a bare
subprocess.run, alternated in one run so that all three see the same load.

    python bench/bench_executor.py [--runs 30] [--parent-gb 2]

--parent-gb makes this process hold that much memory first, as steer.py does with a model loaded: run_python
spawns without a preexec_fn, so its cost must not grow with the size of the caller.

Target: sandboxed median under 60 ms.
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import checkers  # noqa: E402


def bare_run():
    subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True)


def unsandboxed_run():
    with mock.patch.multiple(checkers, sandbox_problem=lambda: "benchmark of the old path", UNSAFE_EXECUTOR=True):
        checkers.run_python("print(1)")


def sandboxed_run():
    checkers.run_python("print(1)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--parent-gb", type=float, default=0, help="memory this process holds (touched) meanwhile")
    args = parser.parse_args()
    runs, ballast = args.runs, b"x" * int(args.parent_gb * 1024**3)  # held until the end
    problem = checkers.sandbox_problem()
    print(f"sandbox: {problem or 'bubblewrap'}; memory and pids cgroups in use: {bool(checkers._cgroup_parents())}; "
          f"this process holds {len(ballast) / 1024**3:.1f} GB")
    timings = {"bare subprocess.run": (bare_run, []), "run_python, old path (no sandbox)": (unsandboxed_run, [])}
    if not problem:
        timings["run_python, bubblewrap sandbox"] = (sandboxed_run, [])
    for _ in range(runs + 1):  # alternate, so that all see the same load from other processes
        for run, seconds in timings.values():
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
    medians = {name: statistics.median(seconds[1:]) * 1000 for name, (_, seconds) in timings.items()}  # drop cold
    for name, median in medians.items():
        print(f"{name:36s} median {median:6.1f} ms over {runs} runs")
    if not problem:
        sandboxed, old = medians["run_python, bubblewrap sandbox"], medians["run_python, old path (no sandbox)"]
        print(f"{'sandbox / old path':36s} ratio  {sandboxed / old:6.2f}x ({sandboxed - old:+.1f} ms)")


if __name__ == "__main__":
    main()
