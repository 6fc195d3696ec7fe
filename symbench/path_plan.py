"""path_plan (spec C.2): plan a waypoint path for a robot among coloured boxes, entering some
boxes and never entering others. The scorer is a verifier (any valid path passes); the solver
searches a cell decomposition of the room.

    task = symbench.get_task("path_plan")
    sample = task.generate(1, complexity=3, seed=0)[0]
    task.score(sample, "<<<" + task.solve(sample) + ">>>")      # -> 1.0

The original has no sample files: its 14 environments x 10 instructions live in
tests/symbench-reference/path_plan_environments.json, from which `load_original` rebuilds the
140 samples (ids sample_<env>_<instruction>).
"""

import json
import random
import re
from collections import deque
from pathlib import Path

from symbench.core import Sample, Task

COLOURS = ("red", "blue", "green", "yellow", "pink", "purple", "orange")
# Rectangles are (x_start, x_end, y_start, y_end) throughout, as in the original.
WALLS = ((-1.5, -1.4, -1.5, 1.5), (1.4, 1.5, -1.5, 1.5),
         (-1.5, 1.5, -1.5, -1.4), (-1.5, 1.5, 1.4, 1.5))
INNER = 1.4  # the walls' inner faces: the free room is the open square (-1.4, 1.4)^2

# The original's ten instructions as (required, forbidden) colours, in order (spec C.2).
ORIGINAL_RULES = (
    (("green", "yellow"), ()),
    (("yellow", "purple", "red", "green"), ()),
    (("yellow", "purple", "red", "green"), ("blue",)),
    (("green", "yellow"), ()),
    (("blue",), ("red", "green", "yellow", "pink", "purple", "orange")),
    (("green", "yellow"), ("pink",)),
    (("yellow", "orange"), ("blue", "purple", "red")),
    (("green", "yellow", "red"), ("blue",)),
    (("purple", "orange", "pink"), ("blue", "red", "green", "yellow")),
    (("yellow", "red", "green"), ("blue",)),
)
# Fidelity note: the original's final scoring loop reused the instruction index as the loop
# variable over code blocks, so replies with code were judged by instruction 0's rule.
PAPER_RULE = ORIGINAL_RULES[0]

MAX_WAYPOINTS = 100  # longer answers are not paths anyone means; bounds the scorer's work
_NUMBER = r"[-+]?(?:\d{1,12}(?:\.\d{0,12})?|\.\d{1,12})"
_POINT = re.compile(rf"[(\[]\s*({_NUMBER})\s*,\s*({_NUMBER})\s*[)\]]")
_SEPARATORS = re.compile(r"[\s,\[\]]*")


# ---- geometry: the original's crossing test -----------------------------------------------------

def _counter_clockwise(a, b, c) -> bool:
    return (c[1] - a[1]) * (b[0] - a[0]) > (b[1] - a[1]) * (c[0] - a[0])


def segments_cross(p, q, r, s) -> bool:
    """Whether segment pq crosses segment rs, by the original's strict orientation test:
    collinear overlaps never count, and an end point lying on the other segment counts only
    from one side. Kept exactly so that scores match the original's."""
    return (_counter_clockwise(p, r, s) != _counter_clockwise(q, r, s)
            and _counter_clockwise(p, q, r) != _counter_clockwise(p, q, s))


def segment_enters(p, q, box) -> bool:
    """'Entering' a box means crossing one of its four edges (spec C.2)."""
    x0, x1, y0, y1 = box
    corners = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    return any(segments_cross(p, q, corners[i], corners[(i + 1) % 4]) for i in range(4))


def path_is_valid(points, meta: dict, required, forbidden) -> bool:
    """The spec's verifier: start and end exact, no wall crossed, every required box entered
    by some segment, no forbidden box ever entered; order is not checked."""
    if len(points) < 2 or points[0] != tuple(meta["start"]) or points[-1] != tuple(meta["end"]):
        return False
    boxes = meta["boxes"]
    entered = set()
    for p, q in zip(points, points[1:]):
        if any(segment_enters(p, q, wall) for wall in WALLS):
            return False
        for colour in (*required, *forbidden):
            if colour not in entered and segment_enters(p, q, boxes[colour]):
                if colour in forbidden:
                    return False
                entered.add(colour)
    return set(required) <= entered


def parse_waypoints(answer: str) -> list[tuple[float, float]] | None:
    """`[(x0, y0), (x1, y1), ...]` (pairs in round or square brackets); None unless the text is
    only such pairs, commas, brackets and whitespace."""
    if len(answer) > 60 * MAX_WAYPOINTS:
        return None
    points, position = [], 0
    for match in _POINT.finditer(answer):
        between = _SEPARATORS.fullmatch(answer, position, match.start())
        if len(points) == MAX_WAYPOINTS or not between:
            return None
        points.append((float(match.group(1)), float(match.group(2))))
        position = match.end()
    if not _SEPARATORS.fullmatch(answer, position):
        return None
    return points


