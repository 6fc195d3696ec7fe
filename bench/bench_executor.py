"""What the sandbox costs: median wall time of run_python("print(1)") against a bare subprocess.run.

    python bench/bench_executor.py [--runs 30]

Target: sandboxed median under 60 ms.
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checkers import _pids_cgroup_parent, run_python  # noqa: E402


def bare_run():
    subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True)


def sandboxed_run():
    run_python("print(1)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    timings = {bare_run: [], sandboxed_run: []}
    for _ in range(runs + 1):  # alternate, so that both see the same load from other processes
        for run, seconds in timings.items():
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
    bare, sandboxed = (statistics.median(seconds[1:]) * 1000 for seconds in timings.values())  # drop cold runs
    print(f"pids cgroup in use: {_pids_cgroup_parent() is not None}")
    print(f"bare subprocess.run  median {bare:6.1f} ms over {runs} runs")
    print(f"run_python           median {sandboxed:6.1f} ms over {runs} runs")
    print(f"ratio                {sandboxed / bare:6.2f}x")


if __name__ == "__main__":
    main()
