"""The encoder-decoder Transformer of Vaswani et al. 2017, "Attention Is All You Need", from the LM's parts.

    encoder: source tokens -> embeddings + positions -> n_enc_layers blocks of
             [self-attention (every source position sees every other one), MLP] -> memory_BSC
    decoder: target tokens -> embeddings + positions -> n_layers blocks of
             [causal self-attention, cross-attention to memory_BSC, MLP] -> logits_BLV

The attention (`MaskedAttention`: the LM's projections and steps 3-6), the MLP, the norms, the
embeddings and the position schemes are the Transformer LM's. Each sublayer is wrapped as the LM's
`Block` wraps its two: post-norm `norm(x + f(x))` as in the paper (the default here), or pre-norm
`x + f(norm(x))`. Padding (id `PAD` = 0) never receives attention: every attention gets a mask that
hides padded keys, and the decoder's self-attention also hides the future. With one vocabulary
(`n_src_vocab` = 0, the paper's shared 37,000 tokens) one embedding table serves the encoder, the
decoder and (tied) the output layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AttnlabError
from .attention import MaskedAttention, causal_mask_LK
from .config import ModelConfig
from .hooks import NO_HOOK, Hook
from .layers import MLP, Embeddings, make_norm
from .positions import make_positions

PAD, BOS, EOS = 0, 1, 2  # the special ids of every seq2seq vocabulary: padding, begin, end


ATTENTIONS = ("encoder", "decoder", "cross")  # the encoder's self-attention, the decoder's, cross-attention


def attention_prefix(kind: str, layer: int) -> str:
    """Where one layer's attention of `kind` puts its hook points: "encoder.0.attn.", "decoder.0.cross."..."""
    if kind not in ATTENTIONS:
        raise AttnlabError(f"unknown attention {kind!r}: choose encoder, decoder or cross")
    return (
        f"encoder.{layer}.attn." if kind == "encoder" else f"decoder.{layer}.{'cross' if kind == 'cross' else 'attn'}."
    )


def attention_names(kind: str, layer: int) -> list[str]:
    """The hook names of one layer's queries, keys, values and weights for the attention `kind`."""
    p, K = attention_prefix(kind, layer), MaskedAttention.keys_of(kind)
    return [p + "q_BHLD", p + f"k_BH{K}D", p + f"v_BH{K}D", p + f"weights_BHL{K}"]


