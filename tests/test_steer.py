"""The CodeSteer loop, baselines, final-answer scoring and the harness, driven by scripted OpenAI-compatible servers
(tests/fixture_server.py) so that every run is deterministic. One slow test runs the loop over HTTP against serve.py
on the embedded model."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llm
import report
import steer
import symbench
from fixture_server import fixture_server
from llm import make_client

ROOT = Path(__file__).resolve().parents[1]
GAME24 = symbench.get_task("game24")
SAMPLE = GAME24.generate(1, seed=0)[0]        # numbers 1 2 5 10
RIGHT = "(2*10)-(1-5) = 24"
WRONG = "1+2+5+10 = 24"
EXEC_MARKER = "exec-marker-7731"              # appears only in the output of running the TaskLLM's code
CHECK_MARKER = "Wrong: the numbers sum to 18"  # appears only in the Self-answer Checker's verdict


@pytest.fixture(autouse=True)
def no_real_endpoints(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def checker_reply(messages) -> str:
    """The helper LLM: checking code for the Self-answer Checker, a restated answer for the extractor."""
    prompt = messages[-1]["content"]
    if prompt.startswith("Below is a response to a task"):
        return "<<<" + WRONG + ">>>"
    verdict = CHECK_MARKER if WRONG in prompt.split("The response is:")[-1] else "Correct"
    return f"Let me check.\n```python\nprint({verdict!r})\n```"


def clients_for(task_server, steer_server, helper_server) -> steer.Clients:
    return steer.Clients(task=make_client("task", base_url=task_server.url, system_message=""),
                         steer=make_client("steer", base_url=steer_server.url),
                         helper=make_client("helper", base_url=helper_server.url))


def task_contents(server) -> list[str]:
    return [m["content"] for request in server.requests for m in request["messages"]]


def test_a_text_answer_is_steered_to_code_and_scores_one():
    text_reply = f"Adding everything: 1+2+5+10 = 18. <<<{WRONG}>>>"
    literal_code = f"Plan: print it.\n```python\nprint('exec-marker-' + str(7731))\nprint('<<<{RIGHT}>>>')\n```"
    search_code = ("Search every expression.\n```python\nimport itertools\n"
                   f"for a in itertools.permutations([1, 2, 5, 10]):\n    pass\nprint('<<<{RIGHT}>>>')\n```")
    guidance_0 = "Reason about it in text.\n\n"
    better = "Your code only prints an answer worked out by hand; search over the expressions instead."
    with fixture_server([text_reply, literal_code, search_code]) as task_server, \
            fixture_server([guidance_0, "<<<Code>>>", better, "<<<Return Answer>>>"]) as steer_server, \
            fixture_server(checker_reply) as helper_server:
        record = steer.run_sample(SAMPLE, GAME24, "codesteer", clients_for(task_server, steer_server, helper_server),
                                  steer.Settings(mode="finetuned"))
    assert record["error"] is None and record["score"] == 1.0 and record["solved"]
    assert record["final"]["candidates"][0]["source"] == "code_output"

    # The TaskLLM's history: guidance and its own replies only; the question only in the first message.
    third = task_server.requests[2]["messages"]
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert third[1]["content"] == guidance_0 + SAMPLE.question
    assert third[2]["content"] == text_reply and third[3]["content"] == steer.CODE_PROMPT
    assert third[4]["content"] == literal_code and third[5]["content"] == better
    for content in task_contents(task_server):
        for leaked in (EXEC_MARKER, CHECK_MARKER, "Complexity score", steer.BODY_CHECK.split(":")[0]):
            assert leaked not in content
    assert sum(SAMPLE.question in c for c in task_contents(task_server)) == 3  # the first message, resent each call

    # CodeSteer saw what the TaskLLM did not: the checker's verdict, the execution output, the complexity analysis.
    steer_requests = [r["messages"] for r in steer_server.requests]
    assert steer_requests[0] == [{"role": "user", "content": steer.CHOICE_PROMPT + SAMPLE.question +
                                  steer.CHOICE_REMINDER}]
    assert CHECK_MARKER in steer_requests[1][-1]["content"]
    assert EXEC_MARKER in steer_requests[2][-1]["content"] and "Complexity score" in steer_requests[2][-1]["content"]
    assert [m["role"] for m in steer_requests[3]] == ["user", "assistant"] * 3 + ["user"]
    assert steer_requests[3][1]["content"] == guidance_0   # short form: the guidance as it was written

    trajectory = record["trajectory"]
    assert trajectory["stop_reason"] == "return_answer"
    assert len(trajectory["steer_inputs_short"]) == len(trajectory["guidances"]) == 4
    assert trajectory["guidances"] == [guidance_0, "<<<Code>>>", better, "<<<Return Answer>>>"]
    assert [turn["code"] is not None for turn in trajectory["turns"]] == [False, True, True]
    assert EXEC_MARKER in trajectory["turns"][1]["execution"]["stdout"]
    assert trajectory["turns"][2]["check"] == "output: Correct\n"
    assert record["tokens"]["task"]["calls"] == 3 and record["tokens"]["steer"]["calls"] == 4


def test_the_loop_stops_after_max_turns_and_the_last_reply_is_not_checked():
    with fixture_server(f"Still thinking. TERMINATE <<<{WRONG}>>>") as task_server, \
            fixture_server("Check your arithmetic once more.") as steer_server, \
            fixture_server(checker_reply) as helper_server:
        record = steer.run_sample(SAMPLE, GAME24, "codesteer", clients_for(task_server, steer_server, helper_server),
                                  steer.Settings(mode="finetuned", max_turns=3))
    assert record["trajectory"]["stop_reason"] == "max_turns" and record["score"] == 0.0
    assert len(task_server.requests) == 3 and len(steer_server.requests) == 3
    checks = [r for r in helper_server.requests if "The response is:" in r["messages"][-1]["content"]]
    assert len(checks) == 2 and record["trajectory"]["turns"][-1]["check"] is None
    assert record["final"]["candidates"][-1]["via"] == "llm"   # a wrong answer is handed to the extractor


def test_api_mode_paraphrases_the_choice_and_reads_the_last_block():
    paraphrased = "Write Python that solves it and prints the answer."
    steer_replies = ["Code is the better tool here. <<<Code>>>", "It looks right to me. <<<Return Answer>>>"]
    helper = lambda messages: paraphrased if "Rewrite the instruction" in messages[-1]["content"] \
        else checker_reply(messages)
    with fixture_server([f"```python\nprint('<<<{RIGHT}>>>')\n```"]) as task_server, \
            fixture_server(steer_replies) as steer_server, fixture_server(helper) as helper_server:
        record = steer.run_sample(SAMPLE, GAME24, "codesteer", clients_for(task_server, steer_server, helper_server),
                                  steer.Settings(mode="api"))
    assert record["score"] == 1.0 and record["trajectory"]["stop_reason"] == "return_answer"
    assert task_server.requests[0]["messages"][1]["content"] == paraphrased + "\n\n" + SAMPLE.question
    second = steer_server.requests[1]["messages"]
    assert second[1]["content"] == record["trajectory"]["guidances"][0]
    assert second[2]["content"].startswith(steer.DECISION_PROMPT + " " + SAMPLE.question + "\n")
    assert record["trajectory"]["guidances"][1] == "Return Answer"
    assert steer_server.requests[1]["temperature"] == 0.0


@pytest.mark.parametrize("rewrite", ["", "Step 1: plan.\n```python\nprint(1)\n```", "Explain the plan. " * 200])
def test_a_reply_that_is_no_rewrite_of_the_instruction_leaves_it_verbatim(rewrite):
    assert steer.paraphrase(steer.CODE_PROMPT, lambda messages: rewrite) == steer.CODE_PROMPT
    assert steer.paraphrase(steer.CODE_PROMPT, lambda messages: " Use Python. ") == "Use Python.\n\n"


@pytest.mark.parametrize("settings, calls", [(steer.Settings(mode="api"), 2),
                                             (steer.Settings(mode="api", choice_follow_up=False), 1)])
def test_api_mode_without_a_choice_even_when_asked_again_gives_the_sample_up(settings, calls):
    with fixture_server("unused") as task_server, fixture_server("I am not sure.") as steer_server, \
            fixture_server(checker_reply) as helper_server:
        record = steer.run_sample(SAMPLE, GAME24, "codesteer", clients_for(task_server, steer_server, helper_server),
                                  settings)
    assert record["trajectory"]["stop_reason"] == "no_choice" and record["score"] == 0.0
    assert task_server.requests == [] and helper_server.requests == [] and len(steer_server.requests) == calls


def test_a_turn0_reply_that_labels_both_options_is_asked_once_more_in_the_same_chat():
    labelled = "Code >>>1+2+5*10 = 24<<< Text >>>7-4)*11-9 = 24<<<"     # the 0.5B steerer's reply in a demo
    steer_replies = [labelled, "<<<Code>>>", "<<<Return Answer>>>"]
    with fixture_server([f"```python\nprint('<<<{RIGHT}>>>')\n```"]) as task_server, \
            fixture_server(steer_replies) as steer_server, fixture_server(checker_reply) as helper_server:
        record = steer.run_sample(SAMPLE, GAME24, "codesteer", clients_for(task_server, steer_server, helper_server),
                                  steer.Settings(mode="api", paraphrase=False))
    follow_up = steer_server.requests[1]["messages"]
    assert [m["role"] for m in follow_up] == ["user", "assistant", "user"]
    assert follow_up[1]["content"] == labelled and follow_up[2]["content"] == steer.CHOICE_FOLLOW_UP
    trajectory = record["trajectory"]
    assert trajectory["steer_outputs"][0] == labelled + steer.FOLLOW_UP_SEPARATOR + "<<<Code>>>"
    assert trajectory["guidances"][0] == steer.CODE_PROMPT and record["score"] == 1.0


@pytest.mark.parametrize("guidance, corrected, paper", [
    ("<<<Return Answer>>>", "return_answer", "return_answer"),
    ("Return Answer", "return_answer", "return_answer"),
    ("  return answer.  ", "return_answer", None),
    ("**Terminate**", "terminate", "terminate"),
    ("Do not terminate yet: fix the code, and only Terminate if it still fails.", None, "terminate"),
    ("The answer is close; do not Return Answer until the sum is checked.", None, "return_answer"),
    ("Please switch modes. <<<Code>>>", "code", "code"),
    ("Code", "code", None),
    ("<<<text>>>", "text", None),
    ("Use a breadth-first search over the moves.", None, None),
])
def test_guidance_is_read_as_a_whole_by_default_and_as_substrings_under_the_paper_rules(guidance, corrected, paper):
    assert steer.read_guidance(guidance) == corrected
    assert steer.read_guidance(guidance, paper_rules=True) == paper


def test_last_block_and_choice():
    assert steer.last_block("a <<<x>>> b <<<Return Answer>>> c") == "Return Answer"
    assert steer.last_block("no block here") == "no block here"
    assert steer.read_choice("I pick <<< code >>>") == "code"
    assert steer.read_choice("I pick <<< code >>>", paper_rules=True) is None
    assert steer.read_choice("maybe text?") is None
    assert steer.read_choice("Code>>>") == "code"                   # a small model's reply without its opening <<<
    assert steer.read_choice("Either <<<Code>>> or <<<Text>>>. Text>>>") == "text"   # the last choice counts
    assert steer.read_choice("Code>>>", paper_rules=True) is None
    assert steer.read_choice("the Xcode>>> tool") is None and steer.read_choice("<<<No>>>") is None
    assert steer.read_choice("Code >>>1+2+5*10 = 24<<< Text >>>(7-4)*8 = 24<<<") is None   # both, ends on neither
    assert steer.read_choice("<<<Text>>> since <<<Code>>> would be slower") is None
    assert steer.read_choice("<<<Code>>>, since a program can search every order.") == "code"   # the one named
    assert steer.read_choice("<<<Code>>> or <<<Text>>>? I choose: **<<<Text>>>**.") == "text"


def test_the_choice_input_ends_with_the_reminder_except_under_the_paper_variant():
    ask = steer.Settings(mode="api", max_turns=1)
    seen = []
    steer.steer("Reply Yes or No.", lambda m: "<<<Yes>>>", lambda m: seen.append(m) or "No", None, ask)
    steer.steer("Reply Yes or No.", lambda m: "<<<Yes>>>", lambda m: seen.append(m) or "No", None,
                steer.Settings(mode="api", max_turns=1, choice_reminder=False))
    first_inputs = [m[0]["content"] for m in seen if len(m) == 1]   # not the follow-ups
    assert first_inputs == [steer.CHOICE_PROMPT + "Reply Yes or No." + steer.CHOICE_REMINDER,
                            steer.CHOICE_PROMPT + "Reply Yes or No."]


class CountingHelper:
    def __init__(self, reply):
        self.reply, self.prompts = reply, []

    def __call__(self, messages):
        self.prompts.append(messages[-1]["content"])
        return self.reply


def trajectory_ending_with(reply: str, first_reply: str | None = None) -> steer.Trajectory:
    trajectory = steer.Trajectory(SAMPLE.question)
    for text in ([first_reply] if first_reply else []) + [reply]:
        trajectory.turns.append(dict(reply=text, code=steer.extract_code(text)))
    trajectory.final_text = reply
    return trajectory


def test_final_answer_calls_the_extractor_only_when_no_candidate_validates():
    helper = CountingHelper(f"<<<{RIGHT}>>>")
    result = steer.final_answer(SAMPLE, GAME24, trajectory_ending_with(f"So <<<{RIGHT}>>>"), helper)
    assert result["score"] == 1.0 and helper.prompts == []

    result = steer.final_answer(SAMPLE, GAME24, trajectory_ending_with(f"The answer is {RIGHT}."), helper)
    assert result["score"] == 1.0 and len(helper.prompts) == 1
    assert GAME24.answer_format in helper.prompts[0] and result["candidates"][-1]["via"] == "llm"

    no_extractor = steer.Settings(llm_extract=False)
    result = steer.final_answer(SAMPLE, GAME24, trajectory_ending_with(f"The answer is {RIGHT}."), helper, no_extractor)
    assert result["score"] == 0.0 and len(helper.prompts) == 1


def test_final_answer_runs_the_final_code_and_scores_any_candidate():
    letters = symbench.get_task("letters")
    sample = letters.generate(1, seed=3)[0]
    code = f"```python\nresult = {sample.answer!r}\n```"     # nothing printed: the runner prints `result`
    result = steer.final_answer(sample, letters, trajectory_ending_with(f"<<<wrong>>>\n{code}"), None)
    assert [c["source"] for c in result["candidates"]] == ["code_output", "reply"]
    assert [c["score"] for c in result["candidates"]] == [0.0, 0.0]   # the bare value has no <<<>>>: no extractor
    code = f"```python\nprint('<<<' + {sample.answer!r} + '>>>')\n```"
    result = steer.final_answer(sample, letters, trajectory_ending_with(f"<<<wrong>>>\n{code}"), None)
    assert result["score"] == 1.0 and result["answer"] == sample.answer


def test_game24_scores_a_single_chain_and_round_zero_code_is_reused_only_under_the_flag():
    code = f"```python\nprint('<<<{WRONG}>>>')\n```"
    result = steer.final_answer(SAMPLE, GAME24, trajectory_ending_with(f"<<<{RIGHT}>>>\n{code}"), None)
    assert [c["source"] for c in result["candidates"]] == ["code_output"] and result["score"] == 0.0

    round0 = f"```python\nprint('<<<{RIGHT}>>>')\n```"
    trajectory = trajectory_ending_with("I stand by it.", first_reply=round0)
    assert steer.final_answer(SAMPLE, GAME24, trajectory, None)["score"] == 0.0
    assert steer.final_answer(SAMPLE, GAME24, trajectory, None, steer.Settings(reuse_round0_code=True))["score"] == 1.0


def test_baselines_send_what_the_paper_describes():
    def run(method, replies, **settings):
        with fixture_server(replies) as task_server, fixture_server(checker_reply) as helper_server:
            clients = steer.Clients(task=make_client("task", base_url=task_server.url), steer=None,
                                    helper=make_client("helper", base_url=helper_server.url))
            record = steer.run_sample(SAMPLE, GAME24, method, clients, steer.Settings(**settings))
        return record, [r["messages"] for r in task_server.requests]

    record, requests = run("only_question", [f"<<<{RIGHT}>>>"])
    assert requests == [[{"role": "user", "content": SAMPLE.question}]] and record["score"] == 1.0
    _, requests = run("all_code", [f"<<<{RIGHT}>>>"])
    assert requests[0][0]["content"] == steer.CODE_PROMPT + SAMPLE.question
    _, requests = run("all_text", [f"<<<{RIGHT}>>>"])
    assert requests[0][0]["content"] == steer.TEXT_PROMPT + SAMPLE.question

    # code_interpreter: the TaskLLM does get its execution output, until it answers without code.
    record, requests = run("code_interpreter", ["```python\nprint('exec-' + 'out-42')\n```", f"<<<{RIGHT}>>>"])
    assert len(requests) == 2 and "exec-out-42" in requests[1][-1]["content"]
    assert record["score"] == 1.0 and record["trajectory"]["stop_reason"] == "answered"
    record, requests = run("code_interpreter", "```python\nprint(1)\n```", max_turns=2)
    assert len(requests) == 2 and record["trajectory"]["stop_reason"] == "max_turns"


def test_code_text_choice_is_turn_zero_only():
    with fixture_server(f"<<<{RIGHT}>>>") as task_server, fixture_server("Use code.\n\n") as steer_server, \
            fixture_server(checker_reply) as helper_server:
        record = steer.run_sample(SAMPLE, GAME24, "code_text_choice",
                                  clients_for(task_server, steer_server, helper_server), steer.Settings())
    assert len(task_server.requests) == len(steer_server.requests) == 1 and helper_server.requests == []
    assert record["score"] == 1.0


# ---------------------------------------------------------------------------------------------------------------
# The harness

def harness_args(url: str, out: Path, *extra: str) -> list[str]:
    return ["--task", "game24", "--method", "only_question", "--task-base-url", url, "--out", str(out), "--quiet",
            "--no-llm-extract", *extra]


def run_cli(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY")}
    return subprocess.run([sys.executable, str(ROOT / "steer.py"), *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_crashing_sample_is_recorded_and_the_run_goes_on(tmp_path):
    samples = GAME24.generate(3, seed=0)
    poison = samples[1].question

    def reply(messages):
        if messages[-1]["content"] == poison:
            raise ValueError("boom")
        return f"<<<{WRONG}>>>"

    with fixture_server(reply) as server:
        summary = steer.evaluate(steer.parse_args(harness_args(server.url, tmp_path, "--n", "3", "--concurrency", "2")))
    records = read_lines(tmp_path / "results.jsonl")
    assert len(records) == 3
    crashed = [r for r in records if r["error"]]
    assert [r["id"] for r in crashed] == [samples[1].id] and crashed[0]["score"] == 0.0
    assert "boom" in crashed[0]["error"] and summary["tasks"]["game24"]["errors"] == 1
    assert summary["tasks"]["game24"]["n"] == 3
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert config["method"] == "only_question" and config["roles"]["task"]["url"].startswith(server.url)
    assert all(r["config"] == config for r in records)


def test_an_authentication_error_stops_the_run(tmp_path):
    with fixture_server(["unused"], statuses=[401] * 4) as server, pytest.raises(SystemExit, match="401"):
        steer.evaluate(steer.parse_args(harness_args(server.url, tmp_path, "--n", "2", "--concurrency", "1")))
    assert not (tmp_path / "results.jsonl").exists() or read_lines(tmp_path / "results.jsonl") == []


def test_a_killed_run_resumes_and_runs_every_sample_exactly_once(tmp_path):
    n = 8
    with fixture_server(f"<<<{WRONG}>>>", delay=0.4) as server:
        command = [sys.executable, str(ROOT / "steer.py"), *harness_args(server.url, tmp_path, "--n", str(n),
                                                                          "--concurrency", "2")]
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        results = tmp_path / "results.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not results.exists() or results.read_text().count("\n") < 2):
            assert process.poll() is None, process.stderr.read().decode()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        first = read_lines(results)
        assert 2 <= len(first) < n
        with open(results, "a") as file:   # what a crash in the middle of a write leaves behind
            file.write('{"task": "game24", "id": "torn')
        finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    records = read_lines(results)
    keys = [steer.record_key(r) for r in records]
    assert len(keys) == n and len(set(keys)) == n
    assert {r["id"] for r in records} == {s.id for s in GAME24.generate(n, seed=0)}
    assert records[:len(first)] == first
    assert f"{len(first)} already in" in finished.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["tasks"]["game24"]["n"] == n


def failing_on(failing: set[str], answer: str):
    """A TaskLLM that fails (the fixture answers HTTP 400) on the questions in `failing`, which a test may change."""
    def reply(messages):
        if messages[-1]["content"] in failing:
            raise ValueError("the server fell over")
        return answer
    return reply


def test_retry_errors_reruns_only_the_failed_samples(tmp_path):
    samples = GAME24.generate(2, seed=0)
    failing = {samples[0].question}
    with fixture_server(failing_on(failing, f"<<<{RIGHT}>>>")) as server:
        steer.evaluate(steer.parse_args(harness_args(server.url, tmp_path, "--n", "2")))
        failing.clear()
        steer.evaluate(steer.parse_args(harness_args(server.url, tmp_path, "--n", "2")))
        assert sum(bool(r["error"]) for r in read_lines(tmp_path / "results.jsonl")) == 1   # plain resume: kept
        steer.evaluate(steer.parse_args(harness_args(server.url, tmp_path, "--n", "2", "--retry-errors")))
    records = read_lines(tmp_path / "results.jsonl")
    assert len(records) == 2 and not any(r["error"] for r in records)


def cli_error(capsys, argv: list[str]) -> str:
    """steer.py's CLI on argv, which must fail as a user's mistake: exit code 2 and one `error:` line."""
    with pytest.raises(SystemExit) as stop:
        steer.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ") or ": error: " in line]  # or argparse's
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_rerun_with_another_configuration_is_refused_unless_appended(tmp_path, capsys):
    with fixture_server(f"<<<{WRONG}>>>", model="model-A") as server:
        steer.main(harness_args(server.url, tmp_path, "--task-model", "model-A", "--n", "2"))
        config = (tmp_path / "config.json").read_text()
        message = cli_error(capsys, harness_args(server.url, tmp_path, "--task-model", "model-B", "--n", "4"))
        assert 'roles.task.model: "model-A" -> "model-B"' in message and "--append" in message
        assert "max_tokens" in cli_error(capsys, harness_args(server.url, tmp_path, "--task-model", "model-A",
                                                              "--max-tokens", "50"))
        assert (tmp_path / "config.json").read_text() == config and len(read_lines(tmp_path / "results.jsonl")) == 2
        steer.main(harness_args(server.url, tmp_path, "--task-model", "model-B", "--n", "4", "--append"))
    records = read_lines(tmp_path / "results.jsonl")
    assert [r["config"]["roles"]["task"]["model"] for r in records] == ["model-A"] * 2 + ["model-B"] * 4
    assert json.loads((tmp_path / "summary.json").read_text())["n"] == 4   # this configuration's records only
    assert (tmp_path / "config.json").read_text() == config                # the folder's first configuration
    assert "4 samples planned, 0 already in" in capsys.readouterr().err
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text('{"method": "only_question", "n": 2}')   # an older version's
    with fixture_server(f"<<<{WRONG}>>>") as server:
        assert "names no configuration" in cli_error(capsys, harness_args(server.url, tmp_path / "old"))


def test_the_no_key_demo_writes_its_own_folder_names_the_model_and_shows_a_sample(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(llm.LocalClient, "probe", lambda self: None)   # the loop itself is not under test here

    def run_all(todo, method, clients, settings, results, *args, **kwargs):   # one finished sample, as stored
        (task, sample), = todo
        record = {**stored_record(), "task": task.id, "id": sample.id, "complexity": sample.complexity}
        results.path.write_text(json.dumps(record) + "\n")
        return [record]
    monkeypatch.setattr(steer, "run_all", run_all)
    steer.evaluate(steer.parse_args(["--quiet"]))
    # the demo ends with its sample's steering conversation, so a newcomer sees the code run and checked
    shown = capsys.readouterr().out
    assert shown.index("average") < shown.index("--- turn 0") < shown.index("print(6*4)") < shown.index("final answer")
    config = json.loads((tmp_path / "runs" / "demo-codesteer" / "config.json").read_text())["config"]
    assert not (tmp_path / "runs" / "codesteer").exists()
    for role in ("task", "steer", "helper"):
        assert config["roles"][role]["model"] == llm.DEMO_MODEL and config["roles"][role]["backend"] == "local"
        assert config["roles"][role]["digest"].startswith("sha256:")
    assert config["settings"]["mode"] == "api"   # the embedded coder model stands in for an untrained CodeSteer


def never_answering_server():
    """A socket that takes connections (the kernel completes them) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


