"""SymBench mahjong_pattern (spec C.2): a hand of 13 letter cards gains one card per round;
judge the card added in the last round as Peng (1), Chi (2) or Pass (0).

    task = symbench.get_task("mahjong_pattern")
    sample = task.generate(1, complexity=3, seed=0)[0]
    task.solve(sample)                                # -> "0", "1" or "2"

The solver replays the rounds: judge the added card against the hand, then remove a card from
the hand as it was before the addition and keep the added one (the original's order).
"""

import random
import re
from pathlib import Path

from symbench.core import Sample, Task, original_samples
from symbench.grids import LETTERS

PASS, PENG, CHI = 0, 1, 2
HAND_SIZE = 13
CHI_FROM_COMPLEXITY = 3


def judge(hand: list[str], card: str, chi_allowed: bool) -> int:
    """Peng when the hand already holds two copies of the card; otherwise Chi when two hand
    cards complete three consecutive letters with it (and the rules of this complexity have
    Chi); otherwise Pass."""
    if hand.count(card) >= 2:
        return PENG
    held = {ord(c) for c in hand}
    x = ord(card)
    if chi_allowed and any({x + a, x + b} <= held for a, b in ((-2, -1), (-1, 1), (1, 2))):
        return CHI
    return PASS


def last_judgement(initial_cards: str, rounds: list[dict], chi_allowed: bool) -> int:
    hand = list(initial_cards)
    result = PASS
    for round_ in rounds:
        result = judge(hand, round_["add"], chi_allowed)
        if round_["remove"] in hand:
            hand.remove(round_["remove"])
        hand.append(round_["add"])
    return result


class MahjongPattern(Task):
    """Levels 1-5 are the original's complexity: the number of rounds, with Chi among the rules
    only from level 3 (rounds = level, Peng beats Chi).

    The initial hand holds each letter at most twice. To balance the labels, each added card is
    drawn by first choosing one of the judgements that some letter would receive, then a letter
    receiving it.

    Label note: the original labeller always tests Chi, even at complexities 1-2 whose prompt
    never mentions it, and tests it on the sorted hand, so a duplicate letter can hide a run
    (an added T next to a hand holding U, U, V is judged Pass). The loader keeps the label of
    the stated rules as `answer`; where the stored label differs it goes to
    meta['paper_answer'], which variant='paper' scores against.
    """

    id = "mahjong_pattern"
    answer_format = "<<<x>>>: 0 Pass, 1 Peng, 2 Chi (Chi only from complexity 3)"
    levels = (1, 2, 3, 4, 5)
    default_level = 3

    def knobs(self, level: int) -> dict:
        return {"rounds": level, "chi": level >= CHI_FROM_COMPLEXITY}

    def make_sample(self, rng: random.Random, level: int, index: int, *, rounds, chi) -> Sample:
        hand = rng.sample(sorted(LETTERS * 2), HAND_SIZE)
        initial_cards = "".join(hand)
        played = []
        for _ in range(rounds):
            by_result: dict[int, list[str]] = {}
            for letter in LETTERS:
                by_result.setdefault(judge(hand, letter, chi), []).append(letter)
            added = rng.choice(by_result[rng.choice(sorted(by_result))])
            removed = rng.choice(hand)
            played.append({"add": added, "remove": removed})
            hand.remove(removed)
            hand.append(added)
        solution = last_judgement(initial_cards, played, chi)
        meta = {"initial_cards": initial_cards, "rounds": played, "chi": chi, "solution": solution}
        return Sample(task=self.id, id="", question=self._question(meta), answer=str(solution),
                      complexity=level, meta=meta)

    @staticmethod
    def _question(meta) -> str:
        chi = meta["chi"]
        rules = ["Peng (1): the hand already holds two cards with the same letter as the added card."]
        if chi:
            rules.append("Chi (2): two cards of the hand together with the added card make three "
                         "consecutive letters, such as ABC or OPQ. Peng takes precedence over Chi.")
        rules.append(f"Pass (0): the added card is not a {'Peng or a Chi' if chi else 'Peng'}.")
        rounds = meta["rounds"]
        round_lines = [f"Round {i}: add card {r['add']}, then remove card {r['remove']}."
                       for i, r in enumerate(rounds[:-1], 1)]
        round_lines.append(f"Round {len(rounds)}: add card {rounds[-1]['add']}.")
        choices = "0 for Pass, 1 for Peng or 2 for Chi" if chi else "0 for Pass or 1 for Peng"
        return (
            f"A card game is played with letter cards A-Z. The hand starts with {HAND_SIZE} "
            f"cards. In every round one card is added to the hand and judged, and after the "
            f"judgement one card is removed from the hand; the removed card plays no part in "
            f"that round's judgement. The added card is judged as:\n"
            + "\n".join(f"- {rule}" for rule in rules)
            + f"\n\nInitial cards: {meta['initial_cards']}\n\n" + "\n".join(round_lines)
            + f"\n\nWhat is the judgement of the last round? Answer in the form <<<x>>>, where x "
              f"is {choices}.")

    def solve(self, sample: Sample) -> str:
        meta = sample.meta
        return str(last_judgement(meta["initial_cards"], meta["rounds"], meta["chi"]))

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        match = re.fullmatch(r"[\[(\s]*(\d)[\])\s.]*", answer) if len(answer) <= 20 else None
        if match is None:
            return 0.0
        label = sample.meta.get("paper_answer", sample.meta["solution"]) if variant == "paper" \
            else sample.meta["solution"]
        return float(int(match.group(1)) == int(label))

    def load_original(self, dataset_gather_dir: str | Path) -> list[Sample]:
        def to_sample(question, solution):
            chi = solution["complexity"] >= CHI_FROM_COMPLEXITY
            label = last_judgement(solution["initial_cards"], solution["rounds"], chi)
            meta = {"initial_cards": solution["initial_cards"], "rounds": solution["rounds"],
                    "chi": chi, "solution": label}
            if label != solution["solution"]:
                meta["paper_answer"] = str(solution["solution"])
            return str(label), meta
        return original_samples(self, dataset_gather_dir, "mahjong_pattern_dataset", to_sample)


TASKS = [MahjongPattern()]
