"""A training run as one library call: `start` one in a folder, or `resume` the one a folder holds.

```python
from attnlab.training import run

result = run.start("runs/small", data="tinystories", preset="small", max_time=120)
result = run.resume("runs/small", max_time=240)      # the same run, continued to 240 s of training
```

A run folder holds `checkpoint/` (weights, tokenizer, optimizer and random states, and `state.json`:
the `TrainState` that lets the run continue exactly) and `metrics.jsonl`. This module decides
everything around the training loop (`train.train`): the seed and the model it builds, the data,
the device (this machine's, or under `torchrun` each process's), and on resume the settings and
the per-process batch, so that `attnlab train`, `attnlab lab` and `attnlab compare` only parse
their arguments and print.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..data.corpus import Prepared, batch_bytes, check_length, prepare_data
from ..errors import AttnlabError
from ..models import LanguageModel, ModelConfig, build_model, preset_config
from ..models.counts import param_count
from ..runtime import distributed
from ..runtime.checks import memory_limit
from ..runtime.devices import matmul_note, resolve_device
from ..runtime.environment import notice
from .checkpoint import CONFIG, Checkpoint, load_checkpoint
from .train import Callback, EvalResult, TrainConfig, TrainResult, TrainState, train


def activation_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """About what one training step of `batch_size` sequences keeps for the backward pass, in fp32: per
    token and block the residual stream, norms, q/k/v and outputs (~10 C), the MLP's hidden units (~3 F)
    and the attention weights before and after the softmax (2 H L); then the logits and their gradient."""
    C, F, L = cfg.emb_dim, cfg.n_hidden, cfg.max_len
    attention = 2 * cfg.n_heads * L if cfg.model == "transformer" else 0
    per_token = cfg.n_layers * (10 * C + 3 * F + attention) + 3 * cfg.n_vocab
    return batch_size * L * per_token * 4


def check_fits(cfg: ModelConfig, training: bool, batch_size: int = 0, grad_accum: int = 1) -> None:
    """Refuse, before anything is allocated, a model whose fp32 weights (and, to train, gradients, two
    AdamW moments, a micro-batch's activations and the step's token ids, all `grad_accum` micro-batches
    drawn at once) exceed this machine's memory: it would hang or be killed."""
    n = param_count(cfg)
    need = n * 4 * (4 if training else 1)
    have = memory_limit()
    if need > have:
        raise AttnlabError(
            f"a model of {n:,} parameters needs {need / 2**30:,.1f} GiB to {'train' if training else 'hold'}, "
            f"more than the {have / 2**30:,.1f} GiB here; choose a smaller preset or fewer layers and channels"
        )
    if batch_size and need + (act := activation_bytes(cfg, batch_size)) > have:
        raise AttnlabError(
            f"--batch-size {batch_size:,}: a step of {batch_size:,} x {cfg.max_len} tokens needs about "
            f"{act / 2**30:,.1f} GiB of activations, more than the {have / 2**30:,.1f} GiB here; use a smaller "
            "batch (with --grad-accum for the same global batch)"
        )
    ids = batch_bytes(batch_size * grad_accum, cfg.max_len)  # every micro-batch of a step is drawn at once
    if batch_size and grad_accum > 1 and need + act + ids > have:
        raise AttnlabError(
            f"--grad-accum {grad_accum:,}: a step draws its {batch_size:,} x {grad_accum:,} sequences of "
            f"{cfg.max_len} tokens at once, about {ids / 2**30:,.1f} GiB besides the model's "
            f"{(need + act) / 2**30:,.1f} GiB, more than the {have / 2**30:,.1f} GiB here; use a smaller --grad-accum"
        )


