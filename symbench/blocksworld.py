"""blocksworld (spec C.2): rearrange lettered blocks between numbered stacks, moving one top
block at a time, until the stacks match the goal. The scorer simulates the moves; the solver is
an A* search over states, so its plans are shortest.

    task = symbench.get_task("blocksworld")
    sample = task.generate(1, complexity=443, seed=0)[0]
    task.score(sample, "<<<" + task.solve(sample) + ">>>")      # -> 1.0

A state is a list of stacks, bottom block first; stack k of the text ("stackk: A B") is
entry k-1.
"""

import heapq
import itertools
import random
import re
from pathlib import Path

from symbench.core import Sample, Task, sample_folders

# (blocks, initial stacks, goal stacks): the original's 24 evaluated configurations, in its
# order, then two harder ones of ours. A level is written as the three digits, e.g. 453.
CONFIGURATIONS = [(blocks, stacks, goal_stacks) for blocks in (2, 3, 4) for stacks in (3, 4, 5)
                  for goal_stacks in (2, 3, 4) if goal_stacks <= stacks] + [(5, 4, 3), (5, 5, 3)]
ORIGINAL_CONFIGURATIONS = CONFIGURATIONS[:24]

MAX_MOVES = 500
_STACK = r"(?:stack\s*)?(\d{1,3})"
_MOVE = re.compile(rf"(?:\d{{1,3}}[.)]\s*)?move\s+(\S+)\s+from\s+{_STACK}\s+to\s+{_STACK}\s*[.,;]?",
                   re.IGNORECASE)


def level_code(blocks: int, stacks: int, goal_stacks: int) -> int:
    return blocks * 100 + stacks * 10 + goal_stacks


def parse_task_text(text: str) -> tuple[list[list[str]], list[list[str]]]:
    """The 'Initial State:' and 'Goal State:' sections of blocksworld_task.txt, as lists of
    stacks (stack1 first, bottom block first)."""
    sections: dict[str, dict[int, list[str]]] = {}
    current = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line in ("Initial State:", "Goal State:"):
            current = sections.setdefault(line, {})
        elif line:
            match = re.fullmatch(r"stack(\d+):\s*(.*)", line)
            if current is None or match is None:
                raise ValueError(f"unexpected line in a Blocksworld task: {raw_line!r}")
            current[int(match.group(1))] = match.group(2).split()
    states = []
    for name in ("Initial State:", "Goal State:"):
        stacks = sections.get(name)
        if not stacks or sorted(stacks) != list(range(1, len(stacks) + 1)):
            raise ValueError(f"Blocksworld task: section {name!r} is missing or not stack1..n")
        states.append([stacks[k] for k in range(1, len(stacks) + 1)])
    return states[0], states[1]


def format_state(stacks: list[list[str]]) -> str:
    return "\n".join(f"stack{k}: {' '.join(blocks)}" for k, blocks in enumerate(stacks, start=1))


def reaches_goal(stacks: list[list[str]], goal: list[list[str]]) -> bool:
    """The original's comparison: the non-empty stacks, by their numbers, equal the goal's."""
    def non_empty(state):
        return {k: blocks for k, blocks in enumerate(state) if blocks}
    return non_empty(stacks) == non_empty(goal)


def apply_moves(initial: list[list[str]], answer: str) -> list[list[str]] | None:
    """The state after the answer's moves, or None if a line is not a move, a stack does not
    exist, or the block is not on top of its source stack. Blank lines and '1.'-style
    numbering are tolerated."""
    lines = [line.strip().strip("'\"`[],").strip() for line in re.split(r"[\n;,]", answer)]
    lines = [line for line in lines if line]
    if not lines or len(lines) > MAX_MOVES:
        return None
    stacks = [list(blocks) for blocks in initial]
    for line in lines:
        match = _MOVE.fullmatch(line)
        if match is None:
            return None
        block = match.group(1)
        source, destination = int(match.group(2)) - 1, int(match.group(3)) - 1
        if not (0 <= source < len(stacks) and 0 <= destination < len(stacks)):
            return None
        if not stacks[source] or stacks[source][-1] != block:
            return None
        stacks[destination].append(stacks[source].pop())
    return stacks


