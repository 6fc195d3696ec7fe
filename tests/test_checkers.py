"""Tests for checkers.py: extraction, the sandbox, execution feedback, both checkers, the final-answer run."""
import resource
from pathlib import Path

import pytest

import checkers
from checkers import (analyze_code, execution_feedback, extract_code, run_for_answer, run_python,
                      self_answer_check, symbolic_summary)

# -- extraction ---------------------------------------------------------------------------------------------------


def test_extract_code_takes_first_python_block_only():
    reply = "Plan.\n```python\nprint(1)\n```\nMore.\n```python\nprint(2)\n```"
    assert extract_code(reply) == "print(1)"


@pytest.mark.parametrize("fence", ["```py\n", "```Python\n", "```\n", "```python3\n", "```python \n"])
def test_extract_code_ignores_other_fences(fence):
    assert extract_code(f"Plan.\n{fence}print(1)\n```") is None


def test_extract_code_skips_other_fences_before_the_python_one():
    assert extract_code("```py\nprint(1)\n```\n```python\nprint(2)\n```") == "print(2)"


# -- sandbox ------------------------------------------------------------------------------------------------------

def test_print_runs():
    result = run_python("print(1)")
    assert (result.stdout, result.stderr, result.returncode) == ("1\n", "", 0)
    assert not result.timed_out and not result.truncated


def test_error_lands_in_stderr():
    result = run_python("raise ValueError('bad value')")
    assert result.returncode == 1 and "ValueError: bad value" in result.errors


def test_infinite_loop_is_killed_on_wall_clock():
    result = run_python("while True:\n    pass", timeout=1)
    assert result.timed_out and result.returncode == -9
    assert 1 <= result.seconds < 2
    assert result.errors == "Timed out after 1.0 seconds and was killed."


def test_death_by_signal_is_reported_as_negative_returncode():
    result = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.returncode == -9 and result.errors == "Killed by signal SIGKILL."


def test_large_allocation_fails_cleanly():
    limits_before = resource.getrlimit(resource.RLIMIT_AS)
    result = run_python("block = bytearray(4 * 1024**3)")
    assert result.returncode == 1 and "MemoryError" in result.stderr
    assert resource.getrlimit(resource.RLIMIT_AS) == limits_before
    assert run_python("print(sum(range(10)))").stdout == "45\n"


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    result = run_python("import os\nprint(sorted(set(os.environ) - {'PWD'}))\nprint(os.environ['HOME'] == os.getcwd())")
    # and PWD, which bwrap sets; PYTHONPATH holds the site-packages folders only
    assert result.stdout == "['HOME', 'LANG', 'PATH', 'PYTHONPATH', 'TMPDIR']\nTrue\n"


def test_huge_output_is_truncated_quickly():
    result = run_python("import sys\nsys.stdout.write('x' * 10_000_000)")
    assert result.truncated and len(result.stdout) == checkers.MAX_OUTPUT_BYTES
    assert result.returncode == 0 and result.seconds < 3


def test_working_directory_is_temporary_and_removed():
    workdir = run_python("import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())").stdout.strip()
    assert Path(workdir).resolve() != Path.cwd().resolve() and Path(workdir).name.startswith("codesteer-run-")
    assert not Path(workdir).exists()


def test_file_size_limit():
    code = "open('big.bin', 'wb').write(b'x' * 2 * 1024**2)"
    assert run_python(code, max_file_bytes=4 * 1024**2).returncode == 0
    result = run_python(code, max_file_bytes=1024**2)
    assert result.returncode == 1 and "File too large" in result.stderr


# -- execution feedback -------------------------------------------------------------------------------------------

def test_estimate_tokens_counts_words_and_punctuation():
    # x = [ 10 , 200 ] -> 7 words/marks; 13 characters // 4 = 3
    assert checkers.estimate_tokens("x = [10, 200]") == 7
    assert checkers.estimate_tokens("a" * 400) == 100


def test_execution_feedback_shows_short_output_and_hides_long():
    short = run_python("import sys\nprint(6)\nprint('warn', file=sys.stderr)")
    assert execution_feedback(short).endswith("output: 6\n, errors: warn\n")
    long = run_python("print('word ' * 2001)")
    feedback = execution_feedback(long)
    assert "word" not in feedback and "\n" not in feedback.strip()


# -- Symbolic Checker ---------------------------------------------------------------------------------------------

def test_symbolic_checker_scores_loop_branch_and_arithmetic():
    code = "for i in range(3):\n    if i % 2:\n        print(i + 1)\n"
    # for|while: "for" -> 1; if|elif|else: "if" -> 1; try|except: 0; BinOps i % 2, i + 1 -> 2 * 0.25
    summary, score = analyze_code(code)
    assert score == 2.5
    assert summary == ("Search, because the code:\n- " + checkers.LOOP_NOTE + "\n\n"
                       "Numerical computing, because the code:\n- " + checkers.ARITHMETIC_NOTE + "\n- "
                       + checkers.ARITHMETIC_NOTE + "\n\nComplexity score: 2.5")


