"""The paper's figures and `steer.py compare`'s inputs: hand-made run folders (results.jsonl and a summary.json from
report.summarize) and training metrics, with every plotted series checked against numbers worked out by hand."""

import json
import sys

import pytest

import plots
import report
import steer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (task, complexity, score, tokens, seconds) per sample. only_question runs letters at one level only.
RUNS = {"codesteer": [("game24", 1, 1.0, 1000, 10), ("game24", 1, 1.0, 1000, 10), ("game24", 2, 0.5, 4000, 40),
                      ("letters", 1, 1.0, 1000, 10), ("letters", 2, 1.0, 1000, 10)],
        "all_code": [("game24", 1, 1.0, 100, 2), ("game24", 2, 0.0, 100, 2),
                     ("letters", 1, 0.5, 100, 2), ("letters", 2, 0.0, 100, 2)],
        "only_question": [("game24", 1, 0.5, 50, 1), ("game24", 2, 0.0, 50, 1),
                          ("letters", 1, 0.0, 50, 1), ("letters", 1, 1.0, 50, 1)]}
SFT_METRICS = [{"step": 1, "loss": 2.0, "lr": 1e-5}, {"step": 2, "loss": 1.5, "lr": 1e-5},
               {"step": 3, "loss": 1.25, "lr": 5e-6}]
DPO_METRICS = [{"step": 1, "loss": 0.75, "dpo_loss": 0.69, "lr": 1e-6, "reward_accuracy": 0.5, "reward_margin": 0.0,
                "chosen_reward": 0.0, "rejected_reward": 0.0},
               {"step": 2, "loss": 0.5, "dpo_loss": 0.45, "lr": 1e-6, "reward_accuracy": 0.75, "reward_margin": 0.25,
                "chosen_reward": 0.125, "rejected_reward": -0.125}]


def write_run(folder, method, samples, first_id=0) -> str:
    records = [dict(task=task, id=f"{task}-{first_id + k}", method=method, complexity=level, score=score,
                    solved=score == 1.0, error=None, seconds=seconds,
                    tokens={"task": {"prompt_tokens": tokens - 10, "completion_tokens": 10}})
               for k, (task, level, score, tokens, seconds) in enumerate(samples)]
    folder.mkdir(parents=True)
    results = report.ResultsFile(folder / "results.jsonl")
    for record in records:
        results.append(record)
    report.write_json_atomically(folder / "summary.json", report.summarize(method, records))
    return str(folder)


def write_metrics(folder, rows) -> str:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    return [write_run(tmp_path / method, method, samples) for method, samples in RUNS.items()]


def run_compare(argv, capsys):
    steer.main(["compare", *argv])
    return capsys.readouterr().out


def test_each_figure_shows_the_hand_computed_numbers(runs):
    summaries = report.load_runs(runs)
    assert plots.score_distribution_series(summaries) == {
        "codesteer": {"game24": pytest.approx(100 * 2.5 / 3), "letters": 100.0},
        "all_code": {"game24": 50.0, "letters": 25.0}, "only_question": {"game24": 25.0, "letters": 50.0}}
    assert plots.complexity_series(summaries) == {   # only_question did not sweep letters: no line there
        "game24": {"codesteer": {"1": 100.0, "2": 50.0}, "all_code": {"1": 100.0, "2": 0.0},
                   "only_question": {"1": 50.0, "2": 0.0}},
        "letters": {"codesteer": {"1": 100.0, "2": 100.0}, "all_code": {"1": 50.0, "2": 0.0}}}
    # best: game24 5/6 (codesteer), letters 1; all_code (0.5 / (5/6) + 0.25) / 2, only_question (0.25 / (5/6) + 0.5) / 2
    # codesteer's tokens per sample weigh its 3 game24 samples and 2 letters samples: 8000 / 5, not (2000 + 1000) / 2
    assert plots.cost_series(summaries) == {
        "codesteer": {"score": pytest.approx(100.0), "tokens": 1600.0, "seconds": 16.0},
        "all_code": {"score": pytest.approx(42.5), "tokens": 100.0, "seconds": 2.0},
        "only_question": {"score": pytest.approx(40.0), "tokens": 50.0, "seconds": 1.0}}


