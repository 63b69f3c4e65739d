"""Take a part out of a trained model and see what it was doing: its positions (`without_positions`),
or each head and each MLP in turn (`ablation_table`: zero, mean or resample ablation)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import AttnlabError
from ..models import LanguageModel, TransformerLM
from ..models.positions import PositionScheme
from .circuits import head_name


@contextlib.contextmanager
def without_positions(model: LanguageModel) -> Iterator[LanguageModel]:
    """The same model, for the `with` block, with no position information at all.

    Whatever its scheme (a learned or sin/cos table added to the tokens, or queries and keys
    rotated by position), the model then sees its context as a bag of tokens: the causal mask
    still tells a position how many tokens came before it, but not which came where. The lab's
    answer to "why position embeddings": how much worse the model predicts without them.
    """
    embed = getattr(model, "embed", None)
    if embed is None or getattr(embed, "pos", None) is None:
        raise AttnlabError("this model has no positions to take out (the MLP sees one token at a time)")
    scheme = embed.pos
    embed.pos = _NoPositions(scheme.token_scale())
    try:
        yield model
    finally:
        embed.pos = scheme


class _NoPositions(PositionScheme):
    """Adds and rotates nothing, but scales the tokens as the model's own scheme does (sin/cos: by sqrt(C)),
    so that only the position information goes."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def token_scale(self) -> float:
        return self.scale


ABLATIONS = ("zero", "mean", "resample")


@dataclass
class AblationTable:
    """What taking out each head and each MLP does: the loss on the text (`loss`, unablated `base_loss`)
    and, for a prompt, the metric (`metric`, unablated `base_metric`), one entry per component."""

    kind: str
    base_loss: float
    loss: dict[str, float]
    base_metric: float | None = None
    metric: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """Per component: the change in loss (and in the metric), largest loss rise first."""
        rows = []
        for name, loss in self.loss.items():
            row: dict[str, Any] = {"name": name, "loss": loss, "loss_change": loss - self.base_loss}
            if self.base_metric is not None:
                row["metric_change"] = self.metric[name] - self.base_metric
            rows.append(row)
        return sorted(rows, key=lambda r: -r["loss_change"])


def _replacement(kind: str, acts_BLX: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """What an ablated component's output becomes, given its output (B, L, ...) on the text: zero, its
    mean over the text's sequences and positions, or (resample) another sequence's output at each
    position (the text's rows shifted by one)."""
    if kind == "zero":
        return torch.zeros_like
    if kind == "mean":
        mean_X = acts_BLX.mean((0, 1))
        return lambda t_BLX: mean_X.expand_as(t_BLX).to(t_BLX.dtype)
    assert kind == "resample"  # ablation_table checked it

    def other(t_BLX: torch.Tensor) -> torch.Tensor:
        B, L = t_BLX.shape[:2]
        if acts_BLX.shape[0] == B:  # the text itself: each piece gets the one before it
            return acts_BLX.roll(1, dims=0)[:, :L].to(t_BLX.dtype)
        return acts_BLX[:1, :L].expand(B, *t_BLX.shape[1:]).to(t_BLX.dtype)  # a prompt: the text's first piece

    return other


def _components(model: TransformerLM) -> list[tuple[str, str, int | None]]:
    """(component name, hook name, head or None) for every head and every MLP."""
    out: list[tuple[str, str, int | None]] = []
    for layer in range(model.config.n_layers):
        out += [(head_name(layer, h), f"blocks.{layer}.attn.z_BHLD", h) for h in range(model.config.n_heads)]
        out.append((f"blocks.{layer}.mlp", f"blocks.{layer}.mlp.out_BLC", None))
    return out


def _lm_loss(logits_BLV: torch.Tensor, ids_BL: torch.Tensor) -> float:
    return float(F.cross_entropy(logits_BLV[:, :-1].flatten(0, 1).float(), ids_BL[:, 1:].flatten()))


@torch.no_grad()
def ablation_table(
    model: TransformerLM,
    text_BL: torch.Tensor,
    kind: str = "mean",
    prompt_1L: torch.Tensor | None = None,
    metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> AblationTable:
    """Ablate each head (its z, at every position) and each MLP (its output) in turn, with `kind`
    (zero, mean or resample over text_BL, pieces of the run's text), and measure the loss on text_BL
    and, given `prompt_1L` and `metric`, the metric of the prompt."""
    if kind not in ABLATIONS:
        raise AttnlabError(f"--ablation {kind!r}: choose one of {', '.join(ABLATIONS)}")
    if kind == "resample" and text_BL.shape[0] < 2:
        raise AttnlabError("resample ablation needs at least two pieces of text, one to take the values of another")
    if (prompt_1L is None) != (metric is None):
        raise AttnlabError("give a prompt and a metric together (the metric is measured on the prompt), or neither")
    if prompt_1L is not None and prompt_1L.shape[1] > text_BL.shape[1]:
        raise AttnlabError("the prompt is longer than the pieces of text its ablated values come from")
    components = _components(model)
    logits_BLV, cache = model.run_with_cache(text_BL, names=sorted({hook for _, hook, _ in components}))
    table = AblationTable(kind, _lm_loss(logits_BLV, text_BL), {})
    if prompt_1L is not None and metric is not None:
        table.base_metric = float(metric(model.run_with_hooks(prompt_1L, []))[0])
    for name, hook, head in components:
        acts = cache[hook] if head is None else cache[hook][:, head]  # (B, L, C) or a head's (B, L, D)
        replace = _replacement(kind, acts)

        def ablate(t_BX: torch.Tensor, _: str, head: int | None = head, replace: Any = replace) -> torch.Tensor:
            t_BX = t_BX.clone()
            if head is None:
                return replace(t_BX)
            t_BX[:, head] = replace(t_BX[:, head])
            return t_BX

        table.loss[name] = _lm_loss(model.run_with_hooks(text_BL, [(hook, ablate)]), text_BL)
        if prompt_1L is not None and metric is not None:
            table.metric[name] = float(metric(model.run_with_hooks(prompt_1L, [(hook, ablate)]))[0])
    return table
