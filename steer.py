"""The CodeSteer loop (spec A.3), its baselines (A.8), final-answer scoring (A.6) and the evaluation harness.

A small CodeSteerLLM reads the TaskLLM's answers, the results of running their code and two checkers' verdicts,
and writes the next guidance: switch to code, switch to text, improve, or stop. The TaskLLM only ever sees the
guidance.

    python steer.py --task game24                          # embedded Qwen2.5-Coder-0.5B in every role: a local demo,
                                                           # written to runs/demo-codesteer
    python steer.py --task game24 --n 20 --task-model gpt-4o --steer-model gpt-4o --out runs/gpt4o-steer
    python steer.py --tasks seen --method codesteer --steer-ckpt runs/dpo/final --concurrency 16 --out runs/cs
    python steer.py --tasks all --data-dir dataset_gather --method all_code --out runs/all_code
    python steer.py --task game24 --task-base-url http://127.0.0.1:8000/v1 --complexity 1-5 --out runs/sweep
    python steer.py compare runs/cs runs/all_code runs/only_question    # the paper's Ave. Norm. table
    python steer.py compare runs/cs+runs/cs-seed1 runs/all_code+runs/all_code-seed1  # two seeds pooled per column
    python steer.py compare runs/cs runs/all_code --plots runs/figures --training runs/sft runs/dpo  # and its figures
    python steer.py --help

Models: OPENAI_API_KEY / ANTHROPIC_API_KEY / OPENAI_BASE_URL or the --*-model / --*-base-url / --steer-ckpt flags
(llm.make_client picks the backend). With no key and no base URL every role runs the embedded Qwen2.5-Coder-0.5B.
A rerun with the same --out resumes: finished samples (OUT/results.jsonl) are skipped, never repeated. A folder holds
one configuration (OUT/config.json, and in every record): a rerun with another stops, unless --append. Each role is
probed before sample 1, so a misconfiguration ends the run with one `error:` line (exit code 2), recording nothing.

Tests and benchmark (CPU):
    python -m pytest tests/test_steer.py                  # a few seconds; the integration test is marked slow
    python bench/bench_steer.py
"""
import argparse
import json
import random
import re
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from tqdm import tqdm

import plots
import symbench
from checkers import (ANSWER_NAMES, ANSWER_TIMEOUT_S, EXEC_TIMEOUT_S, PATH_PLANNING_ANSWER_NAMES, SandboxUnavailable,
                      configure_executor, execution_feedback, extract_code, run_for_answer, run_python,
                      self_answer_check, symbolic_summary)
from embedded import is_embedded
from llm import DEFAULT_MAX_TOKENS, LLMError, make_client, set_cpu_threads
from report import (FolderLock, ResultsFile, claim_folder, compare, format_summary, load_runs, plot_sweeps, show,
                    summarize, write_json_atomically)
from symbench.core import extract_answer

# Spec A.1.
MAX_TURNS = 6                  # 1 + max_tree_depth 5: at most 6 guidances and 6 TaskLLM answers
STEER_MAX_TOKENS = 1024        # fine-tuned CodeSteer's max_new_tokens
FINETUNED_STEER_SAMPLING = dict(temperature=0.95, top_p=0.7, top_k=50)   # LLaMA-Factory's defaults at test time
GREEDY = dict(temperature=0.0)  # TaskLLM, API CodeSteer and the helper LLM

# Embedded demo defaults: Qwen2.5-Coder-0.5B (bf16) on a 2-core AVX-512 CPU writes ~14 tokens/s, and one CodeSteer
# turn is a TaskLLM answer, a guidance and 1-15 checker calls: 2 turns took 1m58s, 3 turns 3m30s (BENCHMARKS.md). With
# 128 tokens the TaskLLM, told to explain its plan first, ran out before its code block; with 256 it writes the code,
# which is run and checked, in 1m26s (2m29s in fp32 on an AVX2-only CPU, before the faster GGUF load).
DEMO_N, DEMO_MAX_TOKENS, DEMO_MAX_TURNS = 1, 256, 2

SINGLE_CHAIN_TASKS = ("game24", "boxlift")  # A.6 step 4: scored on the code output if the reply had code, else its text
MAX_STORED_CHARS = 20_000                    # longest execution output or candidate text kept in a record
METHODS = ("codesteer", "only_question", "all_text", "all_code", "code_text_choice", "code_interpreter")
FATAL_STATUSES = (401, 403, 404)             # the same for every sample: stop the run instead of recording each
DEFAULT_TIMEOUT_S = 120.0                    # per request: far above one turn's reply, far below a hang's patience

# ---------------------------------------------------------------------------------------------------------------
# Prompts (A.2), in our own words. The question is appended directly after CHOICE_PROMPT, CODE_PROMPT and TEXT_PROMPT.

CHOICE_PROMPT = (
    "You are guiding another model, the TaskLLM, through the task below. A task like this can be solved either by "
    "reasoning in plain text or by writing and running code. Decide which of the two will work better here and tell "
    "the TaskLLM which approach to take, but do not solve the task yourself. End your reply with <<<Code>>> or "
    "<<<Text>>>.\n\nThe task:\n")
# Appended after the question (not in the original, whose input ends with the question; --variant paper drops it).
# A question ends with its own answer format ("Reply Yes or No, ..."), and small models obey the last instruction:
# Qwen2.5-Coder-0.5B and 1.5B answered a navigation question with <<<No>>> instead of choosing, which gives the
# sample up; with this line the 0.5B chose on 9 of 10 questions of five tasks.
CHOICE_REMINDER = ("\n\nDo not solve the task: say in a sentence or two whether code or text suits it better, then "
                   "end with <<<Code>>> or <<<Text>>>.")

# Sent once, in the same chat, when the turn-0 reply makes no choice (not in the original, which gives the sample up).
CHOICE_FOLLOW_UP = "Which one should the TaskLLM use? Reply with only <<<Code>>> or <<<Text>>>."
FOLLOW_UP_SEPARATOR = "\n\n[asked again for a choice]\n"   # joins the two replies in the stored CodeSteer output

DECISION_PROMPT = (
    "You are steering a TaskLLM towards the correct answer to a question. You will see the question, the guidance "
    "given so far together with the TaskLLM's answers, the output of running any code it wrote, an analysis of how "
    "complex that code is, and the verdict of a checking agent. Write the guidance for the TaskLLM's next attempt. "
    "Your options:\n"
    "- tell it to switch to reasoning in text;\n"
    "- tell it to switch to writing code;\n"
    "- ask it to improve its answer, or to try a different approach;\n"
    "- if its code is trivial (it only prints an answer worked out by hand), push for code that really computes: "
    "symbolic computing or an efficient search;\n"
    "- if every answer so far used the same mode, tell it to try the other one;\n"
    "- reply <<<Terminate>>> if further attempts look hopeless;\n"
    "- reply <<<Return Answer>>> if the current answer is correct.\n"
    "The question is:")