def padding_mask_B11S(ids_BS: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, S): True at the positions that are not padding, the keys any query may attend to."""
    return (ids_BS != PAD)[:, None, None, :]


class Seq2SeqBlock(nn.Module):
    """An encoder block (self-attention, MLP) or, with `decoder`, a decoder block (causal self-attention,
    cross-attention to the encoder's output, MLP)."""

    def __init__(self, cfg: ModelConfig, decoder: bool) -> None:
        super().__init__()
        self.post_norm = cfg.norm_placement == "post"
        self.ln1 = make_norm(cfg)
        self.attn = MaskedAttention(cfg, "decoder" if decoder else "encoder")
        self.ln_cross = make_norm(cfg) if decoder else None
        self.cross = MaskedAttention(cfg, "cross") if decoder else None
        self.ln2 = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def sublayers(self) -> list[tuple[str, str, str]]:
        """(sublayer, its norm, the residual stream after it) in order."""
        cross = [("cross", "ln_cross", "resid_cross")] if self.cross is not None else []
        return [("attn", "ln1", "resid_mid"), *cross, ("mlp", "ln2", "resid_post")]

    def hook_names(self) -> list[str]:
        names = []
        for sub, norm, resid in self.sublayers():
            inner = [f"{sub}.{n}" for n in getattr(self, sub).hook_names()]
            names += (
                [*inner, f"{resid}_BLC", f"{norm}_BLC"] if self.post_norm else [f"{norm}_BLC", *inner, f"{resid}_BLC"]
            )
        return names

    def _residual(self, x_BLC: torch.Tensor, hook: Hook, sub: str, norm: str, resid: str, f: Any) -> torch.Tensor:
        norm_fn = getattr(self, norm)
        if self.post_norm:  # norm(x + f(x)), the paper's
            resid_BLC = hook(f"{resid}_BLC", x_BLC + self.drop(f(x_BLC, hook.scope(f"{sub}."))))
            return hook(f"{norm}_BLC", norm_fn(resid_BLC))
        normed_BLC = hook(f"{norm}_BLC", norm_fn(x_BLC))
        return hook(f"{resid}_BLC", x_BLC + self.drop(f(normed_BLC, hook.scope(f"{sub}."))))

    def forward(
        self,
        x_BLC: torch.Tensor,
        self_mask: torch.Tensor,
        hook: Hook = NO_HOOK,
        memory_BSC: torch.Tensor | None = None,
        cross_mask: torch.Tensor | None = None,
        cache: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """`cache` (decoding): the self-attention's keys and values so far ("self", grown here) and the
        encoder output's ("cross", made once)."""

        def attend(h_BLC: torch.Tensor, scope: Hook) -> torch.Tensor:
            kv = None
            if cache is not None:
                k_BHLD, v_BHLD = self.attn.keys_values(h_BLC)
                if "self" in cache:
                    k_BHLD = torch.cat([cache["self"][0], k_BHLD], dim=2)
                    v_BHLD = torch.cat([cache["self"][1], v_BHLD], dim=2)
                kv = cache["self"] = (k_BHLD, v_BHLD)
            return self.attn(h_BLC, self_mask, scope, keys_values=kv)

        def cross(h_BLC: torch.Tensor, scope: Hook) -> torch.Tensor:
            assert self.cross is not None and memory_BSC is not None and cross_mask is not None
            kv = None
            if cache is not None:
                if "cross" not in cache:
                    cache["cross"] = self.cross.keys_values(memory_BSC)
                kv = cache["cross"]
            return self.cross(h_BLC, cross_mask, scope, memory_BSC, keys_values=kv)

        steps = {"attn": attend, "cross": cross, "mlp": lambda h_BLC, scope: self.mlp(h_BLC, scope)}
        for sub, norm, resid in self.sublayers():
            x_BLC = self._residual(x_BLC, hook, sub, norm, resid, steps[sub])
        return x_BLC


class Seq2SeqTransformer(nn.Module):
    """Encoder and decoder stacks (the paper's post-norm by default); `forward(src_BS, tgt_BL)` -> logits_BLV."""

    kind = "seq2seq"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config if config.model == self.kind else dataclasses.replace(config, model=self.kind)
        cfg = self.config
        self.embed = Embeddings(cfg, make_positions(cfg))  # the target's (and the source's, when shared)
        if cfg.n_src_vocab:
            self.src_embed = Embeddings(dataclasses.replace(cfg, n_vocab=cfg.n_src_vocab), make_positions(cfg))
        else:
            self.src_embed = None
        self.encoder = nn.ModuleList(Seq2SeqBlock(cfg, decoder=False) for _ in range(cfg.n_enc_layers or cfg.n_layers))
        self.decoder = nn.ModuleList(Seq2SeqBlock(cfg, decoder=True) for _ in range(cfg.n_layers))
        pre = cfg.norm_placement == "pre"  # pre-norm stacks end in a norm of their own; post-norm blocks do already
        self.enc_ln = make_norm(cfg) if pre else None
        self.dec_ln = make_norm(cfg) if pre else None
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.emb_dim, cfg.n_vocab, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform matrices (as the paper's reference implementations), zero biases, N(0, 1/C) embeddings."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, self.config.emb_dim**-0.5)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hook_names(self) -> list[str]:
        names = [f"src_embed.{n}" for n in self.embed.hook_names()]  # the source's embedding has the same points
        for i, block in enumerate(self.encoder):
            names += [f"encoder.{i}.{n}" for n in block.hook_names()]
        names += ["memory_BSC", *[f"embed.{n}" for n in self.embed.hook_names()]]
        for i, block in enumerate(self.decoder):
            names += [f"decoder.{i}.{n}" for n in block.hook_names()]
        return [*names, *(["dec_ln_BLC"] if self.dec_ln is not None else []), "logits_BLV"]

    def _check_length(self, n: int, what: str) -> None:
        if n > self.config.max_len:
            raise AttnlabError(f"a {what} of {n} tokens is longer than max_len={self.config.max_len}")

    def encode(self, src_BS: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        """The encoder's output memory_BSC: one vector per source position, each having seen all of them."""
        self._check_length(src_BS.shape[1], "source")
        mask_B11S = padding_mask_B11S(src_BS)
        embed = self.src_embed if self.src_embed is not None else self.embed
        x_BSC = embed(src_BS, hook.scope("src_embed."), slice(0, src_BS.shape[1]))
        for i, block in enumerate(self.encoder):
            x_BSC = block(x_BSC, mask_B11S, hook.scope(f"encoder.{i}."))
        if self.enc_ln is not None:
            x_BSC = self.enc_ln(x_BSC)
        return hook("memory_BSC", x_BSC)

    def decode(
        self,
        tgt_BL: torch.Tensor,
        memory_BSC: torch.Tensor,
        src_BS: torch.Tensor,
        hook: Hook = NO_HOOK,
        cache: list[dict[str, Any]] | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        """Logits for the target tokens tgt_BL (positions start, start + 1, ...) given the encoder's output.

        With `cache` (one dict per decoder block, empty at first) only the new positions are run: their
        self-attention reads the earlier keys and values from it, and cross-attention the encoder's,
        made on the first call.
        """
        L = tgt_BL.shape[1]
        self._check_length(start + L, "target")
        if cache is not None and hook.enabled:
            raise AttnlabError("hooks see a whole sequence: decode it without a cache")
        if cache is None:
            self_mask = causal_mask_LK(L, L, tgt_BL.device)[None, None] & padding_mask_B11S(tgt_BL)
        else:  # new positions after `start` cached ones; padding is never fed while decoding
            self_mask = causal_mask_LK(L, start + L, tgt_BL.device)[None, None]
        cross_mask = padding_mask_B11S(src_BS)
        x_BLC = self.embed(tgt_BL, hook.scope("embed."), slice(start, start + L))
        for i, block in enumerate(self.decoder):
            layer = cache[i] if cache is not None else None
            x_BLC = block(x_BLC, self_mask, hook.scope(f"decoder.{i}."), memory_BSC, cross_mask, layer)
        if self.dec_ln is not None:
            x_BLC = hook("dec_ln_BLC", self.dec_ln(x_BLC))
        logits_BLV = F.linear(x_BLC, self.embed.tok.weight) if self.lm_head is None else self.lm_head(x_BLC)
        return hook("logits_BLV", logits_BLV)

    def forward(self, src_BS: torch.Tensor, tgt_BL: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        """Teacher forcing: logits_BLV for every target position at once, from the source and the
        decoder input (the target shifted right, see `attnlab.tasks.teacher_forcing`)."""
        return self.decode(tgt_BL, self.encode(src_BS, hook), src_BS, hook)

    def run_with_cache(
        self, src_BS: torch.Tensor, tgt_BL: torch.Tensor, names: list[str] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and the named activations (all of them with `names=None`), as the LM's `run_with_cache`."""
        known = self.hook_names()
        if names is not None and (unknown := [n for n in names if n not in known]):
            raise AttnlabError(f"unknown hook name {unknown[0]!r}; this model has: {', '.join(known[:6])}, ...")
        cache: dict[str, torch.Tensor] = {}
        logits_BLV = self(src_BS, tgt_BL, Hook(cache=cache, keep=set(names) if names is not None else None))
        return logits_BLV, cache
