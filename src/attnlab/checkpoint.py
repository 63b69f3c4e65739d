"""Checkpoints: a folder of safetensors (weights, optimizer, RNG) and JSON (config, tokenizer, state).

Nothing is ever unpickled. A checkpoint is written into a temporary folder and swapped in with
renames, so an interrupted save leaves the previous checkpoint loadable (as `NAME.old` for the
instant between the two renames, which `resolve_checkpoint` falls back to).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import AttnlabError
from .models import LanguageModel, ModelConfig, build_model
from .tokenizers import Tokenizer, tokenizer_from_dict

WEIGHTS, CONFIG, STATE, OPTIMIZER = "model.safetensors", "config.json", "state.json", "optimizer.safetensors"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model: LanguageModel
    tokenizer: Tokenizer
    path: Path
    state: dict[str, Any] = field(default_factory=dict)  # training state (step, elapsed, settings...)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # optimizer and RNG state


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and plain values (for JSON)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, per_param in sd["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: Path,
    model: LanguageModel,
    tokenizer: Tokenizer,
    state: dict[str, Any] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint folder at `path` atomically; `tensors` carries optimizer and RNG state."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, tmp / WEIGHTS)
    _fsync(tmp / WEIGHTS)
    if tensors:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / OPTIMIZER)
        _fsync(tmp / OPTIMIZER)
    _write_json(tmp / STATE, state or {})
    # config.json is written last: its presence marks a complete checkpoint.
    _write_json(
        tmp / CONFIG,
        {"format": FORMAT_VERSION, "model": model.config.to_dict(), "tokenizer": tokenizer.to_dict()},
    )
    old = path.with_name(path.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, a run folder (its `checkpoint`), or the `.old` left by an interrupted save."""
    p = Path(path).expanduser()
    for candidate in (p, p / "checkpoint", p.with_name(p.name + ".old"), p / "checkpoint.old"):
        if (candidate / CONFIG).is_file():
            return candidate
    if not p.exists():
        raise AttnlabError(f"no such checkpoint: {str(path)!r}; give a run folder or its checkpoint folder")
    raise AttnlabError(
        f"{path}: not a checkpoint (no {CONFIG}); give a folder written by `attnlab train` or `attnlab lab`"
    )


def load_checkpoint(path: str | Path, device: str = "cpu", with_state: bool = False) -> Checkpoint:
    """Load a checkpoint (folder or run folder); optimizer/RNG tensors only when `with_state`."""
    ckpt = resolve_checkpoint(path)
    try:
        meta = json.loads((ckpt / CONFIG).read_text())
        cfg = ModelConfig.from_dict(meta["model"])
        tokenizer = tokenizer_from_dict(meta["tokenizer"])
        model = build_model(cfg)
        weights = load_file(ckpt / WEIGHTS)
        model.load_state_dict(weights)
        state = json.loads((ckpt / STATE).read_text()) if (ckpt / STATE).exists() else {}
        tensors = load_file(ckpt / OPTIMIZER) if with_state and (ckpt / OPTIMIZER).exists() else {}
    except AttnlabError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AttnlabError(f"checkpoint {ckpt} is corrupt or incomplete ({first[:200]})") from None
    model.to(device)
    return Checkpoint(model, tokenizer, ckpt, state, tensors)
