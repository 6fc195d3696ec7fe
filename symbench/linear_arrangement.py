"""constrained_linear_arrangement (spec C.2): from the cards you played and each round's
result, work out the cards your opponent played. Three games, as in the original: the five
elements, Stick-Tiger-Chicken-Worm, and a Jungle-chess animal hierarchy.

    task = symbench.get_task("constrained_linear_arrangement")
    sample = task.generate(1, complexity=4, seed=0)[0]
    task.score(sample, "<<<" + task.solve(sample) + ">>>")      # -> 1.0

Draw rounds usually admit several opponent cards, so the scorer is a verifier: every round's
result must follow from the answered card.
"""

import random
from dataclasses import dataclass
from typing import Callable

from symbench.core import Sample, Task, original_samples

# The five elements, A..E = Wood, Fire, Earth, Metal, Water (the original's rule text).
GENERATES = dict(zip("ABCDE", "BCDEA"))
OVERCOMES = dict(zip("ABCDE", "CDEAB"))
# Stick A beats Tiger B, Tiger eats Chicken C, Chicken eats Worm D, Worm beats Stick.
STICK_BEATS = dict(zip("ABCD", "BCDA"))
# Elephant A (strongest) .. Mouse H (weakest); the Mouse alone beats the Elephant.
ANIMAL_RANK = {card: 8 - i for i, card in enumerate("ABCDEFGH")}


def elements_result(player: str, opponent: str) -> str:
    """Judged from the player's card only, as the original generator does: generating the
    opponent's card loses, overcoming it wins, anything else is a draw."""
    if GENERATES[player] == opponent:
        return "loss"
    if OVERCOMES[player] == opponent:
        return "win"
    return "draw"


def stick_result(player: str, opponent: str) -> str:
    if STICK_BEATS[player] == opponent:
        return "win"
    if STICK_BEATS[opponent] == player:
        return "loss"
    return "draw"


def animal_result(player: str, opponent: str) -> str:
    if player == opponent:
        return "draw"
    if (player, opponent) == ("H", "A"):
        return "win"
    if (player, opponent) == ("A", "H"):
        return "loss"
    return "win" if ANIMAL_RANK[player] > ANIMAL_RANK[opponent] else "loss"


@dataclass(frozen=True)
class CardGame:
    cards: str
    result: Callable[[str, str], str]   # the round's result for the player
    rules: str                          # our wording of the rules, for generated questions


GAMES = {
    "elements": CardGame("ABCDE", elements_result, (
        "You and your opponent each hold five element cards: Wood (A), Fire (B), Earth (C), "
        "Metal (D) and Water (E), and each card can be played only once. In every round both "
        "players show a card at the same time, and the round is judged from your card:\n"
        "- generation: Wood A generates Fire B, Fire B generates Earth C, Earth C generates "
        "Metal D, Metal D generates Water E, Water E generates Wood A;\n"
        "- overcoming: Wood A overcomes Earth C, Earth C overcomes Water E, Water E overcomes "
        "Fire B, Fire B overcomes Metal D, Metal D overcomes Wood A;\n"
        "- if your card generates your opponent's card you lose the round, if your card "
        "overcomes it you win, and in every other case (the same card, or a card that "
        "generates or overcomes yours) the round is a draw.")),
    "stick_game": CardGame("ABCD", stick_result, (
        "You and your opponent each hold four cards: Stick (A), Tiger (B), Chicken (C) and Worm "
        "(D), and each card can be played only once. In every round both players show a card "
        "at the same time. Stick beats Tiger, Tiger eats Chicken, Chicken eats Worm and Worm "
        "beats Stick: a card beats only the card that follows it in this cycle. Two equal "
        "cards, or two cards that are not neighbours in the cycle (Stick and Chicken, Tiger "
        "and Worm), make a draw.")),
    "animal": CardGame("ABCDEFGH", animal_result, (
        "You and your opponent each hold eight animal pieces, from strongest to weakest: "
        "Elephant (A), Lion (B), Tiger (C), Leopard (D), Wolf (E), Dog (F), Cat (G) and Mouse "
        "(H), and each piece can be played only once. In every round both players show a "
        "piece at the same time. The stronger piece wins, except that the Mouse beats the "
        "Elephant (and the Elephant cannot beat the Mouse). Two equal pieces make a draw.")),
}


def consistent_assignments(game: CardGame, player_moves: list[str], results: list[str]):
    """Every list of distinct opponent cards that produces the given results (depth-first)."""
    candidates = [[card for card in game.cards if game.result(move, card) == result]
                  for move, result in zip(player_moves, results)]

    def extend(chosen: list[str]):
        if len(chosen) == len(candidates):
            yield list(chosen)
            return
        for card in candidates[len(chosen)]:
            if card not in chosen:
                chosen.append(card)
                yield from extend(chosen)
                chosen.pop()
    yield from extend([])


def read_cards(answer: str, limit: int) -> list[str] | None:
    """'A,B,C', '[A, B, C]', '"a", "b", "c"' or 'A B C' -> ['A', 'B', 'C']; None past `limit`
    cards."""
    text = answer.translate({ord(ch): " " for ch in "[](){}'\"`"}).strip().rstrip(".")
    parts = text.split(",") if "," in text else text.split()
    if len(parts) > limit:
        return None
    return [part.strip().upper() for part in parts]


