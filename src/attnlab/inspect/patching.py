"""Activation patching: which part of the model carries what the clean prompt knows and the corrupted one does not.

Run a clean prompt ("Lily went to the park. Lily") and a corrupted one of the same length ("Tom went
to the park. Lily"), and measure a metric on the corrupted run (default: the logit difference of a
right and a wrong next token, circuits.logit_diff). Then copy one activation (a cell) from the clean
run into the corrupted one and measure again: where the metric comes back, that activation carried the
difference.

```python
from attnlab.inspect import patching
from attnlab.inspect.circuits import logit_diff

sweep = patching.patch_sweep(model, clean_1L, corrupt_1L, logit_diff(answer, wrong), over="resid")
sweep.values  # values_NL: the metric with the residual stream entering block l at position p patched
```

A sweep batches its cells: one forward runs many copies of the corrupted prompt, each row patching its
own cell (the hook of each layer writes only its rows), so a layer x position sweep costs a few
forwards instead of one per cell. `attribution_patch` estimates the same sweep from one forward and
one backward (the metric's gradient times the activations' difference, Nanda 2023), exact where the
metric is linear in the patched activation, and `agreement` says how far the estimate can be trusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import AttnlabError
from ..models import TransformerLM
from .circuits import Metric, resid_name, rows_that_fit

OVERS = ("resid", "heads", "head-positions")
AXES = {"resid": ("layer", "position"), "heads": ("layer", "head"), "head-positions": ("layer", "head", "position")}


@dataclass(frozen=True)
class Cell:
    """One patch: in hook point `name`, the clean run's values at `index` (the indices after the batch
    dimension, e.g. (position,) of a residual stream or (head,) of z_BHLD; the dimensions after them are
    taken whole) replace the corrupted run's."""

    name: str
    index: tuple[int, ...]


@dataclass
class PatchSweep:
    """A sweep's result: `values` (shaped by `axes`) is the metric of the corrupted run with each cell
    patched; `clean` and `corrupt` are the metric of the two runs unpatched."""

    over: str
    axes: tuple[str, ...]
    values: torch.Tensor
    clean: float
    corrupt: float
    metric: str = "logit_diff"

    def restored(self) -> torch.Tensor:
        """The fraction of the clean metric each patch brings back: 0 is the corrupted run, 1 the clean one."""
        gap = self.clean - self.corrupt
        return (self.values - self.corrupt) / gap if gap != 0 else torch.zeros_like(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "over": self.over,
            "axes": list(self.axes),
            "values": self.values.tolist(),
            "clean": self.clean,
            "corrupt": self.corrupt,
        }


def sweep_cells(model: TransformerLM, over: str, L: int) -> list[Cell]:
    """The cells of a sweep, in the row-major order of its axes."""
    N, H = model.config.n_layers, model.config.n_heads
    if over == "resid":
        return [Cell(resid_name(model, layer), (p,)) for layer in range(N) for p in range(L)]
    z = "attn.z_BHLD"
    if over == "heads":
        return [Cell(f"blocks.{layer}.{z}", (h,)) for layer in range(N) for h in range(H)]
    if over == "head-positions":
        return [Cell(f"blocks.{layer}.{z}", (h, p)) for layer in range(N) for h in range(H) for p in range(L)]
    raise AttnlabError(f"--over {over!r}: choose one of {', '.join(OVERS)}")


def _shape(model: TransformerLM, over: str, L: int) -> tuple[int, ...]:
    N, H = model.config.n_layers, model.config.n_heads
    return {"resid": (N, L), "heads": (N, H), "head-positions": (N, H, L)}[over]


def same_length(clean_1L: torch.Tensor, corrupt_1L: torch.Tensor) -> None:
    """Patching copies position p into position p: the two prompts must have the same number of tokens."""
    if clean_1L.shape != corrupt_1L.shape:
        raise AttnlabError(
            f"the clean prompt is {clean_1L.shape[-1]} tokens and the corrupted one {corrupt_1L.shape[-1]}: "
            "patching needs the same number of tokens in both (change a word for one of the same length)"
        )


@torch.no_grad()
def patch_cells(
    model: TransformerLM,
    clean_1L: torch.Tensor,
    corrupt_1L: torch.Tensor,
    cells: list[Cell],
    metric: Metric,
    batch: int = 32,
) -> torch.Tensor:
    """The metric of the corrupted run with each cell patched from the clean run (one number per cell),
    `batch` patched copies of the corrupted prompt per forward."""
    same_length(clean_1L, corrupt_1L)
    if batch < 1:
        raise AttnlabError(f"--batch {batch}: must be >= 1")
    batch = rows_that_fit(model, clean_1L.shape[1], batch)  # the same values, fewer per forward
    _, clean = model.run_with_cache(clean_1L, names=sorted({cell.name for cell in cells}))
    values = []
    for start in range(0, len(cells), batch):
        chunk = cells[start : start + batch]
        rows: dict[str, list[tuple[int, tuple[int, ...]]]] = {}
        for row, cell in enumerate(chunk):
            rows.setdefault(cell.name, []).append((row, cell.index))
        hooks = [(name, _patcher(clean[name][0], here)) for name, here in rows.items()]
        logits_BLV = model.run_with_hooks(corrupt_1L.expand(len(chunk), -1), hooks)
        values.append(metric(logits_BLV))
    return torch.cat(values) if values else torch.zeros(0)