def format_waypoints(points) -> str:
    return "[" + ", ".join(f"({x!r}, {y!r})" for x, y in points) + "]"


# ---- the solver: search over a cell decomposition -----------------------------------------------

def plan_path(meta: dict, required, forbidden) -> list[tuple[float, float]]:
    """A valid waypoint path, or ValueError when none exists.

    The box edges' x and y coordinates cut the room into rectangular cells with no edge inside;
    moving between the centres of neighbouring cells crosses exactly one edge line at a point
    strictly inside an edge or away from it, so which boxes a move enters is known without
    geometry. Breadth-first search then visits the required boxes one at a time (moves are
    reversible, so this greedy order never gets stuck) and finally heads for the end point."""
    boxes = {colour: meta["boxes"][colour] for colour in (*required, *forbidden)}
    start, end = tuple(meta["start"]), tuple(meta["end"])
    bit = {colour: 1 << i for i, colour in enumerate(boxes)}
    required_mask = sum(bit[c] for c in required)
    forbidden_mask = sum(bit[c] for c in forbidden)

    def cut_lines(low_index: int) -> list[float]:
        values = {v for box in boxes.values() for v in box[low_index:low_index + 2]}
        return sorted({v for v in values if -INNER < v < INNER} | {-INNER, INNER})

    xs, ys = cut_lines(0), cut_lines(2)
    centre_x = [(a + b) / 2 for a, b in zip(xs, xs[1:])]
    centre_y = [(a + b) / 2 for a, b in zip(ys, ys[1:])]

    def crossed_at(line: float, at: float, vertical: bool) -> int:
        """Boxes with an edge on this cut line that spans the crossing point."""
        mask = 0
        for colour, (x0, x1, y0, y1) in boxes.items():
            if vertical and line in (x0, x1) and y0 < at < y1:
                mask |= bit[colour]
            elif not vertical and line in (y0, y1) and x0 < at < x1:
                mask |= bit[colour]
        return mask

    def exact_mask(p, q) -> int | None:
        """Boxes entered by an arbitrary segment; None if it crosses a wall."""
        if any(segment_enters(p, q, wall) for wall in WALLS):
            return None
        return sum(bit[c] for c, box in boxes.items() if segment_enters(p, q, box))

    def touching_cells(point) -> list[tuple[int, int]]:
        columns = [i for i in range(len(centre_x)) if xs[i] <= point[0] <= xs[i + 1]]
        rows = [j for j in range(len(centre_y)) if ys[j] <= point[1] <= ys[j + 1]]
        return [(i, j) for i in columns for j in rows]

    START, END = "start", "end"

    def connections(endpoint) -> dict:
        links = {}
        for cell in touching_cells(endpoint):
            mask = exact_mask(endpoint, (centre_x[cell[0]], centre_y[cell[1]]))
            if mask is not None and not mask & forbidden_mask:
                links[cell] = mask
        return links

    from_start, to_end = connections(start), connections(end)

    def moves(node):
        if node == START:
            yield from from_start.items()
            return
        i, j = node
        if node in to_end:
            yield END, to_end[node]
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            a, b = i + di, j + dj
            if not (0 <= a < len(centre_x) and 0 <= b < len(centre_y)):
                continue
            if di:
                mask = crossed_at(xs[max(i, a)], centre_y[j], vertical=True)
            else:
                mask = crossed_at(ys[max(j, b)], centre_x[i], vertical=False)
            if not mask & forbidden_mask:
                yield (a, b), mask

    def search(origin, is_goal):
        """Shortest route from origin to the first move that satisfies is_goal(node, mask):
        (nodes after origin, union of the masks along the route)."""
        parent = {origin: None}
        queue = deque([origin])
        while queue:
            node = queue.popleft()
            for nxt, mask in moves(node):
                if nxt in parent:
                    continue
                parent[nxt] = (node, mask)
                if is_goal(nxt, mask):
                    route, gained = [], 0
                    while parent[nxt] is not None:
                        route.append(nxt)
                        nxt, step_mask = parent[nxt]
                        gained |= step_mask
                    return route[::-1], gained
                if nxt != END:
                    queue.append(nxt)
        raise ValueError("no path satisfies the instruction")

    node, visited, route = START, 0, []
    while visited & required_mask != required_mask:
        missing = required_mask & ~visited
        leg, gained = search(node, lambda nxt, mask: nxt != END and bool(mask & missing))
        route += leg
        visited |= gained
        node = route[-1]
    leg, _ = search(node, lambda nxt, mask: nxt == END)
    route += leg
    centres = [(round(centre_x[i], 6), round(centre_y[j], 6)) for i, j in route[:-1]]
    points = [start] + _drop_collinear(centres) + [end]
    # The end point can be a cell centre itself: drop the repeated waypoint.
    points = [point for k, point in enumerate(points) if k == 0 or point != points[k - 1]]
    if not path_is_valid(points, meta, required, forbidden):
        raise RuntimeError(f"path_plan solver produced an invalid path {points}")
    return points