@pytest.mark.parametrize("case, message", [
    ("refused", "ConnectionError"),
    ("not-a-url", "--task-base-url: 'not-a-url' is not an http:// or https:// base URL"),
    ("ftp", "--task-base-url: 'ftp://example.com/v1' is not an http"),
    ("max-tokens -5", "--max-tokens must be >= 1, got -5"),
    ("max-tokens 0", "--max-tokens must be >= 1, got 0"),
    ("http 500", "HTTP 500"),
    ("html", "unreadable reply"),
    ("no choices", "reply without choices"),
    ("missing ckpt", "--steer-ckpt /nonexistent/ckpt: no such file or directory"),
    ("corrupt ckpt", "cannot load the checkpoint"),
    ("never answers", "timed out"),
])
def test_a_misconfigured_run_stops_before_its_first_sample(tmp_path, capsys, case, message):
    out = tmp_path / "run"
    raw = {"html": (200, "text/html", b"<html><body>Please log in</body></html>"),
           "no choices": (200, "application/json", b'{"id": "x", "object": "chat.completion"}')}.get(case)
    corrupt = tmp_path / "model.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(1000))
    listener, silent_url = never_answering_server()
    with listener, fixture_server(f"<<<{WRONG}>>>", statuses=[500] * 10 if case == "http 500" else (),
                                  raw=raw) as server:
        url = {"refused": "http://127.0.0.1:9/v1", "not-a-url": "not-a-url", "ftp": "ftp://example.com/v1",
               "never answers": silent_url}.get(case, server.url)
        extra = {"max-tokens -5": ["--max-tokens", "-5"], "max-tokens 0": ["--max-tokens", "0"],
                 "missing ckpt": ["--method", "codesteer", "--steer-ckpt", "/nonexistent/ckpt"],
                 "corrupt ckpt": ["--method", "codesteer", "--steer-ckpt", str(corrupt)],
                 "never answers": ["--timeout", "0.5"]}.get(case, [])
        line = cli_error(capsys, harness_args(url, out, *extra))
    assert message in line
    assert not out.exists()   # nothing recorded, not even the folder


