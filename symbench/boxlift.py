"""boxlift (spec C.2): lift every box with capacity-limited lifters within a step budget. The
scorer simulates the plan and gives partial credit (lifted weight / total weight); the budget
S and our reference plan both come from the spec's greedy.

    task = symbench.get_task("boxlift")
    sample = task.generate(1, complexity=3, seed=0)[0]
    task.score(sample, "<<<" + task.solve(sample) + ">>>")      # -> 1.0
    task.lift_ratios(sample, "Step 1: [(50, [0])]")             # -> (weight ratio, box ratio)
"""

import json
import random
import re
from collections import Counter
from pathlib import Path

from symbench.core import Sample, Task, sample_folders

# (boxes, lifters, min weight, max weight, min capacity, max capacity) per level; 1-4 are the
# original's evaluated configurations (spec C.2), 5 is one step harder in the same pattern.
CONFIGURATIONS = {
    1: (10, 3, 10, 100, 40, 80),
    2: (15, 4, 20, 200, 30, 120),
    3: (20, 5, 30, 300, 40, 160),
    4: (25, 6, 40, 400, 50, 200),
    5: (30, 7, 50, 500, 60, 240),
}
ORIGINAL_LEVELS = 4  # levels 1..4 are the folders BoxLift_<boxes>_<lifters> of the original

_LIFTERS = r"\[\s*(\d{1,4}(?:\s*,\s*\d{1,4}){0,50})?\s*,?\s*\]"
_ASSIGNMENT = re.compile(rf"\(\s*(\d{{1,9}})(?:\.0*)?\s*,\s*{_LIFTERS}\s*\)")
_SEPARATORS = re.compile(r"[\s,]*")


def greedy_plan(boxes: list[int], lifters: list[int]) -> list[list[tuple[int, list[int]]]]:
    """The spec's greedy, as the original's estimate_steps: heaviest box first; in each step,
    every remaining box that the still-free lifters can lift together takes free lifters in
    list order until their capacity covers it. len(plan) is the step budget S."""
    remaining = sorted(boxes, reverse=True)
    plan = []
    while remaining:
        free = list(range(len(lifters)))
        step, i = [], 0
        while i < len(remaining) and free:
            weight = remaining[i]
            if sum(lifters[j] for j in free) < weight:
                i += 1
                continue
            used, capacity = [], 0
            for j in free:
                used.append(j)
                capacity += lifters[j]
                if capacity >= weight:
                    break
            free = [j for j in free if j not in used]
            step.append((weight, used))
            remaining.pop(i)
        if not step:
            raise ValueError(f"box {remaining[0]} is heavier than all lifters together")
        plan.append(step)
    return plan


def format_plan(plan) -> str:
    lines = []
    for number, step in enumerate(plan, start=1):
        assignments = ", ".join(f"({weight}, {list(used)})" for weight, used in step)
        lines.append(f"Step {number}: [{assignments}]")
    return "\n".join(lines)


def parse_step(text: str) -> list[tuple[int, list[int]]] | None:
    """`[(weight, [i, j]), ...]`; None when the text is anything else."""
    text = text.strip().rstrip(".;,").strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    inner, assignments, position = text[1:-1], [], 0
    for match in _ASSIGNMENT.finditer(inner):
        if not _SEPARATORS.fullmatch(inner, position, match.start()):
            return None
        indices = [int(token) for token in (match.group(2) or "").split(",") if token.strip()]
        assignments.append((int(match.group(1)), indices))
        position = match.end()
    return assignments if _SEPARATORS.fullmatch(inner, position) else None


def remaining_after(boxes: list[int], lifters: list[int], answer: str, max_steps: int) -> Counter:
    """Simulate the first max_steps steps of a plan (spec C.2) and return the boxes left.
    An assignment is skipped when its weight is not among the remaining boxes, an index is
    invalid, a lifter works twice in the step, or the lifters are too weak; a step that does
    not parse ends the simulation."""
    remaining = Counter(boxes)
    for chunk in re.split(r"step", answer, flags=re.IGNORECASE)[1:max_steps + 1]:
        _, colon, content = chunk.partition(":")
        step = parse_step(content) if colon else None
        if step is None:
            break
        busy = set()
        for weight, indices in step:
            if (remaining[weight] == 0 or any(i >= len(lifters) for i in indices)
                    or len(set(indices)) < len(indices) or busy.intersection(indices)
                    or sum(lifters[i] for i in indices) < weight):
                continue
            remaining[weight] -= 1
            busy.update(indices)
    return remaining


