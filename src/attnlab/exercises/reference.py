"""The exercises of the lab and of the circuits notebook, solved: the functions each check compares a
student's version with.

They are written the way the lab draws them, one step per line; the package's own layers
(`attnlab.models`) compute the same numbers with fast paths beside them.
"""

from __future__ import annotations

import math

import torch

from ..inspect.circuits import resid_name
from ..models.attention import Attention
from ..models.layers import Block
from ..models.positions import LearnedPositions
from ..models.transformer import TransformerLM

N_VOCAB = 256  # the lab's vocabulary: one token per code point below 256 (Latin-1)


def encode_doc(doc: str) -> torch.Tensor:
    """Token ids (L,) of `doc`: one per character, its code point; characters >= 256 are dropped."""
    return torch.tensor([ord(ch) for ch in doc if ord(ch) < N_VOCAB], dtype=torch.long)


def make_causal_mask(L: int) -> torch.Tensor:
    """(L, L) mask to add to the scores: 0 where query i may see key j (j <= i), -inf where j > i."""
    return torch.full((L, L), float("-inf")).triu(diagonal=1)


def attention(q_BHLD: torch.Tensor, k_BHKD: torch.Tensor, v_BHKD: torch.Tensor) -> torch.Tensor:
    """Causal scaled dot-product attention: softmax(q k^T / sqrt(D) + mask) v, softmax over the keys."""
    D, L = q_BHLD.shape[-1], q_BHLD.shape[-2]
    scores_BHLK = q_BHLD @ k_BHKD.transpose(-2, -1) / math.sqrt(D)
    masked_BHLK = scores_BHLK + make_causal_mask(L).to(scores_BHLK)
    weights_BHLK = masked_BHLK.softmax(dim=-1)
    return weights_BHLK @ v_BHKD


def split_heads(x_BLE: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, L, E) -> (B, H, L, D) with E = H x D: head h gets channels h*D ... h*D + D - 1."""
    B, L, E = x_BLE.shape
    return x_BLE.view(B, L, n_heads, E // n_heads).transpose(1, 2)


def merge_heads(z_BHLD: torch.Tensor) -> torch.Tensor:
    """(B, H, L, D) -> (B, L, H x D): the heads' outputs side by side again."""
    B, H, L, D = z_BHLD.shape
    return z_BHLD.transpose(1, 2).reshape(B, L, H * D)


def multi_head_attention(x_BLC: torch.Tensor, attn: Attention) -> torch.Tensor:
    """Causal multi-head self-attention with `attn`'s projections (w_q, w_k, w_v, w_o) and n_heads."""
    H = attn.n_heads
    q_BHLD = split_heads(attn.w_q(x_BLC), H)
    k_BHLD = split_heads(attn.w_k(x_BLC), H)
    v_BHLD = split_heads(attn.w_v(x_BLC), H)
    z_BHLD = attention(q_BHLD, k_BHLD, v_BHLD)
    return attn.w_o(merge_heads(z_BHLD))


def transformer_layer(block: Block, x_BLC: torch.Tensor) -> torch.Tensor:
    """One pre-norm block: x + attention(norm(x)), then + MLP(norm(.))."""
    x_BLC = x_BLC + block.attn(block.ln1(x_BLC))
    return x_BLC + block.mlp(block.ln2(x_BLC))


def transformer_lm(model: TransformerLM, ids_BL: torch.Tensor) -> torch.Tensor:
    """Logits (B, L, V): token + position embeddings, the blocks, the final norm, the tied LM head."""
    # The lab's model: learned positions and pre-norm blocks, so a final norm.
    assert isinstance(model.embed.pos, LearnedPositions) and model.final_ln is not None
    L = ids_BL.shape[1]
    x_BLC = model.embed.tok(ids_BL) + model.embed.pos.weight[:L]
    for block in model.blocks:
        assert isinstance(block, Block)  # a TransformerLM's blocks are all Blocks
        x_BLC = transformer_layer(block, x_BLC)
    return model.final_ln(x_BLC) @ model.embed.tok.weight.T


def sample_next(logits_V: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> int:
    """One next-token id: greedy (argmax) when temperature is 0, else sampled from softmax(logits / T),
    among the `top_k` most likely tokens when top_k is given."""
    if temperature == 0:
        return int(logits_V.argmax())
    logits_V = logits_V / temperature
    if top_k is not None:
        kth_best = logits_V.topk(top_k).values[-1]
        logits_V = logits_V.masked_fill(logits_V < kth_best, float("-inf"))
    return int(torch.multinomial(logits_V.softmax(dim=-1), 1))


# --- the circuits notebook (circuits.md) ----------------------------------------------------------


def logit_difference(logits_BLV: torch.Tensor, answer: int, wrong: int) -> torch.Tensor:
    """logit(answer) - logit(wrong) at the last position of each row: (B,)."""
    return logits_BLV[:, -1, answer] - logits_BLV[:, -1, wrong]


def patch_residual(
    model: TransformerLM, clean_BL: torch.Tensor, corrupt_BL: torch.Tensor, layer: int, position: int
) -> torch.Tensor:
    """The corrupted run's logits (B, L, V) when the residual stream entering block `layer` at `position`
    holds the clean run's value there."""
    name = resid_name(model, layer)
    _, clean_cache = model.run_with_cache(clean_BL, names=[name])

    def patch(resid_BLC: torch.Tensor, _: str) -> torch.Tensor:
        resid_BLC = resid_BLC.clone()
        resid_BLC[:, position] = clean_cache[name][:, position]
        return resid_BLC

    return model.run_with_hooks(corrupt_BL, [(name, patch)])


def logit_attribution(
    parts_PC: torch.Tensor, ln_weight_C: torch.Tensor, direction_C: torch.Tensor, eps: float
) -> torch.Tensor:
    """Each part's direct contribution (P,) to the logit difference along `direction_C`, through the final
    LayerNorm: the parts sum to the final residual stream, whose own scale divides every part."""
    final_C = parts_PC.sum(0)
    scale = (final_C.var(unbiased=False) + eps).sqrt()
    centred_PC = parts_PC - parts_PC.mean(-1, keepdim=True)
    return (centred_PC / scale * ln_weight_C) @ direction_C


def mean_ablate(z_BHLD: torch.Tensor, head: int, z_ref_BHLD: torch.Tensor) -> torch.Tensor:
    """A copy of z with head `head` replaced, at every position, by its mean over the reference text's
    sequences and positions."""
    mean_D = z_ref_BHLD[:, head].mean((0, 1))
    z_BHLD = z_BHLD.clone()
    z_BHLD[:, head] = mean_D
    return z_BHLD
