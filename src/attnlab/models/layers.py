"""The Transformer's other parts: embeddings, norms, the MLP, and the block that joins them to attention.

Every variant lives here once, chosen by the config (no copy of the model per variant): LayerNorm
or RMSNorm, pre- or post-norm, ReLU / GELU / SwiGLU MLPs, biases on or off. Positions are in
`positions.py`, attention in `attention.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CausalSelfAttention
from .config import ModelConfig
from .decoding import LayerCache, cached_attention
from .hooks import NO_HOOK, Hook
from .norms import RMSNorm, make_norm  # noqa: F401 - RMSNorm: imported from here by the README's API
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


class Block(nn.Module):
    """Pre-norm (GPT-2, the lab): x + attn(ln1(x)), then + mlp(ln2(.)).

    Post-norm (Vaswani et al. 2017): ln1(x + attn(x)), then ln2(. + mlp(.)).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg  # so the block can be rebuilt elsewhere from its config and weights (attnlab check)
        self.post_norm = cfg.norm_placement == "post"
        self.ln1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def hook_names(self) -> list[str]:
        attn = [f"attn.{n}" for n in self.attn.hook_names()]
        mlp = [f"mlp.{n}" for n in self.mlp.hook_names()]
        if self.post_norm:
            return [*attn, "resid_mid_BLC", "ln1_BLC", *mlp, "resid_post_BLC", "ln2_BLC"]
        return ["ln1_BLC", *attn, "resid_mid_BLC", "ln2_BLC", *mlp, "resid_post_BLC"]

    def _attend(self, x_BLC: torch.Tensor, hook: Hook, rotate: Rotation | None, kv: LayerCache | None) -> torch.Tensor:
        if kv is None:
            return self.attn(x_BLC, hook.scope("attn."), rotate)
        return cached_attention(self.attn, x_BLC, kv, rotate)  # generation: earlier keys come from the cache

    def forward(
        self, x_BLC: torch.Tensor, hook: Hook = NO_HOOK, rotate: Rotation | None = None, kv: LayerCache | None = None
    ) -> torch.Tensor:
        mlp = hook.scope("mlp.")
        if self.post_norm:
            resid_mid_BLC = hook("resid_mid_BLC", x_BLC + self.drop(self._attend(x_BLC, hook, rotate, kv)))
            ln1_BLC = hook("ln1_BLC", self.ln1(resid_mid_BLC))
            resid_post_BLC = hook("resid_post_BLC", ln1_BLC + self.drop(self.mlp(ln1_BLC, mlp)))
            return hook("ln2_BLC", self.ln2(resid_post_BLC))
        ln1_BLC = hook("ln1_BLC", self.ln1(x_BLC))
        resid_mid_BLC = hook("resid_mid_BLC", x_BLC + self.drop(self._attend(ln1_BLC, hook, rotate, kv)))
        ln2_BLC = hook("ln2_BLC", self.ln2(resid_mid_BLC))
        return hook("resid_post_BLC", resid_mid_BLC + self.drop(self.mlp(ln2_BLC, mlp)))