CODE_PROMPT = (
    "Solve the task below with Python. First think step by step and explain your plan, then write the code. Put "
    "exactly one code block in your reply and start it with ```python. The code must print its results itself: do "
    "not ask anyone to copy, change or run anything. If the answer is an equation, print every number in it.\n\n")

TEXT_PROMPT = (
    "Solve the task below by reasoning in text, step by step. First list the points that need care, then work "
    "through them to the answer and state the answer at the end. Do not write any code.\n\n")

PARAPHRASE_PROMPT = (
    "Rewrite the instruction below in your own words. Keep every requirement and the same level of detail. Reply with "
    "the rewritten instruction only.\n\nInstruction:\n{instruction}")

BODY_REPLY = "The TaskLLM answered:\n{reply}"
BODY_CHECK = "The checking agent reported:\n{check}"
BODY_COMPLEXITY = "An analysis of the complexity of the TaskLLM's code:\n{summary}"
# The options again at the end, where small models look: asked only for "guidance", Qwen2.5-Coder-0.5B wrote the
# question's own answer (<<<No>>>) as the guidance.
BODY_REQUEST = ("Reply with your guidance for the TaskLLM's next attempt in the form <<<guidance>>>, or with "
                "<<<Return Answer>>> if its current answer is correct, or <<<Terminate>>> if further attempts look "
                "hopeless. Do not answer the question yourself.")

EXTRACT_PROMPT = (
    "Below is a response to a task. Copy the final answer that the response gives into this form: {answer_format}\n"
    "Do not solve the task and do not correct the answer: restate exactly what the response concludes. Reply with "
    "the answer between <<< and >>> and nothing else.\n\nThe response:\n{text}")

INTERPRETER_PROMPT = (
    "You can run Python code while solving the task below. To run code, put it in one ```python block; it will be "
    "executed and you will get its output in the next message. Write code as often as you need. When you know the "
    "final answer, reply without any code and give the answer in the requested format.\n\n")
INTERPRETER_OUTPUT = "The output of your code:\n{output}"

BBH_JUDGE_PROMPT = (
    "Decide whether a given answer to a multiple-choice or yes/no question is the same as the reference answer. "
    "Ignore formatting: an option letter and the option's text count as the same answer.\n\nThe question:\n{question}\n"
    "\nReference answer: {target}\nGiven answer: {answer}\n"
    "End your reply with <<<[the given answer, Correct]>>> if they agree and <<<[the given answer, Wrong]>>> if not.")


def user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def alternate(inputs: list[str], outputs: list[str]) -> list[dict]:
    """The chat [user inputs[0], assistant outputs[0], user inputs[1], ...] ending with the last input."""
    assert len(inputs) == len(outputs) + 1, (len(inputs), len(outputs))
    messages = []
    for i, content in enumerate(inputs):
        messages.append({"role": "user", "content": content})
        if i < len(outputs):
            messages.append({"role": "assistant", "content": outputs[i]})
    return messages


# ---------------------------------------------------------------------------------------------------------------
# Roles: one LLM client seen from one sample, with the tokens and time that sample spent on it

class Role:
    """`role(messages) -> text` through a shared client, with this role's sampling, tallying this sample's usage;
    `on_reply(reply)`, if given, hears of every reply as it comes (the run's progress bar)."""

    def __init__(self, client, on_reply: Callable | None = None, **sampling):
        self.client, self.sampling, self.on_reply = client, sampling, on_reply
        self.calls = self.prompt_tokens = self.completion_tokens = 0
        self.seconds = 0.0

    def __call__(self, messages: list[dict]) -> str:
        reply = self.client.chat(messages, **self.sampling)
        self.calls += 1
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.seconds += reply.seconds
        if self.on_reply is not None:
            self.on_reply(reply)
        return reply.text

    def usage(self) -> dict:
        return dict(calls=self.calls, prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                    seconds=round(self.seconds, 3))


@dataclass
class Roles:
    task: Role
    steer: Role
    helper: Role | None       # self-answer checker, turn-0 paraphrase, answer extractor; None disables the extractor

    def llm_seconds(self) -> float:
        return sum(role.seconds for role in (self.task, self.steer, self.helper) if role is not None)


# ---------------------------------------------------------------------------------------------------------------
# The trajectory of one sample: what every role saw and said, and what was done to the TaskLLM's code

@dataclass
class Trajectory:
    question: str
    task_messages: list[dict] = field(default_factory=list)    # the TaskLLM's whole conversation, as sent
    steer_inputs_short: list[str] = field(default_factory=list)  # fine-tuned CodeSteer's inputs (SFT/DPO format)
    steer_inputs_full: list[str] = field(default_factory=list)   # API CodeSteer's inputs (P_decision + Q + body)
    steer_outputs: list[str] = field(default_factory=list)     # CodeSteer's raw text per call
    guidances: list[str] = field(default_factory=list)         # as stored for SFT/DPO (A.3): one per steer input
    turns: list[dict] = field(default_factory=list)            # one per TaskLLM answer: prompt, reply, code, checks
    stop_reason: str = ""    # return_answer | terminate | max_turns | no_choice | answered (baselines) | error
    final_text: str = ""     # what the final answer is read from: the last reply (a transcript for code_interpreter)

    @property
    def final_reply(self) -> str:
        return self.turns[-1]["reply"] if self.turns else ""


def ask_task(trajectory: Trajectory, task_llm: Role, prompt: str) -> str:
    """One TaskLLM call: the prompt joins its history, then its raw reply (nothing else ever does)."""
    trajectory.task_messages.append({"role": "user", "content": prompt})
    reply = task_llm(trajectory.task_messages)
    trajectory.task_messages.append({"role": "assistant", "content": reply})
    trajectory.turns.append(dict(prompt=prompt, reply=reply, code=extract_code(reply), execution=None,
                                 symbolic_summary=None, check=None))
    trajectory.final_text = reply
    return reply


def execution_record(result) -> dict:
    return dict(stdout=result.stdout[:MAX_STORED_CHARS], errors=result.errors[:MAX_STORED_CHARS],
                returncode=result.returncode, timed_out=result.timed_out, seconds=round(result.seconds, 3))


# ---------------------------------------------------------------------------------------------------------------
# Reading guidance

# <<<Code>>>, and "Code>>>" without its opening brackets, which small models write after CHOICE_REMINDER.
_MARKER = re.compile(r"(?:<<<|\b)\s*(code|text)\s*>>>", re.IGNORECASE)
_DECISIONS = {"code": "code", "text": "text", "return answer": "return_answer", "terminate": "terminate"}