def test_the_command_line_reports_a_misconfiguration_in_one_line_with_exit_code_2(tmp_path):
    result = run_cli(harness_args("http://127.0.0.1:9/v1", tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the TaskLLM does not work")
    assert not (tmp_path / "run").exists()


def test_samples_that_err_mid_run_are_counted_and_too_many_in_a_row_stop_the_run(tmp_path, capsys):
    samples = GAME24.generate(10, seed=0)
    failing = {samples[1].question}
    with fixture_server(failing_on(failing, f"<<<{WRONG}>>>")) as server:
        args = harness_args(server.url, tmp_path, "--n", "3", "--concurrency", "1")
        with pytest.raises(SystemExit) as stop:
            steer.main(args)
        assert stop.value.code == 1
        assert "1 of 3 samples ended in an error" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            steer.main(args)
        assert "(1 of them ended in an error and are kept: --retry-errors runs them again)" in capsys.readouterr().err
        failing.update(s.question for s in samples[3:])   # the server dies after sample 3
        message = cli_error(capsys, harness_args(server.url, tmp_path, "--n", "10", "--concurrency", "1",
                                                 "--max-consecutive-errors", "2"))
    assert "the last 2 samples all ended in an error" in message and "--retry-errors" in message
    assert 3 + 2 <= len(read_lines(tmp_path / "results.jsonl")) < 10   # stopped (a third may have been running)


def test_a_second_writer_on_the_same_folder_is_refused(tmp_path, capsys):
    with fixture_server(f"<<<{WRONG}>>>") as server:
        process = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                                    "fcntl.flock(f, fcntl.LOCK_EX); f.write('pid 4242'); f.flush(); print(1, flush=True);"
                                    " time.sleep(60)", str(tmp_path / ".lock")], stdout=subprocess.PIPE)
        try:
            process.stdout.readline()   # the other writer holds the lock
            message = cli_error(capsys, harness_args(server.url, tmp_path))
        finally:
            process.kill()
            process.wait()
        assert "is in use by a run still going (pid 4242)" in message
        assert not (tmp_path / "results.jsonl").exists()
        steer.main(harness_args(server.url, tmp_path, "--n", "1"))   # the lock went with its process
    assert len(read_lines(tmp_path / "results.jsonl")) == 1


