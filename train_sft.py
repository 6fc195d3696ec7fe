"""Multi-turn masked SFT of the CodeSteerLLM, and the training machinery train_dpo.py builds on.

    python train_sft.py --init embedded --data sft.jsonl --out runs/sft                # one process
    torchrun --nproc_per_node=4 train_sft.py --init /ckpt/Meta-Llama-3-8B-Instruct --data sft.jsonl \
        --out runs/sft --fsdp --activation-checkpointing --seq-len 7024 --batch-size 1 \
        --grad-accum 2 --epochs 12 --lr 1e-5 --save-every 200                         # the paper, 4 x H100
    python train_sft.py --init embedded --data tests/data/sft_small.jsonl --out /tmp/sft \
        --steps 4 --batch-size 2 --seq-len 256 --lr 1e-4                               # CPU smoke run
    python train_sft.py ... --resume                 # continue from OUT/checkpoints/latest, same flags

Data (JSONL, one conversation per line): {"messages": [{"role", "content"}, ...]} (roles
[system,] user, assistant, user, ..., ending with an assistant turn), ShareGPT
{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}, or the original's
alpaca-with-history {"instruction", "input"?, "output", "history": [[user, assistant], ...],
"system"?}. Every assistant turn is supervised (spec B.1); tokens and masks come from
ChatTokenizer.render_conversation. Bad rows: malformed JSON, a missing field, an unknown role,
non-alternating roles, no assistant turn or a trailing user turn are ERRORS naming file:line
(they mean the file was produced wrongly), and so is a line over --max-row-bytes, refused while it
is read rather than after it is held whole. A conversation longer than --seq-len keeps its earliest
turns: whole trailing user/assistant pairs are dropped until it fits (counted as "truncated"); if
even the first assistant turn does not fit, the row is dropped (counted as "skipped"). Both counts
are printed and written to OUT/run.json.

Loss: the mean cross-entropy over all supervised tokens of the global batch, i.e. the sum over
every micro-batch of every rank divided by the all-reduced token count, so gradient accumulation
and data parallelism give the same gradient as one big batch. Batches are length-grouped and
right-padded; attention is causal, so real tokens never see the padding after them.

Mistakes in the command or its files (data, --init checkpoint, --out, flags) print one `error:`
line and exit with status 2; a traceback means a bug.

Outputs: OUT/metrics.jsonl (one line per step; --resume drops the torn last line a kill leaves),
OUT/run.json, OUT/checkpoints/step_N (every --save-every steps, written to a temporary folder and
renamed), OUT/final (HF format: transformers and vLLM load it).
"""

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import random
import resource
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from tqdm import tqdm

from checkpoints import checkpoint_tensors, load_tokenizer, read_config, save_hf
from embedded import resolve_checkpoint
from model import ModelConfig, Transformer
from tokenizer import ChatTokenizer
from jsonl import MAX_LINE_BYTES, LineTooLongError
from jsonl import read_jsonl as read_jsonl_file

IGNORE = -100  # target id of positions that carry no loss


class InputError(ValueError):
    """A mistake in the command or in the files it names (data, checkpoint, output folder), not a
    bug: run as a script, it is printed as one `error:` line and the exit status is 2 (argparse's)."""


def run_as_script(main):
    """main(), with an InputError reported the way argparse reports a bad flag (status 2); any
    other exception is a bug and keeps its traceback. A rank of a multi-process run ends with
    os._exit: see cleanup() for why its interpreter must not be torn down."""
    status = 0
    try:
        main()
    except InputError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        status = 2
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)

# ------------------------------------------------------------------------------------------
# Distributed setup (the same script runs alone or under torchrun)


@dataclass
class Distributed:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None, single_process_group: bool = False) -> Distributed:
    """torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them this is one process. FSDP2 needs
    a process group even on one rank: single_process_group=True creates a one-rank group."""
    under_torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    target = torch.device("cuda", local_rank) if kind == "cuda" else torch.device(kind)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if (under_torchrun or single_process_group) and not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        device_id = target if target.type == "cuda" else None
        if under_torchrun:
            dist.init_process_group(backend, device_id=device_id)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, device_id=device_id)
    return Distributed(rank, local_rank, world_size, target)