def _drop_collinear(centres):
    """Merge straight runs of cell centres along one row or column; the merged segment crosses
    the same edges because no centre lies on a cut line. A run that turns back is kept: its
    turning point is where the path dips into a box."""
    kept = centres[:1]
    for middle, nxt in zip(centres[1:], centres[2:]):
        before = kept[-1]
        vertical = before[0] == middle[0] == nxt[0] and _between(before[1], middle[1], nxt[1])
        horizontal = before[1] == middle[1] == nxt[1] and _between(before[0], middle[0], nxt[0])
        if not (vertical or horizontal):
            kept.append(middle)
    return kept + centres[1:][-1:]


def _between(a, b, c) -> bool:
    return min(a, c) < b < max(a, c)


# ---- the task -----------------------------------------------------------------------------------

def _colour_list(colours) -> str:
    """'green box' or 'green, red and yellow boxes'."""
    colours = list(colours)
    if len(colours) == 1:
        return f"{colours[0]} box"
    return ", ".join(colours[:-1]) + f" and {colours[-1]} boxes"


def _apart(box, other, gap) -> bool:
    """Whether two (x0, x1, y0, y1) rectangles are at least `gap` apart along some axis."""
    return (box[0] >= other[1] + gap or other[0] >= box[1] + gap
            or box[2] >= other[3] + gap or other[2] >= box[3] + gap)


def _level_of(n_constrained: int) -> int:
    """The complexity of an instruction from how many boxes it names (required + forbidden)."""
    return {0: 1, 1: 1, 2: 2, 3: 3, 4: 4, 5: 4}.get(n_constrained, 5)