def test_the_progress_bar_moves_with_every_llm_call_within_a_sample(tmp_path):
    text_reply = f"Adding: <<<{WRONG}>>>"
    bar_text = io.StringIO()
    progress = steer.Progress(1, file=bar_text)
    calls_when_the_sample_ended = []
    on_record = progress.on_record
    progress.on_record = lambda record: (calls_when_the_sample_ended.append(progress.bar.n), on_record(record))
    with fixture_server(text_reply, delay=0.05) as task_server, \
            fixture_server(["Think in text.\n\n", "Try again.", "Try again.", "<<<Return Answer>>>"],
                           delay=0.05) as steer_server, fixture_server(checker_reply, delay=0.05) as helper_server:
        clients = clients_for(task_server, steer_server, helper_server)
        records = steer.run_all([(GAME24, SAMPLE)], "codesteer", clients, steer.Settings(mode="finetuned"),
                                report.ResultsFile(tmp_path / "results.jsonl"), 1, progress=progress)
    calls = sum(len(server.requests) for server in (task_server, steer_server, helper_server))
    assert records[0]["error"] is None and calls > 5
    assert calls_when_the_sample_ended == [calls]   # every call moved the bar before the sample was done
    assert "tok/s" in bar_text.getvalue() and f"{calls}call" in bar_text.getvalue()


