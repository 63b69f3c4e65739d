"""The `attnlab lab` report: a loss-curve figure and a self-contained report.html."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from string import Template
from typing import Any

from matplotlib.figure import Figure

DISPLAY_NAMES = {"mlp": "MLP", "transformer": "Transformer"}
MISSING = "\u2013"  # en dash for a figure the run did not record

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>attnlab lab report</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.8em; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { font-size: 1.1em; }
.samples { display: grid; grid-template-columns: repeat($n_cols, minmax(0, 1fr)); gap: 0.8em;
           margin-bottom: 1.5em; }
.samples h3 { margin: 0 0 0.3em; font-size: 1em; }
.sample { white-space: pre-wrap; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em;
          background: #f8f8f8; border: 1px solid #e2e2e2; padding: 0.6em; overflow-wrap: anywhere; }
</style>
</head>
<body>
<h1>attnlab lab report</h1>
<p class="data">$data</p>
<h2>Loss curves</h2>
<img src="data:image/png;base64,$png" alt="training loss and validation bits per character for each model">
<h2>Results</h2>
<table>
<tr><th>model</th><th>parameters</th><th>validation bits/char</th><th>training tokens/s</th>
<th>steps</th><th>training time (s)</th></tr>
$rows
</table>
<p class="verdict">$verdict</p>
<p>Validation points during training use the first 65,536 tokens of the validation split; the table's
final figure covers the whole split (or its first million characters).</p>
<h2>Samples</h2>
<p>Same prompts, same seed, temperature 0.8, top-k 40. The MLP sees only the last token of its context,
so its continuation depends on nothing but the prompt's last character: prompts ending alike continue
alike.</p>
$samples
</body>
</html>
""")


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
    """The model keys in `metrics`: the entries that carry a "val_bpc"."""
    return [k for k, v in metrics.items() if isinstance(v, dict) and "val_bpc" in v]


def plot_loss_curves(curves: dict[str, list[dict]], path: Path) -> Path:
    """Training loss vs step (left) and validation bits/char vs seconds (right), one line per model."""
    fig = Figure(figsize=(11, 4), dpi=110)
    ax_train, ax_val = fig.subplots(1, 2)
    for i, (name, rows) in enumerate(curves.items()):
        color = f"C{i % 10}"
        train = [(r["step"], r["train_loss"]) for r in rows if _number(r.get("train_loss")) is not None]
        val = [(r["elapsed_s"], r["val_bpc"]) for r in rows if _number(r.get("val_bpc")) is not None]
        if train:
            ax_train.plot(
                [s for s, _ in train], [y for _, y in train], color=color, linewidth=1.2, label=_display(name)
            )
        if val:
            ax_val.plot(
                [t for t, _ in val], [y for _, y in val], color=color, marker="o", markersize=4, label=_display(name)
            )
    ax_train.set(title="Training loss", xlabel="step", ylabel="loss (nats/token)")
    ax_val.set(title="Validation (same time budget)", xlabel="elapsed time (s)", ylabel="bits per character")
    for ax in (ax_train, ax_val):
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle("attnlab lab: MLP vs Transformer")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _data_paragraph(data: dict[str, Any]) -> str:
    """The one-line description of the data set, escaped."""
    source = html.escape(str(data.get("source", "unknown")))
    tokenizer = html.escape(str(data.get("tokenizer", "unknown")))
    return (
        f"Data: <b>{source}</b>, {_fmt(data.get('train_chars'), ',d')} training characters, "
        f"{_fmt(data.get('val_chars'), ',d')} validation characters, tokenizer <b>{tokenizer}</b>."
    )


def _table_rows(metrics: dict[str, Any], models: list[str]) -> str:
    """One table row per model."""
    rows = []
    for name in models:
        m = metrics[name]
        cells = [
            _fmt(m.get("params"), ",d"),
            _fmt(m.get("val_bpc"), ".3f"),
            _fmt(m.get("tokens_per_s"), ",d"),
            _fmt(m.get("steps"), ",d"),
            _fmt(m.get("train_time_s"), ".1f"),
        ]
        rows.append(
            f"<tr><td>{html.escape(_display(name))}</td>"
            + "".join(f'<td class="num">{c}</td>' for c in cells)
            + "</tr>"
        )
    return "\n".join(rows)


def _verdict(metrics: dict[str, Any], models: list[str]) -> str:
    """A sentence naming the model with the lowest validation bits/char and its margin."""
    scored = sorted((bpc, name) for name in models if (bpc := _number(metrics[name].get("val_bpc"))) is not None)
    if len(scored) < 2:
        return "Not enough finished models to compare."
    (best, winner), (second, runner_up) = scored[0], scored[1]
    if best == second:
        return (
            f"The {html.escape(_display(winner))} and the {html.escape(_display(runner_up))} tie at "
            f"{best:.3f} bits per character."
        )
    return (
        f"The {html.escape(_display(winner))} wins by <b>{second - best:.3f} bits per character</b> "
        f"({best:.3f} vs {second:.3f} for the {html.escape(_display(runner_up))})."
    )


def _samples(metrics: dict[str, Any], models: list[str]) -> str:
    """For each prompt, the models' continuations side by side."""
    prompts = metrics.get("prompts") or []
    if not prompts:
        return "<p>No samples.</p>"
    blocks = []
    for i, prompt in enumerate(prompts):
        cols = []
        for name in models:
            samples = metrics[name].get("samples") or []
            text = samples[i] if i < len(samples) else ""
            cols.append(
                f"<div><h3>{html.escape(_display(name))}</h3>"
                f'<div class="sample"><b>{html.escape(str(prompt))}</b>{html.escape(str(text))}</div></div>'
            )
        blocks.append('<div class="samples">\n' + "\n".join(cols) + "\n</div>")
    return "\n".join(blocks)


def write_lab_report(out_dir: Path, metrics: dict, curves: dict[str, list[dict]]) -> Path:
    """Write `out_dir/loss_curves.png` and a self-contained `out_dir/report.html`; return the html path."""
    out_dir = Path(out_dir)
    png = plot_loss_curves(curves, out_dir / "loss_curves.png")
    models = _models(metrics)
    page = PAGE.substitute(
        n_cols=max(len(models), 1),
        data=_data_paragraph(metrics.get("data") or {}),
        png=base64.b64encode(png.read_bytes()).decode("ascii"),
        rows=_table_rows(metrics, models),
        verdict=_verdict(metrics, models),
        samples=_samples(metrics, models),
    )
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