def paper_round_passes(game_type: str, move: str, result: str, card: str, stored: str) -> bool:
    """One round under the original scorer. It compares win and loss rounds with the stored
    card, and for the animal game checks rank order with the Mouse/Elephant exception applied
    in both directions, so it also accepts the Elephant as a Mouse's loss and vice versa."""
    if game_type == "elements":
        if result == "draw":
            return card not in (GENERATES[move], OVERCOMES[move])
        return card == stored
    if game_type == "stick_game":
        if result == "draw":
            return card != STICK_BEATS[move] and move != STICK_BEATS[card]
        return card == stored
    if result == "draw":
        return card == move
    if result == "win":
        return ANIMAL_RANK[move] > ANIMAL_RANK[card] or (move, card) == ("H", "A")
    return ANIMAL_RANK[move] < ANIMAL_RANK[card] or (move, card) == ("A", "H")


class ConstrainedLinearArrangement(Task):
    """Deduce the opponent's card in each round of a card game from your cards and the results.

    Levels: the number of rounds (3, 4 or 5, as in the original); the game is drawn among those
    with at least that many cards (Stick-Tiger-Chicken-Worm has four).
    Score (verifier, spec C.2): as many cards as rounds, and every round's result must follow
    from the answered card; in the animal game no piece may repeat. Fidelity note: the original
    scorer's Mouse/Elephant check runs both ways (an Elephant that 'loses' to a Mouse and a
    Mouse that 'loses' to an Elephant both pass) and it skips the card check on five-element
    draw rounds; variant='paper' keeps that scorer, the corrected one judges every round with
    the game's own rule and accepts only the game's cards."""

    id = "constrained_linear_arrangement"
    answer_format = "<<<A,B,C>>>: the opponent's card in each round, in round order"
    levels = (3, 4, 5)
    default_level = 4

    def knobs(self, level: int) -> dict:
        return {"rounds": level,
                "games": [name for name, game in GAMES.items() if len(game.cards) >= level]}

    def make_sample(self, rng: random.Random, level: int, index: int, *, rounds: int,
                    games: list[str]) -> Sample:
        game_type = rng.choice(games)
        game = GAMES[game_type]
        player_moves = rng.sample(game.cards, rounds)
        opponent_moves = rng.sample(game.cards, rounds)
        results = [game.result(move, card) for move, card in zip(player_moves, opponent_moves)]
        lines = "\n".join(f"Round {i}: you played {move}, {result}."
                          for i, (move, result) in enumerate(zip(player_moves, results), start=1))
        question = (
            f"{game.rules}\n\n"
            f"These are the cards you played and the result of each round for you:\n{lines}\n\n"
            f"Work out which card your opponent played in each round (any answer consistent with "
            f"the rules counts). Give the opponent's cards in round order, separated by commas, "
            f"in the form <<<A,B,C>>>.")
        meta = {"game_type": game_type, "player_moves": player_moves, "results": results}
        return Sample(task=self.id, id="", question=question, answer=",".join(opponent_moves),
                      complexity=level, meta=meta)

    def solve(self, sample: Sample) -> str:
        meta = sample.meta
        game = GAMES[meta["game_type"]]
        for cards in consistent_assignments(game, meta["player_moves"], meta["results"]):
            return ",".join(cards)
        raise ValueError(f"no opponent cards fit sample {sample.id!r}")

    def score_answer(self, sample: Sample, answer: str, variant: str = "corrected") -> float:
        meta = sample.meta
        moves, results = meta["player_moves"], meta["results"]
        if variant == "paper":
            return float(self._paper_passes(sample, answer))
        game = GAMES[meta["game_type"]]
        cards = read_cards(answer, len(moves))
        if cards is None or len(cards) != len(moves) or any(c not in game.cards for c in cards):
            return 0.0
        if meta["game_type"] == "animal" and len(set(cards)) != len(cards):
            return 0.0
        return float(all(game.result(move, card) == result
                          for move, card, result in zip(moves, cards, results)))

    @staticmethod
    def _paper_passes(sample: Sample, answer: str) -> bool:
        meta = sample.meta
        cards = [part.strip() for part in answer.split(",")]
        stored = sample.answer.split(",")
        if len(cards) != len(stored):
            return False
        if meta["game_type"] == "animal" and len(set(cards)) != len(cards):
            return False
        try:
            return all(paper_round_passes(meta["game_type"], move, result, card, truth)
                       for move, result, card, truth
                       in zip(meta["player_moves"], meta["results"], cards, stored))
        except KeyError:   # an unknown card: the original's try/except fails the answer
            return False

    def perturb(self, sample: Sample, answer: str, rng: random.Random) -> str:
        """Many answers can be right, so a random edit may stay right: instead replace one
        round's card with a card that gives that round a different result."""
        meta = sample.meta
        cards = read_cards(answer, len(meta["player_moves"]))
        if not cards or len(cards) != len(meta["player_moves"]):
            return super().perturb(sample, answer, rng)
        game = GAMES[meta["game_type"]]
        i = rng.randrange(len(cards))
        move, result = meta["player_moves"][i], meta["results"][i]
        cards[i] = next(card for card in game.cards if game.result(move, card) != result)
        return ",".join(cards)

    def load_original(self, dataset_gather_dir) -> list[Sample]:
        def to_sample(question, solution):
            meta = {"game_type": solution["game_type"], "player_moves": solution["player_moves"],
                    "results": solution["results"]}
            if meta["game_type"] not in GAMES:
                raise ValueError(f"unknown game type {meta['game_type']!r}")
            return ",".join(solution["solution"]), meta
        return original_samples(self, dataset_gather_dir, "constrained_linear_arrangement",
                                to_sample)


TASKS = [ConstrainedLinearArrangement()]