def last_block(text: str) -> str:
    """The inside of the last <<<...>>> of an API CodeSteer's reply, or the whole reply when there is none (A.3)."""
    end = text.rfind(">>>")
    start = text.rfind("<<<", 0, max(end, 0))
    return text[start + 3:end].strip() if start >= 0 else text


def read_choice(text: str, paper_rules: bool = False) -> str | None:
    """'code' or 'text': the turn-0 choice of an API CodeSteer, None when it made none.

    The marker the reply ends with, as CHOICE_PROMPT asks (a reply may restate both options before choosing);
    otherwise the one option it names. A reply naming both that ends on neither made no choice: the 0.5B steerer
    labelled two worked examples "Code >>>1+2+5*10 = 24<<< Text >>>(7-4)*11-9 = 24<<<"."""
    if paper_rules:
        return "code" if "<<<Code>>>" in text else "text" if "<<<Text>>>" in text else None
    markers = list(_MARKER.finditer(text))
    if markers and not text[markers[-1].end():].strip(" \t\n.!*_`'\""):
        return markers[-1].group(1).lower()
    named = {marker.group(1).lower() for marker in markers}
    return named.pop() if len(named) == 1 else None


def read_guidance(guidance: str, paper_rules: bool = False) -> str | None:
    """What a later guidance orders: 'code', 'text', 'return_answer', 'terminate', or None (free text for the TaskLLM).

    paper_rules: the original's substring tests, under which any guidance that mentions "Terminate" or "Return
    Answer" ends the loop (A.3 invariant 6). Default: the guidance's decision (the inside of its last <<<...>>>, or
    all of it) must be exactly one of the keywords, ignoring case, quotes, markdown and surrounding punctuation.
    """
    if paper_rules:
        if "<<<Code>>>" in guidance:
            return "code"
        if "<<<Text>>>" in guidance:
            return "text"
        if "Return Answer" in guidance:
            return "return_answer"
        return "terminate" if "Terminate" in guidance else None
    decision = last_block(guidance) if "<<<" in guidance else guidance
    decision = re.sub(r"\s+", " ", decision.strip(" \t\n.!:;*_`'\"<>")).lower()
    return _DECISIONS.get(decision)


def paraphrase(instruction: str, helper: Role) -> str:
    """The turn-0 guidance of the API path: a paraphrase of P_code or P_text (B.1: the SFT target at turn 0), ending
    in a blank line like the canned prompts, since the question is appended directly.

    A reply that cannot be a rewrite of the instruction, empty, with a code block, or over twice its length, is
    replaced by the instruction itself. Qwen2.5-Coder-0.5B as the helper answered P_code instead of rewriting it: a
    ~1,450-character plan and program for some equation, which the TaskLLM then received instead of the instruction
    (14 of 20 turn-0 guidances of a code_text_choice run, all 20 scored 0)."""
    text = helper(user(PARAPHRASE_PROMPT.format(instruction=instruction))).strip()
    if not text or "```" in text or len(text) > 2 * len(instruction):
        return instruction
    return text + "\n\n"


def steer_body(reply_with_feedback: str, check: str, summary: str | None) -> str:
    """B_k (A.2): what CodeSteer reads about the TaskLLM's last answer."""
    parts = [BODY_REPLY.format(reply=reply_with_feedback), BODY_CHECK.format(check=check)]
    if summary is not None:
        parts.append(BODY_COMPLEXITY.format(summary=summary))
    return "\n\n".join(parts + [BODY_REQUEST])


# ---------------------------------------------------------------------------------------------------------------
# The loop (A.3)

@dataclass(frozen=True)
class Settings:
    mode: str = "finetuned"           # "finetuned": short inputs, raw guidance; "api": full inputs, <<<>>> extraction
    max_turns: int = MAX_TURNS
    paraphrase: bool = True           # API mode: paraphrase P_code/P_text at turn 0 (one helper call)
    self_check: bool = True           # run the Self-answer Checker every turn (up to 15 helper calls per turn)
    paper_rules: bool = False         # substring tests for choice and termination (A.3 Fidelity note)
    itertools_fix: bool = True        # Symbolic Checker detects from-imports of itertools (A.4 Fidelity note)
    variant: str = "corrected"        # scorer variant (symbench)
    llm_extract: bool = True          # A.6 step 3: the helper restates answers that no <<<...>>> gives
    reuse_round0_code: bool = False   # A.6 Fidelity note: run the first reply's code when the final reply has none
    choice_reminder: bool = True      # end the turn-0 input with CHOICE_REMINDER (the original ends with the question)
    choice_follow_up: bool = True     # API mode: ask again when the turn-0 reply chooses none (the original gives up)


def steer(question: str, task_llm: Callable, steer_llm: Callable, helper_llm: Callable | None,
          settings: Settings = Settings(), trajectory: Trajectory | None = None,
          stop_before_guidance: int | None = None) -> Trajectory:
    """Solve `question` with the TaskLLM under CodeSteer's guidance; every step lands in the returned trajectory.

    Each LLM is a callable messages -> text (a Role). Pass `trajectory` to keep what was done if a call raises, or
    to continue an earlier trajectory (a prefix ending just before or just after a guidance): the loop picks up
    where it stands, so evaluation and data synthesis (B.4's branches) run the same loop. With
    `stop_before_guidance=m` it returns (stop_reason "paused") when guidance m (0-based) is due.
    Invariants: the TaskLLM's history holds only guidance and its own raw replies, and the question only in the
    first message; only guidance ends the loop early; the last reply is final without further checking.
    """
    t = trajectory if trajectory is not None else Trajectory(question)
    if not t.steer_inputs_short:
        first_input = CHOICE_PROMPT + question + (CHOICE_REMINDER if settings.choice_reminder else "")
        t.steer_inputs_short.append(first_input)
        t.steer_inputs_full.append(first_input)
    while True:
        if len(t.guidances) < len(t.steer_inputs_short):    # a guidance is due
            if len(t.guidances) == stop_before_guidance:
                t.stop_reason = "paused"
                return t
            if not write_guidance(t, steer_llm, helper_llm, settings):
                t.stop_reason = "no_choice"
                return t
        guidance = t.guidances[-1]
        if not t.turns:
            task_prompt = guidance + question      # direct concatenation, as in the original
        else:
            order = read_guidance(guidance, settings.paper_rules)
            if order in ("return_answer", "terminate"):
                t.stop_reason = order
                return t
            task_prompt = {"code": CODE_PROMPT, "text": TEXT_PROMPT}.get(order, guidance)
        ask_task(t, task_llm, task_prompt)
        if len(t.turns) >= settings.max_turns:
            t.stop_reason = "max_turns"
            return t
        observe(t, helper_llm, settings)