def test_a_complexity_sweep_summarises_each_level_and_plots_it(tmp_path):
    with fixture_server(f"<<<{WRONG}>>>") as server:
        summary = steer.evaluate(steer.parse_args(harness_args(server.url, tmp_path, "--n", "2",
                                                               "--complexity", "1-2")))
    entry = summary["tasks"]["game24"]
    assert entry["n"] == 4 and set(entry["by_complexity"]) == {"1", "2"}
    assert {r["complexity"] for r in read_lines(tmp_path / "results.jsonl")} == {1, 2}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "sweep_game24.png").stat().st_size > 1000


def test_the_ave_norm_table_matches_a_hand_computation(tmp_path):
    runs = {"A": {"game24": 0.5, "boxlift": 0.2, "pooling": 0.0, "letters": 0.9, "2048": 0.1},
            "B": {"game24": 0.25, "boxlift": 0.4, "pooling": 0.0, "letters": 0.3}}
    norm = report.normalized_averages(runs)
    # common tasks game24, boxlift, letters (pooling: 0/0, 2048: not in B); best 0.5, 0.4, 0.9
    assert norm["A"]["seen"] == pytest.approx(100 * (1 + 0.5) / 2)
    assert norm["B"]["seen"] == pytest.approx(100 * (0.5 + 1) / 2)
    assert norm["A"]["unseen"] == pytest.approx(100.0) and norm["B"]["unseen"] == pytest.approx(100 / 3)
    assert norm["B"]["all"] == pytest.approx(100 * (0.5 + 1 + 1 / 3) / 3)

    for method, scores in runs.items():
        (tmp_path / method).mkdir()
        tasks = {t: dict(score=s, n=10, tokens=0, seconds=0) for t, s in scores.items()}
        (tmp_path / method / "summary.json").write_text(json.dumps(dict(method=method, tasks=tasks)))
    table = subprocess.run([sys.executable, str(ROOT / "steer.py"), "compare", str(tmp_path / "A"),
                            str(tmp_path / "B"), "--common-tasks"], capture_output=True, text=True, cwd=ROOT).stdout
    lines = {line.split("  ")[0]: line.split() for line in table.splitlines()}
    assert lines["Ave. Norm. (all)"][-2:] == [f"{100 * 2.5 / 3:.1f}", f"{100 * (0.5 + 1 + 1 / 3) / 3:.1f}"]
    assert lines["game24"][-2:] == ["50.0", "25.0"]
    assert "2048" in table and "pooling" in table   # named in the notes


