"""Task-specific tests for the planning group of SymBench: path_plan, boxlift, boxnet and
blocksworld. Every expected value here was worked out by hand from the spec's rules."""

import json
from pathlib import Path

import pytest

import symbench
from symbench.blocksworld import apply_moves, parse_task_text, shortest_plan
from symbench.boxlift import greedy_plan
from symbench.boxnet import plan_moves
from symbench.core import Sample
from symbench.path_plan import plan_path, segment_enters

REFERENCE = Path(__file__).resolve().parent / "symbench-reference" / "dataset_gather"


def make(task_id: str, meta: dict) -> Sample:
    return Sample(task=task_id, id="hand", question="", answer=None, complexity=None, meta=meta)


# ---- path_plan ----------------------------------------------------------------------------------

PATH_PLAN = symbench.get_task("path_plan")
ROOM = {  # the seven boxes well apart; start bottom-left, end top-right
    "boxes": {"green": [-1.0, -0.6, 0.6, 1.0], "yellow": [0.6, 1.0, -1.0, -0.6],
              "blue": [-0.2, 0.2, -0.2, 0.2], "red": [0.6, 1.0, 0.6, 1.0],
              "pink": [-1.0, -0.6, -0.2, 0.2], "purple": [0.6, 1.0, -0.2, 0.2],
              "orange": [-0.2, 0.2, 0.6, 1.0]},
    "start": [-1.3, -1.3], "end": [1.3, 1.3], "instruction": "",
}


def room_sample(required, forbidden) -> Sample:
    return make("path_plan", {**ROOM, "required": required, "forbidden": forbidden})


def score_path(sample, text, variant="corrected"):
    return PATH_PLAN.score(sample, f"<<<{text}>>>", variant=variant)


def test_segment_enters_follows_the_original_crossing_test():
    box = (-0.5, 0.5, -0.5, 0.5)
    assert segment_enters((-1, 0), (0, 0), box)          # crosses the left edge
    assert segment_enters((-1, 0), (1, 0), box)          # straight through
    assert not segment_enters((-0.2, 0), (0.2, 0), box)  # inside, no edge crossed
    assert not segment_enters((-1, 1), (1, 1), box)      # passes above
    assert not segment_enters((-1, 0.5), (1, 0.5), box)  # runs along the top edge: collinear


def test_path_plan_scores_hand_written_paths():
    sample = room_sample(["green", "yellow"], ["blue"])
    # Up the left side into green, across the top, down the right side into yellow, back up.
    good = "[(-1.3, -1.3), (-1.3, 0.8), (-0.8, 0.8), (-1.3, 0.8), (-1.3, 1.3), (1.3, 1.3), " \
           "(1.3, -0.8), (0.8, -0.8), (1.3, -0.8), (1.3, 1.3)]"
    assert score_path(sample, good) == 1.0
    assert score_path(sample, good.replace("(", "[").replace(")", "]")) == 1.0   # list pairs
    assert score_path(sample, "\n" + good.replace(", (", ",\n (") + "\n") == 1.0  # one per line
    missing_yellow = "[(-1.3, -1.3), (-1.3, 0.8), (-0.8, 0.8), (-1.3, 0.8), (-1.3, 1.3), (1.3, 1.3)]"
    assert score_path(sample, missing_yellow) == 0.0
    through_blue = "[(-1.3, -1.3), (-1.3, 0.8), (-0.8, 0.8), (1.3, -0.8), (0.8, -0.8), (1.3, 1.3)]"
    assert score_path(sample, through_blue) == 0.0                                # diagonal hits blue
    assert score_path(room_sample(["green", "yellow"], []), through_blue) == 1.0
    assert score_path(sample, good.replace("(-1.3, -1.3)", "(-1.29, -1.3)", 1)) == 0.0  # not the start
    assert score_path(sample, good[:good.rindex(",")] + "]") == 0.0             # does not end at the end
    through_wall = "[(-1.3, -1.3), (-1.45, 0.8), (-0.8, 0.8), (1.3, 1.3)]"
    assert score_path(room_sample(["green"], []), through_wall) == 0.0
    assert score_path(sample, "[(-1.3, -1.3)]") == 0.0
    assert score_path(sample, "go to (-1.3, -1.3) then (1.3, 1.3)") == 0.0