class PathPlan(Task):
    """A robot in the room (-1.4, 1.4)^2 must enter the required coloured boxes and never
    enter the forbidden ones, between fixed start and end points.

    Levels count the boxes an instruction names (the original's ten instructions name 2 to 7):
    1: enter 1 box; 2: enter 2; 3: enter 2, avoid 1; 4: enter 3, avoid 2; 5: enter 3, avoid 4.
    Generated rooms hold the seven coloured boxes at random, on a 0.05 grid, at least 0.1 apart
    and 0.05 from the walls, so every instruction is feasible.
    Fidelity note: variant='paper' judges every answer by instruction 0's rule (enter green and
    yellow), as the original did for replies with code; the corrected one uses the sample's rule.
    """

    id = "path_plan"
    answer_format = "<<<[(x0, y0), (x1, y1), ...]>>>: waypoints from the start to the end point"
    levels = (1, 2, 3, 4, 5)
    default_level = 3
    CONFIGURATIONS = {1: (1, 0), 2: (2, 0), 3: (2, 1), 4: (3, 2), 5: (3, 4)}
    UNIT = 20  # generated coordinates are integers / UNIT, i.e. multiples of 0.05

    def knobs(self, level: int) -> dict:
        n_required, n_forbidden = self.CONFIGURATIONS[level]
        return {"n_required": n_required, "n_forbidden": n_forbidden, "min_side": 5, "max_side": 14}

    def make_sample(self, rng: random.Random, level: int, index: int, *, n_required, n_forbidden,
                    min_side, max_side) -> Sample:
        if n_required < 1 or n_required + n_forbidden > len(COLOURS):
            raise ValueError(f"need 1 <= n_required and n_required + n_forbidden <= {len(COLOURS)}")
        boxes, start, end = self._random_room(rng, min_side, max_side)
        colours = list(COLOURS)
        rng.shuffle(colours)
        required, forbidden = colours[:n_required], colours[n_required:n_required + n_forbidden]
        instruction = f"Enter the {_colour_list(required)} (in any order)."
        if forbidden:
            instruction += f" Never enter the {_colour_list(forbidden)}."
        meta = {"boxes": boxes, "start": start, "end": end, "instruction": instruction,
                "required": required, "forbidden": forbidden}
        answer = format_waypoints(plan_path(meta, required, forbidden))
        return Sample(task=self.id, id="", question=self._question(meta), answer=answer,
                      complexity=level, meta=meta)

    def _random_room(self, rng, min_side, max_side):
        """Seven boxes with gaps of at least 0.1 between them and 0.05 to the walls, and start
        and end points at least 0.05 outside every box: the free space stays connected."""
        limit = round(INNER * self.UNIT) - 1
        for _room in range(1000):
            placed = []
            for _ in COLOURS:
                for _attempt in range(100):
                    width, height = rng.randint(min_side, max_side), rng.randint(min_side, max_side)
                    x0, y0 = rng.randint(-limit, limit - width), rng.randint(-limit, limit - height)
                    box = (x0, x0 + width, y0, y0 + height)
                    if all(_apart(box, other, gap=2) for other in placed):
                        placed.append(box)
                        break
            if len(placed) < len(COLOURS):
                continue
            start, end = (self._free_point(rng, placed, limit) for _ in range(2))
            if abs(start[0] - end[0]) + abs(start[1] - end[1]) < self.UNIT:
                continue
            boxes = {colour: [v / self.UNIT for v in box] for colour, box in zip(COLOURS, placed)}
            return boxes, [v / self.UNIT for v in start], [v / self.UNIT for v in end]
        raise ValueError(f"cannot fit seven boxes of sides {min_side}..{max_side} (x 0.05)")

    @staticmethod
    def _free_point(rng, placed, limit):
        while True:  # seven boxes at most 0.7 wide leave much of the room free
            x, y = rng.randint(-limit, limit), rng.randint(-limit, limit)
            if all(not (b[0] - 1 <= x <= b[1] + 1 and b[2] - 1 <= y <= b[3] + 1) for b in placed):
                return x, y

    @staticmethod
    def _question(meta) -> str:
        walls = ", ".join(str(wall) for wall in WALLS)
        box_lines = "\n".join(f"- {colour}: {tuple(box)}" for colour, box in meta["boxes"].items())
        start, end = tuple(meta["start"]), tuple(meta["end"])
        return (
            "Plan the path of a mobile robot on a plane. The robot drives in a straight line from "
            "each waypoint to the next one. Every rectangle below is given as (x_start, x_end, "
            "y_start, y_end): it spans x_start..x_end horizontally and y_start..y_end "
            "vertically.\n\n"
            f"Four black walls enclose the room: {walls}. No part of the path may touch or cross "
            f"a wall.\n\nColoured boxes:\n{box_lines}\n\n"
            f"The robot starts at {start} and must stop at {end}.\n\n"
            f"Instruction: {meta['instruction']}\n\n"
            "A box counts as entered as soon as a straight segment of the path crosses its "
            "boundary, so the segments between waypoints matter, not only the waypoints: to avoid "
            "a box, no segment may cross or touch its boundary. The first waypoint must be exactly "
            "the start position and the last exactly the end position.\n\n"
            "Give the waypoints as a list of (x, y) pairs inside triple angle brackets, for "
            f"example <<<[{start}, (0.0, 1.2), {end}]>>>.")

    @staticmethod
    def _rule(sample: Sample, variant: str):
        if variant == "paper":
            return PAPER_RULE
        return sample.meta["required"], sample.meta["forbidden"]

    def solve(self, sample: Sample) -> str:
        meta = sample.meta
        return format_waypoints(plan_path(meta, meta["required"], meta["forbidden"]))

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        points = parse_waypoints(answer)
        if points is None:
            return 0.0
        required, forbidden = self._rule(sample, variant)
        return float(path_is_valid(points, sample.meta, required, forbidden))

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        # Many paths are valid, so nudging a digit may keep one valid; losing the end never does.
        points = parse_waypoints(answer)
        if not points:
            return answer[: len(answer) // 2]
        end = points[-1]
        while points and points[-1] == end:
            points.pop()
        return format_waypoints(points)

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        root = Path(dataset_gather_dir)
        candidates = [folder / "path_plan_environments.json" for folder in (root, root.parent)]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"path_plan_environments.json not found at {candidates[0]} "
                                    f"or {candidates[1]}")
        data = json.loads(path.read_text(encoding="utf-8"))
        if [tuple(wall) for wall in data["walls"]] != list(WALLS):
            raise ValueError(f"{path}: walls differ from the original's fixed walls")
        samples = []
        for environment in data["environments"]:
            if len(environment["instructions"]) != len(ORIGINAL_RULES):
                raise ValueError(f"{path}: environment {environment['index']} does not have "
                                 f"{len(ORIGINAL_RULES)} instructions")
            for number, (instruction, (required, forbidden)) in enumerate(
                    zip(environment["instructions"], ORIGINAL_RULES)):
                meta = {"boxes": environment["boxes"], "start": environment["start"],
                        "end": environment["end"], "instruction": instruction,
                        "required": list(required), "forbidden": list(forbidden)}
                sample = Sample(task=self.id, id=f"sample_{environment['index']}_{number}",
                                question=self._question(meta), answer=None,
                                complexity=_level_of(len(required) + len(forbidden)), meta=meta)
                sample.answer = self.solve(sample)
                samples.append(sample)
        return samples


TASKS = [PathPlan()]
