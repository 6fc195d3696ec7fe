"""DPO (Rafailov et al. 2023) on multi-turn CodeSteer preference pairs, built on train_sft.py.

    python train_dpo.py --init runs/sft/final --data dpo.jsonl --out runs/dpo           # one process
    torchrun --nproc_per_node=4 train_dpo.py --init runs/sft/final --data dpo.jsonl --out runs/dpo \
        --fsdp --activation-checkpointing --seq-len 7024 --batch-size 1 --grad-accum 2 --beta 0.1
    python train_dpo.py --init embedded --data tests/data/dpo_small.jsonl --out /tmp/dpo \
        --steps 4 --batch-size 2 --seq-len 256 --lr 1e-5                                  # CPU smoke run

Data (JSONL): TRL's {"prompt": [messages...] | str, "chosen": [{"role": "assistant", ...}] | str,
"rejected": ...}, or the original's LLaMA-Factory ShareGPT rows {"conversations": [{"from":
"human"|"gpt", "value"}...], "chosen": {"from": "gpt", "value"}, "rejected": {...}, "system"?}
(spec B.3). The prompt alternates [system,] user, assistant, ..., user; chosen and rejected are one
assistant turn each. Malformed rows are errors naming file:line (as in train_sft.py). Counted
skips: a pair whose chosen equals rejected (no preference to learn), and a pair where the prompt
plus either response exceeds --seq-len (cutting any turn would change what is compared).

Each response is scored by its log-probability summed over the final assistant turn only (its
tokens and end-of-turn token); chosen and rejected rows go through one concatenated forward.
Reference log-probs come from the frozen initial model: computed once in a first pass and cached
in --reference-cache (default OUT/reference_logps, keyed by the data file hashes, the --init
checkpoint's files, --seq-len and the device type), so no second model is resident during
training; --live-reference keeps a frozen copy and scores every batch with it instead.
"""

import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from checkpoints import checkpoint_digest, read_config
from tokenizer import ChatTokenizer
import train_sft as S


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float, label_smoothing: float = 0.0):
    """Sigmoid DPO, eq. 7 of Rafailov et al. (2023):

        L = -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))])

    With label_smoothing eps the labels are taken to be flipped with probability eps
    (conservative DPO): L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h).
    Returns per-pair losses and the implicit rewards beta * log pi/ref of both responses
    (detached, for logging)."""
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    h = chosen_logratios - rejected_logratios
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


# ------------------------------------------------------------------------------------------
# Data


def _response(value, where: str, field: str) -> dict:
    """One assistant message from a string, a message, or a list holding one message."""
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if isinstance(value, list):
        if len(value) != 1:
            raise S.InputError(f"{where}: '{field}' must hold exactly one assistant message, got {len(value)}")
        value = value[0]
    if value is None:
        raise S.InputError(f"{where}: missing '{field}'")
    message = S.to_message(value, where)
    if message["role"] != "assistant":
        raise S.InputError(f"{where}: '{field}' must be an assistant message, got role {message['role']!r}")
    return message


def dpo_messages(row: dict, where: str) -> tuple[list[dict], dict, dict]:
    """(prompt messages ending with a user turn, chosen message, rejected message)."""
    if "prompt" in row:
        prompt = row["prompt"]
        prompt = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
                  else S.to_messages(prompt, where, "prompt"))
    elif "conversations" in row:
        prompt = S.to_messages(row["conversations"], where, "conversations")
        if isinstance(row.get("system"), str) and row["system"]:
            prompt = [{"role": "system", "content": row["system"]}] + prompt
    else:
        raise S.InputError(f"{where}: expected 'prompt' (TRL) or 'conversations' (ShareGPT) with "
                           f"'chosen' and 'rejected'; got keys {sorted(row)}")
    S.check_roles(prompt, where, last="user")
    return prompt, _response(row.get("chosen"), where, "chosen"), _response(row.get("rejected"), where, "rejected")


def final_turn_mask(mask: list[int]) -> torch.Tensor:
    """The last run of ones of render_conversation's mask: the final assistant turn."""
    mask = torch.tensor(mask, dtype=torch.bool)
    end = int(mask.nonzero()[-1]) + 1
    start = end - 1
    while start > 0 and mask[start - 1]:
        start -= 1
    final = torch.zeros_like(mask)
    final[start:end] = True
    return final