def write_guidance(t: Trajectory, steer_llm: Callable, helper_llm: Callable | None, settings: Settings) -> bool:
    """CodeSteer's next guidance for the trajectory's last input; False when an API CodeSteer makes no turn-0 choice,
    even when asked once more (the sample is given up). A fine-tuned CodeSteer writes the whole turn-0 instruction;
    an API one only chooses."""
    if settings.mode == "finetuned":
        raw = steer_llm(alternate(t.steer_inputs_short, t.guidances))
        guidance = raw     # a trained CodeSteer's raw output, no <<<>>> extraction
    elif not t.guidances:
        chat = alternate(t.steer_inputs_full, t.guidances)
        raw = steer_llm(chat)
        choice = read_choice(raw, settings.paper_rules)
        if choice is None and settings.choice_follow_up:
            follow_up = steer_llm(chat + [{"role": "assistant", "content": raw}, *user(CHOICE_FOLLOW_UP)])
            raw += FOLLOW_UP_SEPARATOR + follow_up
            choice = read_choice(follow_up, settings.paper_rules)
        if choice is None:
            t.steer_outputs.append(raw)
            return False
        canned = CODE_PROMPT if choice == "code" else TEXT_PROMPT
        guidance = paraphrase(canned, helper_llm) if settings.paraphrase and helper_llm else canned
    else:
        raw = steer_llm(alternate(t.steer_inputs_full, t.guidances))
        guidance = last_block(raw)
    t.steer_outputs.append(raw)
    t.guidances.append(guidance)
    return True


def observe(t: Trajectory, helper_llm: Callable | None, settings: Settings):
    """What CodeSteer reads about the last reply (run its code, analyse it, check it); none of it goes to the
    TaskLLM."""
    turn = t.turns[-1]
    reply_with_feedback, summary = turn["reply"], None
    if turn["code"] is not None:
        summary = symbolic_summary(turn["code"], settings.itertools_fix)
        result = run_python(turn["code"], EXEC_TIMEOUT_S)
        reply_with_feedback += execution_feedback(result)
        turn.update(execution=execution_record(result), symbolic_summary=summary)
    if settings.self_check and helper_llm is not None:
        turn["check"] = self_answer_check(t.question, reply_with_feedback, helper_llm)
    body = steer_body(reply_with_feedback, turn["check"] or "No check was run.", summary)
    t.steer_inputs_short.append(body)
    t.steer_inputs_full.append(DECISION_PROMPT + " " + t.question + "\n" + body)


# ---------------------------------------------------------------------------------------------------------------
# Baselines (A.8)

def single_call(prefix: str) -> Callable:
    """A baseline that sends prefix + question to the TaskLLM once."""
    def method(question: str, roles: Roles, settings: Settings, trajectory: Trajectory):
        ask_task(trajectory, roles.task, prefix + question)
        trajectory.stop_reason = "answered"
    return method


def code_interpreter(question: str, roles: Roles, settings: Settings, trajectory: Trajectory):
    """The TaskLLM runs code itself: each python block is executed and its output sent back as the next user message,
    until it answers without code or max_turns replies. The transcript of replies and outputs is the response."""
    prompt, transcript = INTERPRETER_PROMPT + question, []
    trajectory.stop_reason = "max_turns"
    for _ in range(settings.max_turns):
        reply = ask_task(trajectory, roles.task, prompt)
        transcript.append(reply)
        code = trajectory.turns[-1]["code"]
        if code is None:
            trajectory.stop_reason = "answered"
            break
        result = run_python(code, EXEC_TIMEOUT_S)
        trajectory.turns[-1]["execution"] = execution_record(result)
        prompt = INTERPRETER_OUTPUT.format(output=execution_feedback(result).lstrip("\n"))
        transcript.append(prompt)
    trajectory.final_text = "\n\n".join(transcript)


def run_codesteer(turns: int | None = None) -> Callable:
    def method(question: str, roles: Roles, settings: Settings, trajectory: Trajectory):
        limited = settings if turns is None else replace(settings, max_turns=turns)
        steer(question, roles.task, roles.steer, roles.helper, limited, trajectory)
    return method


METHOD_RUNNERS = {
    "codesteer": run_codesteer(),
    "only_question": single_call(""),
    "all_text": single_call(TEXT_PROMPT),
    "all_code": single_call(CODE_PROMPT),
    "code_text_choice": run_codesteer(turns=1),   # CodeSteer's turn 0 only: its choice, then one answer
    "code_interpreter": code_interpreter,
}
USES_STEER = ("codesteer", "code_text_choice")


# ---------------------------------------------------------------------------------------------------------------
# Final answer (A.6)

def final_answer(sample: symbench.Sample, task: symbench.Task, trajectory: Trajectory, helper: Callable | None,
                 settings: Settings = Settings()) -> dict:
    """Score the final reply: run its first python block (15 s), then score each candidate text (the code output and
    the reply) by its last <<<...>>>, and ask the helper to restate a candidate's answer only when that gives none
    or scores 0. The sample's score is the best candidate's (partial-credit tasks keep the maximum)."""
    code = extract_code(trajectory.final_reply)
    if code is None and settings.reuse_round0_code and trajectory.turns:
        code = trajectory.turns[0]["code"]
    candidates = []
    if code is not None:
        names = PATH_PLANNING_ANSWER_NAMES if task.id == "path_plan" else ANSWER_NAMES
        candidates.append(("code_output", run_for_answer(code, names, ANSWER_TIMEOUT_S).stdout))
    if code is None or task.id not in SINGLE_CHAIN_TASKS:
        candidates.append(("reply", trajectory.final_text))

    scored = []
    for source, text in candidates:
        extracted = extract_answer(text)
        score = task.score(sample, text, settings.variant) if extracted is not None else 0.0
        scored.append(dict(source=source, via="regex", extracted=_clip(extracted), score=score, text=_clip(text)))
    if max((c["score"] for c in scored), default=0.0) < 1.0 and settings.llm_extract and helper is not None:
        for source, text in candidates:
            first = next(c for c in scored if c["source"] == source)
            if first["score"] > 0 or not text.strip():
                continue
            restated = helper(user(EXTRACT_PROMPT.format(answer_format=task.answer_format, text=text[-12_000:])))
            scored.append(dict(source=source, via="llm", extracted=_clip(extract_answer(restated)),
                               score=task.score(sample, restated, settings.variant), text=_clip(restated)))
    best = max(scored, key=lambda c: c["score"], default=None)
    return dict(code=code, candidates=scored, score=best["score"] if best else 0.0,
                answer=best["extracted"] if best else None)


def _clip(text: str | None) -> str | None:
    return text if text is None or len(text) <= MAX_STORED_CHARS else text[:MAX_STORED_CHARS] + " [...clipped]"