def test_path_plan_paper_variant_uses_instruction_0s_rule():
    blue_only = room_sample(["blue"], ["green", "yellow"])
    via_blue = "[(-1.3, -1.3), (-0.3, 0.0), (0.4, 0.0), (0.4, 1.3), (1.3, 1.3)]"
    assert score_path(blue_only, via_blue) == 1.0
    assert score_path(blue_only, via_blue, variant="paper") == 0.0    # judged as "enter green and yellow"
    green_and_yellow = "[(-1.3, -1.3), (-1.3, 0.8), (-0.8, 0.8), (-1.3, 0.8), (-1.3, 1.3), (1.3, 1.3), " \
                       "(1.3, -0.8), (0.8, -0.8), (1.3, -0.8), (1.3, 1.3)]"
    assert score_path(blue_only, green_and_yellow) == 0.0
    assert score_path(blue_only, green_and_yellow, variant="paper") == 1.0


def test_path_plan_solver_on_a_hand_made_room():
    sample = room_sample(["blue", "red", "yellow"], ["green", "pink", "purple", "orange"])
    assert score_path(sample, PATH_PLAN.solve(sample)) == 1.0
    walled_in = room_sample(["blue"], ["green"])  # the end point inside a forbidden box
    walled_in.meta["end"] = [-0.8, 0.8]
    with pytest.raises(ValueError, match="no path"):
        plan_path(walled_in.meta, ["blue"], ["green"])


def test_path_plan_original_samples_rebuild_the_140_instances(tmp_path):
    samples = PATH_PLAN.load_original(REFERENCE)
    assert len(samples) == 140 and samples[13].id == "sample_1_3"
    assert {s.complexity for s in samples} == {2, 3, 4, 5}
    by_id = {s.id: s for s in samples}
    assert by_id["sample_0_4"].meta["required"] == ["blue"] and len(by_id["sample_0_4"].meta["forbidden"]) == 6
    assert "Navigate into the green room" in by_id["sample_3_0"].question
    with pytest.raises(FileNotFoundError, match="path_plan_environments.json"):
        PATH_PLAN.load_original(tmp_path / "dataset_gather")


# ---- boxlift ------------------------------------------------------------------------------------

BOXLIFT = symbench.get_task("boxlift")
LIFT = make("boxlift", {"boxes": [100, 60, 50, 30], "lifters": [50, 40, 30], "max_steps": 3})


def test_boxlift_greedy_plan_and_budget_by_hand():
    # 100 needs all three lifters; then 60 takes lifters 0+1 and 30 takes lifter 2; then 50.
    assert greedy_plan([100, 60, 50, 30], [50, 40, 30]) == [
        [(100, [0, 1, 2])], [(60, [0, 1]), (30, [2])], [(50, [0])]]
    assert BOXLIFT.solve(LIFT) == "Step 1: [(100, [0, 1, 2])]\nStep 2: [(60, [0, 1]), (30, [2])]\nStep 3: [(50, [0])]"
    with pytest.raises(ValueError, match="heavier"):
        greedy_plan([200], [50, 40])


def test_boxlift_scores_by_simulation_with_partial_credit():
    full = "Step 1: [(100, [0, 1, 2])]\nStep 2: [(60, [0, 1]), (30, [2])]\nStep 3: [(50, [0])]"
    assert BOXLIFT.score(LIFT, f"<<<{full}>>>") == 1.0
    other_order = "step 1: [(50, [0]), (60, [1, 2])]\n step 2 : [ (100,[0,1,2]) ]\nStep 3: [(30, [1])]."
    assert BOXLIFT.score(LIFT, f"<<<{other_order}>>>") == 1.0
    two_steps = full.rsplit("\n", 1)[0]
    assert BOXLIFT.score(LIFT, f"<<<{two_steps}>>>") == pytest.approx(190 / 240)
    assert BOXLIFT.lift_ratios(LIFT, two_steps) == (pytest.approx(190 / 240), pytest.approx(3 / 4))
    fourth_step = two_steps + "\nStep 3: []\nStep 4: [(50, [0])]"      # beyond the budget S = 3
    assert BOXLIFT.score(LIFT, f"<<<{fourth_step}>>>") == pytest.approx(190 / 240)


