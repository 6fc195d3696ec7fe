"""`python -m symbench list | generate | score | show`, driven in-process through main(argv)
(and once as a real subprocess), on temporary files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import symbench
from symbench.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "symbench-reference" / "dataset_gather"
FILE_ONLY = {"gsm_hard", "math_geometry", "math_counting_probability"}  # the file-only tasks


def cli(capsys, *argv):
    rc = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def read_samples(path):
    return [symbench.Sample.from_json(line) for line in Path(path).read_text().splitlines()]


def write_jsonl(path, records):
    Path(path).write_text("".join(json.dumps(record) + "\n" for record in records))


def test_list_shows_the_37_tasks_28_seen_9_unseen():
    result = subprocess.run([sys.executable, "-m", "symbench", "list"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    header, *rows, count = result.stdout.splitlines()
    assert header.split()[:2] == ["task", "split"]
    assert [row.split()[0] for row in rows] == list(symbench.TASK_IDS)
    for row in rows:
        task_id, split, source = row.split()[:3]
        assert split == ("seen" if task_id in symbench.SEEN_TASK_IDS else "unseen")
        assert source == ("file-only" if task_id in FILE_ONLY else "generated")
        assert "<<<" in row  # the answer format
    assert count.startswith("37 tasks: 28 seen, 9 unseen")


def test_generate_writes_what_the_tasks_generate(tmp_path, capsys):
    out = tmp_path / "samples.jsonl"
    rc, _, err = cli(capsys, "generate", "--task", "standard_sudoku", "--task", "game24",
                     "--n", 3, "--seed", 5, "--complexity", 2, "--out", out)
    assert rc == 0, err
    expected = (symbench.get_task("game24").generate(3, complexity=2, seed=5)
                + symbench.get_task("standard_sudoku").generate(3, complexity=2, seed=5))
    assert read_samples(out) == expected  # registry order, not command-line order
    assert [p.name for p in tmp_path.iterdir()] == ["samples.jsonl"]  # no temporary file left


def test_generate_sweeps_levels_and_skips_or_reads_file_only_tasks(tmp_path, capsys):
    out = tmp_path / "sweep.jsonl"
    rc, _, err = cli(capsys, "generate", "--task", "2048", "--task", "gsm_hard", "--levels", "all",
                     "--n", 2, "--out", out)
    assert rc == 0 and "skipping gsm_hard" in err
    samples = read_samples(out)
    assert {s.task for s in samples} == {"2048"}
    assert [s.complexity for s in samples] == [level for level in symbench.get_task("2048").levels
                                               for _ in range(2)]

    rc, _, err = cli(capsys, "generate", "--task", "gsm_hard", "--n", 1, "--data-dir", REFERENCE,
                     "--out", out)
    assert rc == 0, err
    assert read_samples(out) == symbench.load_original("gsm_hard", REFERENCE)[:1]


def test_generate_rejects_a_level_a_task_lacks_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "samples.jsonl"
    rc, _, err = cli(capsys, "generate", "--task", "game24", "--task", "blocksworld",
                     "--complexity", 3, "--out", out)
    assert rc == 2 and "blocksworld" in err and "complexity 3" in err
    assert not out.exists()


@pytest.fixture(scope="module")
def samples_file(tmp_path_factory):
    """Two samples of every task: generated, or for the file-only tasks the original files."""
    path = tmp_path_factory.mktemp("cli") / "samples.jsonl"
    assert main(["generate", "--tasks", "all", "--n", "2", "--seed", "3", "--data-dir", str(REFERENCE),
                 "--out", str(path)]) == 0
    return path


def correct_answer(sample):
    task = symbench.get_task(sample.task)
    return task.solve(sample) if task.generatable else sample.answer


def test_score_round_trip(samples_file, tmp_path, capsys):
    samples = read_samples(samples_file)
    assert {s.task for s in samples} == set(symbench.TASK_IDS)
    cases = {
        "solved": [{"task": s.task, "id": s.id, "response": f"Working...\n<<<{correct_answer(s)}>>>"}
                   for s in samples],
        "extracted": [{"task": s.task, "id": s.id, "answer": correct_answer(s)} for s in samples],
        "garbage": [{"task": s.task, "id": s.id, "response": "no idea <<<zebra>>>"} for s in samples],
    }
    for name, records in cases.items():
        responses, scores = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-scores.jsonl"
        write_jsonl(responses, records)
        rc, out, err = cli(capsys, "score", "--samples", samples_file, "--responses", responses,
                           "--out", scores)
        assert rc == 0, err
        expected = 0.0 if name == "garbage" else 1.0
        lines = [json.loads(line) for line in scores.read_text().splitlines()]
        assert [(line["task"], line["id"]) for line in lines] == [(s.task, s.id) for s in samples]
        assert {line["score"] for line in lines} == {expected}, name
        assert f"overall mean {expected:.3f} over {len(samples)} responses" in out
        assert "game24" in out  # the per-task table


@pytest.mark.parametrize("bad_line, message", [
    ("{oops", "invalid JSON"),
    ('["game24", "x"]', "expected a JSON object"),
    ('{"task": "game24"}', "needs string fields"),
    ('{"task": "game24", "id": "no-such-id", "response": "<<<1>>>"}', "no sample with task"),
    ('{"task": "game24", "id": "%s", "response": "<<<1>>>", "answer": "1"}', "exactly one"),
    ('{"task": "game24", "id": "%s", "response": 24}', "must be a string"),
])
def test_score_names_the_file_and_line_of_bad_input(samples_file, tmp_path, capsys, bad_line, message):
    responses, scores = tmp_path / "responses.jsonl", tmp_path / "scores.jsonl"
    game24_id = next(s.id for s in read_samples(samples_file) if s.task == "game24")
    good = json.dumps({"task": "game24", "id": game24_id, "response": "<<<1>>>"})
    responses.write_text(f"{good}\n\n{bad_line.replace('%s', game24_id)}\n")  # the bad one is line 3
    rc, _, err = cli(capsys, "score", "--samples", samples_file, "--responses", responses, "--out", scores)
    assert rc == 2
    assert f"{responses}:3:" in err and message in err
    assert not scores.exists()


@pytest.mark.parametrize("field, value, message", [
    ("task", ["game24"], "'task' must be a string, got list"),
    ("id", {"n": 1}, "'id' must be a string, got dict"),
    ("answer", [1, 2], "'answer' must be a string or null, got list"),
    ("meta", "x", "'meta' must be an object, got str"),
])
def test_score_rejects_a_sample_field_of_the_wrong_type(samples_file, tmp_path, field, value, message):
    """A real subprocess: an unhashable task id used to end in a TypeError traceback."""
    sample = json.loads(Path(samples_file).read_text().splitlines()[0])
    good = {"task": sample["task"], "id": sample["id"], "response": "<<<1>>>"}
    samples, responses = tmp_path / "samples.jsonl", tmp_path / "responses.jsonl"
    write_jsonl(samples, [sample, {**sample, field: value}])
    write_jsonl(responses, [good])
    result = subprocess.run([sys.executable, "-m", "symbench", "score", "--samples", samples, "--responses",
                             responses], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"python -m symbench: error: {samples}:2: not a sample: {message}"]


def test_show_prints_question_reference_and_solver_answer(capsys):
    rc, out, err = cli(capsys, "show", "--task", "game24", "--index", 1, "--seed", 3, "--complexity", 2)
    assert rc == 0, err
    task = symbench.get_task("game24")
    sample = task.generate(2, complexity=2, seed=3)[1]
    assert sample.question in out and sample.answer in out and task.solve(sample) in out


def test_show_finds_a_sample_in_a_file(samples_file, capsys):
    samples = read_samples(samples_file)
    shared_id = next(s.id for s in samples if sum(other.id == s.id for other in samples) > 1)
    rc, _, err = cli(capsys, "show", "--samples", samples_file, "--id", shared_id)
    assert rc == 2 and "add --task" in err
    sample = next(s for s in samples if s.task == "gsm_hard")
    rc, out, err = cli(capsys, "show", "--samples", samples_file, "--id", sample.id, "--task", "gsm_hard")
    assert rc == 0, err
    assert sample.question in out and sample.answer in out and "no programmatic solver" in out
