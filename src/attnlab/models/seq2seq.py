"""The encoder-decoder Transformer of Vaswani et al. 2017, "Attention Is All You Need", from the LM's parts.

    encoder: source tokens -> embeddings + positions -> n_enc_layers blocks of
             [self-attention (every source position sees every other one), MLP] -> memory_BSC
    decoder: target tokens -> embeddings + positions -> n_layers blocks of
             [causal self-attention, cross-attention to memory_BSC, MLP] -> logits_BLV

Everything is the Transformer LM's: the blocks (`Block`: an encoder block is one whose attention is
not causal, a decoder block one with cross-attention), the one attention forward (`Attention`),
the MLP, the norms, the embeddings, the position schemes, the KV cache, and the base class (`Model`:
the tied output layer, parameter counts, hooks, and the positions and eval mode of generation).
Post-norm `norm(x + f(x))` as in the paper by default, or pre-norm `x + f(norm(x))`. Padding (id
`PAD` = 0) never receives attention: every attention gets a mask that hides padded keys, and the
decoder's self-attention also hides the future. With one vocabulary (`n_src_vocab` = 0, the
paper's shared 37,000 tokens) one embedding table serves the encoder, the decoder and (tied) the
output layer. Decoding (greedy, beam search) is in `translate.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import AttnlabError
from .attention import Attention, causal_mask_LK
from .base import Model
from .config import ModelConfig
from .decoding import KVCache
from .hooks import NO_HOOK, Hook, HookFn
from .layers import Block, Embeddings, blocks_of, make_norm
from .positions import make_positions

PAD, BOS, EOS = 0, 1, 2  # the special ids of every seq2seq vocabulary: padding, begin, end


Seq2SeqBlock = Block  # the encoder's and the decoder's blocks are the language models' (an older name)

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
    p, K = attention_prefix(kind, layer), Attention.keys_of(kind)
    return [p + "q_BHLD", p + f"k_BH{K}D", p + f"v_BH{K}D", p + f"weights_BHL{K}"]


def padding_mask_B11S(ids_BS: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, S): True at the positions that are not padding, the keys any query may attend to."""
    return (ids_BS != PAD)[:, None, None, :]


class Seq2SeqTransformer(Model):
    """Encoder and decoder stacks (the paper's post-norm by default); `forward(src_BS, tgt_BL)` -> logits_BLV."""

    kind = "seq2seq"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        cfg = self.config
        self.embed = Embeddings(cfg, make_positions(cfg))  # the target's (and the source's, when shared)
        if cfg.n_src_vocab:
            self.src_embed: Embeddings | None = Embeddings(
                dataclasses.replace(cfg, n_vocab=cfg.n_src_vocab), make_positions(cfg)
            )
        else:
            self.src_embed = None
        self.encoder = nn.ModuleList(Block(cfg, causal=False) for _ in range(cfg.n_enc_layers or cfg.n_layers))
        self.decoder = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.n_layers))
        pre = cfg.norm_placement == "pre"  # pre-norm stacks end in a norm of their own; post-norm blocks do already
        self.enc_ln = make_norm(cfg) if pre else None
        self.dec_ln = make_norm(cfg) if pre else None
        self.lm_head = self._make_lm_head()
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

    def hook_names(self) -> list[str]:
        names = [f"src_embed.{n}" for n in self.embed.hook_names()]  # the source's embedding has the same points
        for i, block in enumerate(blocks_of(self.encoder)):
            names += [f"encoder.{i}.{n}" for n in block.hook_names()]
        names += ["memory_BSC", *[f"embed.{n}" for n in self.embed.hook_names()]]
        for i, block in enumerate(blocks_of(self.decoder)):
            names += [f"decoder.{i}.{n}" for n in block.hook_names()]
        return [*names, *(["dec_ln_BLC"] if self.dec_ln is not None else []), "logits_BLV"]

    def encode(self, src_BS: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        """The encoder's output memory_BSC: one vector per source position, each having seen all of them."""
        positions = self._positions(src_BS.shape[1], what="a source")
        mask_B11S = padding_mask_B11S(src_BS)
        embed = self.src_embed if self.src_embed is not None else self.embed
        x_BSC = embed(src_BS, hook.scope("src_embed."), positions)
        for i, block in enumerate(self.encoder):
            x_BSC = block(x_BSC, hook.scope(f"encoder.{i}."), mask_B1LK=mask_B11S)
        if self.enc_ln is not None:
            x_BSC = self.enc_ln(x_BSC)
        return hook("memory_BSC", x_BSC)

    def decode(
        self,
        tgt_BL: torch.Tensor,
        memory_BSC: torch.Tensor,
        src_BS: torch.Tensor,
        hook: Hook = NO_HOOK,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits for the target tokens tgt_BL given the encoder's output.

        With `kv_cache`, tgt_BL continues the cached positions, and only the new ones are run: their
        self-attention reads the earlier keys and values from the cache, and cross-attention the
        source's, made on the first step.
        """
        L = tgt_BL.shape[1]
        positions = self._positions(L, kv_cache, hook, what="a target")
        self_mask_B1LL = None  # decoding: the causal mask (padding is never fed)
        if kv_cache is None:
            self_mask_B1LL = causal_mask_LK(L, L, tgt_BL.device) & padding_mask_B11S(tgt_BL)
        mask_B11S = padding_mask_B11S(src_BS)  # the source's padding, hidden from cross-attention
        x_BLC = self.embed(tgt_BL, hook.scope("embed."), positions)
        for i, block in enumerate(self.decoder):
            kv = kv_cache.layers[i] if kv_cache is not None else None
            x_BLC = block(
                x_BLC,
                hook.scope(f"decoder.{i}."),
                kv=kv,
                mask_B1LK=self_mask_B1LL,
                memory_BSC=memory_BSC,
                memory_mask_B11S=mask_B11S,
            )
        if kv_cache is not None:
            kv_cache.length += L
        if self.dec_ln is not None:
            x_BLC = hook("dec_ln_BLC", self.dec_ln(x_BLC))
        return hook("logits_BLV", self.unembed(x_BLC))

    def forward(self, src_BS: torch.Tensor, tgt_BL: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        """Teacher forcing: logits_BLV for every target position at once, from the source and the
        decoder input (the target shifted right, see `attnlab.data.tasks.teacher_forcing`)."""
        return self.decode(tgt_BL, self.encode(src_BS, hook), src_BS, hook)

    def run_with_cache(
        self,
        src_BS: torch.Tensor,
        tgt_BL: torch.Tensor,
        names: list[str] | None = None,
        fwd_hooks: Sequence[tuple[str, HookFn]] = (),
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and the named activations (all of them with `names=None`), as the LM's `run_with_cache`."""
        return self._capture((src_BS, tgt_BL), names, fwd_hooks)

    def run_with_hooks(
        self, src_BS: torch.Tensor, tgt_BL: torch.Tensor, fwd_hooks: Sequence[tuple[str, HookFn]]
    ) -> torch.Tensor:
        """A forward in which each hook fn(tensor, name) may return a replacement, as the LM's `run_with_hooks`."""
        return self._hooked((src_BS, tgt_BL), fwd_hooks, None, None)
