"""The catalogue of known mistakes: an id, what it means in plain words, how to fix it, and wrong
versions of the exercises that make it.

A check runs a student's function and the wrong versions here on the same inputs; the one whose
numbers the student's match names the mistake. Several wrong versions may share an id (a 0/1 mask
can be added or multiplied); each changes one thing in the reference solution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..models.attention import Attention
from ..models.layers import Block
from ..models.positions import LearnedPositions
from ..models.transformer import TransformerLM
from . import reference as ref


@dataclass(frozen=True)
class Mistake:
    what: str  # what the code does wrong, as the student would recognise it
    fix: str  # the change that corrects it


MISTAKES: dict[str, Mistake] = {
    "keeps_out_of_vocab": Mistake(
        "characters outside the 256-token vocabulary (code point >= 256) are kept or replaced, not dropped",
        "keep only the characters with ord(ch) < 256",
    ),
    "drops_last_id": Mistake(
        "the last character's id is missing",
        "encode every character; inputs and targets are shifted later, not here",
    ),
    "future_visible": Mistake(
        "queries can see later keys: the mask lets the future through",
        "mask exactly the entries above the diagonal (key j > query i): triu(..., diagonal=1)",
    ),
    "hides_self": Mistake(
        "the diagonal is masked too, so a query cannot see its own key and query 0 sees nothing (NaN)",
        "mask only j > i: triu with diagonal=1, or tril with diagonal=0 for the allowed part",
    ),
    "mask_zero_one": Mistake(
        "the mask is 0/1 (added to or multiplied with the scores) instead of 0/-inf, so masked keys keep a weight",
        "use 0 where allowed and -inf (or a large negative number) where masked, and add it to the scores",
    ),
    "mask_after_softmax": Mistake(
        "the mask is applied after the softmax, so a query's weights no longer sum to 1",
        "mask the scores first, then take the softmax",
    ),
    "no_mask": Mistake(
        "there is no causal mask: every query sees every key, the future included",
        "add the causal mask to the scores before the softmax",
    ),
    "no_scaling": Mistake(
        "the scores are not divided by sqrt(D), so the softmax is too peaked",
        "divide q @ k^T by math.sqrt(D), D = q.shape[-1]",
    ),
    "scaled_by_d": Mistake(
        "the scores are divided by D instead of sqrt(D)",
        "divide by math.sqrt(D)",
    ),
    "softmax_wrong_axis": Mistake(
        "the softmax runs over the queries (dim -2), not the keys (dim -1)",
        "softmax(dim=-1): each query's weights over the keys sum to 1",
    ),
    "split_without_transpose": Mistake(
        "(B, L, E) is reshaped straight to (B, H, L, D), so heads mix channels of different positions",
        "view as (B, L, H, D), then transpose(1, 2)",
    ),
    "merge_without_transpose": Mistake(
        "(B, H, L, D) is reshaped straight to (B, L, H x D), so positions get other positions' outputs",
        "transpose(1, 2) to (B, L, H, D) first, then reshape to (B, L, H x D)",
    ),
    "no_residual": Mistake(
        "a sublayer's output replaces x instead of being added to it",
        "x = x + attn(norm1(x)), then x = x + mlp(norm2(x))",
    ),
    "no_position_embeddings": Mistake(
        "the position embeddings are not added, so the model cannot tell the order of the tokens",
        "x = model.embed.tok(ids) + model.embed.pos.weight[:L]",
    ),
    "norm_after_residual": Mistake(
        "the norm comes after the residual sum, norm(x + f(x)) (post-norm), not before the sublayer",
        "pre-norm, as the lab's model: x + f(norm(x))",
    ),
    "temperature_after_softmax": Mistake(
        "the temperature changes nothing: it is applied after the softmax (or not at all)",
        "divide the logits by the temperature, then take the softmax",
    ),
    "top_k_off_by_one": Mistake(
        "top-k keeps one token too many or too few",
        "keep the tokens whose logit is >= the k-th largest (logits.topk(k).values[-1])",
    ),
    "greedy_argmin": Mistake(
        "greedy decoding picks the least likely token",
        "greedy is argmax of the logits",
    ),
    "wrong_shape": Mistake(
        "the result has the wrong shape",
        "compare the shapes step by step with the letters in the variable names",
    ),
}


# --- attention ------------------------------------------------------------------------------------


def _attend(
    scale: Callable[[int], float] = math.sqrt,
    mask: str = "causal",
    axis: int = -1,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The reference attention with one thing changed: the scale, the mask or the softmax's axis."""

    def attend(q_BHLD: torch.Tensor, k_BHKD: torch.Tensor, v_BHKD: torch.Tensor) -> torch.Tensor:
        L, D = q_BHLD.shape[-2], q_BHLD.shape[-1]
        scores_BHLK = q_BHLD @ k_BHKD.transpose(-2, -1) / scale(D)
        ones_LL = torch.ones(L, L, dtype=scores_BHLK.dtype)
        if mask == "causal":
            scores_BHLK = scores_BHLK + ref.make_causal_mask(L).to(scores_BHLK)
        elif mask == "sees_next":  # the allowed part shifted by one: query i also sees key i + 1
            scores_BHLK = scores_BHLK.masked_fill(ones_LL.tril(1) == 0, float("-inf"))
        elif mask == "transposed":  # tril and triu swapped: query i sees itself and the future only
            scores_BHLK = scores_BHLK.masked_fill(ones_LL.triu(0) == 0, float("-inf"))
        elif mask == "hides_self":
            scores_BHLK = scores_BHLK.masked_fill(ones_LL.tril(-1) == 0, float("-inf"))
        elif mask == "add_01":
            scores_BHLK = scores_BHLK + ones_LL.tril()
        elif mask == "add_10":
            scores_BHLK = scores_BHLK + ones_LL.triu(1)
        elif mask == "times_01":
            scores_BHLK = scores_BHLK * ones_LL.tril()
        weights_BHLK = scores_BHLK.softmax(dim=axis)
        if mask == "after_softmax_zero":
            weights_BHLK = weights_BHLK * ones_LL.tril()
        elif mask == "after_softmax_add":
            weights_BHLK = weights_BHLK + ref.make_causal_mask(L).to(weights_BHLK)
        return weights_BHLK @ v_BHKD

    return attend