# ---------------------------------------------------------------------------------------------------------------
# One sample, end to end

class FatalLLMError(RuntimeError):
    """An error every sample would hit (bad key, unknown model, wrong URL): stop the run."""


@dataclass
class Clients:
    task: object
    steer: object
    helper: object | None
    on_reply: Callable | None = None   # called with every reply of every role

    def roles(self, settings: Settings) -> Roles:
        steer_sampling = FINETUNED_STEER_SAMPLING if settings.mode == "finetuned" else GREEDY
        return Roles(task=Role(self.task, self.on_reply, **GREEDY), steer=Role(self.steer, self.on_reply,
                                                                               **steer_sampling),
                     helper=Role(self.helper, self.on_reply, **GREEDY) if self.helper is not None else None)


def run_sample(sample: symbench.Sample, task: symbench.Task, method: str, clients: Clients,
               settings: Settings) -> dict:
    """The result record of one sample. Any failure is recorded (score 0, the exception) instead of raised, except
    an authentication or not-found error, which every other sample would hit too."""
    started = time.perf_counter()
    roles = clients.roles(settings)
    trajectory = Trajectory(sample.question)
    record = dict(task=task.id, id=sample.id, method=method, complexity=sample.complexity, score=0.0, solved=False,
                  reference=sample.answer, answer=None, error=None)
    try:
        METHOD_RUNNERS[method](sample.question, roles, settings, trajectory)
        final = final_answer(sample, task, trajectory, roles.helper, settings)
        record.update(score=final["score"], solved=final["score"] >= 1.0, answer=final["answer"], final=final)
    except LLMError as error:
        if error.status in FATAL_STATUSES:
            raise FatalLLMError(str(error)) from error
        record.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(limit=8))
    except Exception as error:  # one bad sample must never end the run
        record.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(limit=8))
    if record["error"]:
        trajectory.stop_reason = "error"
    record.update(trajectory=asdict(trajectory), turns=len(trajectory.turns),
                  tokens={name: getattr(roles, name).usage() for name in ("task", "steer", "helper")
                          if getattr(roles, name) is not None},
                  seconds=round(time.perf_counter() - started, 3), llm_seconds=round(roles.llm_seconds(), 3))
    return record


def record_key(record: dict) -> tuple:
    return record["task"], record["id"], record["method"], record["complexity"]



# ---------------------------------------------------------------------------------------------------------------
# The harness

def parse_complexity(text: str | None) -> list | None:
    """'3' -> [3]; '1,2,5' -> [1, 2, 5]; '1-5' -> [1, 2, 3, 4, 5]; 'all' -> ['all'] (each task's levels)."""
    if text is None:
        return None
    if text.strip() == "all":
        return ["all"]
    levels = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            levels += list(range(int(low), int(high) + 1)) if dash else [int(low)]
        except ValueError:
            raise SystemExit(f"--complexity: expected an integer, a list '1,2,5', a range '1-5' or 'all', "
                             f"not {text!r}") from None
    return levels


def select_tasks(args) -> list[symbench.Task]:
    ids = list(args.task or [])
    group = {"seen": symbench.SEEN_TASK_IDS, "unseen": symbench.UNSEEN_TASK_IDS, "all": symbench.TASK_IDS}
    ids += [t for t in group.get(args.tasks, ()) if t not in ids]
    if not ids:
        ids = ["game24"]
    tasks = []
    for task_id in ids:
        if task_id not in symbench.TASKS:
            known = ", ".join(symbench.TASKS)
            if task_id in symbench.TASK_IDS:
                raise SystemExit(f"task {task_id!r} is not implemented yet; implemented: {known}")
            raise SystemExit(f"unknown task {task_id!r}; known tasks: {known}")
        task = symbench.TASKS[task_id]
        if args.data_dir is None and not task.generatable:
            if task_id in (args.task or []):
                raise SystemExit(f"task {task_id!r} has no generator: its samples come only from the original files; "
                                 f"pass --data-dir DATASET_GATHER_DIR")
            print(f"skipping {task_id}: it needs the original files (--data-dir)", file=sys.stderr)
            continue
        tasks.append(task)
    return tasks


def plan_samples(tasks: list[symbench.Task], args) -> list[tuple[symbench.Task, symbench.Sample]]:
    """Every (task, sample) of the run: generated at each requested complexity, or drawn from the original files."""
    levels = parse_complexity(args.complexity)
    planned = []
    for task in tasks:
        if args.data_dir is not None:
            try:
                samples = symbench.load_original(task.id, args.data_dir)
            except (FileNotFoundError, NotImplementedError) as error:
                raise SystemExit(f"--data-dir: cannot load the original {task.id} samples: {error}") from None
            if levels and levels != ["all"]:
                samples = [s for s in samples if s.complexity in levels]
            if args.n and args.n < len(samples):   # a seeded subset, kept in file order
                chosen = sorted(random.Random(f"{task.id}/{args.seed}").sample(range(len(samples)), args.n))
                samples = [samples[i] for i in chosen]
            planned += [(task, sample) for sample in samples]
            continue
        task_levels = list(task.levels) if levels == ["all"] else levels or [task.default_level]
        for level in task_levels:
            if level not in task.levels:
                raise SystemExit(f"--complexity {level} is not a level of {task.id}; its levels: {list(task.levels)}")
            planned += [(task, sample) for sample in task.generate(args.n, complexity=level, seed=args.seed)]
    return take_shard(planned, getattr(args, "shard", None))


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), 1 <= K <= N: this process runs the K-th of N deterministic slices of the planned work."""
    k, slash, n = text.partition("/")
    if not (slash and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, not {text!r}")
    return int(k), int(n)


def take_shard(items: list, shard: tuple[int, int] | None) -> list:
    """Every N-th item starting at the K-th: the N shards partition the plan, and each one mixes tasks and levels."""
    return items if shard is None else items[shard[0] - 1::shard[1]]


ROLE_NAMES = {"task": "TaskLLM", "steer": "CodeSteerLLM", "helper": "helper LLM"}   # Clients attribute -> role


def build_clients(args) -> tuple[Clients, str, list[str]]:
    """(clients, CodeSteer mode, the Clients attributes of the roles this method uses)."""
    def client(flag: str, model, base_url, **options):
        try:
            return make_client(model, base_url=base_url, timeout=args.timeout, **options)
        except ValueError as error:   # an unusable base URL
            raise SystemExit(f"{flag if base_url else 'OPENAI_BASE_URL'}: {error}") from None

    max_tokens = args.max_tokens or DEFAULT_MAX_TOKENS
    task = client("--task-base-url", args.task_model, args.task_base_url, system_message="", max_tokens=max_tokens)
    steer_client = client("--steer-base-url", args.steer_model, args.steer_base_url, ckpt=args.steer_ckpt,
                          max_tokens=args.max_tokens or STEER_MAX_TOKENS)
    helper = None
    if not args.no_helper:
        helper_base_url = args.helper_base_url or (None if args.helper_model else args.task_base_url)
        helper = client("--helper-base-url", args.helper_model or args.task_model, helper_base_url,
                        max_tokens=max_tokens)
    # A locally loaded or self-served CodeSteer is a trained one; an API model, or the embedded coder model standing
    # in for one (the no-key demo), is untrained and gets the API-mode prompts.
    local_steer = bool(args.steer_ckpt or args.steer_base_url)
    mode = args.steer_mode or ("finetuned" if local_steer else "api")
    used = ["task"] + (["steer"] if args.method in USES_STEER else []) + (["helper"] if helper is not None else [])
    return Clients(task, steer_client, helper), mode, used


def probe_roles(clients: Clients, used: list[str]):
    """Before sample 1, one cheap call per role (a local checkpoint loads): a wrong URL, a server that is down or
    answers garbage, an invalid parameter or a bad checkpoint stops the run here, instead of scoring every sample 0."""
    for name in used:
        try:
            getattr(clients, name).probe()
        except LLMError as error:
            flags = f"--{name}-model, --{name}-base-url" + (", --steer-ckpt" if name == "steer" else "")
            raise SystemExit(f"the {ROLE_NAMES[name]} does not work, so nothing was run: {error} (see {flags}, "
                             "--max-tokens, --timeout)") from None


def run_config(method: str, clients: Clients, settings: Settings, used: list[str], judge: bool) -> dict:
    """What produced a record: per role the backend, model, URL or checkpoint (with its digest), sampling and token
    budget; the method and the loop's settings. A run folder holds records of one configuration."""
    roles = clients.roles(settings)
    config = dict(method=method, judge=judge, settings=asdict(settings), roles={
        name: {**getattr(roles, name).client.describe(), **getattr(roles, name).client.defaults,
               **getattr(roles, name).sampling} for name in used})
    return json.loads(json.dumps(config))   # as read back from a record