def test_symbolic_checker_counts_substrings_in_names_and_comments():
    code = "# try every format\nplatform = 'before'\n"
    # for|while: "for" in format, platform, before -> 3; if|elif|else: 0; try|except: "try" in the comment -> 1
    summary, score = analyze_code(code)
    assert score == 4
    assert summary == ("\nSymbolic computing, because the code:\n- " + checkers.FORMAT_NOTE
                       + "\n\nComplexity score: 4.0")


def test_symbolic_checker_syntax_error():
    summary, score = analyze_code("def f(:\n")
    assert summary.startswith("Invalid Python code:") and score == 0


@pytest.mark.parametrize("statement, fixed, original", [
    ("from itertools import permutations", True, False),
    ("import os, itertools", True, False),
    ("import itertools as it", True, True),
    ("import more_itertools", False, True),
    ("from more_itertools import itertools_recipe", False, True),
])
def test_itertools_detection(statement, fixed, original):
    assert (checkers.ITERTOOLS_NOTE in analyze_code(statement)[0]) == fixed
    assert (checkers.ITERTOOLS_NOTE in analyze_code(statement, itertools_fix=False)[0]) == original


def test_low_complexity_warning():
    assert symbolic_summary("print(1 + 1)").endswith(checkers.LOW_COMPLEXITY_WARNING)  # score 0.25
    # for -> 1, if -> 1, else -> 1: score 3
    assert checkers.LOW_COMPLEXITY_WARNING not in symbolic_summary("for a in b:\n    print(1 if a else 2)")


def test_symbolic_summary_eval_note():
    assert checkers.EVAL_NOTE in analyze_code("print(eval('1+2'))")[0]


# -- Self-answer Checker ------------------------------------------------------------------------------------------

class ScriptedChat:
    def __init__(self, replies):
        self.replies, self.calls = list(replies), []

    def __call__(self, messages):
        self.calls.append(messages)
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def block(code: str) -> str:
    return f"Here is the check.\n```python\n{code}\n```"


def test_self_answer_check_correct():
    chat = ScriptedChat([block("print('Correct')")])
    assert self_answer_check("What is 2+2?", "It is 4.", chat) == "output: Correct\n"
    assert len(chat.calls) == 1
    prompt = chat.calls[0][0]["content"]
    assert "What is 2+2?" in prompt and "It is 4." in prompt


def test_self_answer_check_retries_failing_code():
    chat = ScriptedChat(["no code here", block("raise ValueError('oops')"), block("print('Wrong: 5 != 4')")])
    assert self_answer_check("Q", "R", chat) == "output: Wrong: 5 != 4\n"
    assert len(chat.calls) == 3


def test_self_answer_check_gives_up_after_three_rounds():
    chat = ScriptedChat([block("print('partial')\nraise ValueError('oops')")])
    feedback = self_answer_check("Q", "R", chat)
    assert feedback.startswith("output: partial\n\nerrors: ") and "ValueError: oops" in feedback
    assert len(chat.calls) == checkers.CHECK_ROUNDS


def test_self_answer_check_never_gets_code():
    chat = ScriptedChat(["I think it is right."])
    assert self_answer_check("Q", "R", chat) == "errors: " + checkers.NO_CHECK_CODE
    assert len(chat.calls) == checkers.CHECK_CODE_TRIES  # the original gives up after one round without code


def test_self_answer_check_timeout_counts_as_failure():
    chat = ScriptedChat([block("print('started', flush=True)\nwhile True:\n    pass")])
    feedback = self_answer_check("Q", "R", chat, timeout=0.3)
    assert feedback.startswith("output: started\n\nerrors: Timed out")
    assert len(chat.calls) == checkers.CHECK_ROUNDS


# -- final-answer run ---------------------------------------------------------------------------------------------

def test_run_for_answer_prints_result_variable():
    assert run_for_answer("result = 6 * 7").stdout == "42\n"


def test_run_for_answer_appends_result_to_own_output():
    # As the original's `exec(code); print(result)`: result is printed even when the code printed itself.
    assert run_for_answer("result = 1\nprint('own')").stdout == "own\n1\n"


def test_run_for_answer_later_names_only_when_nothing_printed():
    assert run_for_answer("answer = 1\nAnswer = 2").stdout == "2\n"
    assert run_for_answer("answer = 1\nprint('own', end='')").stdout == "own"
    code = "trajectory = [(0, 0)]\nwaypoints = [(1, 1)]"
    assert run_for_answer(code, checkers.PATH_PLANNING_ANSWER_NAMES).stdout == "[(1, 1)]\n"


def test_run_for_answer_survives_exit_and_exceptions():
    assert run_for_answer("import sys\nanswer = 'x'\nsys.exit(0)").stdout == "x\n"
    failed = run_for_answer("answer = 7\nraise RuntimeError('late')")
    assert failed.stdout == "7\n" and "RuntimeError: late" in failed.stderr


def test_run_for_answer_without_answer_prints_nothing():
    assert run_for_answer("x = 1").stdout == ""
