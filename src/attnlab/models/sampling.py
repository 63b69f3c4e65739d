"""Choosing the next token: greedy, temperature, top-k and top-p sampling, and the generation loop.

`Sampling` holds the settings; every way to generate (`model.generate`, `generate_text`, `attnlab
generate`, the lab's samples) takes one. `stream_tokens` is the loop: it yields one token at a time
and moves the model's window along once the text is longer than its context.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import AttnlabError
from ..runtime.checks import memory_limit
from .decoding import GraphedStep, KVCache, compiled_decoder, graphed_step, use_graphs

if TYPE_CHECKING:
    from .base import LanguageModel


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen from the logits.

    `greedy` takes the most likely token. Otherwise the logits are divided by `temperature` (below 1:
    sharper, above 1: flatter), cut to the `top_k` most likely tokens and then to the smallest set
    whose probability reaches `top_p` (nucleus sampling), and a token is drawn from what is left.
    `seed` makes the draws reproducible (None: torch's global random state).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise AttnlabError(f"--temperature {self.temperature}: must be > 0 (use --greedy for argmax decoding)")
        if self.top_k is not None and self.top_k < 1:
            raise AttnlabError(f"--top-k {self.top_k}: must be >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise AttnlabError(f"--top-p {self.top_p}: must be in (0, 1]")

    def generator(self) -> torch.Generator | None:
        return torch.Generator().manual_seed(self.seed) if self.seed is not None else None

    def choose(self, logits_BV: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The next token of each row, ids_B1."""
        logits_BV = logits_BV.float()
        if self.greedy:
            return logits_BV.argmax(dim=-1, keepdim=True)
        # In float64 from the largest logit down: a tiny temperature (1e-300, which is 0 in float32) gives
        # 0 for the top token and large negatives for the rest, not 0 / 0 or inf - inf (NaN).
        scaled_BV = (logits_BV - logits_BV.amax(dim=-1, keepdim=True)).double() / self.temperature
        probs_BV = filter_logits_BV(scaled_BV, self.top_k, self.top_p).softmax(dim=-1)
        return torch.multinomial(probs_BV.cpu(), 1, generator=generator).to(logits_BV.device)


DEFAULT_SAMPLING = Sampling()  # temperature 1, no cut, torch's random state; frozen, so one shared default is safe


def filter_logits_BV(logits_BV: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top k, then outside the smallest set with mass >= top_p."""
    if top_k is not None and top_k < logits_BV.shape[-1]:
        kth_B1 = torch.topk(logits_BV, top_k, dim=-1).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth_B1, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_BV, order_BV = logits_BV.sort(dim=-1, descending=True)
        probs_BV = sorted_BV.softmax(dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first token always stays).
        drop_sorted_BV = (probs_BV.cumsum(dim=-1) - probs_BV) >= top_p
        drop_sorted_BV[:, 0] = False  # also when top_p rounds to 0 in float32 (1e-300)
        drop_BV = drop_sorted_BV.scatter(-1, order_BV, drop_sorted_BV)
        logits_BV = logits_BV.masked_fill(drop_BV, float("-inf"))
    return logits_BV


def default_slide(max_len: int) -> int:
    """How far the context window moves once it is full: a quarter of max_len.

    Each move costs one forward of the remaining window (to rebuild the KV cache), so sliding by a
    quarter keeps generation past max_len as cheap as before it, while every token still sees at
    least three quarters of max_len. `slide=1` is the exact "last max_len tokens" window, at the
    price of rebuilding the cache for every new token.
    """
    return max(1, max_len // 4)


@torch.inference_mode()
def stream_tokens(
    model: LanguageModel,
    ids_BL: torch.Tensor,
    max_new_tokens: int,
    sampling: Sampling = DEFAULT_SAMPLING,
    generator: torch.Generator | None = None,
    kv_cache: bool = True,
    slide: int | None = None,
    compile: bool = False,
    graphs: bool | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token ids_B1, one step at a time.

    The model sees a window of at most max_len tokens. When a new token would make it longer, the
    window's start moves forward by `slide` tokens (default: `default_slide`), and the context
    is the tokens from that start on. With `kv_cache` (Transformer only) the window is run once
    and each new token then costs one position; when the window moves, every cached key would
    change (it depends on the tokens before it in the window), so the cache is rebuilt from the
    new window. The window does not depend on `kv_cache`: with and without it, generation computes
    the same logits, and the cache only makes it faster. `compile` runs the one-token steps through
    `compiled_decoder` (a first call compiles for ~10-30 s). `graphs` replays each window's one-token
    step as a CUDA graph (`GraphedStep`; None: on a CUDA device, with the cache and without `compile`).
    `generator` defaults to `sampling.seed`'s.
    """
    if max_new_tokens < 0:
        raise AttnlabError(f"--max-new-tokens {max_new_tokens}: must be >= 0")
    if ids_BL.shape[1] == 0:
        raise AttnlabError("empty prompt: give at least one token of text")
    max_len = model.config.max_len
    slide = default_slide(max_len) if slide is None else slide
    if not 1 <= slide <= max_len:
        raise AttnlabError(f"--slide {slide}: must be between 1 and max_len={max_len}")
    generator = generator if generator is not None else sampling.generator()
    use_cache = kv_cache and model.supports_kv_cache
    decode = compiled_decoder(model) if compile and use_cache else model
    graphs = use_graphs(next(model.parameters()).device, use_cache and not compile, graphs)
    cache: KVCache | None = None
    step: GraphedStep | None = None
    B, prompt_len = ids_BL.shape
    if (need := B * (prompt_len + max_new_tokens) * ids_BL.element_size()) > memory_limit() // 2:
        raise AttnlabError(
            f"--max-new-tokens {max_new_tokens:,}: keeping that many tokens needs {need / 2**30:,.1f} GiB, more "
            f"than this machine can spare; ask for fewer"
        )
    ids_BT = ids_BL.new_empty(B, prompt_len + max_new_tokens)  # filled as it goes: no copy of the sequence per token
    ids_BT[:, :prompt_len] = ids_BL
    start = max(0, prompt_len - max_len)  # the window's first token
    with model.generating():
        next_B1 = None
        for n in range(prompt_len, prompt_len + max_new_tokens):  # n: tokens so far
            moved = n - start > max_len
            if moved:
                start = n - max_len - 1 + slide
            if not use_cache:
                logits_BV = model(ids_BT[:, start:n])[:, -1, :]
            elif cache is not None and not moved and next_B1 is not None:
                if graphs:  # captured on the window's first step, replayed for the others
                    step = step if step is not None else graphed_step(model, cache, next_B1)
                    graphs = step is not None
                    logits_BV = (step(next_B1) if step is not None else decode(next_B1, kv_cache=cache))[:, -1, :]
                else:
                    logits_BV = decode(next_B1, kv_cache=cache)[:, -1, :]
            else:  # the prompt, or a window that moved: (re)fill the cache from the whole window
                cache, step = KVCache(model.config.n_layers, max_len), None
                logits_BV = model(ids_BT[:, start:n], kv_cache=cache)[:, -1, :]
            next_B1 = sampling.choose(logits_BV, generator)
            ids_BT[:, n : n + 1] = next_B1
            yield next_B1
