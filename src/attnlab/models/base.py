"""What every model shares (the two language models and the encoder-decoder): the config, the tied LM
head, parameter counts, initialisation, hooks, positions and generation."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AttnlabError
from .config import ModelConfig
from .hooks import NO_HOOK, Hook, HookFn
from .positions import PositionScheme
from .sampling import Sampling, stream_tokens

if TYPE_CHECKING:
    from .decoding import KVCache
    from .layers import Embeddings


class Model(nn.Module):
    """Every attnlab model, built from a `ModelConfig` (`Model(config)`): its token embedding `embed`
    and the output layer tied to it (or not), parameter counts, initialisation, the named hook points
    (`hook_names`, and `run_with_cache` / `run_with_hooks` in each kind's own inputs), and what every
    generation runs with: eval mode, and the positions that follow a KV cache's."""

    kind = ""  # the config's `model` field for this class: "mlp", "transformer" or "seq2seq"
    embed: Embeddings  # the (target's) token embedding, which the output layer is tied to
    lm_head: nn.Linear | None  # the output layer's own matrix; None when tied to `embed` (`_make_lm_head`)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config if config.model == self.kind else dataclasses.replace(config, model=self.kind)

    @classmethod
    def from_fields(cls, **fields: Any) -> Model:
        """The model of the config with these fields, the others at their defaults:
        `TransformerLM.from_fields(n_vocab=256, emb_dim=32, n_heads=4, head_dim=5)`."""
        return cls(ModelConfig(model=cls.kind, **fields))

    def unembed(self, x_BLC: torch.Tensor) -> torch.Tensor:
        """The LM head: logits_BLV = x_BLC @ W_E^T when tied (the lab's choice), else its own matrix."""
        if self.lm_head is None:
            return F.linear(x_BLC, self.embed.tok.weight)
        return self.lm_head(x_BLC)

    def _make_lm_head(self) -> nn.Linear | None:
        """An LM head of its own only when it is not tied to the token embedding."""
        cfg = self.config
        return None if cfg.tie_embeddings else nn.Linear(cfg.emb_dim, cfg.n_vocab, bias=False)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_weights(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), zero biases, residual projections scaled by 1/sqrt(2 n_layers)
        (with `zero_init`, the modded-nanoGPT speedrun's: those start at 0, each block as the identity)."""
        resid_std = 0.0 if self.config.zero_init else 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = resid_std if name.endswith(("w_o", "fc_out")) else 0.02
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, PositionScheme):
                module.init_weights()  # a learned table: N(0, 0.02) too

    def hook_names(self) -> list[str]:
        """Every hook point of this model, in forward order (the suffix is the symbolic shape)."""
        raise NotImplementedError

    def _check_names(self, names: list[str]) -> None:
        known = self.hook_names()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise AttnlabError(f"unknown hook name {unknown[0]!r}; this model has: {', '.join(sorted(known))}")

    def _positions(
        self, L: int, kv_cache: KVCache | None = None, hook: Hook = NO_HOOK, what: str = "sequence"
    ) -> slice:
        """The positions of L tokens that follow the cached ones (if any), refused beyond max_len."""
        start = kv_cache.length if kv_cache is not None else 0
        if start + L > self.config.max_len:
            raise AttnlabError(f"{what} of {start + L} tokens is longer than max_len={self.config.max_len}")
        if kv_cache is not None and hook.enabled:  # a cached step runs only its new positions
            raise AttnlabError("hooks see a whole sequence: run it without a KV cache (run_with_cache)")
        return slice(start, start + L)

    @contextlib.contextmanager
    def generating(self) -> Iterator[None]:
        """Eval mode (no dropout) while generating, then training mode again if the model was in it.

        A model already in eval mode is left as it is: switching walks every module, twice per call,
        which costs a beam search over short sources several percent.
        """
        if not self.training:
            yield
            return
        self.eval()
        try:
            yield
        finally:
            self.train()

    def _capture(
        self, inputs: tuple[torch.Tensor, ...], names: list[str] | None, fwd_hooks: Sequence[tuple[str, HookFn]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if names is not None:
            self._check_names(names)
        cache: dict[str, torch.Tensor] = {}
        logits_BLV = self._hooked(inputs, fwd_hooks, cache=cache, keep=names)
        return logits_BLV, cache

    def _hooked(
        self,
        inputs: tuple[torch.Tensor, ...],
        fwd_hooks: Sequence[tuple[str, HookFn]],
        cache: dict[str, torch.Tensor] | None,
        keep: list[str] | None,
    ) -> torch.Tensor:
        """`self(*inputs)` with hooks: the model's forward, whatever inputs it takes."""
        self._check_names([name for name, _ in fwd_hooks])
        hooks: dict[str, list[HookFn]] = {}
        for name, fn in fwd_hooks:
            hooks.setdefault(name, []).append(fn)
        return self(*inputs, hook=Hook(cache=cache, hooks=hooks, keep=set(keep) if keep is not None else None))


class LanguageModel(Model):
    """A next-token model: ids_BL (int64) -> logits_BLV, which writes text by appending tokens."""

    supports_kv_cache = False  # `forward` takes a `kv_cache` (see decoding.py)

    def run_with_cache(
        self, ids_BL: torch.Tensor, names: list[str] | None = None, fwd_hooks: Sequence[tuple[str, HookFn]] = ()
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and every intermediate tensor by name (only `names` if given), after `fwd_hooks` edits."""
        return self._capture((ids_BL,), names, fwd_hooks)

    def run_with_hooks(
        self,
        ids_BL: torch.Tensor,
        fwd_hooks: Sequence[tuple[str, HookFn]],
        cache: dict[str, torch.Tensor] | None = None,
        keep: list[str] | None = None,
    ) -> torch.Tensor:
        """A forward in which each hook fn(tensor, name) may return a replacement for its tensor."""
        return self._hooked((ids_BL,), fwd_hooks, cache, keep)

    @torch.no_grad()
    def generate(
        self,
        ids_BL: torch.Tensor,
        max_new_tokens: int,
        sampling: Sampling | None = None,
        *,
        generator: torch.Generator | None = None,
        kv_cache: bool = True,
        slide: int | None = None,
        compile: bool = False,
        graphs: bool | None = None,
        **sampling_fields: Any,
    ) -> torch.Tensor:
        """Append `max_new_tokens` tokens to each row of ids_BL; returns the whole sequence.

        `sampling` says how tokens are chosen (default: `Sampling()`, temperature 1); its fields can
        also be given as keywords: `model.generate(ids_BL, 50, temperature=0.8, top_k=40)`.
        `kv_cache`, `slide`, `compile` and `graphs`: see `stream_tokens`.
        """
        sampling = dataclasses.replace(sampling or Sampling(), **sampling_fields)
        new = list(stream_tokens(self, ids_BL, max_new_tokens, sampling, generator, kv_cache, slide, compile, graphs))
        return torch.cat([ids_BL, *new], dim=1) if new else ids_BL
