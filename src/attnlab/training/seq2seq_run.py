"""Training, evaluating and using the encoder-decoder on a task or a parallel text file.

```python
from attnlab.training import seq2seq_run

seq2seq_run.train_seq2seq("runs/reverse", task="reverse", max_time=300)
seq2seq_run.resume_seq2seq("runs/reverse", max_time=600)  # the same run, continued
seq2seq_run.evaluate_seq2seq("runs/reverse")          # {"task": "reverse", "examples": 1000, "exact_match": ...}
seq2seq_run.translate("runs/reverse", ["abcdef"], beam=4)
```

It trains through the language models' own loop (`train.fit`, with the `Translation` objective), so
a run has what theirs have: a checkpoint every `eval_every` steps with the optimizer and random
states, exact resume (`resume_seq2seq`), Ctrl-C that saves, the stop on a non-finite loss, Muon,
bf16 / fp16, compile, processes under torchrun and the thread adjustment. A run folder holds
`checkpoint/` (weights, config, optimizer; `state.json` with the task or data file, the vocabulary
and the `TrainState`) and `metrics.jsonl` (the training loss every `log_every` steps, and at each
evaluation the loss and exact match on the first 200 test pairs; the final row on all of them).
Training draws fresh pairs of the task's train split every step (a file's train pairs, in shuffled
passes) and is fed by teacher forcing; `evaluate_seq2seq` decodes the fixed test split and counts
exact matches.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..data.tasks import TASKS, Pair, PairVocab, held_out_pairs, in_test_split, read_pairs, task_pairs, teacher_forcing
from ..errors import AttnlabError
from ..models import ModelConfig, Seq2SeqTransformer, preset_config
from ..models.seq2seq import BOS, PAD
from ..models.translate import beam_search, greedy_decode
from ..runtime import distributed
from ..runtime.devices import resolve_device
from ..runtime.environment import notice
from .checkpoint import OPTIMIZER, Checkpoint, check_checkpoint, read_weights
from .run import check_fits, processes, refuse_changes, refuse_checkpoint_folder
from .train import Batch, Callback, Forward, TrainConfig, TrainResult, TrainState, fit


class PairStream:
    """The training pairs, endless: a task's train split drawn with a seeded `random.Random`, or a file's
    train pairs in shuffled passes. Its state (the generator's, at the start of the current pass for a
    file, and the position in it) travels with each checkpoint, so a resumed run draws what the
    uninterrupted one would have."""

    def __init__(self, task: str | None, pairs: list[Pair] | None, seed: int) -> None:
        self.task, self.pairs = task, pairs
        self.rng = random.Random(seed)
        self.pass_state = self.rng.getstate()
        self.order: list[Pair] = []
        self.pos = 0
        if task is not None and task not in TASKS:
            raise AttnlabError(f"--task {task}: choose one of {', '.join(TASKS)}")

    def __next__(self) -> Pair:
        if self.task is not None:  # as tasks.task_pairs draws them
            while in_test_split((pair := TASKS[self.task](self.rng))[0]):
                pass
            return pair
        assert self.pairs is not None  # no task: a file's pairs (load_data gives one or the other)
        if self.pos == len(self.order):
            self.pass_state = self.rng.getstate()
            self.order = self.pairs[:]
            self.rng.shuffle(self.order)
            self.pos = 0
        self.pos += 1
        return self.order[self.pos - 1]

    def __iter__(self) -> Iterator[Pair]:
        return self

    def state_dict(self) -> torch.Tensor:
        version, internal, _ = self.pass_state if self.task is None else self.rng.getstate()
        return torch.tensor([version, *internal, self.pos], dtype=torch.int64)

    def load_state_dict(self, state: torch.Tensor) -> None:
        values = [int(v) for v in state.tolist()]
        if len(values) != 627:
            raise AttnlabError(f"the saved pair stream state has {len(values)} numbers, not 627; start the run again")
        self.rng.setstate((values[0], tuple(values[1:-1]), None))
        if self.task is None:  # the pass's shuffle again, then on to the saved position
            self.order, self.pos = [], 0
            next(self)
            self.pos = values[-1]


@dataclass
class Seq2SeqData:
    name: str  # the task, or the file
    train: PairStream  # endless
    test: list[Pair]
    vocab: PairVocab


def load_data(task: str | None = None, data: str | None = None, seed: int = 0) -> Seq2SeqData:
    """A task's endless train stream and fixed test split, or a `source<TAB>target` file's two splits."""
    if (task is None) == (data is None):
        raise AttnlabError("give one of --task NAME or --data FILE.tsv")
    if task is not None:
        test = held_out_pairs(task)  # an unknown task is named there
        sample = [p for p, _ in zip(task_pairs(task, "train", seed + 1), range(20_000), strict=False)]
        return Seq2SeqData(task, PairStream(task, None, seed), test, PairVocab.from_pairs(sample + test))
    train, test = read_pairs(str(data))
    return Seq2SeqData(str(data), PairStream(None, train, seed), test, PairVocab.from_pairs(train + test))


def seq2seq_config(
    vocab: PairVocab, preset: str = "seq2seq-small", overrides: dict[str, Any] | None = None
) -> ModelConfig:
    return preset_config(preset, model="seq2seq", n_vocab=vocab.n_vocab).with_overrides(overrides or {})


def check_lengths(pairs: list[Pair], vocab: PairVocab, max_len: int) -> None:
    """Every source, and every target with its <bos> or <eos>, fits in max_len positions."""
    too_long = next((p for p in pairs if max(len(vocab.encode(p[0])), len(vocab.encode(p[1])) + 1) > max_len), None)
    if too_long is not None:
        source, target = too_long[0][:30], too_long[1][:30]
        raise AttnlabError(f"the pair {source!r} -> {target!r} is longer than max_len={max_len}; --set max_len=N")


def _batch(pairs: list[Pair], vocab: PairVocab, max_len: int, device: str) -> Batch:
    batch = teacher_forcing(pairs, vocab)
    if max(batch.encoder_input_BS.shape[1], batch.decoder_input_BL.shape[1]) > max_len:
        check_lengths(pairs, vocab, max_len)  # names the pair that does not fit
    return tuple(t.to(device) for t in (batch.encoder_input_BS, batch.decoder_input_BL, batch.labels_BL))


EVAL_PAIRS = 200  # the held-back slice of the test split that periodic evaluations decode


class Translation:
    """The encoder-decoder's objective for the one training loop (`train.fit`): teacher-forced batches
    of fresh pairs, cross-entropy over the target's tokens (padding ignored, optional label smoothing),
    and evaluations by loss and exact match: periodically on the first `EVAL_PAIRS` test pairs, at the
    end on the whole test split."""

    def __init__(self, data: Seq2SeqData, label_smoothing: float = 0.0) -> None:
        self.data, self.label_smoothing = data, label_smoothing
        self.rows, self.device, self.max_len = 0, "cpu", 0

    def start(self, model: Seq2SeqTransformer, sequences: int, seed: int, device: str) -> None:
        self.rows, self.device, self.max_len = sequences, device, model.config.max_len
        check_lengths(self.data.test, self.data.vocab, self.max_len)

    def draw(self) -> Batch:
        return _batch([next(self.data.train) for _ in range(self.rows)], self.data.vocab, self.max_len, self.device)

    def loss(self, forward: Forward, batch: Batch, whole: Batch, world: int) -> torch.Tensor:
        """The micro-batch's summed loss over the global batch's target tokens: pairs differ in length, so
        averaging per micro-batch would weigh a short pair's tokens more when accumulating or with processes."""
        src_BS, dec_BL, labels_BL = batch
        logits_BLV = forward(src_BS, dec_BL)
        total = F.cross_entropy(
            logits_BLV.flatten(0, 1).float(),
            labels_BL.flatten(),
            ignore_index=PAD,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )
        return total * world / self.tokens(whole)

    def tokens(self, batch: Batch) -> int:
        return int((batch[2] != PAD).sum())

    @torch.no_grad()
    def _measure(self, model: Seq2SeqTransformer, pairs: list[Pair]) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        total = count = 0.0
        for i in range(0, len(pairs), 250):
            src_BS, dec_BL, labels_BL = _batch(pairs[i : i + 250], self.data.vocab, self.max_len, self.device)
            logits_BLV = model(src_BS, dec_BL)
            total += F.cross_entropy(
                logits_BLV.flatten(0, 1).float(), labels_BL.flatten(), ignore_index=PAD, reduction="sum"
            ).item()
            count += int((labels_BL != PAD).sum())
        run = Seq2SeqRun(model, self.data.vocab, {})
        outputs = decode_texts(run, [source for source, _ in pairs])
        model.train(was_training)
        correct = sum(out == target for out, (_, target) in zip(outputs, pairs, strict=True))
        return {"val_loss": total / count, "exact_match": correct / len(pairs), "examples": len(pairs)}

    def evaluate(self, model: Seq2SeqTransformer) -> dict[str, float]:
        return self._measure(model, self.data.test[:EVAL_PAIRS])

    def final(self, model: Seq2SeqTransformer) -> tuple[dict[str, Any], dict[str, Any]]:
        fields = self._measure(model, self.data.test)
        return fields, fields

    def describe(self, fields: dict[str, Any]) -> str:
        return (
            f"val loss {fields['val_loss']:.3f} nats/token, exact match {fields['exact_match']:.1%} "
            f"of {fields['examples']:,} test pairs"
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rng.pairs": self.data.train.state_dict()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.data.train.load_state_dict(tensors["rng.pairs"])


# The settings a new run starts with where a language model's differ (the paper's: no weight decay,
# Adam's beta2 0.98 with the noam schedule).
DEFAULTS = {"batch_size": 64, "lr": 1e-3, "warmup_steps": 200, "weight_decay": 0.0, "log_every": 50}


def _train_config(fields: dict[str, Any]) -> TrainConfig:
    settings = {**DEFAULTS, **{k: v for k, v in fields.items() if v is not None}}
    settings.setdefault("beta2", 0.98 if settings.get("schedule") == "noam" else 0.99)
    tcfg = TrainConfig(**settings)
    tcfg.validate()
    if tcfg.warmup_steps < 1:
        raise AttnlabError(f"--warmup-steps {tcfg.warmup_steps}: must be >= 1 (the schedules divide by it)")
    return tcfg


def train_seq2seq(
    out_dir: str | Path,
    *,
    task: str | None = None,
    data: str | None = None,
    preset: str = "seq2seq-small",
    config: dict[str, Any] | None = None,
    label_smoothing: float = 0.0,
    callback: Callback | None = None,
    **train_fields: Any,
) -> TrainResult[Seq2SeqTransformer, dict[str, Any]]:
    """Train a new encoder-decoder in `out_dir` through the one training loop (`train.fit`).

    `train_fields` are `TrainConfig` fields (a budget: `steps`, `max_time`; `batch_size`, `lr`,
    `warmup_steps`, `schedule` ("cosine", "wsd" or the paper's "noam"), `eval_every`, `optimizer`,
    `dtype`, `compile`, `seed`, `device`, ...), defaulting to `DEFAULTS` where a language model's differ.
    """
    tcfg = _train_config(train_fields)
    if not 0 <= label_smoothing < 1:
        raise AttnlabError(f"--label-smoothing {label_smoothing}: out of range; give a number in [0, 1)")
    with processes(tcfg.device) as tcfg.device:
        prepared = load_data(task, data, tcfg.seed)
        cfg = seq2seq_config(prepared.vocab, preset, config)
        check_fits(cfg, training=True, batch_size=tcfg.batch_size, grad_accum=tcfg.grad_accum)
        check_lengths(prepared.test, prepared.vocab, cfg.max_len)  # before any work: the test pairs are like the rest
        torch.manual_seed(tcfg.seed)
        model = Seq2SeqTransformer(cfg).to(tcfg.device)
        if distributed.is_main():
            notice(
                f"seq2seq: training an encoder-decoder of {model.num_params():,} parameters on {prepared.name} "
                f"({tcfg.device})"
            )
        info = {
            "kind": "seq2seq",
            "task": task,
            "data": data,
            "vocab": prepared.vocab.to_dict(),
            "preset": preset,
            "label_smoothing": label_smoothing,
        }
        objective = Translation(prepared, label_smoothing)
        return fit(model, objective, tcfg, out_dir, None, info, callback=callback, desc="seq2seq")


def resume_seq2seq(
    out_dir: str | Path,
    *,
    same_as: dict[str, Any] | None = None,
    callback: Callback | None = None,
    **train_fields: Any,
) -> TrainResult[Seq2SeqTransformer, dict[str, Any]]:
    """Continue the encoder-decoder run in `out_dir` exactly where it stopped (a new `steps` or `max_time`
    extends it); the saved settings hold unless `train_fields` change them. `same_as` holds what the
    caller asked the run to be (`task`, `data`, `preset`, `label_smoothing`, `config` fields; None: not
    asked): anything the run is not is refused, as is another optimizer."""
    refuse_checkpoint_folder(out_dir)
    ckpt_path, cfg, _, state = check_checkpoint(out_dir)
    if cfg.model != "seq2seq" or state.get("kind") != "seq2seq":
        raise AttnlabError(f"{ckpt_path}: not an encoder-decoder run; resume it with attnlab train --resume")
    if "optimizer" not in state:
        raise AttnlabError(
            f"{ckpt_path}: saved by an earlier attnlab without its optimizer and random states, so it cannot "
            "continue; train it again (it still translates: attnlab seq2seq eval / translate)"
        )
    saved = TrainState.from_dict(state, str(ckpt_path))
    asked = {**(same_as or {}), "optimizer": train_fields.get("optimizer")}
    source = {key: saved.run.get(key) for key in ("task", "data") if saved.run.get(key)}
    wanted = {key: asked.pop(key) for key in ("task", "data") if asked.get(key)}
    if wanted and wanted != source:
        (flag, value), (key, trained_on) = next(iter(wanted.items())), next(iter(source.items()))
        raise AttnlabError(
            f"--{flag} {value}: the run in {out_dir} was trained on {key} {trained_on}; "
            "start a new run in another --out, or resume without it"
        )
    is_now = {key: saved.run.get(key) for key in ("preset", "label_smoothing")}
    refuse_changes(cfg, {**is_now, "optimizer": saved.train.optimizer}, asked, out_dir)
    tcfg = dataclasses.replace(saved.train, **{k: v for k, v in train_fields.items() if v is not None})
    tcfg.validate()
    check_fits(cfg, training=True, batch_size=tcfg.batch_size, grad_accum=tcfg.grad_accum)
    with processes(tcfg.device, fallback="device" not in train_fields) as tcfg.device:
        model = Seq2SeqTransformer(cfg)
        model.load_state_dict(read_weights(ckpt_path))
        model.to(tcfg.device)
        tensors = load_file(ckpt_path / OPTIMIZER) if (ckpt_path / OPTIMIZER).is_file() else {}
        ckpt = Checkpoint(model, None, ckpt_path, state, tensors)
        task, data = saved.run.get("task"), saved.run.get("data")
        prepared = load_data(task, data, tcfg.seed)
        vocab = PairVocab.from_dict(saved.run.get("vocab"), f"{ckpt_path / 'state.json'}: vocab")
        prepared.vocab = vocab  # the run's own ids, whatever the data gives now
        smoothing = saved.run.get("label_smoothing", 0.0)
        objective = Translation(prepared, smoothing if isinstance(smoothing, float) else 0.0)
        return fit(model, objective, tcfg, out_dir, None, {}, ckpt, callback, "seq2seq")


@dataclass
class Seq2SeqRun:
    model: Seq2SeqTransformer
    vocab: PairVocab
    state: dict[str, Any]


def load_seq2seq(path: str | Path, device: str = "cpu") -> Seq2SeqRun:
    """A trained encoder-decoder (a run folder or its checkpoint), checked as a whole before it is built."""
    ckpt, cfg, _, state = check_checkpoint(path)
    if cfg.model != "seq2seq" or state.get("kind") != "seq2seq":
        raise AttnlabError(f"{ckpt}: not an encoder-decoder run; give a folder written by `attnlab seq2seq train`")
    vocab = PairVocab.from_dict(state.get("vocab"), f"{ckpt / 'state.json'}: vocab")
    if vocab.n_vocab != cfg.n_vocab:
        raise AttnlabError(f"{ckpt}: a vocabulary of {vocab.n_vocab} tokens for a model of {cfg.n_vocab}")
    model = Seq2SeqTransformer(cfg)
    model.load_state_dict(read_weights(ckpt))
    return Seq2SeqRun(model.to(device).eval(), vocab, state)


def source_and_reading(run: Seq2SeqRun, source: str, target: str | None = None) -> tuple[list[int], list[int]]:
    """The ids of `source`, and of what the decoder reads for it: <bos> and `target`, or by default the
    model's greedy translation. Refused in one line when empty, unknown to the vocabulary or too long."""
    src = run.vocab.encode(source)
    if not src:
        raise AttnlabError("an empty source: give the text to translate")
    max_len = run.model.config.max_len
    if len(src) > max_len:
        raise AttnlabError(f"the source is {len(src)} tokens; this model reads at most {max_len}: shorten it")
    if target is None:
        src_BS = torch.tensor([src], device=next(run.model.parameters()).device)
        reading = greedy_decode(run.model, src_BS, max_len - 1)[0]
    else:
        reading = run.vocab.encode(target)
        if len(reading) > max_len - 1:
            raise AttnlabError(
                f"the target is {len(reading)} tokens; after <bos> at most {max_len - 1} fit: shorten it"
            )
    return src, [BOS, *reading]


def decode_texts(run: Seq2SeqRun, sources: list[str], beam: int = 1, batch_size: int = 250) -> list[str]:
    """Each source's target: greedy (batched) with `beam=1`, else beam search (one source at a time)."""
    device = next(run.model.parameters()).device
    max_len = run.model.config.max_len
    outputs: list[str] = []
    for i in range(0, len(sources), batch_size):
        chunk = sources[i : i + batch_size]
        ids = [run.vocab.encode(s)[:max_len] for s in chunk]
        if not all(ids):
            raise AttnlabError("an empty source: give at least one character to translate")
        if beam == 1:
            width = max(map(len, ids))
            src_BS = torch.tensor([row + [PAD] * (width - len(row)) for row in ids], device=device)
            outputs += [run.vocab.decode(out) for out in greedy_decode(run.model, src_BS, max_len)]
        else:
            outputs += [
                run.vocab.decode(beam_search(run.model, torch.tensor(row, device=device), max_len, beam)) for row in ids
            ]
    return outputs


def evaluate_seq2seq(path: str | Path, beam: int = 1, device: str = "auto") -> dict[str, Any]:
    """Exact-match accuracy over the run's test split: {"task", "kind", "examples", "exact_match", "beam"},
    where "task" names the task, or the file when "kind" is "file"."""
    run = load_seq2seq(path, resolve_device(device))
    if run.state.get("task"):
        kind, name, test = "task", run.state["task"], held_out_pairs(run.state["task"])
    else:
        kind, name, test = "file", run.state["data"], read_pairs(run.state["data"])[1]
    predictions = decode_texts(run, [s for s, _ in test], beam)
    correct = sum(p == t for p, (_, t) in zip(predictions, test, strict=True))
    return {"task": name, "kind": kind, "examples": len(test), "exact_match": correct / len(test), "beam": beam}


def translate(path: str | Path, texts: list[str], beam: int = 1, device: str = "auto") -> list[str]:
    return decode_texts(load_seq2seq(path, resolve_device(device)), texts, beam)
