"""The Transformer's other parts: embeddings, norms, the MLP, and the block that joins them to attention.

Every variant lives here once, chosen by the config (no copy of the model per variant): LayerNorm
or RMSNorm, pre- or post-norm, ReLU / GELU / SwiGLU MLPs, biases on or off. Positions are in
`positions.py`, attention in `attention.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, CausalSelfAttention
from .config import ModelConfig
from .decoding import LayerCache
from .hooks import NO_HOOK, Hook
from .norms import RMSNorm as RMSNorm  # re-exported: the README's API imports it from here
from .norms import make_norm
from .positions import Positions, PositionScheme, Rotation


class Embeddings(nn.Module):
    """ids_BL -> x_BLC: one row of the token table per id, plus the position scheme's vectors if it adds any.

    `pos` is None for the MLP baseline, which sees one token at a time and has no positions.
    """

    def __init__(self, cfg: ModelConfig, pos: PositionScheme | None) -> None:
        super().__init__()
        self.tok = nn.Embedding(cfg.n_vocab, cfg.emb_dim)
        self.pos = pos
        self.drop = nn.Dropout(cfg.dropout)

    def hook_names(self) -> list[str]:
        if self.pos is None:
            return ["tok_BLC"]
        return ["tok_BLC", *(["pos_LC"] if self.pos.adds_to_embeddings else []), "sum_BLC"]

    def forward(self, ids_BL: torch.Tensor, hook: Hook = NO_HOOK, positions: Positions = slice(None)) -> torch.Tensor:
        if self.pos is None:
            return hook("tok_BLC", self.tok(ids_BL))
        tok_BLC = self.tok(ids_BL)
        if (scale := self.pos.token_scale()) != 1.0:
            tok_BLC = tok_BLC * scale
        x_BLC = hook("tok_BLC", tok_BLC)
        pos_LC = self.pos.table_LC(positions)
        if pos_LC is not None:
            x_BLC = x_BLC + hook("pos_LC", pos_LC)
        return hook("sum_BLC", self.drop(x_BLC))


class MLP(nn.Module):
    """The feed-forward block: W2(act(W1 x)) with ReLU (the lab), GELU (GPT-2) or ReLU squared, or SwiGLU
    W2(SiLU(W1 x) * W3 x)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp
        self.fc_in = nn.Linear(cfg.emb_dim, cfg.n_hidden, bias=cfg.bias)  # W1
        self.fc_up = nn.Linear(cfg.emb_dim, cfg.n_hidden, bias=cfg.bias) if cfg.mlp == "swiglu" else None  # W3
        self.fc_out = nn.Linear(cfg.n_hidden, cfg.emb_dim, bias=cfg.bias)  # W2

    def hook_names(self) -> list[str]:
        return ["pre_BLF", *(["up_BLF"] if self.fc_up is not None else []), "hidden_BLF", "out_BLC"]

    def forward(self, x_BLC: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        pre_BLF = hook("pre_BLF", self.fc_in(x_BLC))
        if self.fc_up is not None:
            hidden_BLF = F.silu(pre_BLF) * hook("up_BLF", self.fc_up(x_BLC))
        elif self.kind == "gelu":
            hidden_BLF = F.gelu(pre_BLF, approximate="tanh")
        elif self.kind == "relu2":
            hidden_BLF = F.relu(pre_BLF).square()
        else:
            hidden_BLF = F.relu(pre_BLF)
        return hook("out_BLC", self.fc_out(hook("hidden_BLF", hidden_BLF)))


Sublayer = Callable[[torch.Tensor], torch.Tensor]


class Block(nn.Module):
    """Pre-norm (GPT-2, the lab): x + attn(ln1(x)), then + mlp(ln2(.)).

    Post-norm (Vaswani et al. 2017): ln1(x + attn(x)), then ln2(. + mlp(.)).

    The same block serves the encoder-decoder: an encoder block is one whose self-attention is not
    causal (`causal=False`: its mask hides only padding), and a decoder block (`cross=True`) has a
    third sublayer between the two, cross-attention to the encoder's output, with its own norm.
    """

    def __init__(self, cfg: ModelConfig, causal: bool = True, cross: bool = False) -> None:
        super().__init__()
        self.config = cfg  # so the block can be rebuilt elsewhere from its config and weights (attnlab check)
        self.post_norm = cfg.norm_placement == "post"
        self.ln1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg) if causal else Attention(cfg)
        self.ln_cross = make_norm(cfg) if cross else None
        self.cross = Attention(cfg, "cross") if cross else None
        self.ln2 = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def sublayers(self) -> list[tuple[str, str, str]]:
        """The hook names of each sublayer, its norm and the residual stream after it, in order."""
        cross = [("cross", "ln_cross", "resid_cross")] if self.cross is not None else []
        return [("attn", "ln1", "resid_mid"), *cross, ("mlp", "ln2", "resid_post")]

    def hook_names(self) -> list[str]:
        inner = [self.attn.hook_names(), *([self.cross.hook_names()] if self.cross else []), self.mlp.hook_names()]
        names = []
        for (sub, norm, resid), points in zip(self.sublayers(), inner, strict=True):
            f = [f"{sub}.{n}" for n in points]
            names += [*f, f"{resid}_BLC", f"{norm}_BLC"] if self.post_norm else [f"{norm}_BLC", *f, f"{resid}_BLC"]
        return names

    def residual(
        self, x_BLC: torch.Tensor, f: Sublayer, norm: nn.Module, hook: Hook, norm_name: str, resid_name: str
    ) -> torch.Tensor:
        """One sublayer `f` and its norm on the residual stream: x + f(norm(x)), or post-norm norm(x + f(x)),
        with the hook names of the norm's output and of the stream after the sublayer."""
        if self.post_norm:
            resid_BLC = hook(resid_name, x_BLC + self.drop(f(x_BLC)))
            return hook(norm_name, norm(resid_BLC))
        return hook(resid_name, x_BLC + self.drop(f(hook(norm_name, norm(x_BLC)))))

    def forward(
        self,
        x_BLC: torch.Tensor,
        hook: Hook = NO_HOOK,
        rotate: Rotation | None = None,
        kv: LayerCache | None = None,
        *,
        mask_B1LK: torch.Tensor | None = None,
        memory_BSC: torch.Tensor | None = None,
        memory_mask_B11S: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`mask_B1LK`: the self-attention's mask (None: causal); `memory_BSC`: the encoder's output, which
        cross-attention reads, and `memory_mask_B11S` its padding; `kv`: a generation's cache."""
        if kv is not None and not hook.enabled and not self.training:  # generating: the same numbers, fewer calls
            return self.cached_step(x_BLC, kv, rotate, memory_BSC, memory_mask_B11S, mask_B1LK)

        def attend(h_BLC: torch.Tensor) -> torch.Tensor:  # to the sequence itself
            return self.attn(h_BLC, hook.scope("attn."), rotate, mask_B1LK=mask_B1LK, kv=kv)

        x_BLC = self.residual(x_BLC, attend, self.ln1, hook, "ln1_BLC", "resid_mid_BLC")
        if self.cross is not None and self.ln_cross is not None:  # a decoder block (it makes the two together)
            cross_attn = self.cross

            def cross(h_BLC: torch.Tensor) -> torch.Tensor:  # to the source: the encoder's output
                return cross_attn(h_BLC, hook.scope("cross."), mask_B1LK=memory_mask_B11S, source_BSC=memory_BSC, kv=kv)

            x_BLC = self.residual(x_BLC, cross, self.ln_cross, hook, "ln_cross_BLC", "resid_cross_BLC")
        mlp = hook.scope("mlp.")
        return self.residual(x_BLC, lambda h_BLC: self.mlp(h_BLC, mlp), self.ln2, hook, "ln2_BLC", "resid_post_BLC")

    def cached_step(
        self,
        x_BLC: torch.Tensor,
        kv: LayerCache,
        rotate: Rotation | None = None,
        memory_BSC: torch.Tensor | None = None,
        memory_mask_B11S: torch.Tensor | None = None,
        mask_B1LK: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`forward` for the new positions of a generation (eval mode, no hooks): the attention's own fast
        paths, called directly, and no dropout. A decoding step is a chain of tiny operations, each
        costing its call more than its arithmetic, so fewer calls are faster."""
        post = self.post_norm
        h_BLC = self.attn.cached_step(x_BLC if post else self.ln1(x_BLC), kv, rotate, mask_B1LK)
        x_BLC = self.ln1(x_BLC + h_BLC) if post else x_BLC + h_BLC
        if self.cross is not None and self.ln_cross is not None:  # a decoder block, always given the memory
            assert memory_BSC is not None
            h_BLC = self.cross.cross_step(x_BLC if post else self.ln_cross(x_BLC), kv, memory_BSC, memory_mask_B11S)
            x_BLC = self.ln_cross(x_BLC + h_BLC) if post else x_BLC + h_BLC
        h_BLC = self.mlp(x_BLC if post else self.ln2(x_BLC))
        return self.ln2(x_BLC + h_BLC) if post else x_BLC + h_BLC


def blocks_of(stack: nn.ModuleList) -> list[Block]:
    """The blocks of a model's stack (`blocks`, `encoder`, `decoder`): torch types a ModuleList's items as
    any Module, and these stacks are built of Blocks alone."""
    return [cast(Block, block) for block in stack]
