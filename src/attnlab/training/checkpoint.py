"""Checkpoints: a folder of safetensors (weights, optimizer, RNG) and JSON (config, tokenizer, state).

`save_checkpoint(path, model)` is all a model needs; a tokenizer, an optimizer, a state dict (a
training run's counters and settings) and extra tensors (random states) can travel with it.
`load_checkpoint(path)` builds the model back, or loads into a model and optimizer you built.

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
from typing import Any, Generic, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import AttnlabError
from ..models import LanguageModel, ModelConfig, Seq2SeqTransformer, build_model
from ..models.base import Model
from ..runtime.checks import check_object, json_type_name, memory_limit
from ..runtime.files import read_json, read_json_lines
from ..tokenizers import Tokenizer, tokenizer_from_dict

WEIGHTS, CONFIG, STATE, OPTIMIZER = "model.safetensors", "config.json", "state.json", "optimizer.safetensors"
FORMAT_VERSION = 1


Optimizer = Any  # a torch.optim.Optimizer, or anything with its state_dict / load_state_dict
ModelT = TypeVar("ModelT", bound=Model)  # the model a checkpoint holds: a language model, or the encoder-decoder


@dataclass
class Checkpoint(Generic[ModelT]):
    model: ModelT
    tokenizer: Tokenizer | None  # None when the checkpoint was saved without one
    path: Path
    state: dict[str, Any] = field(default_factory=dict)  # training state (step, elapsed, settings...)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # optimizer and RNG state (with_state)

    def restore_optimizer(self, optimizer: Optimizer) -> None:
        """Load the saved optimizer state into `optimizer`, built over this checkpoint's model's parameters."""
        if "optimizer" not in self.state:
            raise AttnlabError(f"checkpoint {self.path} was saved without an optimizer")
        tensors = self.tensors or _load_tensors(self.path / OPTIMIZER)
        try:
            saved = optimizer_from_flat(tensors, self.state["optimizer"])
            _check_optimizer_state(saved, optimizer)
            optimizer.load_state_dict(saved)
        except AttnlabError as e:
            raise AttnlabError(f"checkpoint {self.path}: {e}") from None
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
            raise AttnlabError(
                f"checkpoint {self.path}: the optimizer state does not fit this optimizer ({e})"
            ) from None


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


def _check_optimizer_state(saved: dict[str, Any], optimizer: Optimizer) -> None:
    """The saved state belongs to this optimizer's parameters (shapes, not just counts: torch checks
    only counts, and another model's moments of other shapes would load and fail at the first step).
    JSON gave lists where the optimizer keeps tuples (AdamW's betas): they become tuples again."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for idx, per_param in saved["state"].items():
        if not 0 <= idx < len(params):
            raise AttnlabError(f"the optimizer state names parameter {idx}, but the model has {len(params)}")
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[idx].shape:
                raise AttnlabError(
                    f"the optimizer's {key} of parameter {idx} has shape {list(value.shape)}, but the parameter "
                    f"{list(params[idx].shape)}: it is another model's optimizer"
                )
    for group, now in zip(saved["param_groups"], optimizer.param_groups, strict=False):
        for key, value in group.items():
            if isinstance(now.get(key), tuple) and isinstance(value, list):
                group[key] = tuple(value)


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


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the half-written `.NAME.tmpPID` folders of saves that were killed (their process is gone)."""
    for tmp in path.parent.glob(f".{path.name}.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # someone else's live process
            pass


def save_checkpoint(
    path: str | Path,
    model: Model,
    tokenizer: Tokenizer | None = None,
    state: dict[str, Any] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
    optimizer: Optimizer | None = None,
) -> Path:
    """Write a checkpoint folder at `path` atomically: the model, and whatever else is given.

    `optimizer`'s state is saved too (tensors in optimizer.safetensors, the rest in state.json),
    `tensors` adds any other tensors to optimizer.safetensors (a run's random states), and `state`
    any JSON-ready values to state.json.
    """
    path = Path(path)
    state = dict(state or {})
    tensors = dict(tensors or {})
    if optimizer is not None:
        opt_tensors, state["optimizer"] = optimizer_to_flat(optimizer)
        tensors.update(opt_tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
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
    _write_json(tmp / STATE, state)
    # config.json is written last: its presence marks a complete checkpoint.
    meta: dict[str, Any] = {"format": FORMAT_VERSION, "model": model.config.to_dict()}
    if tokenizer is not None:
        meta["tokenizer"] = tokenizer.to_dict()
    _write_json(tmp / CONFIG, meta)
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


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path) if path.exists() else {}


def read_config(ckpt: Path) -> tuple[ModelConfig, Tokenizer | None]:
    """A checkpoint's config.json, checked: its keys, the model config's fields and ranges, the
    tokenizer's, and a tokenizer whose ids are the model's."""
    where = str(ckpt / CONFIG)
    meta = check_object(
        read_json(ckpt / CONFIG), where, {"format": int, "model": dict, "tokenizer": dict}, required=("model",)
    )
    if meta.get("format", FORMAT_VERSION) > FORMAT_VERSION:
        raise AttnlabError(f"{where}: format {meta['format']}, from a newer attnlab; upgrade attnlab to load it")
    cfg = ModelConfig.from_dict(meta["model"], f"{where}: model")
    tokenizer = tokenizer_from_dict(meta["tokenizer"], f"{where}: tokenizer") if "tokenizer" in meta else None
    if tokenizer is not None and tokenizer.n_vocab != cfg.n_vocab:
        raise AttnlabError(
            f"{where}: the tokenizer has {tokenizer.n_vocab:,} ids but the model {cfg.n_vocab:,} "
            "(n_vocab); the two were not saved together"
        )
    return cfg, tokenizer


def check_weights(path: Path, cfg: ModelConfig) -> None:
    """The weights file holds exactly the tensors of the model `cfg` builds, each of its shape; read
    from the file's header and a model built on the meta device, so nothing is allocated first."""
    if not path.is_file():
        raise AttnlabError(f"{path}: missing; the checkpoint is incomplete")
    if path.stat().st_size > memory_limit():
        raise AttnlabError(
            f"{path}: {path.stat().st_size / 2**30:,.1f} GiB of weights do not fit this machine's memory"
        )
    with safe_open(path, "pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # f.keys(): a safe_open handle, not a dict
    stacks = {"transformer": {"blocks": ("n_layers", cfg.n_layers)}, "mlp": {}}.get(
        cfg.model,
        {"encoder": ("n_enc_layers", cfg.n_enc_layers or cfg.n_layers), "decoder": ("n_layers", cfg.n_layers)},
    )
    for stack, (size_field, wanted_n) in stacks.items():  # before building that many modules
        found = {int(k.split(".")[1]) for k in saved if k.startswith(f"{stack}.") and k.split(".")[1].isdigit()}
        if len(found) != wanted_n:
            what = "blocks" if stack == "blocks" else f"{stack} blocks"
            raise AttnlabError(f"{path}: holds {len(found)} {what}, but the config says {size_field}={wanted_n}")
    with torch.device("meta"):
        built = Seq2SeqTransformer(cfg) if cfg.model == "seq2seq" else build_model(cfg)
        wanted = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    if missing := [k for k in wanted if k not in saved]:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise AttnlabError(f"{path}: no tensor {missing[0]!r}{more}; the config and the weights do not match")
    if extra := [k for k in saved if k not in wanted]:
        raise AttnlabError(f"{path}: an unexpected tensor {extra[0]!r}; the config and the weights do not match")
    for name, shape in wanted.items():
        if saved[name] != shape:
            raise AttnlabError(
                f"{path}: {name} has shape {list(saved[name])}, but the config makes it {list(shape)}; "
                "the config and the weights do not match"
            )


def read_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """The weights of the checkpoint folder `ckpt` (whose names and shapes `check_weights` checked), each
    tensor all finite numbers: a NaN or an infinity (weights that overflowed, a damaged file) would only
    come out later as NaN logits, so it is refused here, naming the tensor."""
    weights = load_file(ckpt / WEIGHTS)
    for name, tensor in weights.items():
        # A sum is finite exactly when every value is, unless finite values overflow it: one fast pass
        # (torch.isfinite over the tensor is 5x slower on CPUs), then the exact count where it is not.
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.sum())):
            nan = int(torch.isnan(tensor).sum())
            inf = int(torch.isinf(tensor).sum())
            if not nan and not inf:
                continue
            infinities = f"{inf:,} infinit{'y' if inf == 1 else 'ies'}"
            what = " and ".join(([f"{nan:,} NaN"] if nan else []) + ([infinities] if inf else []))
            raise AttnlabError(
                f"checkpoint {ckpt}: {name} holds {what} of its {tensor.numel():,} values, so the model cannot "
                "run; use an earlier checkpoint or train again (a lower --lr if the loss diverged)"
            )
    return weights


def check_checkpoint(path: str | Path) -> tuple[Path, ModelConfig, Tokenizer | None, dict[str, Any]]:
    """A checkpoint checked as a whole without building its model: (its folder, the model config, the
    tokenizer, the state). Config, tokenizer, the weights' names and shapes and state.json must agree."""
    ckpt = resolve_checkpoint(path)
    try:
        cfg, tokenizer = read_config(ckpt)
        check_weights(ckpt / WEIGHTS, cfg)
        state = read_json(ckpt / STATE) if (ckpt / STATE).exists() else {}
    except (OSError, SafetensorError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AttnlabError(f"checkpoint {ckpt} is corrupt or incomplete ({first[:200]})") from None
    if not isinstance(state, dict):
        raise AttnlabError(f"{ckpt / STATE}: holds {json_type_name(state)}, not an object")
    return ckpt, cfg, tokenizer, state


def load_checkpoint(
    path: str | Path,
    device: str = "cpu",
    with_state: bool = False,
    model: LanguageModel | None = None,
    optimizer: Optimizer | None = None,
) -> Checkpoint[LanguageModel]:
    """Load a checkpoint (its folder, or a run folder holding `checkpoint/`).

    The model is built from the saved config, or, given `model`, the weights are loaded into it
    (its config must be the saved one); given `optimizer` too (built over `model`'s parameters), its
    state is restored. `with_state` also loads the optimizer and random-state tensors into `tensors`.
    The checkpoint is checked as a whole first (config, tokenizer, weights' names and shapes, state),
    so one that does not hang together is one line saying what does not match; weights that hold a NaN
    or an infinity are refused as they are read (`read_weights`).
    """
    if optimizer is not None and model is None:
        raise AttnlabError("load_checkpoint: give the model the optimizer was built over (model=...)")
    ckpt, cfg, tokenizer, state = check_checkpoint(path)
    if model is not None and model.config != cfg:
        raise AttnlabError(f"checkpoint {ckpt} holds another model's config; build the model from its config")
    try:
        built = model is None
        if model is None:
            model = build_model(cfg)
        model.load_state_dict(read_weights(ckpt))
        tensors = _load_tensors(ckpt / OPTIMIZER) if with_state else {}
    except AttnlabError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AttnlabError(f"checkpoint {ckpt} is corrupt or incomplete ({first[:200]})") from None
    if built:
        model.to(device)
    checkpoint = Checkpoint(model, tokenizer, ckpt, state, tensors)
    if optimizer is not None:
        checkpoint.restore_optimizer(optimizer)
    return checkpoint


def load_for_text(path: str | Path, device: str = "cpu") -> Checkpoint[LanguageModel]:
    """A checkpoint whose tokenizer is saved with it, since text in and out needs one (`load_checkpoint`
    otherwise)."""
    ckpt = load_checkpoint(path, device=device)
    if ckpt.tokenizer is None:
        raise AttnlabError(
            f"{ckpt.path}: saved without a tokenizer; save it with one (save_checkpoint(path, model, tokenizer))"
        )
    return ckpt


def is_seq2seq(path: str | Path | None) -> bool:
    """Whether a run or checkpoint folder holds an encoder-decoder, from its config alone (its loader
    checks the rest); False for no path."""
    return path is not None and read_config(resolve_checkpoint(path))[0].model == "seq2seq"


# ---- the run folder around a checkpoint: RUN/checkpoint, RUN/metrics.jsonl, and a lab's RUN/../metrics.json


def run_folder(checkpoint: Path) -> Path:
    """The run folder of a checkpoint folder (RUN/checkpoint), or the folder itself."""
    return checkpoint.parent if checkpoint.name == "checkpoint" else checkpoint


def run_log(checkpoint: Path) -> list[dict[str, Any]]:
    """The rows of the run's metrics.jsonl (a half-written last line is skipped; [] without one)."""
    return read_json_lines(run_folder(checkpoint) / "metrics.jsonl")


def lab_samples(run_dir: Path) -> dict[str, str]:
    """The samples `attnlab lab` wrote for the model of `run_dir` (LAB/mlp or LAB/transformer, from
    LAB/metrics.json), prompt -> text; {} for a run that is not a lab's model."""
    try:
        lab = json.loads((run_dir.parent / "metrics.json").read_text(encoding="utf-8"))
        if run_dir.name not in lab.get("models", ("mlp", "transformer")):  # files before "models": these two
            return {}
        samples = lab[run_dir.name]["samples"]
        return {str(p): str(t) for p, t in zip(lab["prompts"], samples, strict=True)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not a lab's model, or another shape
        return {}