def minimal_record(sample_id: str) -> dict:
    return dict(task="game24", id=sample_id, method="m", complexity=1, score=0.0, solved=False, error=None, seconds=0)


def test_results_file_drops_a_torn_line_and_keeps_the_rest(tmp_path):
    results = report.ResultsFile(tmp_path / "results.jsonl")
    results.append(minimal_record("a"))
    with open(results.path, "a") as file:
        file.write('{"task": "game24", "id": "b"')
    assert [r["id"] for r in results.read(repair=True)] == ["a"]
    assert results.path.read_text().endswith("}\n")
    results.append(minimal_record("c"))
    assert [r["id"] for r in results.read()] == ["a", "c"]


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path):
    results = report.ResultsFile(tmp_path / "results.jsonl")
    results.append(minimal_record("a"))
    with open(results.path, "a") as file:
        file.write(json.dumps(minimal_record("b")))   # killed between the record and its newline
    assert [r["id"] for r in results.read(repair=True)] == ["a", "b"]
    results.append(minimal_record("c"))
    assert [r["id"] for r in results.read()] == ["a", "b", "c"]


@pytest.mark.parametrize("line", [b"{}", b"[1, 2]", b"null", b'"a string"', b"17", b'{"task": "game24"}',
                                  b'{"task": [1], "id": "x", "method": "m", "complexity": 1, "score": 0, "solved": '
                                  b'false, "error": null, "seconds": 0}', b"\xff\xfe\x00binary\x80", b"[" * 100_000])
