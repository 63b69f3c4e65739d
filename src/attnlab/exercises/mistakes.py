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

from ..inspect.circuits import resid_name
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
    # The circuits notebook.
    "logit_not_difference": Mistake(
        "it returns the answer's logit, not logit(answer) - logit(wrong): a part that raises every logit alike "
        "would look important",
        "subtract the wrong token's logit at the same position",
    ),
    "difference_reversed": Mistake(
        "the difference is logit(wrong) - logit(answer): its sign is flipped",
        "take logit(answer) - logit(wrong)",
    ),
    "not_last_position": Mistake(
        "the difference is read at the first position, not the last (the prediction of the next token)",
        "index the positions with -1",
    ),
    "probability_difference": Mistake(
        "it compares probabilities after a softmax, not logits: the difference no longer adds up over parts",
        "subtract the raw logits (the softmax shifts every logit by the same amount, which cancels anyway)",
    ),
    "patched_backwards": Mistake(
        "the patch goes the wrong way: the clean run gets the corrupted value, not the corrupted run the clean one",
        "cache the clean run, then run the corrupted prompt with a hook that writes the clean value in",
    ),
    "patched_every_position": Mistake(
        "every position of the stream is replaced, not only `position`: that is the clean run from there on",
        "copy only resid[:, position] from the clean cache",
    ),
    "patched_after_block": Mistake(
        "it patches the stream leaving block `layer` (entering block layer + 1), not the stream entering it",
        "the stream entering block l is resid_name(model, l): the embeddings' sum for l = 0",
    ),
    "no_norm_scale": Mistake(
        "the parts are not divided by the final norm's scale (the whole stream's standard deviation in this run)",
        "divide every centred part by sqrt(var(final stream) + eps), the same number for all parts",
    ),
    "no_norm_centring": Mistake(
        "the parts are not centred: LayerNorm subtracts each vector's mean before it scales",
        "subtract each part's mean over its channels before scaling",
    ),
    "norm_per_part": Mistake(
        "each part is scaled by its own standard deviation, not by the final stream's: the parts no longer add up",
        "use one scale for every part: the final stream's sqrt(var + eps)",
    ),
    "no_norm_weight": Mistake(
        "the final norm's weight (gain) is left out",
        "multiply the scaled parts by ln_weight channel by channel, then project on the direction",
    ),
    "zero_not_mean": Mistake(
        "the head is set to zero, not to its mean: zero is a value the head never outputs",
        "replace it with its mean over the reference text's sequences and positions",
    ),
    "mean_of_own_batch": Mistake(
        "the mean is taken over the ablated batch itself, not over the reference text",
        "average z_ref over its sequences and positions",
    ),
    "mean_per_position": Mistake(
        "the mean is taken per position (over sequences only), so the head still carries where it is",
        "average over the sequences and the positions both: mean over dims (0, 1) of the head's (B, L, D)",
    ),
    "every_head_ablated": Mistake(
        "every head is replaced by its mean, not only `head`",
        "change only z[:, head]",
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


# --- the circuits notebook ------------------------------------------------------------------------


def _last(logits_BLV: torch.Tensor, answer: int, wrong: int) -> torch.Tensor:
    return logits_BLV[:, -1, answer]


def _reversed(logits_BLV: torch.Tensor, answer: int, wrong: int) -> torch.Tensor:
    return logits_BLV[:, -1, wrong] - logits_BLV[:, -1, answer]


def _first(logits_BLV: torch.Tensor, answer: int, wrong: int) -> torch.Tensor:
    return logits_BLV[:, 0, answer] - logits_BLV[:, 0, wrong]


def _probabilities(logits_BLV: torch.Tensor, answer: int, wrong: int) -> torch.Tensor:
    probs_BV = logits_BLV[:, -1].softmax(-1)
    return probs_BV[:, answer] - probs_BV[:, wrong]


LOGIT_DIFF_MISTAKES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("logit_not_difference", _last),
    ("difference_reversed", _reversed),
    ("not_last_position", _first),
    ("probability_difference", _probabilities),
]