def _patcher(clean_X: torch.Tensor, rows: list[tuple[int, tuple[int, ...]]]) -> Any:
    """A hook that writes the clean values at each row's index into that row (one indexed copy)."""
    rows_R = torch.tensor([r for r, _ in rows], device=clean_X.device)
    index = tuple(torch.tensor(i, device=clean_X.device) for i in zip(*(ix for _, ix in rows), strict=True))
    where = (rows_R, *index)  # row r of the batch, at its own index

    def patch(t_BX: torch.Tensor, name: str) -> torch.Tensor:
        t_BX = t_BX.clone()
        t_BX[where] = clean_X[index].to(t_BX.dtype)
        return t_BX

    return patch


@torch.no_grad()
def run_metric(model: TransformerLM, ids_1L: torch.Tensor, metric: Metric) -> float:
    """The metric of one unpatched run, through the same hooked forward as the patched runs."""
    return float(metric(model.run_with_hooks(ids_1L, []))[0])


def patch_sweep(
    model: TransformerLM,
    clean_1L: torch.Tensor,
    corrupt_1L: torch.Tensor,
    metric: Metric,
    over: str = "resid",
    batch: int = 32,
    metric_name: str = "logit_diff",
) -> PatchSweep:
    """Patch every cell of a sweep `over` the residual stream (layer x position), the heads (layer x
    head, each head's z at every position) or the heads at each position (layer x head x position)."""
    L = clean_1L.shape[1]
    values = patch_cells(model, clean_1L, corrupt_1L, sweep_cells(model, over, L), metric, batch)
    values = values.reshape(_shape(model, over, L)).cpu()
    clean, corrupt = run_metric(model, clean_1L, metric), run_metric(model, corrupt_1L, metric)
    return PatchSweep(over, AXES[over], values, clean, corrupt, metric_name)


def attribution_cells(
    model: TransformerLM, clean_1L: torch.Tensor, corrupt_1L: torch.Tensor, cells: list[Cell], metric: Metric
) -> tuple[torch.Tensor, float]:
    """`patch_cells` estimated to first order, and the corrupted run's metric: for each cell, the metric
    of the corrupted run plus (clean activation - corrupted activation) . the metric's gradient in the
    corrupted run, summed over what the cell patches. One forward and one backward serve all the cells
    (and a forward of the clean run); exact where the metric is linear in the activation."""
    same_length(clean_1L, corrupt_1L)
    names = sorted({cell.name for cell in cells})
    with torch.no_grad():
        _, clean = model.run_with_cache(clean_1L, names=names)
    corrupt, acts, grads = gradients(model, corrupt_1L, names, metric)
    delta = {n: ((clean[n][0] - acts[n][0]) * grads[n][0]).double() for n in names}
    values = [float(delta[cell.name][cell.index].sum()) for cell in cells]
    return corrupt + torch.tensor(values, dtype=torch.float64), corrupt


def attribution_patch(
    model: TransformerLM,
    clean_1L: torch.Tensor,
    corrupt_1L: torch.Tensor,
    metric: Metric,
    over: str = "resid",
    metric_name: str = "logit_diff",
) -> PatchSweep:
    """`patch_sweep` estimated by attribution patching (`attribution_cells`), the same cells and axes."""
    cells = sweep_cells(model, over, clean_1L.shape[1])
    values, corrupt = attribution_cells(model, clean_1L, corrupt_1L, cells, metric)
    clean = run_metric(model, clean_1L, metric)
    return PatchSweep(
        over, AXES[over], values.float().reshape(_shape(model, over, clean_1L.shape[1])), clean, corrupt, metric_name
    )


def gradients(
    model: TransformerLM, ids_1L: torch.Tensor, names: list[str], metric: Metric
) -> tuple[float, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The metric of one run, its activations at `names`, and the metric's gradient with respect to each.
    The model's own parameters need no gradient: the embeddings' output is made to carry one."""
    acts: dict[str, torch.Tensor] = {}

    def keep(t_BX: torch.Tensor, name: str) -> torch.Tensor:
        if name == "embed.sum_BLC" and not t_BX.requires_grad:
            t_BX = t_BX.detach().requires_grad_(True)
        if name in names:
            acts[name] = t_BX
        return t_BX

    hooks = [(name, keep) for name in sorted({"embed.sum_BLC", *names})]
    with torch.enable_grad():
        value = metric(model.run_with_hooks(ids_1L, hooks)).sum()
        found = torch.autograd.grad(value, [acts[n] for n in names], allow_unused=True)
    grads = {n: g if g is not None else torch.zeros_like(acts[n]) for n, g in zip(names, found, strict=True)}
    return float(value.detach()), {n: a.detach() for n, a in acts.items()}, grads


def agreement(real: PatchSweep, estimate: PatchSweep) -> dict[str, float | None]:
    """How well attribution patching matched real patching: the correlation of their values, and the
    largest and mean absolute difference (in the metric's unit)."""
    a, b = real.values.flatten().double(), estimate.values.flatten().double()
    diff = (a - b).abs()
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1]) if a.numel() > 1 else math.nan
    # None where there is no correlation to speak of (one cell, or values that do not vary): JSON has no NaN.
    return {
        "correlation": r if math.isfinite(r) else None,
        "max_abs_error": float(diff.max()),
        "mean_abs_error": float(diff.mean()),
    }