def loop_settings(args, mode: str) -> Settings:
    """The loop and scoring flags as Settings (shared with synth.py)."""
    paper = args.variant == "paper"
    return Settings(mode=mode, max_turns=args.max_turns or MAX_TURNS, paraphrase=not args.no_paraphrase,
                    self_check=not args.no_self_check, paper_rules=paper or args.substring_termination,
                    itertools_fix=not (paper or args.original_itertools), variant=args.variant,
                    llm_extract=not args.no_llm_extract, reuse_round0_code=paper or args.reuse_round0_code,
                    choice_reminder=not paper, choice_follow_up=not paper)


DEMO_NOTICE = """\
NOTE: a local demo. No API key or base URL is set, so every role (TaskLLM, an untrained API-mode CodeSteerLLM and
the helper) runs the embedded {model} on this machine, one copy shared by all roles. Its scores are those of a
small local model, not of the paper's GPT-4o. Point the roles at real models with OPENAI_API_KEY,
ANTHROPIC_API_KEY or OPENAI_BASE_URL, or --task-model/--task-base-url, --steer-model/--steer-base-url or --steer-ckpt
(a trained CodeSteer), --helper-model/--helper-base-url. Demo defaults where not given: --n {n}, --max-tokens
{max_tokens}, --max-turns {max_turns}, --out {out}."""


def evaluate(args) -> dict:
    """Run one method over the planned samples, resuming from OUT/results.jsonl; returns the summary."""
    if args.method not in METHODS:
        raise SystemExit(f"unknown method {args.method!r}; methods: {', '.join(METHODS)}")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise SystemExit(f"--data-dir {args.data_dir}: no such directory")
    tasks = select_tasks(args)
    if not tasks:
        raise SystemExit("no task to run")
    set_cpu_threads(args.threads)
    clients, mode, used = build_clients(args)
    fallbacks = {ROLE_NAMES[name]: getattr(clients, name).fallback_reason for name in used}
    demo = all(fallbacks.values())
    if demo:   # every role runs the embedded model, sharing one resident copy
        args.out = args.out or f"runs/demo-{args.method}"   # never the folder of a later run with real models
        print(DEMO_NOTICE.format(model=clients.task.model, n=DEMO_N, max_tokens=DEMO_MAX_TOKENS,
                                 max_turns=DEMO_MAX_TURNS, out=args.out),
              file=sys.stderr)
        if args.max_tokens is None:
            args.max_tokens = DEMO_MAX_TOKENS
            clients, mode, _ = build_clients(args)   # the model loads on first use, so this costs nothing
        args.n = DEMO_N if args.n is None else args.n
        args.max_turns = DEMO_MAX_TURNS if args.max_turns is None else args.max_turns
    else:  # some roles have a real model: name the ones that do not
        for role, reason in fallbacks.items():
            if reason:
                print(f"NOTE: {role}: {reason}", file=sys.stderr)
    args.out = args.out or f"runs/{args.method}"
    if args.n is None:
        args.n = 0 if args.data_dir is not None else 20    # 0: every original sample
    settings = loop_settings(args, mode)
    if args.judge:
        install_judges(tasks, clients.helper)
    planned = plan_samples(tasks, args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} is a file; it names the run's folder")
    probe_roles(clients, used)
    config = run_config(args.method, clients, settings, used, args.judge)

    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out):
        claim_folder(out, config, args.append, sys.argv[1:])
        results = ResultsFile(out / "results.jsonl")
        previous = [r for r in results.read(repair=True) if r.get("config") == config]   # --append: others too
        if args.retry_errors:
            results.drop(lambda r: bool(r["error"]) and r.get("config") == config)
            previous = [r for r in previous if not r["error"]]
        done = {record_key(r): r for r in previous}
        planned_keys = [(task.id, sample.id, args.method, sample.complexity) for task, sample in planned]
        todo = [work for work, key in zip(planned, planned_keys) if key not in done]
        errored = sum(bool(done[key]["error"]) for key in planned_keys if key in done)
        print(f"{len(planned)} samples planned, {len(planned) - len(todo)} already in {results.path}"
              + (f" ({errored} of them ended in an error and are kept: --retry-errors runs them again)"
                 if errored else "")
              + f", {len(todo)} to run (method {args.method}, CodeSteer mode {mode})", file=sys.stderr)

        new = run_all(todo, args.method, clients, settings, results, args.concurrency,
                      progress=not args.quiet, max_consecutive_errors=args.max_consecutive_errors, config=config)
        finished = {**done, **{record_key(r): r for r in new}}
        summary = summarize(args.method, [finished[key] for key in planned_keys if key in finished])
        write_json_atomically(out / "summary.json", {**summary, "config": config})
    print(format_summary(summary))
    if demo and summary["n"]:   # a newcomer should see the steering itself, not only its score
        print(f"\nThe first sample, turn by turn (python steer.py show {out} --id TASK/ID for any other):\n")
        print(show(out))
    for path in plot_sweeps(summary, out):
        print(f"plot: {path}")
    return summary