def _patch(into: str = "corrupt", every_position: bool = False, shift: int = 0) -> Callable[..., torch.Tensor]:
    def patch_residual(
        model: TransformerLM, clean_BL: torch.Tensor, corrupt_BL: torch.Tensor, layer: int, position: int
    ) -> torch.Tensor:
        source_BL, target_BL = (clean_BL, corrupt_BL) if into == "corrupt" else (corrupt_BL, clean_BL)
        name = resid_name(model, layer + shift)
        _, cache = model.run_with_cache(source_BL, names=[name])

        def patch(resid_BLC: torch.Tensor, _: str) -> torch.Tensor:
            resid_BLC = resid_BLC.clone()
            where = slice(None) if every_position else position
            resid_BLC[:, where] = cache[name][:, where]
            return resid_BLC

        return model.run_with_hooks(target_BL, [(name, patch)])

    return patch_residual


PATCH_MISTAKES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("patched_backwards", _patch(into="clean")),
    ("patched_every_position", _patch(every_position=True)),
    ("patched_after_block", _patch(shift=1)),
]


def _attribution(
    scale: str = "final", centre: bool = True, weight: bool = True
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]:
    def logit_attribution(
        parts_PC: torch.Tensor, ln_weight_C: torch.Tensor, direction_C: torch.Tensor, eps: float
    ) -> torch.Tensor:
        centred_PC = parts_PC - parts_PC.mean(-1, keepdim=True) if centre else parts_PC
        if scale == "final":
            centred_PC = centred_PC / (parts_PC.sum(0).var(unbiased=False) + eps).sqrt()
        elif scale == "per_part":
            centred_PC = centred_PC / (parts_PC.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
        return (centred_PC * ln_weight_C if weight else centred_PC) @ direction_C

    return logit_attribution


ATTRIBUTION_MISTAKES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("no_norm_scale", _attribution(scale="none")),
    ("no_norm_scale", _attribution(scale="none", weight=False)),
    ("no_norm_centring", _attribution(centre=False)),
    ("norm_per_part", _attribution(scale="per_part")),
    ("no_norm_weight", _attribution(weight=False)),
]


def _ablate(value: str = "mean", over: str = "reference", heads: str = "one") -> Callable[..., torch.Tensor]:
    def mean_ablate(z_BHLD: torch.Tensor, head: int, z_ref_BHLD: torch.Tensor) -> torch.Tensor:
        source_BHLD = z_ref_BHLD if over != "own" else z_BHLD
        dims = (0,) if over == "position" else (0, 2)
        mean_HXD = source_BHLD.mean(dims, keepdim=True)  # X: the positions, or 1
        z_BHLD = z_BHLD.clone()
        chosen = slice(None) if heads == "every" else slice(head, head + 1)
        z_BHLD[:, chosen] = 0.0 if value == "zero" else mean_HXD[:, chosen]
        return z_BHLD

    return mean_ablate


ABLATION_MISTAKES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("zero_not_mean", _ablate(value="zero")),
    ("mean_of_own_batch", _ablate(over="own")),
    ("mean_per_position", _ablate(over="position")),
    ("every_head_ablated", _ablate(heads="every")),
]


# Each exercise's wrong versions, by the exercise's name (the checks of encode_doc, make_causal_mask and
# sample_next recognise their mistakes from the output itself, without wrong versions).
WRONG_VERSIONS: dict[str, list[tuple[str, Callable[..., torch.Tensor]]]] = {
    "attention": ATTENTION_MISTAKES,
    "split_heads": SPLIT_MISTAKES,
    "merge_heads": MERGE_MISTAKES,
    "multi_head_attention": MULTI_HEAD_MISTAKES,
    "transformer_layer": LAYER_MISTAKES,
    "transformer_lm": LM_MISTAKES,
    "logit_difference": LOGIT_DIFF_MISTAKES,
    "patch_residual": PATCH_MISTAKES,
    "logit_attribution": ATTRIBUTION_MISTAKES,
    "mean_ablate": ABLATION_MISTAKES,
}
