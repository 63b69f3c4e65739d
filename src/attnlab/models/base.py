"""What both language models share: config, parameter count, initialisation, generation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AttnlabError
from .config import ModelConfig
from .hooks import Hook, HookFn


class LanguageModel(nn.Module):
    """A next-token model: ids_BL (int64) -> logits_BLV."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> LanguageModel:
        return cls(**{k: v for k, v in cfg.to_dict().items() if k != "model"})

    def _make_embeddings(self) -> None:
        """The token embedding, and an LM head of its own only when it is not tied to it."""
        cfg = self.config
        self.embed = nn.Module()
        self.embed.tok = nn.Embedding(cfg.n_vocab, cfg.emb_dim)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.emb_dim, cfg.n_vocab, bias=False)

    def unembed(self, x_BLC: torch.Tensor) -> torch.Tensor:
        """The LM head: logits_BLV = x_BLC @ W_E^T when tied (the lab's choice), else its own matrix."""
        if self.lm_head is None:
            return F.linear(x_BLC, self.embed.tok.weight)
        return self.lm_head(x_BLC)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_weights(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), zero biases, residual projections scaled by 1/sqrt(2 n_layers)."""
        resid_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = resid_std if name.endswith(("w_o", "fc_out")) else 0.02
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def hook_names(self) -> list[str]:
        """Every hook point of this model, in forward order (the suffix is the symbolic shape)."""
        cache: dict[str, torch.Tensor] = {}
        device = next(self.parameters()).device
        with torch.no_grad():
            self(torch.zeros(1, 1, dtype=torch.long, device=device), hook=Hook(cache=cache))
        return list(cache)

    def _check_names(self, names: list[str]) -> None:
        known = set(self.hook_names())
        unknown = [n for n in names if n not in known]
        if unknown:
            raise AttnlabError(f"unknown hook name {unknown[0]!r}; this model has: {', '.join(sorted(known))}")

    def run_with_cache(
        self, ids_BL: torch.Tensor, names: list[str] | None = None, fwd_hooks: list[tuple[str, HookFn]] = ()
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and every intermediate tensor by name (only `names` if given), after `fwd_hooks` edits."""
        full: dict[str, torch.Tensor] = {}
        logits_BLV = self.run_with_hooks(ids_BL, fwd_hooks, cache=full)
        if names is not None:
            self._check_names(names)
            full = {n: full[n] for n in names}
        return logits_BLV, full

    def run_with_hooks(
        self,
        ids_BL: torch.Tensor,
        fwd_hooks: list[tuple[str, HookFn]],
        cache: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """A forward in which each hook fn(tensor, name) may return a replacement for its tensor."""
        self._check_names([name for name, _ in fwd_hooks])
        hooks: dict[str, list[HookFn]] = {}
        for name, fn in fwd_hooks:
            hooks.setdefault(name, []).append(fn)
        return self(ids_BL, hook=Hook(cache=cache, hooks=hooks))

    @torch.no_grad()
    def generate(
        self,
        ids_BL: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        generator: torch.Generator | None = None,
        kv_cache: bool = True,
        slide: int | None = None,
        compile: bool = False,
    ) -> torch.Tensor:
        """Append `max_new_tokens` sampled tokens to each row of ids_BL; returns the whole sequence."""
        from ..generate import stream_tokens

        new = list(
            stream_tokens(
                self, ids_BL, max_new_tokens, temperature, top_k, top_p, greedy, generator, kv_cache, slide, compile
            )
        )
        return torch.cat([ids_BL, *new], dim=1) if new else ids_BL
