"""Training, evaluating and using the encoder-decoder on a task or a parallel text file.

```python
from attnlab import seq2seq_run

seq2seq_run.train_seq2seq("runs/reverse", task="reverse", max_time=300)
seq2seq_run.evaluate_seq2seq("runs/reverse")          # {"task": "reverse", "examples": 1000, "exact_match": ...}
seq2seq_run.translate("runs/reverse", ["abcdef"], beam=4)
```

A run folder holds `checkpoint/` (the model's weights and config; `state.json` with the task or data
file, the vocabulary and the training settings) and `metrics.jsonl` (the training loss every few
steps). Training draws fresh pairs of the task's train split every step (a file's train pairs, in
shuffled passes) and is fed by teacher forcing; evaluation decodes the fixed test split and counts
exact matches.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .checkpoint import check_checkpoint, read_weights, save_checkpoint
from .errors import AttnlabError
from .models import ModelConfig, Seq2SeqTransformer, preset_config
from .models.seq2seq import BOS, PAD
from .models.translate import beam_search, greedy_decode
from .run import check_fits
from .runtime import notice, resolve_device
from .tasks import Pair, PairVocab, held_out_pairs, read_pairs, task_pairs, teacher_forcing
from .train import TrainConfig, cosine_lr

SCHEDULES = ("cosine", "noam")


@dataclass
class Seq2SeqData:
    name: str  # the task, or the file
    train: Iterator[Pair]  # endless
    test: list[Pair]
    vocab: PairVocab


def load_data(task: str | None = None, data: str | None = None, seed: int = 0) -> Seq2SeqData:
    """A task's endless train stream and fixed test split, or a `source<TAB>target` file's two splits."""
    if (task is None) == (data is None):
        raise AttnlabError("give one of --task NAME or --data FILE.tsv")
    if task is not None:
        test = held_out_pairs(task)  # an unknown task is named there
        sample = [p for p, _ in zip(task_pairs(task, "train", seed + 1), range(20_000), strict=False)]
        return Seq2SeqData(task, task_pairs(task, "train", seed), test, PairVocab.from_pairs(sample + test))
    train, test = read_pairs(str(data))

    def passes() -> Iterator[Pair]:
        rng = random.Random(seed)
        while True:
            order = train[:]
            rng.shuffle(order)
            yield from order

    return Seq2SeqData(str(data), passes(), test, PairVocab.from_pairs(train + test))


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


def _batch(pairs: list[Pair], vocab: PairVocab, max_len: int, device: str) -> tuple[torch.Tensor, ...]:
    batch = teacher_forcing(pairs, vocab)
    if max(batch.encoder_input_BS.shape[1], batch.decoder_input_BL.shape[1]) > max_len:
        check_lengths(pairs, vocab, max_len)  # names the pair that does not fit
    return tuple(t.to(device) for t in (batch.encoder_input_BS, batch.decoder_input_BL, batch.labels_BL))


def noam_lr(step: int, emb_dim: int, warmup_steps: int, scale: float = 1.0) -> float:
    """The paper's schedule: d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), times `scale`."""
    step = max(step, 1)
    return scale * emb_dim**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def train_seq2seq(
    out_dir: str | Path,
    *,
    task: str | None = None,
    data: str | None = None,
    preset: str = "seq2seq-small",
    config: dict[str, Any] | None = None,
    max_time: float | None = None,
    steps: int | None = None,
    batch_size: int = 64,
    lr: float = 1e-3,
    warmup_steps: int = 200,
    schedule: str = "cosine",
    label_smoothing: float = 0.0,
    seed: int = 0,
    device: str = "auto",
    log_every: int = 50,
) -> dict[str, Any]:
    """Train a new encoder-decoder in `out_dir`; returns its summary (steps, time, loss, exact match)."""
    # The budget, batch, learning rate and seed are checked as for a language model's run.
    TrainConfig(
        steps=steps, max_time=max_time, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, seed=seed
    ).validate()
    if warmup_steps < 1:
        raise AttnlabError(f"--warmup-steps {warmup_steps}: must be >= 1 (the schedules divide by it)")
    if not 0 <= label_smoothing < 1:
        raise AttnlabError(f"--label-smoothing {label_smoothing}: out of range; give a number in [0, 1)")
    if schedule not in SCHEDULES:
        raise AttnlabError(f"--schedule {schedule}: choose one of {', '.join(SCHEDULES)}")
    device = resolve_device(device)
    prepared = load_data(task, data, seed)
    cfg = seq2seq_config(prepared.vocab, preset, config)
    check_fits(cfg, training=True, batch_size=batch_size)
    check_lengths(prepared.test, prepared.vocab, cfg.max_len)  # before any work: the test pairs are like the rest
    torch.manual_seed(seed)
    model = Seq2SeqTransformer(cfg).to(device)
    notice(f"seq2seq: training an encoder-decoder of {model.num_params():,} parameters on {prepared.name} ({device})")
    betas = (0.9, 0.98) if schedule == "noam" else (0.9, 0.99)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, eps=1e-9, weight_decay=0.0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"
    log_path.unlink(missing_ok=True)
    step, elapsed, loss_sum, loss_n = 0, 0.0, 0.0, 0
    settings = dict(
        preset=preset, steps=steps, max_time=max_time, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
        schedule=schedule, label_smoothing=label_smoothing, seed=seed,
    )  # fmt: skip
    model.train()
    while (steps is None or step < steps) and (max_time is None or elapsed < max_time):
        t0 = time.perf_counter()
        progress = max(step / steps if steps else 0.0, elapsed / max_time if max_time else 0.0)
        if schedule == "noam":
            rate = noam_lr(step + 1, cfg.emb_dim, warmup_steps, lr / 1e-3)  # --lr scales it (1e-3: the paper's)
        else:
            rate = cosine_lr(step, progress, lr, warmup_steps, lr * 0.1)
        for group in optimizer.param_groups:
            group["lr"] = rate
        src_BS, dec_BL, labels_BL = _batch(
            [next(prepared.train) for _ in range(batch_size)], prepared.vocab, cfg.max_len, device
        )
        logits_BLV = model(src_BS, dec_BL)
        loss = F.cross_entropy(
            logits_BLV.flatten(0, 1).float(), labels_BL.flatten(), ignore_index=PAD, label_smoothing=label_smoothing
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise AttnlabError(f"the training loss became {value} at step {step + 1}; lower --lr and train again")
        elapsed += time.perf_counter() - t0
        step += 1
        loss_sum, loss_n = loss_sum + value, loss_n + 1
        if step % log_every == 0:
            with open(log_path, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "kind": "train",
                            "step": step,
                            "train_loss": loss_sum / loss_n,
                            "lr": rate,
                            "elapsed_s": round(elapsed, 3),
                        }
                    )
                    + "\n"
                )
            loss_sum, loss_n = 0.0, 0
    state = {
        "kind": "seq2seq",
        "task": task,
        "data": data,
        "vocab": prepared.vocab.to_dict(),
        "step": step,
        "elapsed_s": elapsed,
        "train": settings,
    }
    save_checkpoint(out / "checkpoint", model, state=state)
    notice(f"seq2seq: {step} steps in {elapsed:.1f} s")
    return {"steps": step, "train_time_s": elapsed, "checkpoint": str(out / "checkpoint")}


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
