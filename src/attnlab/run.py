"""A training run as one library call: `start` one in a folder, or `resume` the one a folder holds.

```python
from attnlab import run

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

from . import distributed
from .checkpoint import load_checkpoint
from .data import Prepared, check_length, prepare_data
from .errors import AttnlabError
from .inspect.params import param_count
from .models import ModelConfig, build_model, preset_config
from .runtime import memory_limit, notice, resolve_device
from .train import Callback, TrainConfig, TrainResult, TrainState, train


def check_fits(cfg: ModelConfig, training: bool) -> None:
    """Refuse, before anything is allocated, a model whose fp32 weights (and, to train, gradients and
    two AdamW moments) exceed this machine's memory: building it would hang or be killed."""
    n = param_count(cfg)
    need = n * 4 * (4 if training else 1)
    have = memory_limit()
    if need > have:
        raise AttnlabError(
            f"a model of {n:,} parameters needs {need / 2**30:,.1f} GiB to {'train' if training else 'hold'}, "
            f"more than the {have / 2**30:,.1f} GiB here; choose a smaller preset or fewer layers and channels"
        )


def start(
    out_dir: str | Path,
    *,
    data: str | Prepared = "builtin",
    tokenizer: str = "bytes",
    model: str = "transformer",
    preset: str = "small",
    config: ModelConfig | dict[str, Any] | None = None,
    run_info: dict[str, Any] | None = None,
    desc: str | None = None,
    callback: Callback | None = None,
    **train_fields: Any,
) -> TrainResult:
    """Train a new model in `out_dir` (anything there from an earlier run is replaced).

    `data` is a `--data` source (tokenized with `tokenizer`) or data already prepared (a `Prepared`,
    so several runs can share one tokenization). The model is the `preset`'s `model`, with the fields
    in `config` changed, or `config` itself when it is a `ModelConfig`; its vocabulary is the
    tokenizer's. `train_fields` are `TrainConfig` fields: a budget (`steps`, `max_time`) and any of
    `seed`, `device`, `lr`, `batch_size`, `optimizer`, ... `run_info` is kept in the checkpoint's state.
    `callback(step, row)` is called after every step; returning True stops the run, with a checkpoint
    to resume from (`TrainingInterrupted` is raised, as after Ctrl-C).
    """
    tcfg = TrainConfig(**train_fields)
    tcfg.validate()
    with _processes(tcfg.device) as tcfg.device:
        prepared = data if isinstance(data, Prepared) else prepare_data(data, tokenizer)
        n_vocab = prepared.tokenizer.n_vocab
        if isinstance(config, ModelConfig):
            cfg = dataclasses.replace(config, n_vocab=n_vocab)
        else:
            cfg = preset_config(preset, model=model, n_vocab=n_vocab).with_overrides(config or {})
        check_length(prepared.train, cfg.max_len, "the training split")
        check_fits(cfg, training=True)
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
    data: str | None = None,
    desc: str | None = None,
    callback: Callback | None = None,
    **train_fields: Any,
) -> TrainResult:
    """Continue the run in `out_dir` from its checkpoint, exactly where it stopped.

    The saved settings hold unless `train_fields` change them: a new `steps` or `max_time` extends the
    run. The data is the run's own source unless `data` names another. The global batch of the saved
    run is kept when the number of processes changed (a 2-process run resumed in one process doubles
    the per-process batch), unless `batch_size` is given. The run continues on its saved device, or on
    `device`; when that device is not on this machine (a GPU run resumed on a laptop), on the best one
    here, with a notice.
    """
    ckpt = load_checkpoint(out_dir, with_state=True)
    saved = TrainState.from_dict(ckpt.state, str(ckpt.path))
    tcfg = dataclasses.replace(saved.train, **train_fields)
    tcfg.validate()
    with _processes(tcfg.device, fallback="device" not in train_fields) as tcfg.device:
        world = distributed.world_size()
        if world != saved.world_size and "batch_size" not in train_fields:
            global_batch = saved.train.batch_size * saved.world_size
            if global_batch % world:
                raise AttnlabError(f"the saved global batch of {global_batch} does not split over {world} processes")
            tcfg.batch_size = global_batch // world
        tok = ckpt.tokenizer
        if tok is None:
            raise AttnlabError(f"{ckpt.path}: saved without a tokenizer, so not by a run; nothing to resume")
        prepared = prepare_data(data or saved.run.get("data", {}).get("source", "builtin"), tok)
        if prepared.tokenizer.to_dict() != tok.to_dict():  # token files carry their own tokenizer
            raise AttnlabError(
                f"--data {data}: its tokens were made by another tokenizer ({prepared.tokenizer.name}) than "
                f"the run's ({tok.name}); prepare it with the run's tokenizer or resume on the run's own data"
            )
        model = ckpt.model.to(tcfg.device)
        if distributed.is_main():
            notice(f"resuming {ckpt.path} at step {saved.step} on {_where(tcfg)}")
        info, splits = {"data": prepared.info()}, (prepared.train, prepared.valid)
        return train(model, tok, *splits, tcfg, out_dir, info, ckpt, callback, desc or model.config.model)


@contextlib.contextmanager
def _processes(device: str, fallback: bool = False) -> Iterator[str]:
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
    world = distributed.world_size()
    if world == 1:
        return tcfg.device
    return f"{world} processes, global batch {tcfg.batch_size * world * tcfg.grad_accum}"
