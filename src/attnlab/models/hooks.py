"""Hook points: every intermediate tensor of a forward pass under a stable dotted name.

A model's forward threads a `Hook` through its modules, and each module passes its tensors through
`hook("q_BHLD", q_BHLD)`. The default `NO_HOOK` returns the tensor untouched (one cheap call), so a
forward without hooks costs what it did before. An active `Hook` records tensors into a cache and
lets hook functions replace them (zero a head, knock out position embeddings...).

The name's suffix is the tensor's symbolic shape: `blocks.0.attn.q_BHLD` has dims (B, H, L, D).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from ..errors import AttnlabError

HookFn = Callable[[torch.Tensor, str], torch.Tensor | None]

# What each hook point means, by its name without the block prefix; the README table is built from it.
MEANINGS: dict[str, str] = {
    "embed.tok_BLC": "token embeddings: one row of the embedding table per token (x sqrt(C) with sinusoidal positions)",
    "embed.pos_LC": "position embeddings: one learned vector per position",
    "embed.sum_BLC": "the residual stream entering block 0: token (+ position) embeddings",
    "ln1_BLC": "norm of the residual stream, the attention's input (post-norm: of the attention's sum)",
    "attn.q_BHLD": "queries: what each position looks for, per head (with RoPE: turned by its position)",
    "attn.k_BHKD": "keys: what each position offers to be found by, per head (with RoPE: turned by its position)",
    "attn.v_BHKD": "values: what each position passes on when attended to, per head",
    "attn.k_BGKD": "keys, per key/value head (grouped-query attention: each serves H / G query heads)",
    "attn.v_BGKD": "values, per key/value head (grouped-query attention: each serves H / G query heads)",
    "attn.scores_BHLK": "scores q.k / sqrt(D): how well each query matches each key",
    "attn.masked_BHLK": "scores with future keys set to -inf (the causal mask)",
    "attn.weights_BHLK": "attention weights: softmax over keys, each row sums to 1",
    "attn.z_BHLD": "weighted sum of values, per head",
    "attn.out_BLC": "heads concatenated and projected back to C by the output projection",
    "resid_mid_BLC": "residual stream after adding the attention output",
    "ln2_BLC": "norm of the residual stream, the MLP's input (post-norm: the block's output)",
    "mlp.pre_BLF": "MLP hidden layer before the activation (W1 x)",
    "mlp.up_BLF": "SwiGLU only: the linear branch W3 x that the activated branch multiplies",
    "mlp.hidden_BLF": "MLP hidden layer after the activation (ReLU, GELU, ReLU squared, or SiLU(W1 x) * W3 x)",
    "mlp.out_BLC": "MLP output, projected back to C",
    "resid_post_BLC": "residual stream after adding the MLP output: the block's output",
    "final_ln_BLC": "final norm of the residual stream (pre-norm models)",
    "logits_BLV": "logits: one score per vocabulary entry for the next token",
    # The encoder-decoder (seq2seq.py): the encoder's blocks, then the decoder's with cross-attention.
    "src_embed.tok_BLC": "source token embeddings (x sqrt(C) with sinusoidal positions)",
    "src_embed.pos_LC": "source position vectors",
    "src_embed.sum_BLC": "the encoder's input: source token (+ position) embeddings",
    "memory_BSC": "the encoder's output: one vector per source position, what cross-attention reads",
    "ln_cross_BLC": "norm of the residual stream around cross-attention",
    "cross.q_BHLD": "cross-attention queries: what each target position looks for in the source",
    "cross.k_BHSD": "cross-attention keys: one per source position, from the encoder's output",
    "cross.v_BHSD": "cross-attention values: what each source position passes on",
    "cross.scores_BHLS": "scores of each target query against each source key",
    "cross.masked_BHLS": "cross-attention scores with source padding set to -inf",
    "cross.weights_BHLS": "cross-attention weights: where in the source each target position looks",
    "cross.z_BHLD": "weighted sum of the source's values, per head",
    "cross.out_BLC": "cross-attention heads concatenated and projected back to C",
    "resid_cross_BLC": "residual stream after adding the cross-attention output",
    "dec_ln_BLC": "final norm of the decoder's stream (pre-norm encoder-decoders)",
}


def symbolic_shape(name: str) -> str:
    """`blocks.0.attn.q_BHLD` -> "B H L D". An encoder's positions are the source's: its L and K read S
    (`encoder.0.attn.weights_BHLK` -> "B H S S"), as the decoder's cross-attention names them."""
    dims = name.rsplit("_", 1)[1]
    if name.startswith(("encoder.", "src_embed.")):
        dims = dims.replace("L", "S").replace("K", "S")
    return " ".join(dims)


def generic_name(name: str) -> str:
    """`blocks.3.attn.q_BHLD` (or `encoder.3.`, `decoder.3.`) -> `attn.q_BHLD` (the key of MEANINGS)."""
    return re.sub(r"^(blocks|encoder|decoder)\.\d+\.", "", name)


def meaning(name: str) -> str:
    return MEANINGS.get(generic_name(name), "")


class Hook:
    """Records and/or edits named tensors during one forward pass.

    `cache` receives the tensors (only those named in `keep`, when given); `hooks` maps a name to
    functions fn(tensor, name) that may return a replacement.
    """

    enabled = True

    def __init__(
        self,
        cache: dict[str, torch.Tensor] | None = None,
        hooks: dict[str, list[HookFn]] | None = None,
        prefix: str = "",
        keep: set[str] | None = None,
    ) -> None:
        self.cache, self.hooks, self.prefix, self.keep = cache, hooks or {}, prefix, keep

    def __call__(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        full = self.prefix + name
        for fn in self.hooks.get(full, ()):
            out = fn(tensor, full)
            if out is not None:
                if out.shape != tensor.shape:
                    raise AttnlabError(
                        f"hook on {full} returned shape {tuple(out.shape)}, expected {tuple(tensor.shape)}"
                    )
                tensor = out
        if self.cache is not None and (self.keep is None or full in self.keep):
            self.cache[full] = tensor.detach()
        return tensor

    def scope(self, prefix: str) -> Hook:
        """The same cache and hooks, with names under `prefix` (e.g. "blocks.0.")."""
        return Hook(self.cache, self.hooks, self.prefix + prefix, self.keep)


class _NoHook(Hook):
    enabled = False

    def __call__(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def scope(self, prefix: str) -> Hook:
        return self


NO_HOOK: Hook = _NoHook()