def test_lines_that_hold_no_record_are_reported_by_number_skipped_and_kept(tmp_path, capsys, line):
    results = report.ResultsFile(tmp_path / "results.jsonl")
    results.append(minimal_record("a"))
    with open(results.path, "ab") as file:
        file.write(line + b"\n")
    results.append({**minimal_record("b"), "error": "ValueError: flaky"})
    assert [r["id"] for r in results.read(repair=True)] == ["a", "b"]
    assert "lines 2)" in capsys.readouterr().err
    assert results.drop(lambda record: bool(record["error"])) == 1   # what --retry-errors does
    assert results.path.read_bytes().splitlines() == [json.dumps(minimal_record("a")).encode(), line]


def test_a_binary_results_file_is_skipped_line_by_line_on_resume(tmp_path):
    (tmp_path / "results.jsonl").write_bytes(bytes(range(256)) * 8 + b"\n")
    with fixture_server(f"<<<{WRONG}>>>") as server:
        result = run_cli(harness_args(server.url, tmp_path, "--n", "1", "--append"))
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "hold no record (lines 1, 2, 3" in result.stderr
    assert (tmp_path / "results.jsonl").read_bytes().startswith(bytes(range(256)) * 8)
    assert len(report.ResultsFile(tmp_path / "results.jsonl").read()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--task", "no_such_task"], "unknown task"),
    (["--method", "magic"], "unknown method"),
    (["--data-dir", "/nonexistent/dataset_gather"], "no such directory"),
    (["--task", "gsm_hard"], "--data-dir"),
    (["--complexity", "9"], "not a level of game24"),
    (["--complexity", "one"], "--complexity"),
])
def test_clear_errors(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        steer.evaluate(steer.parse_args(["--out", str(tmp_path), "--task-base-url", "http://127.0.0.1:9/v1", *argv]))


def test_parse_complexity():
    assert steer.parse_complexity("3") == [3]
    assert steer.parse_complexity("1,2, 5") == [1, 2, 5]
    assert steer.parse_complexity("2-4") == [2, 3, 4]
    assert steer.parse_complexity("all") == ["all"]
    assert steer.parse_complexity(None) is None


# ---------------------------------------------------------------------------------------------------------------
# Integration: the loop over HTTP against serve.py on the embedded model

@pytest.mark.slow
def test_the_loop_runs_against_serve_py_on_the_embedded_model():
    from llm import LocalClient
    from serve import ChatServer
    with ChatServer(LocalClient("embedded"), port=0) as server:
        clients = steer.Clients(*(make_client("smollm2", base_url=server.url, max_tokens=24, max_retries=0)
                                  for _ in range(3)))
        record = steer.run_sample(SAMPLE, GAME24, "codesteer", clients, steer.Settings(mode="finetuned", max_turns=2))
    assert record["error"] is None, record.get("traceback")
    trajectory = record["trajectory"]
    assert len(trajectory["turns"]) in (1, 2) and 0.0 <= record["score"] <= 1.0
    first_user = next(m for m in trajectory["task_messages"] if m["role"] == "user")
    assert first_user["content"] == trajectory["guidances"][0] + SAMPLE.question
    assert record["tokens"]["task"]["completion_tokens"] > 0 and record["tokens"]["steer"]["calls"] >= 2
    assert len(trajectory["steer_inputs_short"]) == len(trajectory["guidances"]) == 2


def test_judge_option_scores_judged_tasks_with_the_helper(monkeypatch):
    gsm = symbench.get_task("gsm_hard")
    monkeypatch.setattr(gsm, "judge", None)
    sample = symbench.Sample(task="gsm_hard", id="x", question="What is 2+3?", answer="5", complexity=None,
                             meta={"target": 5})
    assert gsm.score(sample, "<<<five>>>") == 0.0   # the deterministic rule cannot read it
    with fixture_server("They agree. <<<True>>>") as helper_server:
        steer.install_judges([gsm], make_client("judge", base_url=helper_server.url))
        assert gsm.score(sample, "<<<five>>>") == 1.0
    assert "Reference answer: 5" in helper_server.requests[0]["messages"][-1]["content"]


def test_sweep_plots_degrade_to_a_message_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib` raise ImportError
    summary = {"method": "m", "tasks": {"game24": {"by_complexity": {"1": {"score": 1.0, "n": 1},
                                                                     "2": {"score": 0.0, "n": 1}}}}}
    assert report.plot_sweeps(summary, tmp_path) == []
    assert "pip install matplotlib" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_original_samples_from_data_dir(tmp_path):
    data_dir = ROOT / "tests" / "symbench-reference" / "dataset_gather"
    with fixture_server("<<<7>>>") as server:
        args = harness_args(server.url, tmp_path / "a", "--task", "gsm_hard", "--data-dir", str(data_dir), "--n", "3")
        summary = steer.evaluate(steer.parse_args(args))
        assert summary["tasks"]["game24"]["n"] == 3 and summary["tasks"]["gsm_hard"]["n"] == 2   # the file holds 2
        again = steer.evaluate(steer.parse_args(args[:-1] + ["0"]))    # --n 0: all of them, the first 3 resumed
    ids = [r["id"] for r in read_lines(tmp_path / "a" / "results.jsonl") if r["task"] == "game24"]
    assert again["tasks"]["game24"]["n"] == len(set(ids)) == len(ids) == len(symbench.load_original("game24", data_dir))


def stored_record() -> dict:
    """A finished CodeSteer record as results.jsonl holds it."""
    turn = {"prompt": "Use code.", "reply": "```python\nprint(6*4)\n```", "code": "print(6*4)",
            "execution": {"stdout": "24\n", "errors": ""}, "symbolic_summary": "Numerical computing only.",
            "check": "The answer is correct."}
    return {"task": "game24", "id": "q7", "method": "codesteer", "complexity": 1, "score": 1.0, "solved": True,
            "error": None, "seconds": 1.0, "answer": "6*4 = 24", "reference": "6*4 = 24",
            "trajectory": {"question": "Make 24 from 6 4.", "steer_outputs": ["<<<Code>>>", "<<<Return Answer>>>"],
                           "turns": [turn], "stop_reason": "returned"},
            "final": {"code": "print(6*4)", "answer": "6*4 = 24", "score": 1.0}}


def test_show_prints_a_stored_sample_turn_by_turn_and_names_bad_inputs(tmp_path, capsys):
    record = stored_record()
    other = {**record, "id": "q8", "trajectory": {**record["trajectory"], "question": "Another question."}}
    (tmp_path / "results.jsonl").write_text(json.dumps(record) + "\n" + json.dumps(other) + "\n")
    steer.main(["show", str(tmp_path)])
    shown = capsys.readouterr().out
    order = ["game24 / q7", "Make 24 from 6 4.", "--- turn 0", "<<<Code>>>", "Use code.", "print(6*4)", "output:\n    24",
             "Numerical computing only.", "The answer is correct.", "--- end: returned",
             "final answer '6*4 = 24', score 1.0"]
    positions = [shown.find(piece) for piece in order]
    assert -1 not in positions and positions == sorted(positions), shown
    steer.main(["show", str(tmp_path), "--id", "q8"])
    assert "Another question." in capsys.readouterr().out
    # an id two tasks share needs its task
    letters = {**other, "task": "letters", "trajectory": {**record["trajectory"], "question": "Count the r's."}}
    with open(tmp_path / "results.jsonl", "a") as results:
        results.write(json.dumps(letters) + "\n")
    steer.main(["show", str(tmp_path), "--id", "letters/q8"])
    assert "Count the r's." in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "results.jsonl").write_text("")
    for argv, message in ((["show", str(tmp_path / "missing")], "no results.jsonl here"),
                          (["show", str(tmp_path / "empty")], "no finished sample yet"),
                          (["show", str(tmp_path), "--id", "nope"], "no sample 'nope'"),
                          (["show", str(tmp_path), "--id", "q8"], "give one of game24/q8, letters/q8"),
                          (["show", str(tmp_path), "--id", "2048/q8"], "no sample '2048/q8'")):
        with pytest.raises(SystemExit) as stop:
            steer.main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_the_paper_variant_turns_every_departure_from_the_original_loop_off():
    corrected = steer.loop_settings(steer.parse_args(["--task", "game24"]), "api")
    paper = steer.loop_settings(steer.parse_args(["--task", "game24", "--variant", "paper"]), "api")
    departures = ("choice_reminder", "choice_follow_up", "itertools_fix")
    assert all(getattr(corrected, name) for name in departures) and not corrected.paper_rules
    assert not any(getattr(paper, name) for name in departures) and paper.paper_rules and paper.reuse_round0_code
