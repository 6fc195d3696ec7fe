"""SymBench: the 37 symbolic tasks of CodeSteer (spec Part C).

    import symbench
    task = symbench.get_task("game24")
    samples = task.generate(10, complexity=3, seed=0)
    task.score(samples[0], "... <<<(4+4)*(4-1) = 24>>>")        # -> 1.0 or 0.0
    originals = symbench.load_original("game24", "path/to/dataset_gather")

Every module of this package that defines a list `TASKS` contributes its tasks; the registry
orders them as the spec does (28 seen, then 9 unseen).
"""

import importlib
import pkgutil
from pathlib import Path

from symbench.core import (SEEN_TASK_IDS, TASK_IDS, UNSEEN_TASK_IDS, Sample, Task,
                           extract_answer)

_NOT_TASK_MODULES = {"core", "__main__"}


def _collect_tasks() -> dict[str, Task]:
    found: dict[str, Task] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name in _NOT_TASK_MODULES or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"symbench.{module_info.name}")
        for task in getattr(module, "TASKS", []):
            if task.id not in TASK_IDS:
                raise RuntimeError(f"symbench.{module_info.name}: unknown task id {task.id!r}")
            if task.id in found:
                raise RuntimeError(f"task id {task.id!r} is defined twice")
            if task.seen != (task.id in SEEN_TASK_IDS):
                raise RuntimeError(f"task {task.id!r} has the wrong seen flag")
            found[task.id] = task
    return {task_id: found[task_id] for task_id in TASK_IDS if task_id in found}


TASKS: dict[str, Task] = _collect_tasks()


def get_task(task_id: str) -> Task:
    try:
        return TASKS[task_id]
    except KeyError:
        raise KeyError(f"unknown task {task_id!r}; known tasks: {', '.join(TASKS)}") from None


def load_original(task_id: str, dataset_gather_dir: str | Path) -> list[Sample]:
    """The original published samples of one task, read from the `dataset_gather` layout."""
    root = Path(dataset_gather_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory not found: {root}")
    return get_task(task_id).load_original(root)


__all__ = ["TASKS", "TASK_IDS", "SEEN_TASK_IDS", "UNSEEN_TASK_IDS", "Sample", "Task",
           "get_task", "load_original", "extract_answer"]
