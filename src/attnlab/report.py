"""The HTML reports of `attnlab lab` and `attnlab compare`: figures, and self-contained pages.

Both pages share one shell (`templates/page.html`: title, style, the data line) and fill it with
their own template through Jinja2, which escapes every value (samples are model output).
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from matplotlib.figure import Figure

from .training.train import log_kind, log_rows

DISPLAY_NAMES = {"mlp": "MLP", "transformer": "Transformer"}
MISSING = "\u2013"  # en dash for a figure the run did not record
NO_EVALUATIONS = "no evaluation during training (too few steps for --eval-every);\nthe table has the final figures"


def _display(name: str) -> str:
    """The human name of a model key ("mlp" -> "MLP")."""
    return DISPLAY_NAMES.get(name, name)


def _number(value: Any) -> float | None:
    """`value` as a finite float, or None when it is missing or not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any, spec: str) -> str:
    """Format a number with `spec`, or an en dash when it is missing."""
    x = _number(value)
    if x is None:
        return MISSING
    return format(int(round(x)), spec) if spec.endswith("d") else format(x, spec)


def _models(metrics: dict[str, Any]) -> list[str]:
    """The models the lab trained, as metrics.json lists them in "models" (the positions lesson and the
    data are entries of their own, never models)."""
    return [name for name in metrics["models"] if isinstance(metrics.get(name), dict)]


def loss_figure(curves: dict[str, list[dict]]) -> Figure:
    """Training loss vs step (left) and validation bits/char vs seconds (right), one line per model, from
    each model's metrics.jsonl rows (the final evaluation, over the whole split, is the table's)."""
    fig = Figure(figsize=(11, 4), dpi=110)
    ax_train, ax_val = fig.subplots(1, 2)
    for i, (name, rows) in enumerate(curves.items()):
        color = f"C{i % 10}"
        logged = [r for r in rows if log_kind(r) in ("train", "eval")]
        train = [(r["step"], r["train_loss"]) for r in logged if _number(r.get("train_loss")) is not None]
        val = [(r["elapsed_s"], r["val_bpc"]) for r in log_rows(rows, "eval") if _number(r.get("val_bpc")) is not None]
        if train:
            ax_train.plot(*zip(*train, strict=True), color=color, linewidth=1.2, label=_display(name))
        if val:
            ax_val.plot(*zip(*val, strict=True), color=color, marker="o", markersize=4, label=_display(name))
    ax_train.set(title="Training loss", xlabel="step", ylabel="loss (nats/token)")
    ax_val.set(title="Validation (same time budget)", xlabel="elapsed time (s)", ylabel="bits per character")
    for ax in (ax_train, ax_val):
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend()
        else:
            empty = NO_EVALUATIONS if ax is ax_val else "no training rows logged"
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle("attnlab lab: MLP vs Transformer")
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_loss_curves(curves: dict[str, list[dict]], path: Path) -> Path:
    """`loss_figure` as a PNG at `path`."""
    return _save(loss_figure(curves), path)


def _verdict(metrics: dict[str, Any], models: list[str]) -> Markup:
    """A sentence naming the model with the lowest validation bits/char and its margin."""
    scored = sorted((bpc, name) for name in models if (bpc := _number(metrics[name].get("val_bpc"))) is not None)
    if len(scored) < 2:
        return Markup("Not enough finished models to compare.")
    (best, winner), (second, runner_up) = scored[0], scored[1]
    if best == second:
        return Markup("The {} and the {} tie at {:.3f} bits per character.").format(
            _display(winner), _display(runner_up), best
        )
    return Markup("The {} wins by <b>{:.3f} bits per character</b> ({:.3f} vs {:.3f} for the {}).").format(
        _display(winner), second - best, best, second, _display(runner_up)
    )


def validation_figure(curves: dict[str, list[dict[str, Any]]]) -> Figure:
    """Validation bits per character against training time, one line per variant (its "eval" rows)."""
    fig = Figure(figsize=(10, 5), dpi=110, constrained_layout=True)
    ax = fig.subplots()
    for name, rows in curves.items():
        pts = [(r["elapsed_s"], r["val_bpc"]) for r in log_rows(rows, "eval")]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=name)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation bits per character")
    ax.set_title("validation curves (same data, seed and budget)")
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, NO_EVALUATIONS, ha="center", va="center", transform=ax.transAxes, color="gray")
    return fig


def plot_validation_curves(curves: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """`validation_figure` as a PNG at `path`."""
    return _save(validation_figure(curves), path)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("attnlab", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["count"] = lambda value: _fmt(value, ",d")  # 1,234,567 (or a dash when missing)
    env.filters["fixed"] = lambda value, digits: _fmt(value, f".{digits}f")
    env.filters["percent"] = lambda value: _fmt(value, ".0%")
    return env


def _page(template: str, out: Path, png: Path, **context: Any) -> Path:
    """Render `template` with the figure `png` embedded into `out` (one file, no links)."""
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    out.write_text(_environment().get_template(template).render(png=image, **context), encoding="utf-8")
    return out


def write_lab_report(out_dir: Path, metrics: dict, curves: dict[str, list[dict]]) -> Path:
    """Write `out_dir/loss_curves.png` and a self-contained `out_dir/report.html`; return the html path."""
    out_dir = Path(out_dir)
    png = plot_loss_curves(curves, out_dir / "loss_curves.png")
    models = _models(metrics)
    prompts = metrics.get("prompts") or []

    def sample(model: str, i: int) -> str:
        texts = metrics[model].get("samples") or []
        return texts[i] if i < len(texts) else ""

    samples = [(prompt, [(_display(m), sample(m, i)) for m in models]) for i, prompt in enumerate(prompts)]
    rows = [{"name": _display(m), **metrics[m]} for m in models]
    return _page(
        "lab_report.html",
        out_dir / "report.html",
        png,
        title="attnlab lab report",
        data=metrics.get("data") or {},
        models=rows,
        verdict=_verdict(metrics, models),
        samples=samples,
        lesson=metrics.get("positions_lesson"),
        evaluation=metrics.get("evaluation") or {},
        recipe=metrics.get("recipe"),
    )


def write_compare_report(
    out: Path, results: list[dict], curves: dict, samples: dict[str, str], prompt: str, data: dict[str, Any]
) -> Path:
    """`out/validation_curves.png` and `out/report.html`: the variants by validation bits per character."""
    png = plot_validation_curves(curves, out / "validation_curves.png")
    ranked = sorted(results, key=lambda r: r["val_bpc"])
    return _page(
        "compare_report.html",
        out / "report.html",
        png,
        title="attnlab compare",
        data=data,
        results=ranked,
        samples=samples,
        prompt=prompt,
    )
