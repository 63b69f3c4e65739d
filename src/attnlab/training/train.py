"""The training loop: AdamW, warm-up + cosine schedule, clipping, evaluation, checkpoints, JSONL log.

Losses are in nats per token; bits per character (bpc) divide by ln 2 and by the characters each
token stands for, so runs compare across tokenizers. A CPU run is deterministic for its seed, and
a resumed run reproduces the uninterrupted run's losses exactly (batches, dropout and optimizer
state all come back from the checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.corpus import Batches, batch_bytes, check_length
from ..data.tokens import TokenStream
from ..errors import AttnlabError
from ..models import LanguageModel
from ..models.base import Model
from ..runtime import distributed
from ..runtime.checks import check_object, field_types, memory_limit
from ..runtime.devices import autocast_context, check_dtype, set_matmul_precision
from ..runtime.environment import notice
from ..runtime.files import read_json_lines, write_text_atomically
from ..runtime.threads import ThreadGovernor
from ..tokenizers import Tokenizer
from . import optim
from .checkpoint import Checkpoint, ModelT, save_checkpoint
from .optim import MuonWithAdamW

LN2 = math.log(2)
Callback = Callable[[int, dict[str, Any]], bool | None]  # (step, logged row) -> True to stop
Batch = tuple[torch.Tensor, ...]  # a batch's tensors, each with its sequences as rows (dim 0)
Forward = Callable[..., torch.Tensor]  # the model's forward (or its DDP wrapper's): a batch's inputs -> logits
FinalT = TypeVar("FinalT")  # what an objective's final evaluation gives: `TrainResult.final`
# `Objective`'s own: it only takes the model (contravariant) and only gives the final result (covariant).
TaskModel = TypeVar("TaskModel", bound=Model, contravariant=True)
TaskFinal = TypeVar("TaskFinal", covariant=True)


@dataclass
class TrainConfig:
    steps: int | None = None  # optimizer steps; the cosine schedule ends here
    max_time: float | None = None  # seconds of training (evaluation not counted); whichever ends first
    batch_size: int = 16  # sequences per step and process (each max_len tokens)
    grad_accum: int = 1  # micro-batches per step: global batch = batch_size x processes x grad_accum
    lr: float = 4e-3  # peak learning rate after warm-up
    min_lr_ratio: float = 0.1  # the schedule decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1  # on weight matrices and embeddings only
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    eval_every: int = 200  # steps between evaluations (and checkpoints)
    eval_every_s: float | None = None  # also evaluate every this many seconds of training (the lab's curves)
    eval_tokens: int = 65_536  # periodic evaluations use this fixed prefix of the validation split
    final_eval_chars: int = 1_000_000  # the final evaluation: whole validation split, or its first N chars
    log_every: int = 10  # steps per training-loss row in metrics.jsonl
    seed: int = 0
    device: str = "auto"
    dtype: str = "fp32"  # "bf16" / "fp16": autocast the forward (weights and optimizer stay fp32)
    compile: bool = False  # torch.compile the model (pays off on GPUs; about 1.0x on small CPU models)
    tf32: bool = True  # CUDA: fp32 matmuls on TF32 tensor cores (runtime.devices.matmul_precision)
    optimizer: str = "adamw"  # "muon": Muon for the hidden weight matrices, AdamW for the rest (see optim)
    embed_lr_ratio: float = 1.0  # the embeddings' (and an LM head's) learning rate, as a multiple of lr
    # After warm-up: "cosine" decays over the whole run; "wsd" (warm-up, stable, decay: the nanoGPT
    # speedrun's trapezoid) holds lr, then decays linearly over the last `cooldown_frac` of the run.
    schedule: str = "cosine"
    cooldown_frac: float = 0.4

    def validate(self) -> None:
        if self.steps is None and self.max_time is None:
            raise AttnlabError("give a training budget: --steps N and/or --max-time SECONDS")
        if self.steps is not None and self.steps < 1:
            raise AttnlabError(f"--steps {self.steps}: must be >= 1")
        # Ranges written so that NaN fails them (every comparison with NaN is False).
        if self.max_time is not None and not 0 < self.max_time < math.inf:
            raise AttnlabError(f"--max-time {self.max_time}: must be a finite number of seconds > 0")
        if self.eval_every_s is not None and not 0 < self.eval_every_s < math.inf:
            raise AttnlabError(f"--eval-every-s {self.eval_every_s}: must be a finite number of seconds > 0")
        for name, ok, allowed in (
            ("lr", lambda v: 0 < v < math.inf, "a finite number > 0"),
            ("weight_decay", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
            ("grad_clip", lambda v: 0 <= v < math.inf, "a finite number >= 0 (0 = off)"),
            ("min_lr_ratio", lambda v: 0 <= v <= 1, "between 0 and 1"),
            ("embed_lr_ratio", lambda v: 0 < v < math.inf, "a finite number > 0"),
            ("cooldown_frac", lambda v: 0 < v <= 1, "in (0, 1]"),
            ("beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("beta2", lambda v: 0 <= v < 1, "in [0, 1)"),
        ):
            if not ok(value := getattr(self, name)):
                raise AttnlabError(f"--{name.replace('_', '-')} {value}: must be {allowed}")
        if self.warmup_steps < 0 or self.final_eval_chars < 1:
            raise AttnlabError("--warmup-steps must be >= 0 and final_eval_chars >= 1")
        if not 0 <= self.seed < 2**63:
            raise AttnlabError(f"--seed {self.seed}: must be between 0 and 2**63 - 1")
        for name in ("batch_size", "grad_accum", "eval_every", "log_every", "eval_tokens"):
            if getattr(self, name) < 1:
                raise AttnlabError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        # A step draws all its micro-batches at once: a count that cannot fit even at one token per
        # sequence is refused here, before any model (run.check_fits weighs it against the model's max_len).
        if self.grad_accum > 1 and (ids := batch_bytes(self.batch_size * self.grad_accum, 1)) > memory_limit():
            raise AttnlabError(
                f"--grad-accum {self.grad_accum:,}: a step draws its {self.batch_size:,} x {self.grad_accum:,} "
                f"sequences at once, over {ids / 2**30:,.1f} GiB at any length, more than the "
                f"{memory_limit() / 2**30:,.1f} GiB here; use a smaller --grad-accum"
            )
        if self.schedule not in optim.SCHEDULES:
            raise AttnlabError(f"--schedule {self.schedule}: choose one of {', '.join(optim.SCHEDULES)}")
        if self.optimizer not in optim.OPTIMIZERS:
            raise AttnlabError(f"--optimizer {self.optimizer}: choose one of {', '.join(optim.OPTIMIZERS)}")
        check_dtype(self.dtype)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "training settings") -> TrainConfig:
        """Settings saved with `asdict` (a checkpoint's state.json): keys and value types checked; ranges
        are `validate`'s."""
        return cls(**check_object(d, where, field_types(cls)))


def cosine_lr(step: int, progress: float, lr: float, warmup_steps: int, min_lr: float) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay from lr to min_lr as progress goes 0 -> 1."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    p = min(1.0, max(0.0, progress))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * p))


def noam_lr(step: int, d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    """Vaswani et al. 2017's schedule: d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), times `scale`."""
    step = max(step, 1)
    return scale * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def scheduled_lr(tcfg: TrainConfig, step: int, progress: float, d_model: int = 1) -> float:
    """The learning rate of `step` at `progress` (0 -> 1) of the budget, by the config's schedule: the
    cosine; "wsd": lr held until the last `cooldown_frac` of the run, then a linear decay to min_lr;
    "noam": the paper's warm-up and inverse square root for a model of `d_model` channels, scaled by
    lr / 1e-3 (1e-3: the paper's)."""
    if tcfg.schedule == "noam":
        return noam_lr(step + 1, d_model, max(tcfg.warmup_steps, 1), tcfg.lr / 1e-3)
    min_lr = tcfg.lr * tcfg.min_lr_ratio
    if tcfg.schedule == "cosine" or step < tcfg.warmup_steps:  # both warm up as the cosine does
        return cosine_lr(step, progress, tcfg.lr, tcfg.warmup_steps, min_lr)
    into_cooldown = (min(1.0, max(0.0, progress)) - (1.0 - tcfg.cooldown_frac)) / tcfg.cooldown_frac
    return tcfg.lr - (tcfg.lr - min_lr) * max(0.0, into_cooldown)


@dataclass
class EvalResult:
    loss: float  # nats per token
    bpc: float  # bits per character
    chars: int  # characters of text the predicted tokens stand for
    tokens: int  # tokens predicted


@torch.no_grad()
def evaluate(
    model: LanguageModel,
    stream: TokenStream,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    batch_size: int = 64,
) -> EvalResult:
    """Loss over consecutive non-overlapping windows: every token (but the first) predicted once."""
    device = next(model.parameters()).device
    L = model.config.max_len
    n = len(stream.tokens)
    if max_chars is not None:
        n = min(n, math.ceil(max_chars / stream.chars_per_token) + 1)
    if max_tokens is not None:
        n = min(n, max_tokens + 1)
    if n < 2:
        raise AttnlabError("the validation split has fewer than 2 tokens; give more validation text")
    tokens = np.asarray(stream.tokens[:n], dtype=np.int64)
    n_full = (n - 1) // L
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    pieces = []
    if n_full:
        full = torch.from_numpy(tokens[: n_full * L + 1])
        idx = torch.arange(n_full)[:, None] * L + torch.arange(L + 1)
        pieces += list(full[idx].split(batch_size))
    if (n - 1) % L:
        pieces.append(torch.from_numpy(tokens[n_full * L :])[None])
    for window_BL in pieces:
        window_BL = window_BL.to(device)
        logits_BLV = model(window_BL[:, :-1])
        window_loss = F.cross_entropy(logits_BLV.flatten(0, 1).float(), window_BL[:, 1:].flatten(), reduction="sum")
        total += window_loss.item()
        count += window_BL[:, 1:].numel()
    model.train(was_training)
    loss = total / count
    return EvalResult(loss, loss / LN2 / stream.chars_per_token, round(count * stream.chars_per_token), count)


class Objective(Protocol[TaskModel, TaskFinal]):
    """What a run learns from, for the one training loop: batches, the loss of one, and evaluations.

    `LanguageModeling` predicts each next token of a text; `seq2seq_run.Translation` a target from a
    source. The loop does the rest alike for both: schedule, accumulation, clipping, mixed precision,
    processes, checkpoints, resume, Ctrl-C, the NaN stop and the log. `TaskModel` is the kind of model
    it trains, `TaskFinal` what its final evaluation gives.
    """

    def start(self, model: TaskModel, sequences: int, seed: int, device: str) -> None:
        """Check the data against the model and begin drawing global batches of `sequences` rows."""

    def draw(self) -> Batch:
        """The next global batch: tensors whose rows (dim 0) are its sequences."""

    def loss(self, forward: Forward, batch: Batch, whole: Batch, world: int) -> torch.Tensor:
        """A micro-batch's share of the global batch `whole`'s mean loss (nats per predicted token), such
        that the shares summed over a process's micro-batches, averaged over the `world` processes (as
        DDP averages gradients), are the mean over the global batch."""

    def tokens(self, batch: Batch) -> int:
        """Tokens a batch trains on (tokens/s counts them)."""

    def evaluate(self, model: TaskModel) -> dict[str, float]:
        """A periodic evaluation: the fields it adds to its log row."""

    def final(self, model: TaskModel) -> tuple[dict[str, Any], TaskFinal]:
        """The final evaluation: its log row's fields, and the result `TrainResult.final` holds."""

    def describe(self, fields: dict[str, Any]) -> str:
        """An evaluation's fields in words, for the progress line."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The batches' random state, saved with each checkpoint so a resumed run draws the same."""

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None: ...


class LanguageModeling:
    """Next-token prediction on a token stream: random windows of max_len + 1 tokens; evaluations in
    bits per character on the validation stream (its first `eval_tokens`; the final on its first
    `final_eval_chars` characters, or all of it)."""

    def __init__(self, train: TokenStream, valid: TokenStream, eval_tokens: int, final_eval_chars: int) -> None:
        self.train, self.valid, self.eval_tokens, self.final_eval_chars = train, valid, eval_tokens, final_eval_chars
        self.batches: Batches | None = None

    def start(self, model: LanguageModel, sequences: int, seed: int, device: str) -> None:
        max_len = model.config.max_len
        check_length(self.train, max_len, "the training split")
        self.batches = Batches(self.train.tokens, max_len, sequences, seed + 1, device)

    def _started(self) -> Batches:
        assert self.batches is not None, "start() first: the loop starts an objective before it draws or saves"
        return self.batches

    def draw(self) -> Batch:
        return self._started().next()

    def loss(self, forward: Forward, batch: Batch, whole: Batch, world: int) -> torch.Tensor:
        x_BL, y_BL = batch
        logits_BLV = forward(x_BL)
        parts = len(whole[0]) // (len(x_BL) * world)  # micro-batches per process, all of one size
        return F.cross_entropy(logits_BLV.flatten(0, 1).float(), y_BL.flatten()) / parts

    def tokens(self, batch: Batch) -> int:
        return batch[0].numel()

    def evaluate(self, model: LanguageModel) -> dict[str, float]:
        ev = evaluate(model, self.valid, max_tokens=self.eval_tokens)
        return {"val_loss": ev.loss, "val_bpc": ev.bpc}

    def final(self, model: LanguageModel) -> tuple[dict[str, Any], EvalResult]:
        ev = evaluate(model, self.valid, max_chars=self.final_eval_chars)
        return {"val_loss": ev.loss, "val_bpc": ev.bpc, "val_chars": ev.chars}, ev

    def describe(self, fields: dict[str, Any]) -> str:
        text = f"val loss {fields['val_loss']:.3f} nats/token, {fields['val_bpc']:.3f} bits/char"
        return text + (f" over {fields['val_chars']:,} chars" if "val_chars" in fields else "")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rng.batches": self._started().state_dict()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self._started().load_state_dict(tensors["rng.batches"])


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C: the checkpoint is saved and the run can be resumed."""

    def __init__(self, step: int, checkpoint: Path, during: str = "") -> None:
        super().__init__(
            f"interrupted at step {step}{during}; checkpoint saved in {checkpoint}; "
            "to continue, run the same command with --resume"
        )
        self.step, self.checkpoint = step, checkpoint


class TrainingDiverged(Exception):
    """Raised when the loss stops being a number: the weights of that step are not saved."""

    def __init__(self, step: int, what: str, checkpoint: Path | None, saved_step: int | None) -> None:
        kept = (
            f"the last good checkpoint (step {saved_step}) is kept in {checkpoint}"
            if checkpoint is not None
            else "no checkpoint was saved before it"
        )
        super().__init__(f"{what} at step {step}; {kept}; lower --lr and train again")
        self.step, self.checkpoint = step, checkpoint


@dataclass
class TrainResult(Generic[ModelT, FinalT]):
    model: ModelT
    steps: int
    train_time_s: float
    tokens_per_s: float
    final: FinalT  # a language model's `EvalResult`; the encoder-decoder's loss and exact match
    checkpoint: Path
    log: list[dict[str, Any]] = field(default_factory=list)
    tokenizer: Tokenizer | None = None


@dataclass
class TrainState:
    """Where training stands: what a run's checkpoint keeps in state.json to continue exactly.

    `run` holds what the run says about itself (its data source, preset, variant); it is written at
    the top level of state.json, beside the counters, as checkpoints have always had it.
    """

    train: TrainConfig
    step: int = 0
    elapsed_s: float = 0.0  # seconds of training, evaluation excluded
    tokens_seen: int = 0
    loss_acc: tuple[float, int] = (0.0, 0)  # sum and count of step losses since the last logged row
    last_train_loss: float | None = None
    next_eval_s: float = 0.0  # with eval_every_s: the training time of the next evaluation
    world_size: int = 1  # processes that trained it (the global batch is batch_size x world_size x grad_accum)
    grad_scaler: dict[str, Any] = field(default_factory=dict)  # fp16's loss scale ({} when unused)
    run: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "run"}
        return {**self.run, **values, "train": asdict(self.train), "loss_acc": list(self.loss_acc)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "checkpoint") -> TrainState:
        """The state of a checkpoint's state.json, checked: types, counters >= 0, the saved settings."""
        if not isinstance(d, dict) or "train" not in d or "step" not in d:
            raise AttnlabError(f"{where}: has no training state to resume from")
        types = {**field_types(cls), "train": (dict,)}
        del types["run"]
        values = check_object({k: v for k, v in d.items() if k in types}, f"{where}: state.json", types)
        for name in ("step", "elapsed_s", "tokens_seen", "next_eval_s"):
            if name in values and not 0 <= values[name] < math.inf:
                raise AttnlabError(f'{where}: state.json: "{name}" is {values[name]}, not a count >= 0')
        if values.get("world_size", 1) < 1:
            raise AttnlabError(f'{where}: state.json: "world_size" is {values["world_size"]}, not >= 1')
        loss_acc = values.get("loss_acc", [0.0, 0])
        if len(loss_acc) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in loss_acc):
            raise AttnlabError(f'{where}: state.json: "loss_acc" is {loss_acc!r}, not [sum, count]')
        values["loss_acc"] = (float(loss_acc[0]), int(loss_acc[1]))
        values["train"] = TrainConfig.from_dict(d["train"], f'{where}: state.json: "train"')
        run = {k: v for k, v in d.items() if k not in types and k != "optimizer"}
        return cls(**values, run=run)


def make_optimizer(model: Model, tcfg: TrainConfig, device: str) -> torch.optim.Optimizer | MuonWithAdamW:
    betas = (tcfg.beta1, tcfg.beta2)
    return optim.make_optimizer(model, tcfg.optimizer, tcfg.lr, tcfg.weight_decay, betas, device, tcfg.embed_lr_ratio)


class _StopFlag:
    """Turns SIGINT into a flag checked between steps, so a step is never cut in half."""

    def __init__(self) -> None:
        self.stop = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C is not ours to catch
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.stop = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


LOG_KINDS = ("train", "eval", "final")


def log_kind(row: dict[str, Any]) -> str:
    """What a metrics.jsonl row records: "train" (the training loss since the previous row), "eval" (that
    and a validation point on the first `eval_tokens` tokens) or "final" (the whole final evaluation).

    Rows say so in "kind"; logs written before they did are read by their keys, the one place that does.
    """
    if row.get("kind") in LOG_KINDS:
        return row["kind"]
    if row.get("final"):
        return "final"
    return "eval" if "val_bpc" in row else "train"


def log_rows(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The rows of one kind (`LOG_KINDS`), in order."""
    return [r for r in rows if log_kind(r) == kind]


def _trim_log(log_path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint, so a resumed run's log reads as one uninterrupted run
    (and a line cut short by a kill goes too)."""
    if log_path.exists():
        rows = read_json_lines(log_path)
        kept = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= step and log_kind(r) != "final"]
        write_text_atomically(log_path, "".join(json.dumps(r) + "\n" for r in kept))


def train(
    model: LanguageModel,
    tokenizer: Tokenizer,
    train_stream: TokenStream,
    valid_stream: TokenStream,
    tcfg: TrainConfig,
    out_dir: str | Path,
    run_info: dict[str, Any] | None = None,
    resume: Checkpoint[LanguageModel] | None = None,
    callback: Callback | None = None,
    desc: str = "train",
) -> TrainResult[LanguageModel, EvalResult]:
    """Train a language model in place on `train_stream`, evaluated on `valid_stream` (see `fit`)."""
    task = LanguageModeling(train_stream, valid_stream, tcfg.eval_tokens, tcfg.final_eval_chars)
    return fit(model, task, tcfg, out_dir, tokenizer, run_info, resume, callback, desc)


def fit(
    model: ModelT,
    task: Objective[ModelT, FinalT],
    tcfg: TrainConfig,
    out_dir: str | Path,
    tokenizer: Tokenizer | None = None,
    run_info: dict[str, Any] | None = None,
    resume: Checkpoint[ModelT] | None = None,
    callback: Callback | None = None,
    desc: str = "train",
) -> TrainResult[ModelT, FinalT]:
    """Train `model` in place on `task`, logging to out_dir/metrics.jsonl and checkpointing to out_dir/checkpoint.

    `resume`: a checkpoint of this run loaded `with_state`, to continue from (see `attnlab.training.run.resume`).
    `run_info` is kept in the checkpoint's state, and `tokenizer` in its config. `callback(step, row)` is
    called after every step; returning True stops the run as Ctrl-C would.
    """
    tcfg.validate()
    device = str(next(model.parameters()).device)
    set_matmul_precision(device, tcfg.tf32)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint"
    log_path = out_dir / "metrics.jsonl"
    world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    per_rank = tcfg.batch_size * tcfg.grad_accum
    # Every process draws the same global batch and trains on its slice: results do not depend on `world`.
    task.start(model, per_rank * world, tcfg.seed, device)
    optimizer = make_optimizer(model, tcfg, device)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=tcfg.dtype == "fp16" and device.startswith("cuda"))
    st = _start_state(task, tcfg, optimizer, scaler, device, log_path, run_info, resume)
    log: list[dict[str, Any]] = []

    def write_row(row: dict[str, Any]) -> None:
        log.append(row)
        if main:
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    saved_step = st.step if resume is not None else None  # the step of the checkpoint on disk

    def diverged(step: int, what: str) -> TrainingDiverged:
        return TrainingDiverged(step, what, ckpt_path if saved_step is not None else None, saved_step)

    def save() -> Path:
        nonlocal saved_step
        if not all(bool(p.isfinite().all()) for p in model.parameters()):  # never overwrite the last good one
            raise diverged(st.step, "the weights stopped being finite numbers")
        saved_step = st.step
        if not main:
            return ckpt_path
        tensors = {"rng.torch": torch.get_rng_state(), **task.state_dict()}
        if device.startswith("cuda"):
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        st.grad_scaler = scaler.state_dict()
        return save_checkpoint(ckpt_path, model, tokenizer, st.to_dict(), tensors, optimizer)

    def budget_left() -> bool:
        return (tcfg.steps is None or st.step < tcfg.steps) and (tcfg.max_time is None or st.elapsed_s < tcfg.max_time)

    def progress() -> float:
        parts = [st.step / tcfg.steps] if tcfg.steps else []
        parts += [st.elapsed_s / tcfg.max_time] if tcfg.max_time else []
        return max(parts)

    ddp = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None
        )
    forward: Forward = ddp or model
    forward = torch.compile(forward) if tcfg.compile else forward  # checkpoints keep saving `model` itself
    model.train()
    governor = ThreadGovernor(enabled=device == "cpu", log=notice)  # fewer threads while others take CPUs
    bar = tqdm(
        total=tcfg.steps, initial=st.step, desc=desc, unit="step", disable=None if main else True, file=sys.stderr
    )
    d_model = model.config.emb_dim
    with _StopFlag() as flag:
        while distributed.all_agree(budget_left() and not flag.stop, device):
            governor.adjust()
            t0 = time.perf_counter()
            lr = scheduled_lr(tcfg, st.step, progress(), d_model)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_ratio", 1.0)  # the embeddings' group may have its own ratio
            batch_G = task.draw()  # the global batch; this process takes rows [rank * per_rank, ...)
            optimizer.zero_grad(set_to_none=True)
            loss_value = _backward(task, forward, batch_G, rank * per_rank, tcfg, ddp, scaler, device)
            if not math.isfinite(loss_value):  # stop before the step: the saved weights stay the last good ones
                bar.close()
                distributed.barrier()
                raise diverged(st.step + 1, f"the training loss became {loss_value}")
            _optimizer_step(model, optimizer, scaler, tcfg.grad_clip)
            st.elapsed_s += time.perf_counter() - t0
            st.step += 1
            st.tokens_seen += task.tokens(batch_G)
            st.loss_acc = (st.loss_acc[0] + loss_value, st.loss_acc[1] + 1)
            tok_s = st.tokens_seen / max(st.elapsed_s, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
            row, is_eval = _train_row(st, lr, tok_s)
            if is_eval and budget_left() and main:
                fields_ = task.evaluate(model)
                row.update(kind="eval", **fields_)
                bar.write(
                    f"{desc} step {st.step}: train loss {row['train_loss']:.3f}, {task.describe(fields_)}",
                    file=sys.stderr,
                )
            if row:
                write_row(row)
            if is_eval:
                save()
            if callback is not None and callback(st.step, row):
                flag.stop = True
        bar.close()
        if not distributed.all_agree(not (flag.stop and budget_left()), device):
            path = save()
            distributed.barrier()
            raise TrainingInterrupted(st.step, path)
    governor.restore()
    path = save()  # before the final evaluation, so Ctrl-C during it loses no training
    try:
        fields_, final = task.final(model)
    except KeyboardInterrupt:
        raise TrainingInterrupted(st.step, path, " during the final evaluation") from None
    tok_s = st.tokens_seen / max(st.elapsed_s, 1e-9)
    final_row = {
        "kind": "final",
        "step": st.step,
        "train_loss": st.loss_acc[0] / st.loss_acc[1] if st.loss_acc[1] else st.last_train_loss,
        **fields_,
        "elapsed_s": round(st.elapsed_s, 3),
        "tokens_per_s": round(tok_s, 1),
        "final": True,
    }
    write_row(final_row)
    distributed.barrier()
    if main:
        notice(
            f"{desc}: {st.step} steps in {st.elapsed_s:.1f} s ({tok_s:,.0f} tokens/s); final {task.describe(fields_)}"
        )
    return TrainResult(model, st.step, st.elapsed_s, tok_s, final, path, log, tokenizer)


def _start_state(
    task: Objective[ModelT, FinalT],
    tcfg: TrainConfig,
    optimizer: torch.optim.Optimizer | MuonWithAdamW,
    scaler: torch.amp.GradScaler,
    device: str,
    log_path: Path,
    run_info: dict[str, Any] | None,
    resume: Checkpoint[ModelT] | None,
) -> TrainState:
    """A new run's state (and no log yet), or the state `resume` saved, with the optimizer, the task's
    data position, the random generators and the log put back as they were at its step."""
    world, main = distributed.world_size(), distributed.is_main()
    if resume is None:
        if main and log_path.exists():
            log_path.unlink()
        return TrainState(tcfg, next_eval_s=tcfg.eval_every_s or 0.0, world_size=world, run=dict(run_info or {}))
    st = TrainState.from_dict(resume.state, str(resume.path))
    st.train, st.world_size, st.run = tcfg, world, {**st.run, **(run_info or {})}
    wanted = [*task.state_dict(), "rng.torch"]
    if missing := [k for k in wanted if k not in resume.tensors]:
        raise AttnlabError(
            f"checkpoint {resume.path}: no {missing[0]} (its optimizer.safetensors is missing or incomplete), "
            "so it cannot continue; start the run again"
        )
    resume.restore_optimizer(optimizer)
    if main:
        notice(f"resuming {resume.path} at step {st.step} on {device if world == 1 else f'{world} processes'}")
    task.load_state_dict(resume.tensors)
    torch.set_rng_state(resume.tensors["rng.torch"])
    if device.startswith("cuda") and "rng.cuda" in resume.tensors:
        torch.cuda.set_rng_state(resume.tensors["rng.cuda"], device)  # this run's GPU, not the current one
    if st.grad_scaler and scaler.is_enabled():
        scaler.load_state_dict(st.grad_scaler)
    if main:
        _trim_log(log_path, st.step)
    return st


def _backward(
    task: Objective[ModelT, FinalT],
    forward: Forward,
    batch_G: Batch,
    mine: int,
    tcfg: TrainConfig,
    ddp: torch.nn.parallel.DistributedDataParallel | None,
    scaler: torch.amp.GradScaler,
    device: str,
) -> float:
    """Gradients of this process's rows of the global batch (from row `mine`), in `grad_accum`
    micro-batches; returns the loss averaged over the global batch."""
    world = distributed.world_size()
    loss_value = 0.0
    for a in range(tcfg.grad_accum):
        rows = slice(mine + a * tcfg.batch_size, mine + (a + 1) * tcfg.batch_size)
        last = a == tcfg.grad_accum - 1
        with ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext():
            with autocast_context(device, tcfg.dtype):
                loss = task.loss(forward, tuple(t[rows] for t in batch_G), batch_G, world)
            scaler.scale(loss).backward()
        loss_value += loss.item()  # also waits for the device, so the step's timing is honest
    return distributed.mean_across(loss_value, device)


def _optimizer_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | MuonWithAdamW, scaler: torch.amp.GradScaler, clip: float
) -> None:
    """Clip the gradients' norm to `clip` (0: no clipping), step, and let fp16's scaler adjust."""
    # GradScaler reads only `param_groups` and calls `step()`, which MuonWithAdamW has too; torch's
    # stub asks for a torch.optim.Optimizer.
    if clip > 0:
        scaler.unscale_(optimizer)  # type: ignore[arg-type]
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(optimizer)  # type: ignore[arg-type]
    scaler.update()


def _train_row(st: TrainState, lr: float, tok_s: float) -> tuple[dict[str, Any], bool]:
    """The step just taken's row of metrics.jsonl (empty between logged steps), and whether the run
    evaluates and saves at it (every `eval_every` steps, or `eval_every_s` seconds)."""
    tcfg = st.train
    is_eval = st.step % tcfg.eval_every == 0
    if tcfg.eval_every_s and st.elapsed_s >= st.next_eval_s:
        is_eval, st.next_eval_s = True, st.elapsed_s + tcfg.eval_every_s
    if st.step % tcfg.log_every and not is_eval:
        return {}, is_eval
    loss_sum, loss_count = st.loss_acc
    row: dict[str, Any] = {
        "kind": "train",
        "step": st.step,
        "train_loss": loss_sum / loss_count,
        "lr": lr,
        "elapsed_s": round(st.elapsed_s, 3),
        "tokens_per_s": round(tok_s, 1),
    }
    st.last_train_loss, st.loss_acc = row["train_loss"], (0.0, 0)
    return row, is_eval
