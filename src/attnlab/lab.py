"""`attnlab lab`: the MLP baseline and the Transformer, same data, same time budget, one report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .data import check_length, prepare_data
from .generate import generate_text
from .models import build_model, preset_config
from .runtime import notice, resolve_device
from .train import TrainConfig, train

DEFAULT_PROMPTS = ("Once upon a time", "One day, a little girl named", "The dog was sad because")
DEFAULT_MAX_TIME = 120.0


def run_lab(
    data: str = "builtin",
    out: str | Path = "runs/lab",
    max_time: float = DEFAULT_MAX_TIME,
    preset: str = "small",
    tokenizer: str = "bytes",
    seed: int = 0,
    device: str = "auto",
    steps: int | None = None,
    prompts: tuple[str, ...] = DEFAULT_PROMPTS,
    sample_tokens: int = 200,
    train_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train both models with `max_time` seconds each; write metrics.json and report.html into `out`."""
    from .report import write_lab_report

    out = Path(out)
    TrainConfig(steps=steps, max_time=max_time, **(train_overrides or {})).validate()
    device = resolve_device(device)
    prepared = prepare_data(data, tokenizer)
    info = prepared.info()
    metrics: dict[str, Any] = {"data": info, "prompts": list(prompts), "preset": preset, "device": device}
    curves: dict[str, list[dict[str, Any]]] = {}
    for kind in ("mlp", "transformer"):
        torch.manual_seed(seed)
        cfg = preset_config(preset, model=kind, n_vocab=prepared.tokenizer.n_vocab)
        check_length(prepared.train, cfg.max_len, "the training split")
        model = build_model(cfg).to(device)
        tcfg = TrainConfig(steps=steps, max_time=max_time, seed=seed, device=device, **(train_overrides or {}))
        if max_time and "eval_every" not in (train_overrides or {}):
            tcfg.eval_every_s = max_time / 12  # a dozen points on each validation curve
        budget = " / ".join(([f"{max_time:g} s"] if max_time else []) + ([f"{steps} steps"] if steps else []))
        notice(f"lab: training the {kind} ({model.num_params():,} parameters) for {budget} on {device}")
        result = train(
            model,
            prepared.tokenizer,
            prepared.train,
            prepared.valid,
            tcfg,
            out / kind,
            run_info={"data": info, "preset": preset},
            desc=kind,
        )
        samples = [
            generate_text(model, prepared.tokenizer, p, sample_tokens, temperature=0.8, top_k=40, seed=seed)
            for p in prompts
        ]
        metrics[kind] = {
            "params": model.num_params(),
            "val_bpc": result.final.bpc,
            "val_loss": result.final.loss,
            "tokens_per_s": result.tokens_per_s,
            "steps": result.steps,
            "train_time_s": result.train_time_s,
            "samples": samples,
            "config": cfg.to_dict(),
            "checkpoint": str(result.checkpoint),
        }
        curves[kind] = result.log
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_lab_report(out, metrics, curves)
    return metrics


def summary(metrics: dict[str, Any], out: Path) -> str:
    """A few lines for the terminal: both models and which wins."""
    mlp, tf = metrics["mlp"], metrics["transformer"]
    lines = [
        f"data: {metrics['data']['source']} ({metrics['data']['train_chars']:,} train chars, "
        f"{metrics['data']['val_chars']:,} validation chars)"
    ]
    for name, m in (("MLP", mlp), ("Transformer", tf)):
        lines.append(
            f"{name:12s} {m['params']:>10,} params  {m['val_bpc']:.3f} bits/char  "
            f"{m['tokens_per_s']:>9,.0f} tokens/s  {m['steps']} steps"
        )
    lines.append(f"the Transformer is {mlp['val_bpc'] - tf['val_bpc']:+.3f} bits/char better than the MLP")
    lines.append(f"report: {out / 'report.html'}")
    return "\n".join(lines)
