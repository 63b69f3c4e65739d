"""`attnlab lab`: the MLP baseline and the Transformer, same data, same time budget, one report."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.corpus import prepare_data
from ..errors import AttnlabError
from ..generate import generate_text
from ..inspect.ablations import without_positions
from ..models import Sampling, preset_config
from ..report import write_lab_report
from ..runtime.environment import notice
from ..training import run
from ..training.train import TrainConfig, evaluate

WORD = re.compile(r"[A-Za-z]+")


def word_set(texts: Iterable[str]) -> set[str]:
    """The words (runs of letters, lowercased) of a text given in pieces."""
    words: set[str] = set()
    for text in texts:
        words.update(w.lower() for w in WORD.findall(text))
    return words


def known_word_fraction(samples: Iterable[str], vocabulary: set[str]) -> float | None:
    """The share of the samples' words that are words of the training text (`vocabulary`).

    A sample's last word is left out when the sample stops in the middle of it.
    """
    known = total = 0
    for text in samples:
        words = WORD.findall(text)
        if words and text[-1:].isalpha():
            words = words[:-1]
        known += sum(w.lower() in vocabulary for w in words)
        total += len(words)
    return known / total if total else None


@dataclass(frozen=True)
class Recipe:
    """How the lab trains: `train` (TrainConfig fields) for both models, `transformer` (config fields
    of the preset) for the Transformer, and a sentence on why, for the report."""

    name: str
    why: str
    train: dict[str, Any]
    transformer: dict[str, Any]


RECIPES = {
    "fast": Recipe(
        "fast",
        "Muon, rotary positions and three blocks: of the recipes measured on TinyStories in this budget, the one "
        "that predicts best, so the samples read as stories (README: The default lab)",
        {"optimizer": "muon", "lr": 8e-3},
        {"positions": "rope", "n_layers": 3},
    ),
    "classic": Recipe(
        "classic",
        "the lab as first written: AdamW, learned position embeddings, the preset's four blocks",
        {"optimizer": "adamw"},
        {},
    ),
}
DEFAULT_RECIPE = "fast"
DEFAULT_PROMPTS = ("Once upon a time", "One day, a little girl named", "The dog was sad because")
DEFAULT_MAX_TIME = 150.0
MODELS = ("mlp", "transformer")  # what the lab trains, in this order; metrics.json lists them in "models"


def run_lab(
    data: str = "builtin",
    out: str | Path = "runs/lab",
    max_time: float | None = DEFAULT_MAX_TIME,
    preset: str | None = None,
    tokenizer: str | None = None,  # bytes; token files (FILE.bin) bring their own
    seed: int = 0,
    device: str = "auto",
    steps: int | None = None,
    prompts: tuple[str, ...] = DEFAULT_PROMPTS,
    sample_tokens: int = 200,
    train_overrides: dict[str, Any] | None = None,
    recipe: str = DEFAULT_RECIPE,
    resume: bool = False,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train both models with `max_time` seconds each; write metrics.json and report.html into `out`.

    `recipe` names one of `RECIPES`; `train_overrides` (TrainConfig fields) win over its settings. The
    recipe's changes to the Transformer apply to the default preset, `small`; a preset named here is
    trained as it is (the lab's exact sizes, say), with the recipe's training settings. `config` (config
    fields, `--set`) changes the Transformer further, after the recipe; the MLP keeps the preset's sizes.
    With `resume`, a model that has a checkpoint in `out` continues from it (a finished one is only
    evaluated again).
    """
    out = Path(out)
    if recipe not in RECIPES:
        raise AttnlabError(f"--recipe {recipe}: choose one of {', '.join(RECIPES)}")
    how = RECIPES[recipe]
    transformer = {**(how.transformer if preset is None else {}), **(config or {})}
    preset = preset or "small"
    fields = {
        "steps": steps,
        "max_time": max_time,
        "seed": seed,
        "device": device,
        **how.train,
        **(train_overrides or {}),
    }
    if max_time and "eval_every" not in fields:
        fields["eval_every_s"] = max_time / 12  # a dozen points on each validation curve
    tcfg = TrainConfig(**fields)
    tcfg.validate()  # before the data is loaded: a bad setting fails at once
    for kind in MODELS:  # and both models must fit before the first one trains
        cfg = preset_config(preset, model=kind).with_overrides(transformer if kind == "transformer" else {})
        run.check_fits(cfg, training=True, batch_size=tcfg.batch_size, grad_accum=tcfg.grad_accum)
    prepared = prepare_data(data, tokenizer)
    info = prepared.info()
    vocabulary = word_set(prepared.corpus.train.chunks()) if prepared.corpus.train.text is not None else None
    recipe_info = {"name": how.name, "why": how.why, "train": fields, "transformer": transformer}
    metrics: dict[str, Any] = {
        "data": info,
        "prompts": list(prompts),
        "preset": preset,
        "recipe": recipe_info,
        "models": list(MODELS),
        "evaluation": {"eval_tokens": tcfg.eval_tokens, "final_eval_chars": tcfg.final_eval_chars},
    }
    curves: dict[str, list[dict[str, Any]]] = {}
    sampling = Sampling(temperature=0.8, top_k=40, seed=seed)
    budget = " / ".join(([f"{max_time:g} s"] if max_time else []) + ([f"{steps} steps"] if steps else []))
    for kind in MODELS:
        notice(f"lab: training the {kind} for {budget}")
        changes = transformer if kind == "transformer" else {}
        if resume and (out / kind / "checkpoint").is_dir():
            asked = {"model": kind, "preset": preset, "config": changes}
            result = run.resume(out / kind, data=prepared, desc=kind, same_as=asked, **fields)
        else:
            result = run.start(
                out / kind, data=prepared, model=kind, preset=preset, config=changes, desc=kind, **fields
            )
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
            "known_words": known_word_fraction(samples, vocabulary) if vocabulary else None,
            "config": model.config.to_dict(),
            "checkpoint": str(result.checkpoint),
        }
        curves[kind] = result.log
    metrics["positions_lesson"] = _positions_lesson(model, prepared.valid, tcfg.eval_tokens)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_lab_report(out, metrics, curves)
    return metrics


def _positions_lesson(model: Any, valid: Any, tokens: int) -> dict[str, Any]:
    """The lab's "why position embeddings": the trained Transformer evaluated with its positions taken
    out, on the validation prefix of its curves (`tokens`: a few seconds)."""
    with_pos = evaluate(model, valid, max_tokens=tokens).bpc
    with without_positions(model):
        without = evaluate(model, valid, max_tokens=tokens).bpc
    return {
        "scheme": model.config.positions,
        "eval_tokens": tokens,
        "val_bpc": with_pos,
        "val_bpc_without_positions": without,
    }


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
    if tf.get("known_words") is not None and mlp.get("known_words") is not None:
        lines.append(
            f"words of the samples found in the training text: MLP {mlp['known_words']:.0%}, "
            f"Transformer {tf['known_words']:.0%}"
        )
    if lesson := metrics.get("positions_lesson"):
        lines.append(
            f"without its positions ({lesson['scheme']}) the Transformer scores "
            f"{lesson['val_bpc_without_positions']:.2f} bits/char instead of {lesson['val_bpc']:.2f}"
        )
    lines.append(f"recipe: {metrics['recipe']['name']} ({metrics['recipe']['why']})")
    lines.append(f"report: {out / 'report.html'}")
    return "\n".join(lines)