def shortest_plan(initial: list[list[str]], goal: list[list[str]]) -> list[tuple[str, int, int]]:
    """A shortest list of moves (block, source stack, destination stack), 1-based stacks.

    A* with h = the number of blocks not yet resting on a correct tower (a block is in place
    when it sits on its goal stack at its goal height with every block below it in place).
    Each such block must move at least once, and a move changes only the moved block's status,
    so h is consistent and the first plan popped is shortest."""
    n = len(initial)
    goal_stacks = [tuple(goal[k]) if k < len(goal) else () for k in range(n)]
    if sorted(b for s in initial for b in s) != sorted(b for s in goal_stacks for b in s):
        raise ValueError("the goal does not hold the same blocks as the initial state")

    def misplaced(state) -> int:
        count = 0
        for stack, target in zip(state, goal_stacks):
            in_place = 0
            while in_place < min(len(stack), len(target)) and stack[in_place] == target[in_place]:
                in_place += 1
            count += len(stack) - in_place
        return count

    start = tuple(tuple(s) for s in initial)
    tie = itertools.count()
    frontier = [(misplaced(start), next(tie), start)]
    came_from = {start: None}
    cost = {start: 0}
    while frontier:
        _, _, state = heapq.heappop(frontier)
        if state == tuple(goal_stacks):
            plan = []
            while came_from[state] is not None:
                state, move = came_from[state]
                plan.append(move)
            return plan[::-1]
        for source in range(n):
            if not state[source]:
                continue
            block = state[source][-1]
            for destination in range(n):
                if destination == source:
                    continue
                stacks = list(state)
                stacks[source] = state[source][:-1]
                stacks[destination] = state[destination] + (block,)
                nxt = tuple(stacks)
                if nxt not in cost or cost[state] + 1 < cost[nxt]:
                    cost[nxt] = cost[state] + 1
                    came_from[nxt] = (state, (block, source + 1, destination + 1))
                    heapq.heappush(frontier, (cost[nxt] + misplaced(nxt), next(tie), nxt))
    raise ValueError("the goal cannot be reached")


def format_plan(plan) -> str:
    return "\n".join(f"Move {block} from {source} to {destination}"
                     for block, source, destination in plan)


class Blocksworld(Task):
    """Move lettered blocks between a fixed set of numbered stacks, one top block at a time,
    until the non-empty stacks equal the goal's.

    A level is a configuration written as three digits: blocks, initial stacks, goal stacks
    (the goal uses only the first stacks), e.g. 453 = 4 blocks, 5 stacks, goal on stacks 1-3.
    The original's 24 configurations: blocks 2-4, initial stacks 3-5, goal stacks 2-4 (at most
    the initial count); then 543 and 553 (ours, harder). Generated tasks never start solved.
    """

    id = "blocksworld"
    answer_format = "<<<Move X from 1 to 2\\nMove Y from 3 to 1\\n...>>>: one move per line"
    levels = tuple(level_code(*configuration) for configuration in CONFIGURATIONS)
    default_level = 443

    def knobs(self, level: int) -> dict:
        return {"blocks": level // 100, "stacks": level // 10 % 10, "goal_stacks": level % 10}

    def make_sample(self, rng: random.Random, level: int, index: int, *, blocks, stacks,
                    goal_stacks) -> Sample:
        names = [chr(ord("A") + i) for i in range(blocks)]
        while True:
            initial, goal = [[] for _ in range(stacks)], [[] for _ in range(goal_stacks)]
            for name in rng.sample(names, blocks):
                initial[rng.randrange(stacks)].append(name)
            for name in rng.sample(names, blocks):
                goal[rng.randrange(goal_stacks)].append(name)
            if not reaches_goal(initial, goal):
                return self._sample(initial, goal, level)

    def _sample(self, initial, goal, level, sample_id="") -> Sample:
        meta = {"initial": initial, "goal": goal}
        return Sample(task=self.id, id=sample_id, question=self._question(initial, goal),
                      answer=format_plan(shortest_plan(initial, goal)), complexity=level, meta=meta)

    @staticmethod
    def _question(initial, goal) -> str:
        return (
            "Rearrange the blocks. Each line lists one stack from bottom to top: in 'stack1: A B "
            "C', A rests on the table and C is the top block.\n\n"
            f"Initial State:\n{format_state(initial)}\n\n"
            f"Goal State:\n{format_state(goal)}\n\n"
            "Rules: move one block at a time, and only the top block of a stack. Blocks can be "
            f"placed only on the {len(initial)} existing stacks (an empty stack is the table); no "
            "new stacks can be made. The goal is reached when every stack listed in the goal holds "
            "exactly those blocks in that order and all other stacks are empty.\n\n"
            "Write each move on its own line as 'Move <block> from <source stack number> to "
            "<destination stack number>' and put the list inside triple angle brackets, for "
            "example <<<Move B from 2 to 1\nMove A from 1 to 3>>>.")

    def solve(self, sample: Sample) -> str:
        return format_plan(shortest_plan(sample.meta["initial"], sample.meta["goal"]))

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        final = apply_moves(sample.meta["initial"], answer)
        return float(final is not None and reaches_goal(final, sample.meta["goal"]))

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        # Retargeting a move to another empty stack can keep a plan valid; a shortest plan
        # without its last move never reaches the goal.
        lines = answer.strip().split("\n")
        return "\n".join(lines[:-1]) if len(lines) > 1 else "Move Z from 1 to 1"

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        root = Path(dataset_gather_dir) / "Blocksworld_dataset"
        samples = []
        for configuration in ORIGINAL_CONFIGURATIONS:
            prefix = "_".join(map(str, configuration))
            for instance in sample_folders(root, f"{prefix}_"):
                path = instance / "blocksworld_task.txt"
                if not path.is_file():
                    raise FileNotFoundError(f"missing {path}")
                initial, goal = parse_task_text(path.read_text(encoding="utf-8"))
                samples.append(self._sample(initial, goal, level_code(*configuration),
                                            sample_id=path.parent.name))
        return samples


TASKS = [Blocksworld()]