class Progress:
    """The run's progress bar. It counts LLM calls, so it moves within a sample (a CodeSteer sample makes up to ~100),
    and shows the samples done, their mean score, the errors and the decoding speed (completion tokens per second
    of wall time, all roles together). on_reply and on_record may be called from any thread."""

    def __init__(self, samples: int, enabled: bool = True, file=sys.stderr):
        self.samples, self.done, self.score_sum, self.errors, self.tokens = samples, 0, 0.0, 0, 0
        self.started = time.perf_counter()
        self.bar = tqdm(unit="call", disable=not enabled, file=file)
        self._lock = threading.Lock()
        self._show()

    def on_reply(self, reply):
        with self._lock:
            self.tokens += reply.completion_tokens
            self._show()
            self.bar.update(1)

    def on_record(self, record: dict):
        with self._lock:
            self.done, self.score_sum = self.done + 1, self.score_sum + record["score"]
            self.errors += bool(record["error"])
            self._show()
            self.bar.refresh()

    def _show(self):
        score = f"{self.score_sum / self.done:.2f}" if self.done else "-"
        speed = self.tokens / max(time.perf_counter() - self.started, 1e-6)
        self.bar.set_postfix_str(f"samples {self.done}/{self.samples}, score {score}, errors {self.errors}, "
                                 f"{speed:.1f} tok/s", refresh=False)

    def close(self):
        self.bar.close()


MAX_CONSECUTIVE_ERRORS = 5   # samples in a row that end in an error before the run stops


def run_all(todo, method: str, clients: Clients, settings: Settings, results: ResultsFile, concurrency: int,
            progress: Progress | bool = True, max_consecutive_errors: int = MAX_CONSECUTIVE_ERRORS,
            config: dict | None = None) -> list[dict]:
    """Run the samples on `concurrency` threads, appending each record (with `config`, what produced it) to `results`
    as soon as it is done. After max_consecutive_errors errored samples in a row (0: never) the run stops: a server
    that went down mid-run would otherwise fail every remaining sample in turn."""
    if not isinstance(progress, Progress):
        progress = Progress(len(todo), enabled=progress and bool(todo))
    clients = replace(clients, on_reply=progress.on_reply)

    def run_and_save(task, sample):
        record = run_sample(sample, task, method, clients, settings)
        if config is not None:
            record["config"] = config
        results.append(record)
        return record

    records, in_a_row = [], 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(run_and_save, task, sample) for task, sample in todo]
        try:
            for future in as_completed(futures):
                record = future.result()
                records.append(record)
                progress.on_record(record)
                in_a_row = in_a_row + 1 if record["error"] else 0
                if max_consecutive_errors and in_a_row >= max_consecutive_errors:
                    raise FatalLLMError(f"the last {in_a_row} samples all ended in an error, the last with "
                                        f"{record['error'][:300]}; fix the cause, then rerun with --retry-errors")
        except (FatalLLMError, KeyboardInterrupt) as error:
            for future in futures:
                future.cancel()
            running = sum(future.running() for future in futures)
            print(f"\nstopping: waiting for {running} running samples (they are saved; interrupt again to drop "
                  "them); rerun with the same --out to resume", file=sys.stderr)
            if isinstance(error, KeyboardInterrupt):
                raise
            raise SystemExit(f"stopping the run: {error}") from None
        finally:
            progress.close()
    return records