def cleanup(finished: bool = True):
    """Tear down the process group. After a normal finish, wait for every rank first: a rank that
    destroys its gloo pairs while another still exports makes that one abort (seen under load).

    That is not enough for gloo: DDP and FSDP's device mesh keep a reference to the group, so
    destroy_process_group leaves it alive, its threads (two pt_gloo_runloop, one gloo_tcp_loop)
    still running after gc. A gloo group alive while the interpreter finalizes can abort the
    process with "terminate called without an active exception" (pytorch/pytorch#190489), which
    is how the 2-rank tests failed now and then after training had finished. So a script that
    finished ends each rank of a multi-process run with os._exit (run_as_script): past the
    barrier every file is written and closed, and nothing is left to tear down."""
    if dist.is_initialized():
        if finished and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def print0(*args, **kwargs):
    if int(os.environ.get("RANK", "0")) == 0:
        print(*args, **kwargs, flush=True)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def barrier():
    if dist.is_initialized():
        dist.barrier()


# ------------------------------------------------------------------------------------------
# Data: JSONL rows -> messages -> (ids, mask)


def read_jsonl(paths, max_row_bytes: int = MAX_LINE_BYTES):
    """Yield ("file:line", row) for every non-empty line of the files."""
    for path in paths:
        try:
            yield from read_jsonl_file(path, max_row_bytes)
        except LineTooLongError as error:
            raise InputError(f"--data {error}; raise --max-row-bytes if rows are meant to be that long") from None
        except (OSError, ValueError) as error:
            raise InputError(f"--data {error}") from None