def start(
    out_dir: str | Path,
    *,
    data: str | Prepared = "builtin",
    tokenizer: str | None = None,
    model: str = "transformer",
    preset: str = "small",
    config: ModelConfig | dict[str, Any] | None = None,
    run_info: dict[str, Any] | None = None,
    desc: str | None = None,
    callback: Callback | None = None,
    **train_fields: Any,
) -> TrainResult[LanguageModel, EvalResult]:
    """Train a new model in `out_dir` (anything there from an earlier run is replaced).

    `data` is a `--data` source (tokenized with `tokenizer`, by default bytes; token files bring their
    own, and refuse another) or data already prepared (a `Prepared`, so several runs can share one
    tokenization). The model is the `preset`'s `model`, with the fields
    in `config` changed, or `config` itself when it is a `ModelConfig`; its vocabulary is the
    tokenizer's. `train_fields` are `TrainConfig` fields: a budget (`steps`, `max_time`) and any of
    `seed`, `device`, `lr`, `batch_size`, `optimizer`, ... `run_info` is kept in the checkpoint's state.
    `callback(step, row)` is called after every step; returning True stops the run, with a checkpoint
    to resume from (`TrainingInterrupted` is raised, as after Ctrl-C).
    """
    tcfg = TrainConfig(**train_fields)
    tcfg.validate()
    with processes(tcfg.device) as tcfg.device:
        prepared = data if isinstance(data, Prepared) else prepare_data(data, tokenizer)
        n_vocab = prepared.tokenizer.n_vocab
        if isinstance(config, ModelConfig):
            cfg = dataclasses.replace(config, n_vocab=n_vocab)
        else:
            cfg = preset_config(preset, model=model, n_vocab=n_vocab).with_overrides(config or {})
        if cfg.n_vocab != n_vocab:  # fewer: an IndexError at the first batch; more: a checkpoint none can load
            why = (
                "its larger ids would have no embedding"
                if cfg.n_vocab < n_vocab
                else "checkpoints hold a tokenizer of the model's n_vocab, so the run could not be loaded"
            )
            raise AttnlabError(
                f"--set n_vocab={cfg.n_vocab}: the {prepared.tokenizer.name} tokenizer has {n_vocab:,} ids and "
                f"n_vocab must be {n_vocab:,} ({why}); drop --set n_vocab, it follows the tokenizer"
            )
        check_fits(cfg, training=True, batch_size=tcfg.batch_size, grad_accum=tcfg.grad_accum)
        check_length(prepared.train, cfg.max_len, "the training split")
        torch.manual_seed(tcfg.seed)
        net = build_model(cfg).to(tcfg.device)
        if distributed.is_main():
            notice(f"training a {cfg.model} of {net.num_params():,} parameters on {_where(tcfg)}")
        info = {"data": prepared.info(), "preset": preset, **(run_info or {})}
        tok, splits = prepared.tokenizer, (prepared.train, prepared.valid)
        return train(net, tok, *splits, tcfg, out_dir, info, callback=callback, desc=desc or cfg.model)


def resume(
    out_dir: str | Path,
    *,
    data: str | Prepared | None = None,
    desc: str | None = None,
    callback: Callback | None = None,
    same_as: dict[str, Any] | None = None,
    **train_fields: Any,
) -> TrainResult[LanguageModel, EvalResult]:
    """Continue the run in `out_dir` from its checkpoint, exactly where it stopped.

    The saved settings hold unless `train_fields` change them: a new `steps` or `max_time` extends the
    run. The data is the run's own source unless `data` names another. The global batch of the saved
    run is kept when the number of processes changed (a 2-process run resumed in one process doubles
    the per-process batch), unless `batch_size` is given. The run continues on its saved device, or on
    `device`; when that device is not on this machine (a GPU run resumed on a laptop), on the best one
    here, with a notice. `same_as` holds what the caller asked the run to be (`model`, `preset`,
    `tokenizer`, `config` fields; None or empty: not asked): anything the run is not is refused, as is
    another optimizer, since a run continues only as what it was.
    """
    refuse_checkpoint_folder(out_dir)
    ckpt = load_checkpoint(out_dir, with_state=True)
    saved = TrainState.from_dict(ckpt.state, str(ckpt.path))
    _check_same(ckpt, saved, {**(same_as or {}), "optimizer": train_fields.get("optimizer")}, out_dir)
    tcfg = dataclasses.replace(saved.train, **train_fields)
    tcfg.validate()
    check_fits(ckpt.model.config, training=True, batch_size=tcfg.batch_size, grad_accum=tcfg.grad_accum)
    with processes(tcfg.device, fallback="device" not in train_fields) as tcfg.device:
        world = distributed.world_size()
        if world != saved.world_size and "batch_size" not in train_fields:
            global_batch = saved.train.batch_size * saved.world_size
            if global_batch % world:
                raise AttnlabError(f"the saved global batch of {global_batch} does not split over {world} processes")
            tcfg.batch_size = global_batch // world
        tok = ckpt.tokenizer
        if tok is None:
            raise AttnlabError(f"{ckpt.path}: saved without a tokenizer, so not by a run; nothing to resume")
        if isinstance(data, Prepared):
            prepared = data
        else:
            prepared = prepare_data(data or saved.run.get("data", {}).get("source", "builtin"), tok)
        if prepared.tokenizer.to_dict() != tok.to_dict():  # token files carry their own tokenizer
            raise AttnlabError(
                f"--data {prepared.corpus.source}: its tokens were made by another tokenizer "
                f"({prepared.tokenizer.name}) than the run's ({tok.name}); prepare it with the run's tokenizer "
                "or resume on the run's own data"
            )
        model = ckpt.model.to(tcfg.device)
        info, splits = {"data": prepared.info()}, (prepared.train, prepared.valid)
        return train(model, tok, *splits, tcfg, out_dir, info, ckpt, callback, desc or model.config.model)