def test_training_curves_show_loss_for_every_run_and_rewards_for_dpo(tmp_path):
    training = plots.load_training([write_metrics(tmp_path / "sft", SFT_METRICS),
                                    write_metrics(tmp_path / "dpo", DPO_METRICS)])
    assert list(training) == ["sft", "dpo"]
    assert plots.training_series(training) == {
        "loss": {"sft": ([1, 2, 3], [2.0, 1.5, 1.25]), "dpo": ([1, 2], [0.75, 0.5])},
        "reward_margin": {"dpo": ([1, 2], [0.0, 0.25])},
        "reward_accuracy": {"dpo": ([1, 2], [50.0, 75.0])}}
    assert list(plots.training_series({"sft": SFT_METRICS})) == ["loss"]   # SFT alone: one panel
    same_names = [write_metrics(tmp_path / folder / "dpo", DPO_METRICS) for folder in ("a", "b")]
    assert list(plots.load_training(same_names)) == same_names


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000, path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")   # the IHDR chunk


def test_compare_plots_writes_every_figure(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    training = [write_metrics(tmp_path / "sft", SFT_METRICS), write_metrics(tmp_path / "dpo", DPO_METRICS)]
    out = run_compare([*runs, "--plots", str(tmp_path / "figures"), "--training", *training], capsys)
    assert "Ave. Norm. (all)" in out
    names = ["score_distribution.png", "score_vs_complexity.png", "score_vs_cost.png", "training_curves.png"]
    assert [line for line in out.splitlines() if line.startswith("plot: ")] == \
        [f"plot: {tmp_path / 'figures' / name}" for name in names]
    assert png_size(tmp_path / "figures" / "score_distribution.png") == (744, 480)   # 6.2 x 4 in at 120 dpi
    assert png_size(tmp_path / "figures" / "training_curves.png") == (1620, 432)     # 3 panels: loss and rewards
    for name in names:
        png_size(tmp_path / "figures" / name)


def test_runs_without_a_sweep_skip_the_complexity_figure_and_say_so(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    flat = [write_run(tmp_path / method, method, [(task, 1, score, 100, 1) for task, _, score, _, _ in samples])
            for method, samples in RUNS.items()]
    assert plots.plot_score_vs_complexity(report.load_runs(flat), tmp_path) is None
    out = run_compare([*flat, "--plots", str(tmp_path / "figures")], capsys)
    assert "note: no run swept complexity" in out
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["score_distribution.png", "score_vs_cost.png"]


def test_common_tasks_compares_and_draws_only_the_tasks_every_run_has(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    game24_only = write_run(tmp_path / "partial", "partial", [("game24", 1, 1.0, 10, 1), ("game24", 2, 1.0, 10, 1)])
    summaries = report.load_runs([*runs, game24_only], common_tasks=True)
    assert {method: list(scores) for method, scores in plots.score_distribution_series(summaries).items()} == \
        {method: ["game24"] for method in [*RUNS, "partial"]}
    assert list(plots.complexity_series(summaries)) == ["game24"]
    out = run_compare([*runs, game24_only, "--common-tasks", "--plots", str(tmp_path / "figures")], capsys)
    assert "note: not in every run, left out: letters" in out
    assert "letters" not in out.split("note:")[0]


def test_compare_names_each_bad_input(runs, tmp_path, capsys, monkeypatch):
    (tmp_path / "no_summary").mkdir()
    unfinished = write_run(tmp_path / "unfinished", "codesteer", RUNS["codesteer"])
    (tmp_path / "unfinished" / "summary.json").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    report.write_json_atomically(empty / "summary.json", report.summarize("codesteer", []))
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "summary.json").write_text('{"method": ')
    game24_only = write_run(tmp_path / "partial", "partial", [("game24", 1, 1.0, 10, 1)])
    letters_only = write_run(tmp_path / "other", "other", [("letters", 1, 1.0, 10, 1)])
    no_metrics = tmp_path / "train_empty"
    no_metrics.mkdir()
    no_rows = write_metrics(tmp_path / "train_no_rows", [])
    figures = ["--plots", str(tmp_path / "figures")]
    cases = (([str(tmp_path / "missing")], "missing: no such folder"),
             ([str(tmp_path / "no_summary")], "no_summary: no summary.json here (run steer.py with --out"),
             ([unfinished], "results.jsonl holds 5 samples of a run that has not finished"),
             ([str(empty)], "the run holds no finished sample"),
             ([str(tmp_path / "torn")], "torn/summary.json: not JSON"),
             ([*runs, game24_only], "the runs cover different tasks (partial lacks letters); pass --common-tasks"),
             ([game24_only, letters_only], "partial lacks letters; other lacks game24"),
             ([game24_only, letters_only, "--common-tasks"], "no task is common to every run"),
             ([*runs, *figures, "--training", str(no_metrics)], "train_empty: no metrics.jsonl here"),
             ([*runs, *figures, "--training", no_rows], "metrics.jsonl holds no step yet"),
             ([*runs, "--training", no_rows], "--training draws training_curves.png, so it needs --plots DIR"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as stop:
            steer.main(["compare", *argv])
        error = capsys.readouterr().err
        assert stop.value.code == 2 and error.startswith("error: ") and message in error, (argv, error)

    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib` raise ImportError
    with pytest.raises(SystemExit) as stop:
        steer.main(["compare", *runs, *figures])
    captured = capsys.readouterr()
    assert stop.value.code == 2 and 'pip install -e ".[plot]"' in captured.err and not captured.out


def test_runs_of_one_method_are_labelled_by_their_folders(tmp_path):
    samples = RUNS["codesteer"]
    summaries = report.load_runs([write_run(tmp_path / "codesteer_sft", "codesteer", samples),
                                  write_run(tmp_path / "codesteer_dpo", "codesteer", samples),
                                  write_run(tmp_path / "all_code", "all_code", RUNS["all_code"])])
    assert list(summaries) == ["codesteer_sft", "codesteer_dpo", "all_code"]


def test_runs_joined_by_plus_pool_into_one_column_weighted_by_samples(runs, tmp_path, capsys):
    # all_code's second seed: 2 game24 samples at level 2 (scores 1 and 1) and 2 letters samples, other ids
    seed1 = write_run(tmp_path / "all_code-seed1", "all_code",
                      [("game24", 2, 1.0, 400, 8), ("game24", 2, 1.0, 400, 8), ("letters", 1, 1.0, 100, 2),
                       ("letters", 1, 0.0, 100, 2)], first_id=10)
    pooled = report.load_runs([runs[0], f"{runs[1]}+{seed1}", runs[2]])["all_code"]
    game24 = pooled["tasks"]["game24"]   # (1 + 0 + 1 + 1) / 4; tokens (100 + 100 + 400 + 400) / 4
    assert (game24["n"], game24["score"], game24["tokens"], game24["seconds"]) == (4, 0.75, 250.0, 5.0)
    assert game24["by_complexity"] == {"1": {"score": 1.0, "n": 1}, "2": {"score": 2 / 3, "n": 3}}
    assert pooled["tasks"]["letters"]["score"] == 0.375   # (0.5 + 0 + 1 + 0) / 4
    assert (pooled["n"], pooled["average"]) == (8, (0.75 + 0.375) / 2)
    assert pooled["pooled"] == [runs[1], seed1]
    out = run_compare([runs[0], f"{runs[1]}+{seed1}", runs[2]], capsys)
    assert "note: columns pooled over several runs: all_code (2 runs, 8 samples)\n" in out
    header, game24_row = out.splitlines()[1:3]
    assert header.split() == ["task", "codesteer", "all_code", "only_question"]
    assert game24_row.split() == ["game24", "83.3", "75.0", "25.0"]

    plus_in_name = write_run(tmp_path / "a+b", "all_code", RUNS["all_code"])   # an existing folder is one run
    assert report.load_runs([plus_in_name])["all_code"]["n"] == 4


def test_pooling_refuses_runs_that_differ_or_share_samples(runs, tmp_path, capsys):
    same_samples = write_run(tmp_path / "again", "all_code", RUNS["all_code"])
    other_method = write_run(tmp_path / "other", "all_text", RUNS["all_code"], first_id=10)
    appended = write_run(tmp_path / "appended", "all_code", RUNS["all_code"], first_id=20)
    report.ResultsFile(tmp_path / "appended" / "results.jsonl").append(
        dict(task="game24", id="extra", method="all_code", complexity=1, score=1.0, solved=True, error=None,
             seconds=1, tokens={}))   # a sample its summary does not count
    cases = ((f"{runs[1]}+{same_samples}", f"both {runs[1]} and {same_samples} hold game24/game24-0 (complexity 1)"),
             (f"{runs[1]}+{other_method}", f"{other_method} differs from {runs[1]} (method: \"all_code\" -> "
                                           '"all_text")'),
             (f"{runs[1]}+{appended}", f"{appended}/results.jsonl holds other samples than its summary.json counts"),
             (f"{runs[1]}+{tmp_path / 'missing'}", "missing: no such folder"))
    for argument, message in cases:
        with pytest.raises(SystemExit) as stop:
            steer.main(["compare", runs[0], argument])
        error = capsys.readouterr().err
        assert stop.value.code == 2 and "error: " in error and message in error, (argument, error)