def files_sha256(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


_ROLES = {"user": "user", "assistant": "assistant", "system": "system",
          "human": "user", "gpt": "assistant"}  # ShareGPT's "from" names


def to_message(item, where: str) -> dict:
    """{"role", "content"} or ShareGPT {"from", "value"} -> {"role", "content"}."""
    if not isinstance(item, dict):
        raise InputError(f"{where}: a message must be an object, got {str(item)[:80]!r}")
    sharegpt = "role" not in item
    role, content = (item.get("from"), item.get("value")) if sharegpt else (item.get("role"), item.get("content"))
    if role not in _ROLES:
        raise InputError(f"{where}: unknown role {role!r} (expected one of {sorted(_ROLES)})")
    if not isinstance(content, str):
        raise InputError(f"{where}: message content must be a string, got {type(content).__name__}")
    return {"role": _ROLES[role], "content": content}


def to_messages(items, where: str, field: str) -> list[dict]:
    if not isinstance(items, list):
        raise InputError(f"{where}: '{field}' must be a list of messages")
    return [to_message(item, where) for item in items]


def check_roles(messages: list[dict], where: str, last: str):
    """[system,] user, assistant, user, ... ending with `last`, with at least one user turn."""
    roles = [m["role"] for m in messages]
    body = roles[1:] if roles and roles[0] == "system" else roles
    if not body or any(role != ("user", "assistant")[k % 2] for k, role in enumerate(body)):
        raise InputError(f"{where}: roles must alternate [system,] user, assistant, user, ...; got {roles}")
    if body[-1] != last:
        what = "no assistant turn to learn from" if "assistant" not in body else f"must end with a {last} turn"
        raise InputError(f"{where}: {what}; got roles {roles}")


def sft_messages(row: dict, where: str) -> list[dict]:
    """A conversation in any of the supported SFT formats, as checked messages."""
    if "messages" in row:
        messages = to_messages(row["messages"], where, "messages")
    elif "conversations" in row:
        messages = to_messages(row["conversations"], where, "conversations")
        if isinstance(row.get("system"), str) and row["system"]:
            messages = [{"role": "system", "content": row["system"]}] + messages
    elif "instruction" in row and "output" in row:  # alpaca with history (LLaMA-Factory)
        fields = [row["instruction"], row.get("input") or "", row["output"], row.get("system") or ""]
        history = row.get("history") or []
        if not all(isinstance(f, str) for f in fields) or not isinstance(history, list):
            raise InputError(f"{where}: instruction, input, output and system must be strings, history a list")
        messages = [{"role": "system", "content": fields[3]}] if fields[3] else []
        for pair in history:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise InputError(f"{where}: every history entry must be a [user, assistant] pair of strings")
            messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        prompt = fields[0] + ("\n" + fields[1] if fields[1] else "")
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": fields[2]}]
    else:
        raise InputError(f"{where}: expected a 'messages' list, ShareGPT 'conversations', or alpaca "
                         f"'instruction'/'output' fields; got keys {sorted(row)}")
    check_roles(messages, where, last="assistant")
    return messages


def render_sft(tokenizer: ChatTokenizer, messages: list[dict], seq_len: int):
    """(ids, mask, truncated) for a conversation, or None when even its first assistant turn does
    not fit in seq_len tokens. Over-long conversations keep their earliest turns, as the
    original's cutoff did: the longest prefix that ends with an assistant turn and fits."""
    ids, mask = tokenizer.render_conversation(messages)
    if len(ids) <= seq_len:
        return ids, mask, False
    ends = [k + 1 for k, m in enumerate(messages) if m["role"] == "assistant"]
    for end in reversed(ends[:-1]):
        ids, mask = tokenizer.render_conversation(messages[:end])
        if len(ids) <= seq_len:
            return ids, mask, True
    return None


def shifted_targets(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """targets[t] = ids[t + 1] where that token is supervised, else IGNORE: position t's logits
    predict the next token. The last position predicts nothing."""
    targets = torch.full_like(ids, IGNORE)
    targets[:-1] = torch.where(mask[1:], ids[1:], IGNORE)
    return targets


def pad_rows(rows: list[tuple[torch.Tensor, torch.Tensor]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (ids, targets) rows into (B, T) tensors; padding is token 0 with target IGNORE."""
    T = max(len(ids) for ids, _ in rows)
    tokens = torch.zeros(len(rows), T, dtype=torch.long)
    targets = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for i, (ids, row_targets) in enumerate(rows):
        tokens[i, :len(ids)] = ids
        targets[i, :len(ids)] = row_targets
    return tokens.to(device, non_blocking=True), targets.to(device, non_blocking=True)


# ------------------------------------------------------------------------------------------
# Data order: a pure function of (seed, epoch, lengths), so a checkpoint's data position is
# just its step number.

LENGTH_GROUP_STEPS = 16  # steps' worth of samples sorted together by length


class DataPlan:
    """Which samples each rank sees at each optimizer step.

    Every epoch shuffles the samples, drops the remainder that does not fill a global batch,
    sorts windows of LENGTH_GROUP_STEPS global batches by length, cuts them into global batches
    and shuffles those; the batch holding the longest sample goes first so an out-of-memory shows
    at step 1. A global batch is cut into micro-batches of similar lengths; micro-batch k goes to
    rank k % world at accumulation step k // world, so one process with grad_accum = world and
    `world` processes with grad_accum = 1 see the same micro-batches."""

    def __init__(self, lengths: list[int], batch_size: int, grad_accum: int, world_size: int, seed: int):
        self.lengths, self.batch_size, self.grad_accum, self.world_size = lengths, batch_size, grad_accum, world_size
        self.global_batch = batch_size * grad_accum * world_size
        self.seed = seed
        self.steps_per_epoch = len(lengths) // self.global_batch
        if self.steps_per_epoch == 0:
            raise InputError(f"{len(lengths)} samples are fewer than one global batch of {self.global_batch} "
                             f"(--batch-size {batch_size} x --grad-accum {grad_accum} x {world_size} ranks); "
                             f"lower those or add data")
        self._epoch_cache = {}

    def _epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self._epoch_cache:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.lengths), generator=generator).tolist()
            order = order[:self.steps_per_epoch * self.global_batch]
            window = self.global_batch * LENGTH_GROUP_STEPS
            batches = []
            for start in range(0, len(order), window):
                chunk = sorted(order[start:start + window], key=lambda i: -self.lengths[i])
                batches += [chunk[j:j + self.global_batch] for j in range(0, len(chunk), self.global_batch)]
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
            longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
            batches[0], batches[longest] = batches[longest], batches[0]
            self._epoch_cache = {epoch: batches}
        return self._epoch_cache[epoch]

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        epoch, index = divmod(step, self.steps_per_epoch)
        samples = self._epoch(epoch)[index]
        B, W = self.batch_size, self.world_size
        return [samples[(a * W + rank) * B:(a * W + rank + 1) * B] for a in range(self.grad_accum)]


# ------------------------------------------------------------------------------------------
# Model, loss and FLOPs


def head_logprobs(lm_head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(lm_head(hidden))[target] in fp32, for (N, dim) hidden states."""
    return -F.cross_entropy(lm_head(hidden).float(), targets, reduction="none")


def target_logprobs(lm_head, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int,
                    head_fn=head_logprobs) -> torch.Tensor:
    """head_fn over chunks of at most chunk_tokens positions. Above one chunk, each chunk's logits
    are recomputed in backward instead of kept: (N, vocab) fp32 logits would otherwise dominate
    memory for Llama-3's 128k vocabulary."""
    if hidden.shape[0] <= chunk_tokens:
        return head_fn(lm_head, hidden, targets)
    return torch.cat([torch.utils.checkpoint.checkpoint(head_fn, lm_head, h, t, use_reentrant=False)
                      for h, t in zip(hidden.split(chunk_tokens), targets.split(chunk_tokens))])


class TokenLogProbs(nn.Module):
    """The model plus its LM head on the positions that have a target: (tokens, targets) (B, T)
    -> log p(target) (N,) for the N positions with target != IGNORE, in row-major order. Logits
    of unsupervised positions (prompts, padding) are never computed. Being one module, it is what
    DDP and FSDP2 wrap, so the (tied) head runs inside the wrapped forward. With compile=True the
    head and cross-entropy are fused, so the fp32 logits are never materialised."""

    def __init__(self, model: Transformer, chunk_tokens: int = 4096, compile: bool = False):
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.head_fn = torch.compile(head_logprobs, dynamic=True) if compile else head_logprobs

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hidden = self.model(tokens, return_hidden=True)  # (B, T, dim)
        selected = targets != IGNORE
        return target_logprobs(self.model.lm_head, hidden[selected], targets[selected], self.chunk_tokens,
                               self.head_fn)


def training_flops(config: ModelConfig, lengths: list[int], n_targets: int) -> float:
    """FLOPs of forward + backward: 6 per multiply-add-weight per token for the blocks, the LM
    head only where there is a target (the rest is never computed), and causal attention
    (QK^T and AV over the lower triangle: 6 * n_layers * dim * T^2 per sequence of T tokens)."""
    attention = config.dim * config.head_dim * (2 * config.n_heads + 2 * config.n_kv_heads)
    blocks = config.n_layers * (attention + 3 * config.dim * config.intermediate_size)
    head = config.vocab_size * config.dim
    return sum(6 * blocks * T + 6 * config.n_layers * config.dim * T * T for T in lengths) + 6 * head * n_targets


# Dense bf16 tensor-core peak FLOP/s by a substring of torch.cuda.get_device_name(); first match wins.
PEAK_BF16_FLOPS = [("GH200", 989e12), ("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12),
                   ("H100", 989e12), ("H800", 989e12), ("B200", 2250e12), ("A100", 312e12),
                   ("A800", 312e12), ("L40S", 362e12), ("L4", 121e12)]


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def build_model(path, config: ModelConfig, run: Distributed, fsdp: bool = False,
                activation_checkpointing: bool = False, compile: bool = False, seed: int = 0,
                trainable: bool = True, reshard_after_forward: bool = True) -> nn.Module:
    """TokenLogProbs over the model, with fp32 master weights, wrapped for the run.

    FSDP2 (torchtitan's recipe): built on the meta device, fully_shard per block then the root,
    bf16 compute and fp32 gradient reduction on CUDA, the last block not resharded after forward
    (backward needs it at once; reshard_after_forward=False keeps every block gathered from
    forward to backward: half the all-gathers for one unsharded bf16 copy more); then each rank
    materialises only its shards and copies them from the checkpoint one tensor at a time, so an
    8B model never sits whole on one rank. Otherwise the model is loaded whole and wrapped in DDP
    when there are several ranks. path=None initialises random weights (benchmarks)."""
    with torch.device("meta"):
        wrapper = TokenLogProbs(Transformer(config), compile=compile)
    for block in wrapper.model.layers:
        # Wrap the bound forward rather than the module, so parameter names stay those of the
        # checkpoint; FSDP2's hooks stay outside, around the call.
        forward = block.forward
        if activation_checkpointing:
            forward = functools.partial(torch.utils.checkpoint.checkpoint, forward, use_reentrant=False)
        if compile:
            forward = torch.compile(forward)
        block.forward = forward
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mesh = init_device_mesh(run.device.type, (run.world_size,))
        policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                  if run.device.type == "cuda" else MixedPrecisionPolicy())
        last = len(wrapper.model.layers) - 1
        for i, block in enumerate(wrapper.model.layers):  # a frozen model has no backward to wait for
            reshard = (i < last or not trainable) and (reshard_after_forward or not trainable)
            fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
        fully_shard(wrapper, mesh=mesh, mp_policy=policy)
    wrapper.to_empty(device=run.device)
    if path is None:
        wrapper.model.init_weights(generator=None if fsdp else torch.Generator(run.device).manual_seed(seed))
    else:
        load_weights(wrapper.model, path)
    wrapper.requires_grad_(trainable)
    if not trainable:
        return wrapper.eval()
    if not fsdp and run.world_size > 1:
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(wrapper, device_ids=device_ids)
    return wrapper


@contextlib.contextmanager
def reading_checkpoint(path):
    """What goes wrong while reading --init is a wrong path or a broken file (a truncated GGUF
    fails as a numpy reshape, a truncated safetensors as a header error): name the file."""
    try:
        yield
    except FileNotFoundError as error:
        raise InputError(f"--init {path}: {error}; give an HF checkpoint folder, a .gguf file or an embedded model name") from None
    except (OSError, ValueError, SafetensorError) as error:
        raise InputError(f"--init {path}: cannot read the checkpoint ({error}); is it truncated or corrupt? "
                         f"download or export it again") from None


def load_weights(model: Transformer, path):
    """Copy checkpoint tensors into the model's (possibly sharded) parameters, one at a time."""
    from torch.distributed.tensor import DTensor, distribute_tensor
    params = dict(model.named_parameters())
    with torch.no_grad(), reading_checkpoint(path):
        for name, full in checkpoint_tensors(path, model):
            param = params[name]
            full = full.to(device=param.device, dtype=param.dtype)
            if isinstance(param, DTensor):  # every rank holds the full tensor: slice, no communication
                full = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
            param.copy_(full)


def reshard(train_model: nn.Module):
    """FSDP2 keeps the root and the last block unsharded after a forward that has no backward,
    so parameters() would name the unsharded tensors; shard them again."""
    from torch.distributed.fsdp import FSDPModule
    for module in train_model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def compute_context(run: Distributed, fsdp: bool):
    """bf16 autocast on CUDA without FSDP (FSDP2's policy casts itself); fp32 on CPU."""
    if run.device.type == "cuda" and not fsdp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------------------
# The SFT task: what train() needs to know about a kind of data


@dataclass
class DataStats:
    rows: int = 0
    samples: int = 0
    truncated: int = 0
    skipped: int = 0
    skip_reasons: dict | None = None

    def skip(self, reason: str):
        self.skipped += 1
        self.skip_reasons = self.skip_reasons or {}
        self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1


class SFTTask:
    """Examples are (ids, mask) of rendered conversations; the loss is the mean negative
    log-likelihood of all assistant tokens of the global batch."""

    name = "sft"
    stat_names = ("nll_sum",)

    def __init__(self, paths, tokenizer: ChatTokenizer, seq_len: int, max_row_bytes: int = MAX_LINE_BYTES):
        self.stats = DataStats()
        self.examples = []
        for where, row in read_jsonl(paths, max_row_bytes):
            self.stats.rows += 1
            rendered = render_sft(tokenizer, sft_messages(row, where), seq_len)
            if rendered is None:
                self.stats.skip(f"first assistant turn longer than {seq_len} tokens")
                continue
            ids, mask, truncated = rendered
            self.stats.truncated += truncated
            self.examples.append((torch.tensor(ids, dtype=torch.int32), torch.tensor(mask, dtype=torch.bool)))
        self.stats.samples = len(self.examples)
        self.lengths = [len(ids) for ids, _ in self.examples]
        self.fingerprint = f"{files_sha256(paths)}:{seq_len}"

    def collate(self, indices: list[int], device) -> dict:
        rows = [(ids.long(), shifted_targets(ids.long(), mask)) for ids, mask in (self.examples[i] for i in indices)]
        tokens, targets = pad_rows(rows, device)
        return {"tokens": tokens, "targets": targets, "lengths": [len(ids) for ids, _ in rows],
                "n_targets": sum(int((t != IGNORE).sum()) for _, t in rows)}

    @staticmethod
    def counts(batch: dict) -> torch.Tensor:
        return torch.tensor([batch["n_targets"]], dtype=torch.float64)

    @staticmethod
    def loss(train_model, batch: dict, global_counts: torch.Tensor):
        logps = train_model(batch["tokens"], batch["targets"])
        nll_sum = -logps.sum()
        return nll_sum / global_counts[0].item(), nll_sum.detach().double().reshape(1)

    @staticmethod
    def report(stats: torch.Tensor, global_counts: torch.Tensor) -> dict:
        return {"loss": (stats[0] / global_counts[0]).item(), "target_tokens": int(global_counts[0])}


# ------------------------------------------------------------------------------------------
# Optimisation


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """lr multiplier for optimizer step `step` (0-based): linear warmup to 1, then cosine decay
    to min_lr_ratio at the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps - 1)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Global gradient norm (over all ranks' shards for FSDP2's DTensors); clip if max_norm > 0."""
    from torch.distributed.tensor import DTensor
    parameters = [p for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm.item()


def train_step(train_model, task, batches: list[dict], optimizer, scheduler, run: Distributed,
               fsdp: bool, max_grad_norm: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimizer step over this rank's micro-batches. Returns the all-reduced (stats, counts)
    and the gradient norm."""
    counts = all_reduce_sum(sum(task.counts(b) for b in batches).to(run.device))
    stats = torch.zeros(len(task.stat_names), dtype=torch.float64, device=run.device)
    for k, batch in enumerate(batches):
        # DDP: all-reduce once, after the last micro-batch. FSDP2 reduce-scatters every
        # micro-batch instead: keeping unsharded gradients between them would cost as much
        # memory as the sharding saves.
        sync = k == len(batches) - 1 or not isinstance(train_model, nn.parallel.DistributedDataParallel)
        with contextlib.nullcontext() if sync else train_model.no_sync():
            with compute_context(run, fsdp):
                loss, batch_stats = task.loss(train_model, batch, counts)
            # The loss is normalised by global counts; DDP and FSDP2 average gradients over
            # ranks, so scale by the world size to get the gradient of the global mean.
            (loss * run.world_size).backward()
        stats += batch_stats
    grad_norm = clip_grad_norm(train_model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return all_reduce_sum(stats), counts, grad_norm


# ------------------------------------------------------------------------------------------
# Checkpoints: OUT/checkpoints/step_N/{dcp/, trainer.json, rng_rank{r}.pt}, and a `latest` file


def _write_atomic(path: Path, text: str):
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(text)
    os.replace(staging, path)


def save_checkpoint(out: Path, step: int, train_model, optimizer, scheduler, meta: dict,
                    run: Distributed, keep: int):
    """Model and optimizer through torch.distributed.checkpoint (each rank writes its shards;
    resharding on load is allowed), scheduler/step/data position in trainer.json, each rank's RNG
    states. Everything goes to a temporary folder that is renamed once complete, so a crash
    never leaves a half-written checkpoint behind a valid name."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    root = out / "checkpoints"
    final, staging = root / f"step_{step:08d}", root / f".tmp_step_{step:08d}"
    if run.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    model_state, optimizer_state = get_state_dict(train_model, optimizer)
    with _single_process_dcp():
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=staging / "dcp",
                 no_dist=not dist.is_initialized())
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None}
    torch.save(rng, staging / f"rng_rank{run.rank}.pt")
    barrier()
    if run.is_main:
        (staging / "trainer.json").write_text(json.dumps(
            {**meta, "step": step, "scheduler": scheduler.state_dict()}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        _write_atomic(root / "latest", final.name)
        done = sorted(p for p in root.glob("step_*") if p.is_dir())
        for old in done[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()


@contextlib.contextmanager
def _single_process_dcp():
    """torch.distributed.checkpoint warns on every call without a process group, even when told."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def resolve_resume(resume: str, out: Path) -> Path:
    if resume == "latest":
        pointer = out / "checkpoints" / "latest"
        if not pointer.is_file():
            raise InputError(f"--resume: no checkpoint to resume from in {out / 'checkpoints'} "
                             f"(no 'latest' file); run without --resume to start fresh")
        path = out / "checkpoints" / pointer.read_text().strip()
    else:
        path = Path(resume)
    if not (path / "trainer.json").is_file() or not (path / "dcp").is_dir():
        raise InputError(f"--resume: {path} is not a complete checkpoint (needs trainer.json and dcp/)")
    return path


def load_checkpoint(path: Path, train_model, optimizer, scheduler, meta: dict, run: Distributed) -> int:
    """Restore a checkpoint written by save_checkpoint; returns its step. The run must agree with
    it on everything that decides the model, the data order and the schedule."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    saved = json.loads((path / "trainer.json").read_text())
    mismatched = {k: (saved.get(k), v) for k, v in meta.items() if saved.get(k) != v}
    if mismatched:
        details = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in mismatched.items())
        raise InputError(f"--resume: checkpoint {path} is incompatible with this run: {details}")
    model_state, optimizer_state = get_state_dict(train_model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    with _single_process_dcp():
        dcp.load(state, checkpoint_id=path / "dcp", no_dist=not dist.is_initialized())
    set_state_dict(train_model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng_file = path / f"rng_rank{run.rank}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=False)
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if rng["cuda"] is not None and run.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], run.device)
    return int(saved["step"])


def export_hf(train_model, config: ModelConfig, tokenizer, out_dir: Path, dtype: torch.dtype, run: Distributed):
    """Gather the full weights on rank 0 (FSDP: collective, offloaded to CPU) and save_hf them."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    state = get_model_state_dict(train_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if run.is_main:
        with torch.device("meta"):
            cpu_model = Transformer(config)
        state = {name.removeprefix("model."): tensor.to("cpu", dtype) for name, tensor in state.items()}
        cpu_model.load_state_dict(state, assign=True)
        save_hf(cpu_model, tokenizer, out_dir)
    barrier()


# ------------------------------------------------------------------------------------------
# The training loop, shared with train_dpo.py


def build_parser(description: str, default_lr: float) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", default="embedded",
                        help="HF checkpoint dir, .gguf file, or an embedded model name ('embedded' = SmolLM2-135M, "
                             "qwen2.5-coder-0.5b, qwen2.5-coder-1.5b)")
    parser.add_argument("--data", nargs="+", required=True, help="JSONL file(s)")
    parser.add_argument("--out", required=True, help="output folder (metrics, checkpoints, final model)")
    parser.add_argument("--max-row-bytes", type=int, default=MAX_LINE_BYTES,
                        help=f"longest accepted JSONL line; longer ones are errors (default {MAX_LINE_BYTES})")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps to train")
    length.add_argument("--epochs", type=float, help="passes over the data (default 1)")
    parser.add_argument("--lr", type=float, default=default_lr, help=f"peak learning rate (default {default_lr})")
    parser.add_argument("--warmup-ratio", type=float, default=0.1, help="fraction of steps of linear warmup")
    parser.add_argument("--min-lr-ratio", type=float, default=0.0, help="final lr / peak lr of the cosine")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the global grad norm (0: off)")
    parser.add_argument("--batch-size", type=int, default=1, help="sequences per rank per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--seq-len", type=int, default=7024, help="max tokens per conversation (original cutoff 7024)")
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (else DDP when world size > 1)")
    parser.add_argument("--no-reshard-after-forward", dest="reshard_after_forward", action="store_false",
                        help="FSDP2: keep blocks gathered from forward to backward (fewer all-gathers, "
                             "one more unsharded bf16 model copy per GPU)")
    parser.add_argument("--activation-checkpointing", action="store_true", help="recompute each block in backward")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block")
    parser.add_argument("--seed", type=int, default=0, help="data order seed")
    parser.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: only the final export)")
    parser.add_argument("--keep-checkpoints", type=int, default=2, help="newest checkpoints to keep (0: all)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="continue from OUT/checkpoints/latest, or from the given checkpoint folder")
    parser.add_argument("--export-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="dtype of OUT/final (auto: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--no-export", action="store_true", help="skip writing OUT/final")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    return parser


def validate_args(args, parser):
    for name in ["batch_size", "grad_accum", "seq_len"]:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps is not None and args.steps < 1 or args.epochs is not None and args.epochs <= 0:
        parser.error("--steps and --epochs must be positive")
    if not 0 <= args.warmup_ratio < 1:
        parser.error("--warmup-ratio must be in [0, 1)")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        parser.error(f"--lr must be a positive number, got {args.lr}")
    if args.max_row_bytes < 1:
        parser.error("--max-row-bytes must be >= 1")
    out = Path(args.out)
    existing = next(p for p in [out, *out.parents] if p.exists())  # what mkdir would build on
    if not existing.is_dir():
        parser.error(f"--out {args.out}: {existing} is a file; give a folder (created if missing)")


def train(args, make_task) -> dict:
    """Run a training job. make_task(args, tokenizer, run) builds the task (SFTTask, DPOTask):
    its examples, lengths, collate, counts, loss, report and optionally prepare(train_model, ...)
    for work with the initial model (DPO's reference log-probs). Returns the last metrics."""
    run = init_distributed(args.device, single_process_group=args.fsdp)
    out = Path(args.out)
    try:
        result = _train(args, make_task, run, out)
    except BaseException:
        cleanup(finished=False)  # no barrier: the other ranks may never get there
        raise
    cleanup()
    return result


def _train(args, make_task, run: Distributed, out: Path) -> dict:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    path = resolve_checkpoint(args.init)
    with reading_checkpoint(path):
        config, tokenizer = read_config(path), load_tokenizer(path)
    if args.seq_len > config.max_seq_len:
        raise InputError(f"--seq-len {args.seq_len} exceeds the model's context of {config.max_seq_len}")
    task = make_task(args, tokenizer, run)
    stats = task.stats
    reasons = f": {json.dumps(stats.skip_reasons)}" if stats.skip_reasons else ""
    print0(f"data: {stats.rows} rows -> {stats.samples} samples "
           f"({stats.truncated} truncated, {stats.skipped} skipped{reasons})")
    if not stats.samples:
        files = " ".join(map(str, args.data))
        raise InputError(f"--data {files}: no rows; each line must be one JSON example (see --help)" if not stats.rows
                         else f"--data {files}: all {stats.rows} rows skipped{reasons}; raise --seq-len or fix the data")
    plan = DataPlan(task.lengths, args.batch_size, args.grad_accum, run.world_size, args.seed)
    total_steps = args.steps or math.ceil((args.epochs or 1.0) * plan.steps_per_epoch)
    warmup_steps = math.ceil(args.warmup_ratio * total_steps)
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps({"args": vars(args), "config": asdict(config), "data": asdict(stats),
                                                  "world_size": run.world_size, "total_steps": total_steps}, indent=2))

    train_model = build_model(path, config, run, args.fsdp, args.activation_checkpointing, args.compile,
                              reshard_after_forward=args.reshard_after_forward)
    parallel = "FSDP2" if args.fsdp else "DDP" if run.world_size > 1 else "single process"
    print0(f"model: {config.num_params / 1e6:.0f}M params, {parallel} on {run.world_size} x {run.device.type}, "
           f"global batch {plan.global_batch}, {total_steps} steps ({plan.steps_per_epoch} per epoch)")
    optimizer = torch.optim.AdamW(train_model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  fused=run.device.type == "cuda")
    if hasattr(task, "prepare"):
        task.prepare(train_model, run, args, path, out)
    schedule = functools.partial(cosine_with_warmup, warmup_steps=warmup_steps, total_steps=total_steps,
                                 min_lr_ratio=args.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    meta = {"task": task.name, "model_config": asdict(config), "data": task.fingerprint,
            "global_batch": plan.global_batch, "total_steps": total_steps, "seed": args.seed}
    start_step = 0
    if args.resume:
        checkpoint = resolve_resume(args.resume, out)
        start_step = load_checkpoint(checkpoint, train_model, optimizer, scheduler, meta, run)
        print0(f"resumed from {checkpoint} at step {start_step}")
    metrics_path = out / "metrics.jsonl"
    if run.is_main:  # a fresh file, or the lines up to the checkpoint (a crashed run wrote more)
        kept = metrics_until(metrics_path, start_step) if start_step and metrics_path.is_file() else []
        _write_atomic(metrics_path, "".join(line + "\n" for line in kept))

    peak = peak_flops(run.device)
    progress = tqdm(total=total_steps, initial=start_step, disable=not run.is_main, dynamic_ncols=True)
    metrics = {}
    for step in range(start_step, total_steps):
        started = time.perf_counter()
        batches = [task.collate(indices, run.device) for indices in plan.micro_batches(step, run.rank)]
        stats_sum, counts, grad_norm = train_step(train_model, task, batches, optimizer, scheduler, run,
                                                  args.fsdp, args.max_grad_norm)
        work = [sum(sum(b["lengths"]) for b in batches),  # tokens and FLOPs of this rank
                sum(training_flops(config, b["lengths"], b["n_targets"]) for b in batches)]
        work = all_reduce_sum(torch.tensor(work, dtype=torch.float64, device=run.device)).tolist()
        seconds = time.perf_counter() - started
        metrics = {"step": step + 1, **task.report(stats_sum, counts), "lr": args.lr * schedule(step),
                   "grad_norm": grad_norm, "tokens_per_s": work[0] / seconds, "step_s": seconds,
                   "peak_mem_gb": peak_memory_gb(run.device)}
        if peak:
            metrics["mfu"] = work[1] / seconds / (peak * run.world_size)
        if not math.isfinite(metrics["loss"]):
            raise InputError(f"loss is {metrics['loss']} at step {step + 1}: training diverged; lower --lr "
                             f"(now {args.lr:g})")
        if run.is_main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(metrics) + "\n")
            progress.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
            progress.update(1)
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < total_steps:
            save_checkpoint(out, step + 1, train_model, optimizer, scheduler, meta, run, args.keep_checkpoints)
    progress.close()
    if not args.no_export:
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
            args.export_dtype, torch.bfloat16 if run.device.type == "cuda" else torch.float32)
        export_hf(train_model, config, tokenizer, out / "final", dtype, run)
        print0(f"exported {out / 'final'}")
    return metrics


def metrics_until(path: Path, step: int) -> list[str]:
    """The lines of a metrics.jsonl for steps <= step. A kill mid-write leaves a torn last line:
    it is dropped with a warning. Any other line that is not a metrics row means someone else's
    file, so it is an error rather than something to rewrite away."""
    # The last piece is "" after a final newline, else the torn rest of an unfinished line.
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row_step = json.loads(line)["step"]
            if row_step <= step:
                kept.append(line)
        except (ValueError, TypeError, KeyError):
            if number < len(lines):
                raise InputError(f"{path}:{number}: not a metrics row; fix or delete {path}") from None
            print0(f"warning: {path}:{number}: dropped a torn last line (a killed run's unfinished write)",
                   file=sys.stderr)
    return kept


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv=None) -> dict:
    parser = build_parser(__doc__, default_lr=1e-5)
    args = parser.parse_args(argv)
    validate_args(args, parser)
    return train(args, lambda args, tokenizer, run: SFTTask(args.data, tokenizer, args.seq_len, args.max_row_bytes))


if __name__ == "__main__":
    run_as_script(main)