def test_boxlift_ignores_invalid_assignments_and_stops_at_a_malformed_step():
    cases = {
        "Step 1: [(100, [0, 1]), (30, [2])]": 30,          # 90 < 100: only 30 lifted
        "Step 1: [(60, [0, 1]), (50, [1, 2])]": 60,        # lifter 1 twice in a step
        "Step 1: [(60, [0, 0])]": 0,                       # one lifter counted twice
        "Step 1: [(70, [0, 1]), (30, [3])]": 0,            # no box of 70, no lifter 3
        "Step 1: [(30, [2])]\nStep 2: lift 60\nStep 3: [(60, [0, 1])]": 30,  # step 2 ends it
    }
    for answer, lifted in cases.items():
        assert BOXLIFT.score(LIFT, f"<<<{answer}>>>") == pytest.approx(lifted / 240), answer
    assert BOXLIFT.score(LIFT, "<<<nothing>>>") == 0.0


def test_boxlift_original_samples(tmp_path):
    samples = BOXLIFT.load_original(REFERENCE)
    assert [s.complexity for s in samples] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert samples[0].id == "BoxLift_10_3_BoxLift0"
    for sample in samples:
        assert sample.meta["max_steps"] == len(greedy_plan(sample.meta["boxes"], sample.meta["lifters"]))
        assert f"at most {sample.meta['max_steps']} steps" in sample.question
    with pytest.raises(FileNotFoundError, match="BoxLift_10_3"):
        BOXLIFT.load_original(tmp_path)


# ---- boxnet -------------------------------------------------------------------------------------

BOXNET = symbench.get_task("boxnet")
SWAP = make("boxnet", {"rows": 1, "columns": 2, "grid": {
    "0.5_0.5": ["box_red", "target_blue"], "0.5_1.5": ["target_red", "box_blue"]}})


def score_plan(sample, plan) -> float:
    return BOXNET.score(sample, "<<<" + (plan if isinstance(plan, str) else json.dumps(plan)) + ">>>")


def test_boxnet_scores_by_simulation_with_partial_credit():
    swap = {"Agent[0.5, 0.5]": "move(box_red, square[0.5, 1.5])",
            "Agent[0.5, 1.5]": "move(box_blue, square[0.5, 0.5])"}
    match = {"Agent[0.5, 0.5]": "move(box_blue, target_blue)", "Agent[0.5, 1.5]": "move(box_red, target_red)"}
    assert score_plan(SWAP, [swap, match]) == 1.0
    assert score_plan(SWAP, json.dumps([swap, match]).replace('"', "'")) == 1.0   # single quotes
    assert score_plan(SWAP, [swap, {"Agent[0.5, 1.5]": "move(box_red, target_red)"}]) == 0.5
    assert score_plan(SWAP, [match]) == 0.0                        # nothing matches in place yet
    # Actions run in the written order: red arrives and is matched by the next agent in the same step.
    assert score_plan(SWAP, [{"Agent[0.5, 0.5]": "move(box_red, square[0.5, 1.5])",
                              "Agent[0.5, 1.5]": "move(box_red, target_red)"}]) == 0.5
    illegal = [{"Agent[0.5, 0.5]": "move(box_red, square[0.5, 2.5])"},     # not adjacent
               {"Agent[0.5, 0.5]": "move(box_red, target_blue)"},          # wrong colour
               {"Agent[0.5, 0.5]": "move(box_blue, square[0.5, 1.5])"},    # no blue box here
               {"Agent[3.5, 0.5]": "move(box_red, square[2.5, 0.5])"}]     # no such agent
    assert score_plan(SWAP, illegal + [match]) == 0.0
    assert score_plan(SWAP, "[{...}]") == 0.0


