"""`attnlab lab`: the MLP baseline and the Transformer, same data, same time budget, one report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import run
from .data import prepare_data
from .generate import generate_text
from .models import Sampling
from .report import write_lab_report
from .runtime import notice
from .train import TrainConfig

DEFAULT_PROMPTS = ("Once upon a time", "One day, a little girl named", "The dog was sad because")
DEFAULT_MAX_TIME = 120.0


def run_lab(
    data: str = "builtin",
    out: str | Path = "runs/lab",
    max_time: float | None = DEFAULT_MAX_TIME,
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
    out = Path(out)
    fields = {"steps": steps, "max_time": max_time, "seed": seed, "device": device, **(train_overrides or {})}
    if max_time and "eval_every" not in fields:
        fields["eval_every_s"] = max_time / 12  # a dozen points on each validation curve
    TrainConfig(**fields).validate()  # before the data is loaded: a bad setting fails at once
    prepared = prepare_data(data, tokenizer)
    info = prepared.info()
    metrics: dict[str, Any] = {"data": info, "prompts": list(prompts), "preset": preset}
    curves: dict[str, list[dict[str, Any]]] = {}
    sampling = Sampling(temperature=0.8, top_k=40, seed=seed)
    for kind in ("mlp", "transformer"):
        budget = " / ".join(([f"{max_time:g} s"] if max_time else []) + ([f"{steps} steps"] if steps else []))
        notice(f"lab: training the {kind} for {budget}")
        result = run.start(out / kind, data=prepared, model=kind, preset=preset, desc=kind, **fields)
        model = result.model
        samples = [generate_text(model, prepared.tokenizer, p, sample_tokens, sampling) for p in prompts]
        metrics["device"] = str(next(model.parameters()).device)
        metrics[kind] = {
            "params": model.num_params(),
            "val_bpc": result.final.bpc,
            "val_loss": result.final.loss,
            "tokens_per_s": result.tokens_per_s,
            "steps": result.steps,
            "train_time_s": result.train_time_s,
            "samples": samples,
            "config": model.config.to_dict(),
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