ATTENTION_MISTAKES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("no_mask", _attend(mask="none")),
    ("future_visible", _attend(mask="sees_next")),
    ("future_visible", _attend(mask="transposed")),
    ("hides_self", _attend(mask="hides_self")),
    ("mask_zero_one", _attend(mask="add_01")),
    ("mask_zero_one", _attend(mask="add_10")),
    ("mask_zero_one", _attend(mask="times_01")),
    ("mask_after_softmax", _attend(mask="after_softmax_zero")),
    ("mask_after_softmax", _attend(mask="after_softmax_add")),
    ("no_scaling", _attend(scale=lambda D: 1.0)),
    ("scaled_by_d", _attend(scale=float)),
    ("softmax_wrong_axis", _attend(axis=-2)),
]


# --- heads ----------------------------------------------------------------------------------------


def _split_no_transpose(x_BLE: torch.Tensor, n_heads: int) -> torch.Tensor:
    B, L, E = x_BLE.shape
    return x_BLE.reshape(B, n_heads, L, E // n_heads)


def _merge_no_transpose(z_BHLD: torch.Tensor) -> torch.Tensor:
    B, H, L, D = z_BHLD.shape
    return z_BHLD.reshape(B, L, H * D)


SPLIT_MISTAKES = [("split_without_transpose", _split_no_transpose)]
MERGE_MISTAKES = [("merge_without_transpose", _merge_no_transpose)]


def _mha(
    split: Callable[..., torch.Tensor] = ref.split_heads,
    merge: Callable[..., torch.Tensor] = ref.merge_heads,
    attend: Callable[..., torch.Tensor] = ref.attention,
) -> Callable[[torch.Tensor, Attention], torch.Tensor]:
    def mha(x_BLC: torch.Tensor, attn: Attention) -> torch.Tensor:
        H = attn.n_heads
        q_BHLD, k_BHLD, v_BHLD = (split(w(x_BLC), H) for w in (attn.w_q, attn.w_k, attn.w_v))
        return attn.w_o(merge(attend(q_BHLD, k_BHLD, v_BHLD)))

    return mha


MULTI_HEAD_MISTAKES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("split_without_transpose", _mha(split=_split_no_transpose)),
    ("merge_without_transpose", _mha(merge=_merge_no_transpose)),
    *((mistake, _mha(attend=attend)) for mistake, attend in ATTENTION_MISTAKES),
]


# --- the Transformer layer and LM -----------------------------------------------------------------


def _layer(residual: tuple[bool, bool] = (True, True), post_norm: bool = False) -> Callable[..., torch.Tensor]:
    def layer(block: Block, x_BLC: torch.Tensor) -> torch.Tensor:
        if post_norm:
            x_BLC = block.ln1(x_BLC + block.attn(x_BLC))
            return block.ln2(x_BLC + block.mlp(x_BLC))
        a_BLC = block.attn(block.ln1(x_BLC))
        x_BLC = x_BLC + a_BLC if residual[0] else a_BLC
        m_BLC = block.mlp(block.ln2(x_BLC))
        return x_BLC + m_BLC if residual[1] else m_BLC

    return layer


LAYER_MISTAKES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("no_residual", _layer(residual=(False, False))),
    ("no_residual", _layer(residual=(False, True))),
    ("no_residual", _layer(residual=(True, False))),
    ("norm_after_residual", _layer(post_norm=True)),
]


def _lm(positions: bool = True, layer: Callable[..., torch.Tensor] = ref.transformer_layer) -> Callable[..., Any]:
    def lm(model: TransformerLM, ids_BL: torch.Tensor) -> torch.Tensor:
        # The lab's model, as in `ref.transformer_lm`: learned positions and a final norm.
        assert isinstance(model.embed.pos, LearnedPositions) and model.final_ln is not None
        x_BLC = model.embed.tok(ids_BL)
        if positions:
            x_BLC = x_BLC + model.embed.pos.weight[: ids_BL.shape[1]]
        for block in model.blocks:
            x_BLC = layer(block, x_BLC)
        return model.final_ln(x_BLC) @ model.embed.tok.weight.T

    return lm


LM_MISTAKES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("no_position_embeddings", _lm(positions=False)),
    *((mistake, _lm(layer=layer)) for mistake, layer in LAYER_MISTAKES),
]


# --- sampling: the distributions a wrong sampler draws from (checks.py compares frequencies) -------


def temperature_ignored_probs(logits_V: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """softmax(logits) / T, renormalised: the temperature cancels out."""
    return top_k_probs(logits_V, 1.0, top_k)


def top_k_probs(logits_V: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """What the reference sampler draws from: softmax(logits / T) over the top_k best tokens."""
    logits_V = logits_V.double() / temperature
    if top_k is not None:
        logits_V = logits_V.masked_fill(logits_V < logits_V.topk(top_k).values[-1], float("-inf"))
    return logits_V.softmax(dim=-1)