def test_boxnet_solver_on_a_hand_made_grid():
    assert plan_moves(SWAP.meta["grid"]) == [
        {"Agent[0.5, 0.5]": "move(box_red, square[0.5, 1.5])", "Agent[0.5, 1.5]": "move(box_blue, square[0.5, 0.5])"},
        {"Agent[0.5, 0.5]": "move(box_blue, target_blue)", "Agent[0.5, 1.5]": "move(box_red, target_red)"}]
    corner = make("boxnet", {"rows": 2, "columns": 2, "grid": {
        "0.5_0.5": ["box_green"], "0.5_1.5": [], "1.5_0.5": [], "1.5_1.5": ["target_green"]}})
    plan = json.loads(BOXNET.solve(corner))
    assert len(plan) == 3 and score_plan(corner, plan) == 1.0      # two moves, then the match


def test_boxnet_original_samples_are_the_evaluated_grids_only(tmp_path):
    samples = BOXNET.load_original(REFERENCE)   # the reference also has 4x4 and 4x8 folders
    assert {(s.meta["rows"], s.meta["columns"]) for s in samples} == {(1, 2), (2, 2), (2, 4)}
    assert samples[0].id == "env_pg_state_1_2_pg_state0" and samples[0].complexity == 1
    assert "Agent[0.5, 1.5] is in square[0.5, 1.5]" in samples[0].question
    with pytest.raises(FileNotFoundError, match="env_pg_state_1_2"):
        BOXNET.load_original(tmp_path)


# ---- blocksworld --------------------------------------------------------------------------------

BLOCKS = symbench.get_task("blocksworld")
TASK_TEXT = "Initial State:\nstack1: \nstack2: B A\nstack3: \n\nGoal State:\nstack1: \nstack2: A B\n"


def test_blocksworld_parses_the_task_text_and_plans_shortest():
    initial, goal = parse_task_text(TASK_TEXT)
    assert initial == [[], ["B", "A"], []] and goal == [[], ["A", "B"]]
    # A is on B, so A must leave, then B, then both return in the other order: 4 moves.
    assert len(shortest_plan(initial, goal)) == 4
    assert shortest_plan([["A"], []], [[], ["A"]]) == [("A", 1, 2)]
    with pytest.raises(ValueError):
        parse_task_text("Initial State:\nstack1: A\n")


def test_blocksworld_scores_by_simulation():
    sample = make("blocksworld", {"initial": [[], ["B", "A"], []], "goal": [[], ["A", "B"]]})
    plan = "Move A from 2 to 1\nMove B from 2 to 3\nMove A from 1 to 2\nMove B from 3 to 2"
    assert BLOCKS.score(sample, f"<<<{plan}>>>") == 1.0
    assert BLOCKS.score(sample, "<<<1. move A from stack2 to stack1\n\n2. Move B from 2 to 3.\n"
                                "Move A from 1 to 2\nMove B from 3 to 2>>>") == 1.0
    assert BLOCKS.score(sample, "<<<Move B from 2 to 3\nMove A from 2 to 1>>>") == 0.0   # B is not on top
    assert BLOCKS.score(sample, "<<<Move A from 2 to 4>>>") == 0.0                       # no stack 4
    assert BLOCKS.score(sample, "<<<Move A from 2 to table>>>") == 0.0
    # The right tower on the wrong stack: stacks are compared by number.
    wrong_stack = "Move A from 2 to 3\nMove B from 2 to 3"
    assert apply_moves(sample.meta["initial"], wrong_stack) == [[], [], ["A", "B"]]
    assert BLOCKS.score(sample, f"<<<{wrong_stack}>>>") == 0.0
    assert BLOCKS.score(sample, "<<<>>>") == 0.0


def test_blocksworld_levels_and_original_samples(tmp_path):
    assert len(BLOCKS.levels) == 26 and BLOCKS.levels[:3] == (232, 233, 242)
    assert BLOCKS.knobs(453) == {"blocks": 4, "stacks": 5, "goal_stacks": 3}
    samples = BLOCKS.load_original(REFERENCE)
    assert len(samples) == 24 and samples[0].id == "2_3_2_0" and samples[0].complexity == 232
    for sample in samples:
        n_blocks = sample.complexity // 100
        assert sum(len(stack) for stack in sample.meta["initial"]) == n_blocks
        assert len(sample.meta["initial"]) == sample.complexity // 10 % 10
        assert "Initial State:" in sample.question and "Goal State:" in sample.question
    with pytest.raises(FileNotFoundError, match="2_3_2_0"):
        BLOCKS.load_original(tmp_path)