class DPOTask:
    """Examples are (chosen ids, chosen targets, rejected ids, rejected targets), the targets set
    on the final assistant turn only. A micro-batch of B pairs is one (2B, T) forward: chosen
    rows first, then rejected rows."""

    name = "dpo"
    stat_names = ("loss_sum", "correct", "margin_sum", "chosen_reward_sum", "rejected_reward_sum",
                  "chosen_logp_sum", "rejected_logp_sum", "chosen_nll_sum")

    def __init__(self, args, tokenizer: ChatTokenizer, run: S.Distributed):
        self.beta, self.label_smoothing, self.nll_weight = args.beta, args.label_smoothing, args.nll_weight
        self.stats = S.DataStats()
        self.examples = []
        for where, row in S.read_jsonl(args.data, args.max_row_bytes):
            self.stats.rows += 1
            prompt, chosen, rejected = dpo_messages(row, where)
            if chosen["content"] == rejected["content"]:
                self.stats.skip("chosen equals rejected")
                continue
            pair = []
            for response in (chosen, rejected):
                ids, mask = tokenizer.render_conversation(prompt + [response])
                ids = torch.tensor(ids)
                pair += [ids, S.shifted_targets(ids, final_turn_mask(mask))]
            if max(len(pair[0]), len(pair[2])) > args.seq_len:
                self.stats.skip(f"prompt + response longer than {args.seq_len} tokens")
                continue
            self.examples.append(tuple(pair))
        self.stats.samples = len(self.examples)
        self.lengths = [max(len(c), len(r)) for c, _, r, _ in self.examples]
        self.fingerprint = f"{S.files_sha256(args.data)}:{args.seq_len}"
        self.reference = None        # (N, 2) cached reference log-probs (chosen, rejected)
        self.reference_model = None  # or a frozen live copy

    def collate(self, indices: list[int], device) -> dict:
        pairs = [self.examples[i] for i in indices]
        rows = [(c, ct) for c, ct, _, _ in pairs] + [(r, rt) for _, _, r, rt in pairs]
        tokens, targets = S.pad_rows(rows, device)
        chosen_targets = sum(int((ct != S.IGNORE).sum()) for _, ct, _, _ in pairs)
        return {"tokens": tokens, "targets": targets, "indices": indices, "lengths": [len(ids) for ids, _ in rows],
                "n_targets": int((targets != S.IGNORE).sum()), "n_chosen_targets": chosen_targets}

    def counts(self, batch: dict) -> torch.Tensor:
        return torch.tensor([len(batch["indices"]), batch["n_chosen_targets"]], dtype=torch.float64)

    @staticmethod
    def sequence_logps(model, batch: dict) -> torch.Tensor:
        """(2B,) log-probs summed over each row's final assistant turn."""
        logps = model(batch["tokens"], batch["targets"])
        rows = (batch["targets"] != S.IGNORE).nonzero()[:, 0]
        return torch.zeros(len(batch["tokens"]), dtype=logps.dtype, device=logps.device).index_add(0, rows, logps)

    def reference_logps(self, batch: dict) -> torch.Tensor:
        """(2B,) reference log-probs, in the same chosen-then-rejected order."""
        if self.reference_model is not None:
            with torch.no_grad():
                return self.sequence_logps(self.reference_model, batch)
        ref = self.reference[batch["indices"]].to(batch["tokens"].device)  # (B, 2)
        return torch.cat([ref[:, 0], ref[:, 1]])

    def loss(self, train_model, batch: dict, global_counts: torch.Tensor):
        B = len(batch["indices"])
        policy = self.sequence_logps(train_model, batch).float()
        ref = self.reference_logps(batch).float()
        losses, chosen_rewards, rejected_rewards = dpo_loss(policy[:B], policy[B:], ref[:B], ref[B:],
                                                            self.beta, self.label_smoothing)
        chosen_nll = -policy[:B].sum()  # summed over the chosen final-turn tokens
        loss = losses.sum() / global_counts[0].item()
        if self.nll_weight:
            loss = loss + self.nll_weight * chosen_nll / global_counts[1].item()
        stats = torch.stack([losses.sum(), (chosen_rewards > rejected_rewards).sum(),
                             (chosen_rewards - rejected_rewards).sum(), chosen_rewards.sum(),
                             rejected_rewards.sum(), policy[:B].sum(), policy[B:].sum(), chosen_nll])
        return loss, stats.detach().double()

    def report(self, stats: torch.Tensor, global_counts: torch.Tensor) -> dict:
        pairs, chosen_tokens = global_counts.tolist()
        values = dict(zip(self.stat_names, stats.tolist()))
        dpo = values["loss_sum"] / pairs
        nll = values["chosen_nll_sum"] / chosen_tokens
        return {"loss": dpo + self.nll_weight * nll, "dpo_loss": dpo, "reward_accuracy": values["correct"] / pairs,
                "reward_margin": values["margin_sum"] / pairs, "chosen_reward": values["chosen_reward_sum"] / pairs,
                "rejected_reward": values["rejected_reward_sum"] / pairs,
                "chosen_logp": values["chosen_logp_sum"] / pairs, "rejected_logp": values["rejected_logp_sum"] / pairs,
                "chosen_nll": nll, "pairs": int(pairs)}

    # -- reference log-probs ---------------------------------------------------------------

    def prepare(self, train_model, run: S.Distributed, args, path, out: Path):
        """Before training (and before a resume restores later weights): a frozen live reference,
        or the reference log-probs of the initial model, from the cache or computed now."""
        if args.live_reference:
            config = read_config(path)
            self.reference_model = S.build_model(path, config, run, args.fsdp, args.activation_checkpointing,
                                                 trainable=False)
            return
        cache = Path(args.reference_cache or out / "reference_logps") / f"{self.reference_key(path, run)}.pt"
        if cache.is_file():
            saved = torch.load(cache, weights_only=True)
            if saved.shape != (len(self.examples), 2):
                raise S.InputError(f"{cache}: holds {tuple(saved.shape)} reference log-probs, expected "
                                   f"{(len(self.examples), 2)}; delete it to recompute")
            self.reference = saved
            S.print0(f"reference log-probs: loaded {cache}")
            return
        started = time.perf_counter()
        self.reference = self.compute_reference(train_model, run, args)
        S.print0(f"reference log-probs: {len(self.examples)} pairs in {time.perf_counter() - started:.1f}s -> {cache}")
        if run.is_main:
            cache.parent.mkdir(parents=True, exist_ok=True)
            staging = cache.with_name(cache.name + f".tmp{os.getpid()}")
            torch.save(self.reference, staging)
            os.replace(staging, cache)
        S.barrier()

    def compute_reference(self, train_model, run: S.Distributed, args) -> torch.Tensor:
        """Score every pair with the model as it is now. Batches of similar length are dealt out
        round-robin; a rank without a batch in the last round repeats one and discards it, since
        FSDP's collectives need every rank in every forward."""
        order = sorted(range(len(self.examples)), key=lambda i: self.lengths[i])
        chunks = [order[k:k + args.batch_size] for k in range(0, len(order), args.batch_size)]
        table = torch.zeros(len(self.examples), 2, dtype=torch.float64, device=run.device)
        rounds = -(-len(chunks) // run.world_size)
        with torch.no_grad():
            for r in range(rounds):
                k = r * run.world_size + run.rank
                batch = self.collate(chunks[k] if k < len(chunks) else chunks[0], run.device)
                with S.compute_context(run, args.fsdp):
                    logps = self.sequence_logps(train_model, batch).double()
                if k < len(chunks):
                    B = len(chunks[k])
                    table[chunks[k]] = torch.stack([logps[:B], logps[B:]], dim=1)
        S.reshard(train_model)
        return S.all_reduce_sum(table).cpu()

    def reference_key(self, path, run: S.Distributed) -> str:
        """What the cached log-probs depend on: the data and --seq-len (fingerprint), the initial
        checkpoint's contents (so a copy, or a bit-identical retraining in a later session, reuses
        them) and the device."""
        identity = {"data": self.fingerprint, "init": checkpoint_digest(Path(path).resolve()),
                    "device": run.device.type}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def main(argv=None) -> dict:
    parser = S.build_parser(__doc__, default_lr=1e-6)
    parser.add_argument("--beta", type=float, default=0.1, help="DPO temperature beta (default 0.1)")
    parser.add_argument("--label-smoothing", type=float, default=0.0,
                        help="assumed probability that a preference label is flipped (conservative DPO)")
    parser.add_argument("--nll-weight", type=float, default=0.0,
                        help="weight of an added mean NLL on the chosen final-turn tokens")
    parser.add_argument("--live-reference", action="store_true",
                        help="keep a frozen reference model resident instead of precomputed log-probs")
    parser.add_argument("--reference-cache", help="folder of cached reference log-probs (default OUT/reference_logps)")
    args = parser.parse_args(argv)
    S.validate_args(args, parser)
    if args.beta <= 0 or not 0 <= args.label_smoothing < 0.5 or args.nll_weight < 0:
        parser.error("need --beta > 0, 0 <= --label-smoothing < 0.5 and --nll-weight >= 0")
    return S.train(args, lambda args, tokenizer, run: DPOTask(args, tokenizer, run))


if __name__ == "__main__":
    S.run_as_script(main)