class BoxLift(Task):
    """Assign lifters (capacities) to boxes (weights), several boxes per step, within the
    greedy's step budget S.

    Levels are the original's configurations (boxes, lifters, weights, capacities):
    1: 10, 3, 10-100, 40-80; 2: 15, 4, 20-200, 30-120; 3: 20, 5, 30-300, 40-160;
    4: 25, 6, 40-400, 50-200; 5 (ours, harder): 30, 7, 50-500, 60-240.
    The score is the lifted weight / total weight, so 1.0 means every box was lifted;
    `lift_ratios` also gives the lifted-box ratio the original logged.
    """

    id = "boxlift"
    answer_format = "<<<Step 1: [(weight, [lifter, ...]), ...]\\nStep 2: ...>>>: one line per step"
    levels = (1, 2, 3, 4, 5)
    default_level = 3

    def knobs(self, level: int) -> dict:
        names = ("n_boxes", "n_lifters", "min_weight", "max_weight", "min_capacity", "max_capacity")
        return dict(zip(names, CONFIGURATIONS[level]))

    def make_sample(self, rng: random.Random, level: int, index: int, *, n_boxes, n_lifters,
                    min_weight, max_weight, min_capacity, max_capacity) -> Sample:
        while True:  # the original drew freely; we redraw the rare box no team can lift
            boxes = [rng.randint(min_weight, max_weight) for _ in range(n_boxes)]
            lifters = [rng.randint(min_capacity, max_capacity) for _ in range(n_lifters)]
            if max(boxes) <= sum(lifters):
                return self._sample(boxes, lifters, level)

    def _sample(self, boxes, lifters, level, sample_id="") -> Sample:
        plan = greedy_plan(boxes, lifters)
        meta = {"boxes": boxes, "lifters": lifters, "max_steps": len(plan)}
        return Sample(task=self.id, id=sample_id, question=self._question(meta),
                      answer=format_plan(plan), complexity=level, meta=meta)

    @staticmethod
    def _question(meta) -> str:
        return (
            "Lift a set of boxes with a team of lifters.\n\n"
            f"Box weights: {meta['boxes']}\n"
            f"Lifter capacities: {meta['lifters']} (lifter 0 is the first entry, lifter 1 the "
            "second, and so on)\n\n"
            "Rules:\n"
            "- The work happens in steps, and several boxes can be lifted in the same step.\n"
            "- Within one step a lifter works on at most one box.\n"
            "- A box can be lifted by one lifter or by several lifters together, provided their "
            "capacities add up to at least its weight.\n"
            f"- Every box must be lifted within at most {meta['max_steps']} steps; fewer steps are "
            "better.\n\n"
            "Write one line per step in the form Step k: [(box weight, [lifter indices]), ...]. "
            "For example, Step 1: [(50, [0, 2]), (30, [1])] means that lifters 0 and 2 lift a box "
            "of weight 50 while lifter 1 lifts a box of weight 30.\n\n"
            "Put the whole plan inside triple angle brackets, for example "
            "<<<Step 1: [(50, [0, 2]), (30, [1])]\nStep 2: [(40, [0, 1])]>>>.")

    def lift_ratios(self, sample: Sample, answer: str) -> tuple[float, float]:
        """(lifted weight / total weight, lifted boxes / total boxes) for an extracted answer."""
        boxes = sample.meta["boxes"]
        left = remaining_after(boxes, sample.meta["lifters"], answer, sample.meta["max_steps"])
        left_weight = sum(weight * count for weight, count in left.items())
        return 1 - left_weight / sum(boxes), 1 - sum(left.values()) / len(boxes)

    def solve(self, sample: Sample) -> str:
        return format_plan(greedy_plan(sample.meta["boxes"], sample.meta["lifters"]))

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        return self.lift_ratios(sample, answer)[0]

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        # A changed lifter index can still be strong enough; dropping a lift never is.
        matches = list(_ASSIGNMENT.finditer(answer))
        if not matches:
            return answer[: len(answer) // 2]
        last = matches[-1]
        shortened = answer[:last.start()] + answer[last.end():]
        return re.sub(r"\[\s*,\s*", "[", re.sub(r",\s*\]", "]", shortened))

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        root = Path(dataset_gather_dir) / "BoxLift_dataset"
        samples = []
        for level in range(1, ORIGINAL_LEVELS + 1):
            n_boxes, n_lifters = CONFIGURATIONS[level][:2]
            folder = root / f"BoxLift_{n_boxes}_{n_lifters}"
            for instance in sample_folders(folder, "BoxLift"):
                path = instance / "BoxLift.json"
                if not path.is_file():
                    raise FileNotFoundError(f"missing {path}")
                data = json.loads(path.read_text(encoding="utf-8"))
                samples.append(self._sample(data["boxes"], data["lifters"], level,
                                            sample_id=f"{folder.name}_{path.parent.name}"))
        return samples


TASKS = [BoxLift()]