def install_judges(tasks: list[symbench.Task], helper) -> None:
    """--judge: score the judged tasks (gsm_hard, MATH) and BBH with the helper LLM instead of deterministically."""
    from symbench.bbh import BBHTask
    from symbench.judged import JudgedTask, judge_prompt
    if helper is None:
        raise SystemExit("--judge needs the helper LLM (drop --no-helper)")
    for task in tasks:
        if isinstance(task, JudgedTask):
            task.judge = lambda target, answer: helper(user(judge_prompt(target, answer)))
        elif isinstance(task, BBHTask):
            task.judge = lambda question, target, answer: helper(user(BBH_JUDGE_PROMPT.format(
                question=question, target=target, answer=answer)))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Evaluate CodeSteer or a baseline on SymBench. `steer.py compare RUN_DIR... [--plots DIR]` "
                    "prints the Ave. Norm. table of finished runs and draws the paper's figures; `steer.py show "
                    "RUN_DIR` prints one sample's steering conversation.")
    what = parser.add_argument_group("what to run")
    what.add_argument("--task", action="append", help="a task id; repeatable (default: game24)")
    what.add_argument("--tasks", choices=["seen", "unseen", "all"], help="a group of tasks")
    what.add_argument("--method", default="codesteer", help=f"one of {', '.join(METHODS)} (default codesteer)")
    what.add_argument("--n", type=int, help="samples per task and complexity (default 20, embedded demo 1); with "
                                            "--data-dir a seeded subset of the originals (default 0: all of them)")
    what.add_argument("--seed", type=int, default=0, help="generation seed, or the subset seed with --data-dir")
    what.add_argument("--complexity", help="a level, a list '1,3,5', a range '1-5' (a sweep, with a plot per task) "
                                           "or 'all' (default: each task's default level)")
    what.add_argument("--data-dir", help="the original dataset_gather directory: evaluate its samples instead of "
                                         "generated ones")
    what.add_argument("--variant", choices=["corrected", "paper"], default="corrected",
                      help="paper: the original scorers and loop quirks (substring termination, round-0 code reuse, "
                           "the itertools miss, no choice reminder after the question)")
    models = parser.add_argument_group("models (default: gpt-4o via OPENAI_API_KEY, else the embedded "
                                       "Qwen2.5-Coder-0.5B)")
    models.add_argument("--task-model", default="gpt-4o")
    models.add_argument("--task-base-url", help="an OpenAI-compatible endpoint for the TaskLLM")
    models.add_argument("--steer-model", help="CodeSteerLLM model name (default gpt-4o as an untrained API CodeSteer)")
    models.add_argument("--steer-base-url", help="an OpenAI-compatible endpoint serving a trained CodeSteer")
    models.add_argument("--steer-ckpt", help="a trained CodeSteer checkpoint run in-process (HF dir, .gguf, embedded)")
    models.add_argument("--steer-mode", choices=["finetuned", "api"],
                        help="finetuned: short-form inputs, raw guidance; api: full-form inputs, turn-0 choice "
                             "(default: finetuned with --steer-ckpt/--steer-base-url or the embedded model, else api)")
    models.add_argument("--helper-model", help="checker / extractor / judge LLM (default: the task model)")
    models.add_argument("--helper-base-url", help="(default: the task base URL when --helper-model is not given)")
    models.add_argument("--max-tokens", type=int, help=f"per reply, every role (default {DEFAULT_MAX_TOKENS}, "
                        f"CodeSteer {STEER_MAX_TOKENS}; embedded demo {DEMO_MAX_TOKENS})")
    loop = parser.add_argument_group("loop and scoring")
    loop.add_argument("--max-turns", type=int, help=f"TaskLLM answers per sample (default {MAX_TURNS}, "
                                                    f"embedded demo {DEMO_MAX_TURNS})")
    loop.add_argument("--no-paraphrase", action="store_true", help="API mode: use P_code/P_text verbatim at turn 0")
    loop.add_argument("--no-self-check", action="store_true", help="skip the Self-answer Checker")
    loop.add_argument("--no-llm-extract", action="store_true", help="score only answers given as <<<...>>>")
    loop.add_argument("--no-helper", action="store_true", help="no helper LLM at all (no checker, no extractor)")
    loop.add_argument("--judge", action="store_true", help="judge gsm_hard, MATH and BBH answers with the helper LLM")
    loop.add_argument("--substring-termination", action="store_true", help="the original's substring tests on guidance")
    loop.add_argument("--reuse-round0-code", action="store_true", help="the original's final run of round-0 code")
    loop.add_argument("--original-itertools", action="store_true", help="the original's itertools detection")
    run = parser.add_argument_group("running")
    run.add_argument("--concurrency", type=int, default=8, help="samples run at once (default 8)")
    run.add_argument("--out", help="run directory (default runs/<method>, embedded demo runs/demo-<method>); rerun "
                                   "with it to resume. It keeps the configuration it was started with")
    run.add_argument("--append", action="store_true",
                     help="add records of another configuration to --out (each record names its own)")
    run.add_argument("--retry-errors", action="store_true", help="on resume, rerun samples that ended in an error")
    run.add_argument("--max-consecutive-errors", type=int, default=MAX_CONSECUTIVE_ERRORS,
                     help=f"stop the run after this many errored samples in a row (default {MAX_CONSECUTIVE_ERRORS}, "
                          "0: never)")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                     help=f"seconds to wait for a server's reply before retrying (default {DEFAULT_TIMEOUT_S:.0f})")
    run.add_argument("--threads", type=int, help="torch CPU threads for local decoding (default: the fastest of "
                                                 "1..cores by a short measurement at load; OMP_NUM_THREADS also sets it)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--unsafe-executor", action="store_true",
                     help="where the bubblewrap sandbox cannot run, run model code anyway with per-process limits only")
    run.add_argument("--shard", type=parse_shard, help="K/N: run only the K-th of N slices of the samples (N "
                                                         "processes or machines share one evaluation)")
    args = parser.parse_args(argv)
    for flag, value, low in (("--n", args.n, 0), ("--concurrency", args.concurrency, 1),
                             ("--max-turns", args.max_turns, 1), ("--max-tokens", args.max_tokens, 1),
                             ("--max-consecutive-errors", args.max_consecutive_errors, 0),
                             ("--threads", args.threads, 1)):
        if value is not None and value < low:
            parser.error(f"{flag} must be >= {low}, got {value}")
    if not args.timeout > 0:
        parser.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.steer_ckpt and args.steer_base_url:
        parser.error("give --steer-ckpt or --steer-base-url, not both")
    if args.steer_ckpt is not None and not is_embedded(args.steer_ckpt) and not Path(args.steer_ckpt).exists():
        parser.error(f"--steer-ckpt {args.steer_ckpt}: no such file or directory")
    if args.n == 0 and args.data_dir is None:
        parser.error("--n 0 (all samples) needs --data-dir")
    try:
        warning = configure_executor(args.unsafe_executor)
    except SandboxUnavailable as error:
        parser.error(str(error))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return args


def compare_command(argv: list[str]):
    """`steer.py compare`: the Ave. Norm. table and, with --plots, the paper's figures (plots.py)."""
    parser = argparse.ArgumentParser(prog="steer.py compare", description="print the paper's Ave. Norm. table "
                                     "(spec A.6.6) of finished runs and, with --plots, draw the paper's figures")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a finished run's --out folder (its "
                        "summary.json); RUN_DIR+RUN_DIR+... pools runs of one configuration over different samples "
                        "(e.g. evaluation seeds) into one column")
    parser.add_argument("--common-tasks", action="store_true", help="compare only the tasks every run has "
                        "(default: runs over different tasks are an error)")
    parser.add_argument("--plots", metavar="DIR", help="write score_distribution.png (Fig. 3), score_vs_complexity"
                        ".png (Fig. 4, when a run swept complexity), score_vs_cost.png (Fig. 5) and, with "
                        "--training, training_curves.png into DIR")
    parser.add_argument("--training", nargs="+", action="extend", default=[], metavar="TRAIN_DIR",
                        help="train_sft.py / train_dpo.py --out folders (their metrics.jsonl) to draw; needs --plots")
    options = parser.parse_args(argv)
    if options.training and not options.plots:
        raise SystemExit("compare: --training draws training_curves.png, so it needs --plots DIR")
    summaries = load_runs(options.run_dirs, options.common_tasks)
    training_runs = plots.load_training(options.training)
    if options.plots:
        plots.pyplot()   # a missing matplotlib stops here, before the table, like any other input error
    print(compare(summaries))
    if options.plots:
        for path in plots.write_figures(summaries, training_runs, Path(options.plots)):
            print(f"plot: {path}")


def main(argv: list[str] | None = None):
    """The CLI. A user's mistake (a flag, a file, a server that does not work) ends it with one `error:` line and exit
    code 2; a finished run in which some samples erred, with a count of them and exit code 1."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "compare":
            compare_command(argv[1:])
            return
        if argv and argv[0] == "show":
            shown = argparse.ArgumentParser(prog="steer.py show", description="print one sample's steering "
                                            "conversation turn by turn")
            shown.add_argument("run_dir", help="a run's --out folder")
            shown.add_argument("--id", help="[TASK/]ID: the sample (default: the first one); generated ids repeat "
                               "across tasks, so give TASK/ID where they do")
            options = shown.parse_args(argv[1:])
            print(show(options.run_dir, options.id))
            return
        summary = evaluate(parse_args(argv))
    except SystemExit as stop:
        if isinstance(stop.code, str):   # raised with a message for the user
            print(f"error: {stop.code}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    if summary["errors"]:
        print(f"{summary['errors']} of {summary['n']} samples ended in an error (the records say why); rerun with "
              "--retry-errors to run them again", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
