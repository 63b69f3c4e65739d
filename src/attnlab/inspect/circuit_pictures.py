"""Pictures of circuits: a patching sweep as a heatmap, direct logit attribution as bars, head detector scores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .attribution import Attribution
from .heads import DETECTORS, HeadTable
from .patching import PatchSweep
from .pictures import save_figure, shown_tokens


def _cells(ax: Axes, values: np.ndarray, dark: Callable[[float], bool], limit: int = 400) -> None:
    """Each cell's number written on it (white where `dark` says its colour is), while there are few
    enough cells to read them."""
    if values.size > limit:
        return
    for (r, c), v in np.ndenumerate(values):
        if np.isfinite(v):
            colour = "white" if dark(float(v)) else "black"
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6, color=colour)


def _sweep_panel(
    fig: Figure, ax: Axes, sweep: PatchSweep, tokens: list[str], title: str, unit: str, reach: float
) -> None:
    change = (sweep.values - sweep.corrupt).float().numpy()  # not divided by clean - corrupt, which may be ~0
    if sweep.over == "head-positions":  # layer x head x position: the layers' (head x position) panels stacked
        N, H, L = change.shape
        change = change.reshape(N * H, L)
    image = ax.imshow(change, cmap="RdBu", vmin=-reach, vmax=reach, aspect="auto", interpolation="nearest")
    _cells(ax, change, lambda v: abs(v) > 0.6 * reach)
    N = sweep.values.shape[0]
    if sweep.over in ("resid", "head-positions"):
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
        ax.set_xlabel("position (clean token / corrupted token where they differ)", fontsize=8)
    if sweep.over == "resid":
        ax.set_yticks(range(N), [f"block {i} input" for i in range(N)], fontsize=7)
    else:
        H = sweep.values.shape[1]
        if sweep.over == "heads":
            ax.set_xticks(range(H), [str(h) for h in range(H)], fontsize=7)
            ax.set_xlabel("head", fontsize=8)
            ax.set_yticks(range(N), [f"layer {i}" for i in range(N)], fontsize=7)
        else:
            ax.set_yticks(range(N * H), [f"{i}.{h}" for i in range(N) for h in range(H)], fontsize=6)
            ax.set_ylabel("layer.head", fontsize=8)
    ax.set_title(title, fontsize=9)
    # Two short lines: one long label is taller than a low panel and runs into the next one's.
    fig.colorbar(image, ax=ax, shrink=0.9).set_label(f"{unit}:\npatched - corrupted", fontsize=7)


def patching_figure(
    sweep: PatchSweep,
    clean_tokens: list[str],
    corrupt_tokens: list[str],
    out: Path,
    estimate: PatchSweep | None = None,
    agreement: dict[str, float | None] | None = None,
) -> Path:
    """The sweep as a heatmap of each patch's change of the metric from the corrupted run (blue: towards
    the clean run's when clean > corrupted); with `estimate`, attribution patching's below it."""
    clean, corrupt = shown_tokens(clean_tokens), shown_tokens(corrupt_tokens)
    tokens = [c if c == x else f"{c}/{x}" for c, x in zip(clean, corrupt, strict=True)]
    rows = sweep.values.shape[0] * (sweep.values.shape[1] if sweep.over == "head-positions" else 1)
    cols = len(tokens) if sweep.over != "heads" else sweep.values.shape[1]
    width, height = max(4.5, 0.34 * cols + 2.8), max(2.2, 0.3 * rows + 1.4)
    panels = 2 if estimate is not None else 1
    fig = Figure(figsize=(width, height * panels + 0.4), constrained_layout=True)
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    unit = "logit difference" if sweep.metric == "logit_diff" else sweep.metric
    shown = [s for s in (sweep, estimate) if s is not None]  # one colour scale for both panels
    reach = max([abs(sweep.clean - sweep.corrupt), 1e-6] + [float((s.values - s.corrupt).abs().max()) for s in shown])
    _sweep_panel(fig, axes[0], sweep, tokens, f"activation patching over {sweep.over}", unit, reach)
    if estimate is not None:
        fit = agreement or {}
        r, largest = fit.get("correlation"), fit.get("max_abs_error")
        title = "attribution patching (correlation " + (f"{r:.2f}" if r is not None else "n/a") + " with the above, "
        title += "largest error " + (f"{largest:.2f}" if largest is not None else "n/a") + ")"
        _sweep_panel(fig, axes[1], estimate, tokens, title, unit, reach)
    fig.suptitle(f"{unit}: clean run {sweep.clean:.3f}, corrupted run {sweep.corrupt:.3f}", fontsize=10)
    return save_figure(fig, out)


def attribution_figure(att: Attribution, out: Path, title: str) -> Path:
    """Every part's direct contribution as a bar (blue raises the answer over the wrong token, red lowers
    it), in the order the parts were written, with the total it sums to."""
    names = [n for n, _ in att.parts]
    values = np.array([v for _, v in att.parts])
    fig = Figure(figsize=(7.0, max(2.5, 0.2 * len(names) + 1.2)), constrained_layout=True)
    ax = fig.subplots()
    colours = ["#2166ac" if v >= 0 else "#b2182b" for v in values]
    ax.barh(range(len(names)), values, color=colours)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=0.6)
    what = "logit difference" if att.wrong is not None else "logit"
    ax.set_xlabel(f"direct contribution to the {what}", fontsize=8)
    ax.set_title(f"{title}\nthe parts sum to {sum(values):.3f}; the model's {what}: {att.total:.3f}", fontsize=9)
    return save_figure(fig, out)


def heads_figure(table: HeadTable, out: Path) -> Path:
    """Each detector's score per head (layer x head, 0 to 1), on repeated random tokens and on text."""
    wheres = list(table.scores)
    fig = Figure(figsize=(3.4 * len(DETECTORS), 2.8 * len(wheres)), constrained_layout=True)
    axes = fig.subplots(len(wheres), len(DETECTORS), squeeze=False)
    image = None
    for r, where in enumerate(wheres):
        for c, detector in enumerate(DETECTORS):
            s_NH = table.scores[where][detector].float().cpu().numpy()
            ax = axes[r, c]
            image = ax.imshow(s_NH, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
            _cells(ax, s_NH, lambda v: v < 0.55)  # viridis is dark at the low end
            N, H = s_NH.shape
            ax.set_xticks(range(H), [str(h) for h in range(H)], fontsize=7)
            ax.set_yticks(range(N), [f"layer {i}" for i in range(N)], fontsize=7)
            ax.set_xlabel("head", fontsize=8)
            on = "repeated random tokens" if where == "random" else "text"
            ax.set_title(f"{detector} ({on})", fontsize=9)
    assert image is not None
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention on the marked keys")
    return save_figure(fig, out)