def _check_same(ckpt: Checkpoint[LanguageModel], saved: TrainState, asked: dict[str, Any], out_dir: str | Path) -> None:
    """Refuse to continue a run as something it is not: another model, preset, tokenizer, config or optimizer."""
    tok = ckpt.tokenizer
    is_now = {
        "model": ckpt.model.config.model,
        "preset": saved.run.get("preset"),
        "tokenizer": tok.to_dict()["kind"] if tok is not None else None,
        "optimizer": saved.train.optimizer,
    }
    if asked.get("tokenizer") and asked["tokenizer"].split(":")[0] == is_now["tokenizer"]:
        asked = {**asked, "tokenizer": None}  # "bpe:300" asks for the run's own kind: its size is the run's
    refuse_changes(ckpt.model.config, is_now, asked, out_dir)


def refuse_checkpoint_folder(out_dir: str | Path) -> None:
    """A run resumes from its run folder: its log and checkpoints go there, not into the checkpoint."""
    if (Path(out_dir) / CONFIG).is_file():
        raise AttnlabError(
            f"--out {out_dir} is a checkpoint folder; give the run folder that holds it ({Path(out_dir).parent})"
        )


def refuse_changes(cfg: ModelConfig, is_now: dict[str, Any], asked: dict[str, Any], out_dir: str | Path) -> None:
    """Refuse, in one line, each setting in `asked` (None: not asked) that differs from the run's own
    (`is_now`, or its model config for "config", a dict of config fields): a run continues only as what
    it was."""
    fix = "start a new run in another --out, or resume without it"
    for key, value in asked.items():
        if key == "config" or value is None or is_now.get(key) is None:
            continue
        if value != is_now[key]:
            flag = key.replace("_", "-")
            raise AttnlabError(f"--{flag} {value}: the run in {out_dir} was trained with {key} {is_now[key]}; {fix}")
    changed = cfg.with_overrides(asked.get("config") or {})
    for key, value in (asked.get("config") or {}).items():
        if getattr(changed, key) != getattr(cfg, key):
            raise AttnlabError(f"--set {key}={value}: the run in {out_dir} has {key}={getattr(cfg, key)}; {fix}")


@contextlib.contextmanager
def processes(device: str, fallback: bool = False) -> Iterator[str]:
    """This process's device, for the time of a run.

    Under `torchrun` the process joins the group (and leaves it at the end, if it joined here) and
    takes its own GPU, or the CPU. Otherwise `device` is resolved here; with `fallback`, a device this
    machine lacks gives way to its best one, with a notice.
    """
    joins = distributed.launched() and not distributed.initialized()
    try:
        rank_device = distributed.init_from_env(device)
        if rank_device is not None:
            yield rank_device
            return
        try:
            device = resolve_device(device)
        except AttnlabError:
            if not fallback:
                raise
            notice(f"notice: --device {device} of the saved run is not available here; choosing again")
            device = resolve_device("auto")
        yield device
    finally:
        if joins:
            distributed.shutdown()


def _where(tcfg: TrainConfig) -> str:
    """The device (or processes) a run trains on, and how its fp32 matmuls run there."""
    world = distributed.world_size()
    where = (
        tcfg.device if world == 1 else f"{world} processes, global batch {tcfg.batch_size * world * tcfg.grad_accum}"
    )
    precision = matmul_note(tcfg.device, tcfg.dtype, tcfg.tf32)
    return f"{where} ({precision})" if precision else where
