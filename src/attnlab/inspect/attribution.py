"""Direct logit attribution: how much each head and each MLP writes, by itself, into one prediction.

The residual stream is a sum: the embeddings, plus what every attention layer and MLP adds. An
attention layer's output is itself a sum over its heads, head h adding z_h W_O,h (its D columns of the
output projection), plus the projection's bias. The logits read the stream through a norm and the
unembedding, and a norm is linear once its scale is fixed: so with the scale the actual run had (as
TransformerLens folds it), each part of the stream goes through the norm and onto the direction of a
token (or of a difference of two) by itself, and the parts add up to the logit exactly. A norm's own
bias is one more part.

A post-norm block (Vaswani et al. 2017) normalises the stream after each sublayer: every part written
before goes through those norms too, each with its own scale from the run, and their biases are parts.

```python
from attnlab.inspect.attribution import direct_logit_attribution

att = direct_logit_attribution(model, ids_1L, answer=ord("y"), wrong=ord("m"))
att.total                      # logit(answer) - logit(wrong) at the last position
dict(att.parts)                # {"embed": ..., "blocks.0.attn.head.0": ..., "blocks.0.mlp": ..., ...}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models import TransformerLM
from ..models.layers import blocks_of
from ..models.norms import RMSNorm
from .circuits import check_pair, head_name, metric_name


@dataclass
class Attribution:
    """The parts of one logit (or logit difference) at `position`, in the order they were written, and
    `total`, the model's own value: the parts sum to it."""

    answer: int
    wrong: int | None
    position: int
    parts: list[tuple[str, float]]
    total: float

    def to_dict(self) -> dict[str, Any]:
        return {metric_name(self.wrong): self.total, "parts": [{"name": n, "value": v} for n, v in self.parts]}


def _frozen(norm: nn.Module, x_C: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
    """`norm` at the scale it had on x_C, as a linear map of one part, and its bias (None without one)."""
    x_C = x_C.double()
    if isinstance(norm, RMSNorm):
        scale = torch.rsqrt(x_C.pow(2).mean() + norm.eps)
        w_C = norm.weight.double()
        return (lambda p_C: p_C * scale * w_C), None
    assert isinstance(norm, nn.LayerNorm)
    scale = torch.rsqrt(x_C.var(unbiased=False) + norm.eps)
    w_C = norm.weight.double() if norm.weight is not None else torch.ones_like(x_C)
    bias = norm.bias.double() if norm.bias is not None else None
    return (lambda p_C: (p_C - p_C.mean()) * scale * w_C), bias


def _through(parts: dict[str, torch.Tensor], norm: nn.Module, x_C: torch.Tensor, name: str) -> None:
    """Every part so far through `norm` at its scale on x_C (the whole stream), its bias added as `name`."""
    linear, bias = _frozen(norm, x_C)
    for key, p_C in parts.items():
        parts[key] = linear(p_C)
    if bias is not None:
        parts[name] = bias


@torch.no_grad()
def residual_parts(
    model: TransformerLM, ids_1L: torch.Tensor, position: int = -1
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The stream the unembedding reads at `position`, split into its parts (float64 vectors of C that
    sum to it, in the order they were written), and the run's logits_V there."""
    cfg = model.config
    post = cfg.norm_placement == "post"
    names = ["embed.sum_BLC"]
    for i in range(cfg.n_layers):
        names += [
            f"blocks.{i}.attn.z_BHLD",
            f"blocks.{i}.mlp.out_BLC",
            f"blocks.{i}.resid_mid_BLC",
            f"blocks.{i}.resid_post_BLC",
        ]
    logits_1LV, cache = model.run_with_cache(ids_1L, names=names)

    def at(name: str) -> torch.Tensor:
        return cache[name][0, position]

    parts: dict[str, torch.Tensor] = {"embed": at("embed.sum_BLC").double()}
    for i, block in enumerate(blocks_of(model.blocks)):
        attn = block.attn
        H, D = attn.n_heads, attn.head_dim
        z_HD = cache[f"blocks.{i}.attn.z_BHLD"][0, :, position].double()
        W_O_CHD = attn.w_o.weight.double().view(-1, H, D)
        for h in range(H):
            parts[head_name(i, h)] = W_O_CHD[:, h] @ z_HD[h]
        if attn.w_o.bias is not None:
            parts[f"blocks.{i}.attn.bias"] = attn.w_o.bias.double()
        if post:  # ln1(x + attn(x)): the norm's input is the stream after the attention
            _through(parts, block.ln1, at(f"blocks.{i}.resid_mid_BLC"), f"blocks.{i}.ln1.bias")
        parts[f"blocks.{i}.mlp"] = at(f"blocks.{i}.mlp.out_BLC").double()
        if post:
            _through(parts, block.ln2, at(f"blocks.{i}.resid_post_BLC"), f"blocks.{i}.ln2.bias")
    if model.final_ln is not None:
        _through(parts, model.final_ln, at(f"blocks.{cfg.n_layers - 1}.resid_post_BLC"), "final_ln.bias")
    return parts, logits_1LV[0, position]


def unembedding(model: TransformerLM) -> torch.Tensor:
    """W_U, (V, C): the matrix the logits are read with (the token embedding when tied)."""
    return model.embed.tok.weight if model.lm_head is None else model.lm_head.weight


@torch.no_grad()
def direct_logit_attribution(
    model: TransformerLM, ids_1L: torch.Tensor, answer: int, wrong: int | None = None, position: int = -1
) -> Attribution:
    """Each part's direct contribution to logit(answer) - logit(wrong) (or logit(answer) alone) at
    `position`: its vector, through the norms at the run's scale, onto W_U[answer] - W_U[wrong]."""
    check_pair(answer, wrong)
    parts, logits_V = residual_parts(model, ids_1L, position)
    W_U = unembedding(model).double()
    direction_C = W_U[answer] - (W_U[wrong] if wrong is not None else 0.0)
    total = float(logits_V[answer] - (logits_V[wrong] if wrong is not None else 0.0))
    values = [(name, float(p_C @ direction_C)) for name, p_C in parts.items()]
    L = ids_1L.shape[1]
    return Attribution(answer, wrong, position % L, values, total)
