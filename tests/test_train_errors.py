"""What a user gets from train_sft.py / train_dpo.py for their mistakes: one `error:` line naming
the file or flag, exit status 2, no traceback (real subprocesses on tiny inputs); and what a kill
leaves behind: a torn metrics line on --resume, an oversized JSONL row refused while reading."""

import json
import os
import shutil
import subprocess
import sys
import tracemalloc

import pytest
from conftest import ROOT, write_jsonl

import train_sft as S
from jsonl import read_jsonl

SFT_DATA, DPO_DATA = ROOT / "tests" / "data" / "sft_small.jsonl", ROOT / "tests" / "data" / "dpo_small.jsonl"
GOOD_ROW = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}


def run_script(script: str, args: list) -> subprocess.CompletedProcess:
    command = [sys.executable, script, *map(str, args), "--steps", "1", "--seq-len", "256", "--no-export"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def assert_user_error(result: subprocess.CompletedProcess, script: str, *named: str):
    """Status 2, no traceback, and exactly one `error:` line, naming what it must name."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{script}: error: "), result.stderr[-2000:]
    for text in named:
        assert text in errors[0], errors[0]


@pytest.mark.parametrize("script, line, message", [
    ("train_sft.py", '{"messages": [', "bad.jsonl:2: invalid JSON"),
    ("train_sft.py", '{"text": "hi"}', "bad.jsonl:2: expected a 'messages' list"),
    ("train_sft.py", '{"messages": [{"role": "tool", "content": "a"}]}', "bad.jsonl:2: unknown role 'tool'"),
    ("train_sft.py", '{"messages": [{"role": "assistant", "content": "a"}]}', "bad.jsonl:2: roles must alternate"),
    ("train_dpo.py", '{"prompt": "q", "chosen": "a"}', "bad.jsonl:2: missing 'rejected'"),
])
def test_bad_data_is_one_error_line_naming_file_and_line(tiny_checkpoint, tmp_path, script, line, message):
    good = GOOD_ROW if script == "train_sft.py" else {"prompt": "q", "chosen": "a", "rejected": "b"}
    data = write_jsonl(tmp_path / "bad.jsonl", [good, line])
    result = run_script(script, ["--init", tiny_checkpoint, "--data", data, "--out", tmp_path / "out"])
    assert_user_error(result, script, message)


def test_empty_data_is_an_error_naming_the_file(tiny_checkpoint, tmp_path):
    data = write_jsonl(tmp_path / "empty.jsonl", ["", "  "])
    result = run_script("train_sft.py", ["--init", tiny_checkpoint, "--data", data, "--out", tmp_path / "out"])
    assert_user_error(result, "train_sft.py", f"--data {data}: no rows")
    assert not (tmp_path / "out").exists()  # nothing written for a run that never started


@pytest.fixture(scope="module")
def truncated_checkpoints(tiny_checkpoint, embedded_path, tmp_path_factory):
    """The embedded GGUF cut at 60% (its header survives, tensor data does not) and the tiny
    safetensors checkpoint cut in half."""
    folder = tmp_path_factory.mktemp("truncated")
    gguf = folder / "cut.gguf"
    with open(embedded_path, "rb") as source, open(gguf, "wb") as target:
        target.write(source.read(int(embedded_path.stat().st_size * 0.6)))
    hf = shutil.copytree(tiny_checkpoint, folder / "cut_hf")
    weights = hf / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    return {"gguf": gguf, "safetensors": hf}


@pytest.mark.parametrize("case", ["missing", "gguf", "safetensors"])
def test_a_missing_or_truncated_checkpoint_is_one_error_line(truncated_checkpoints, tmp_path, case):
    init = tmp_path / "no-such-model" if case == "missing" else truncated_checkpoints[case]
    result = run_script("train_sft.py", ["--init", init, "--data", SFT_DATA, "--out", tmp_path / "out"])
    assert_user_error(result, "train_sft.py", f"--init {init}",
                      "give an HF checkpoint folder" if case == "missing" else "truncated or corrupt")


@pytest.mark.parametrize("flags, named", [
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--out", "{file}"], "--out {file}: {file} is a file"),
])
def test_unusable_flags_are_argparse_errors(tiny_checkpoint, tmp_path, flags, named):
    file = write_jsonl(tmp_path / "taken", ["not a folder"])
    flags = [flag.format(file=file) for flag in flags]
    out = [] if "--out" in flags else ["--out", tmp_path / "out"]
    result = run_script("train_dpo.py", ["--init", tiny_checkpoint, "--data", DPO_DATA, *out, *flags])
    assert_user_error(result, "train_dpo.py", named.format(file=file))


def test_an_oversized_row_is_refused_with_its_line_number(tiny_checkpoint, tmp_path):
    data = write_jsonl(tmp_path / "big.jsonl", [GOOD_ROW, {"messages": [{"role": "user", "content": "x" * 5000}]}])
    result = run_script("train_sft.py", ["--init", tiny_checkpoint, "--data", data, "--out", tmp_path / "out",
                                         "--max-row-bytes", "1000"])
    assert_user_error(result, "train_sft.py", f"{data}:2: line longer than 1000 bytes", "--max-row-bytes")


def test_an_oversized_line_is_refused_before_it_is_held_in_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps(GOOD_ROW) + "\n" + '{"messages": "' + "x" * (20 << 20) + '"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"big\.jsonl:2: line longer than 65536 bytes"):
            list(read_jsonl(path, max_line_bytes=1 << 16))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the 20 MB line was never read whole


def test_resume_drops_a_torn_last_metrics_line_and_repairs_the_file(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--init", str(tiny_checkpoint), "--data", str(SFT_DATA), "--out", str(out), "--steps", "3",
            "--batch-size", "1", "--seq-len", "256", "--lr", "1e-3", "--save-every", "2", "--no-export"]
    S.main(args)
    metrics = out / "metrics.jsonl"
    whole = metrics.read_text().splitlines()
    # What kill -9 during step 3's write leaves: step 3's row cut mid-line.
    metrics.write_text("".join(line + "\n" for line in whole[:2]) + whole[2][:25])
    capsys.readouterr()
    S.main(args + ["--resume"])
    assert f"warning: {metrics}:3: dropped a torn last line" in capsys.readouterr().err
    resumed = metrics.read_text().splitlines()
    assert [json.loads(line)["step"] for line in resumed] == [1, 2, 3]
    assert resumed[:2] == whole[:2]

    # A bad line before the last is not what a kill leaves: an error, and the file is left alone.
    broken = "".join(line + "\n" for line in [whole[0], "{oops", whole[1]])
    metrics.write_text(broken)
    with pytest.raises(S.InputError, match=rf"{metrics}:2: not a metrics row"):
        S.main(args + ["--resume"])
    assert metrics.read_text() == broken


def test_a_learning_rate_that_diverges_stops_with_a_hint(tiny_checkpoint, tmp_path):
    args = ["--init", str(tiny_checkpoint), "--data", str(SFT_DATA), "--out", str(tmp_path / "run"), "--steps", "3",
            "--batch-size", "1", "--seq-len", "256", "--lr", "1e30", "--warmup-ratio", "0", "--no-export"]
    with pytest.raises(S.InputError, match=r"at step \d: training diverged; lower --lr \(now 1e\+30\)"):
        S.main(args)
