"""reproduce.py, the whole recipe, on a scripted OpenAI-compatible server (tests/fixture_server.py) with tiny budgets:
every stage runs with the project's CLIs, a rerun skips what finished and resumes what did not, and bad inputs stop
with one clear error. The trained steerer is the embedded SmolLM2-135M, fine-tuned for a step or two."""
import itertools
import json
import threading
import zlib

import pytest

import checkers
import reproduce
import steer
import symbench
import synth
from fixture_server import fixture_server

TASKS = {"seen": "game24", "unseen": "letters"}
TINY = ["--seen", "game24", "--unseen", "letters", "--n-sft", "2", "--n-dpo", "2", "--n-eval", "1",
        "--sft-epochs", "1", "--dpo-epochs", "1", "--seq-len", "1024", "--batch-size", "1", "--max-tokens", "24", "--concurrency", "1", "--branch", "3",
        "--no-self-check"]
STAGES = ["synth-sft", "train-sft", "synth-dpo", "train-dpo"] + [
    f"eval-{m}" for m in reproduce.BASELINES + ["codesteer_untrained", "codesteer_sft", "codesteer_dpo"]]


@pytest.fixture(autouse=True)
def no_real_endpoints(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def known_questions() -> dict[str, tuple[symbench.Task, symbench.Sample]]:
    """Every question the tiny recipe can ask: the evaluation stream (seed 0) and the synthesis streams."""
    questions = {}
    for task_id in TASKS.values():
        task = symbench.get_task(task_id)
        for seed in (0, 1_000_000, 1_000_001):
            for sample in task.generate(20, complexity=1, seed=seed):
                questions[sample.question] = (task, sample)
    return questions


def scripted_roles(code_works: bool = True):
    """One reply function for every role, told apart by its prompt. The API CodeSteer alternates Code and Text at
    turn 0 and then returns the answer. If code_works, the TaskLLM is right when told to use Python, and after half of
    the other guidances (a checksum of the text decides: the tree samples its guidances from the barely trained
    SmolLM2, whose text is arbitrary, and siblings must differ for a pair); else it is always wrong."""
    questions = known_questions()
    choices = itertools.cycle(["<<<Code>>>", "<<<Text>>>"])
    lock = threading.Lock()

    def reply(messages):
        first, last = messages[0]["content"], messages[-1]["content"]
        if first.startswith(steer.CHOICE_PROMPT):
            if any(m["role"] == "assistant" for m in messages):
                return "<<<Return Answer>>>"
            with lock:
                return next(choices)
        if first.startswith("Rewrite the instruction below"):
            return "Solve it with Python code, printing the answer.\n\n" if "Python" in first else "Reason it out.\n\n"
        if first.startswith("Below is a response") or last.startswith(checkers.CHECK_PROMPT):
            return "<<<no answer>>>"
        asked = [questions[q] for q in questions if any(m["content"].endswith(q) for m in messages)]
        if not asked:   # each role's 1-token probe before a run
            return "ok"
        task, sample = asked[0]
        if code_works and ("python" in last.lower() or zlib.crc32(last.encode()) % 2 == 0):
            return f"```python\nprint('<<<{task.solve(sample)}>>>')\n```"
        return "By hand: <<<0>>>"
    return reply


def run_recipe(out, server, embedded_path, *extra):
    urls = [f"--{role}-base-url={server.url}" for role in ("task", "steer", "helper")]
    reproduce.main(["--out", str(out), "--steer-init", str(embedded_path), *TINY, *urls, *extra])


@pytest.mark.slow
def test_the_recipe_runs_every_stage_then_resumes_without_redoing_them(tmp_path, embedded_path, monkeypatch):
    out = tmp_path / "recipe"
    with fixture_server(scripted_roles()) as server:
        run_recipe(out, server, embedded_path)
        finished = json.loads((out / "stages.json").read_text())
        assert list(finished) == STAGES
        assert all(entry["seconds"] > 0 and entry["command"] for entry in finished.values())
        assert sum(1 for _ in open(out / "synth-sft" / "sft.jsonl")) >= 1
        assert sum(1 for _ in open(out / "synth-dpo" / "dpo.jsonl")) >= 1
        for folder in ("train-sft", "train-dpo"):
            assert (out / folder / "final" / "config.json").is_file() and (out / folder / "metrics.jsonl").is_file()
        for stage in STAGES[4:]:
            summary = json.loads((out / "eval" / stage.removeprefix("eval-") / "summary.json").read_text())
            assert set(summary["tasks"]) == set(TASKS.values())
        results = (out / "RESULTS.md").read_text()
        assert "Ave. Norm. (seen)" in results and "codesteer_dpo" in results and "| all |" in results
        if (out / "figures").is_dir():   # matplotlib installed (the plot extra)
            assert {p.name for p in (out / "figures").glob("*.png")} >= {"score_distribution.png",
                                                                          "training_curves.png"}
            assert "![score_distribution](figures/score_distribution.png)" in results

        # A rerun runs no stage again but the undone ones, each resuming from its results file: one whose summary is
        # gone, and one that stages.json shows running (a kill leaves it so).
        (out / "eval" / "all_code" / "summary.json").unlink()
        killed = json.loads((out / "stages.json").read_text())
        killed["eval-all_text"]["finished"] = None
        (out / "stages.json").write_text(json.dumps(killed))
        ran = []
        real_popen = reproduce.subprocess.Popen
        monkeypatch.setattr(reproduce.subprocess, "Popen", lambda argv, **kw: ran.append(argv) or real_popen(argv, **kw))
        monkeypatch.setattr(reproduce, "HEARTBEAT_S", 0.1)
        run_recipe(out, server, embedded_path)
        stages_run = [argv for argv in ran if "compare" not in argv]   # subprocess.run(compare) goes through Popen
        assert [argv[argv.index("--method") + 1] for argv in stages_run] == ["all_text", "all_code"]
        assert "0 to run" in (out / "logs" / "eval-all_code.log").read_text().split("$ ")[-1]
        again = json.loads((out / "stages.json").read_text())["eval-all_code"]
        assert again["seconds"] > finished["eval-all_code"]["seconds"] and again["finished"]   # both runs' time

        with pytest.raises(SystemExit, match="started with other settings"):
            run_recipe(out, server, embedded_path, "--n-eval", "2")
        with pytest.raises(SystemExit, match="started with other settings"):   # the seed already run must stay
            run_recipe(out, server, embedded_path, "--eval-seeds", "1")


def test_an_evaluation_seed_whose_questions_were_synthesized_stops_the_recipe(tmp_path):
    navigation, seed0 = symbench.get_task("navigation"), synth.TestSet([], seeds=[0])
    seed1 = [s for s in navigation.generate(20, complexity=1, seed=1) if not seed0.overlaps(navigation, s)][:5]
    (tmp_path / "synth-sft").mkdir()
    (tmp_path / "synth-sft" / "sft.jsonl").write_text("".join(
        json.dumps(dict(task="navigation", question_id=s.id, level=1, seed=1, messages=[])) + "\n" for s in seed1))
    reproduce.check_held_out(tmp_path, [0])   # seed 1's questions are not seed 0's test samples
    with pytest.raises(SystemExit, match="the training data holds 5 test questions of --eval-seeds 0 1"):
        reproduce.check_held_out(tmp_path, [0, 1])


def test_the_report_pools_each_methods_seeds_into_one_column():
    evals = [reproduce.ROOT / "runs" / "r" / "eval" / name
             for name in ("all_code", "codesteer_sft", "all_code-seed1", "codesteer_sft-seed1", "all_code-seed2")]
    assert reproduce.compare_columns(evals) == [
        "runs/r/eval/all_code+runs/r/eval/all_code-seed1+runs/r/eval/all_code-seed2",
        "runs/r/eval/codesteer_sft+runs/r/eval/codesteer_sft-seed1"]


def test_more_evaluation_seeds_continue_a_finished_run():
    settings = vars(reproduce.parse_args(["--eval-seeds", "0"])[0])
    assert reproduce.extends(settings, {**settings, "eval_seeds": [0, 1]})
    assert not reproduce.extends(settings, {**settings, "eval_seeds": [1, 0]})
    assert not reproduce.extends({**settings, "eval_seeds": [0, 1]}, settings)
    assert not reproduce.extends(settings, {**settings, "eval_seeds": [0, 1], "n_eval": 8})


def test_a_synthesis_that_yields_no_rows_stops_with_the_reason(tmp_path, embedded_path):
    with fixture_server(scripted_roles(code_works=False)) as server, pytest.raises(SystemExit) as stop:
        run_recipe(tmp_path / "recipe", server, embedded_path)
    assert "synth-sft produced no training rows" in str(stop.value)
    assert not (tmp_path / "recipe" / "train-sft").exists()


def test_a_failing_stage_names_its_log_and_keeps_what_finished(tmp_path, embedded_path):
    with pytest.raises(SystemExit) as stop:   # nothing listens at this URL: synth.py's probe fails
        reproduce.main(["--out", str(tmp_path / "recipe"), "--steer-init", str(embedded_path), *TINY,
                        *(f"--{role}-base-url=http://127.0.0.1:9/v1" for role in ("task", "steer", "helper"))])
    message = str(stop.value)
    assert "stage synth-sft failed with exit code 2" in message and "synth-sft.log" in message
    assert "rerun the same command" in message


def test_the_paper_preset_needs_a_model_to_train(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--preset", "paper"])
    assert "--preset paper needs --steer-init" in capsys.readouterr().err
