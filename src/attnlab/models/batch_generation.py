"""Several prompts of different lengths continued at once: one forward per token for the whole batch.

The prompts are padded on the left, so that every row's last token sits in the last column and each
step appends one column. The padding is invisible (`attention.left_padding`): each row's positions
count from its own first token, and no query attends to a pad key, so each row gets the tokens it would
get alone (greedy: the same tokens; sampled with a seed: the same draws, each row from its own generator
seeded alike). The window logic is `stream_tokens`'s, row by row: when a row's text outgrows the
context, its window moves by `slide`, and the cache is refilled from every row's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..errors import AttnlabError
from ..runtime.checks import memory_limit
from .decoding import GraphedStep, KVCache, graphed_step, use_graphs
from .sampling import DEFAULT_SAMPLING, Sampling, default_slide

if TYPE_CHECKING:
    from .base import LanguageModel

PAD = 0  # the id in the padding slots: never attended to, so any id does


def _left_padded(windows: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The windows as one batch ids_BW padded on the left, and each row's number of pad tokens (None when
    they are all as long: the model's unpadded path, without a mask to build at every step)."""
    W = max(len(w) for w in windows)
    ids_BW = torch.full((len(windows), W), PAD, dtype=torch.long, device=device)
    for b, w in enumerate(windows):
        ids_BW[b, W - len(w) :] = w
    pads = [W - len(w) for w in windows]
    return ids_BW, (torch.tensor(pads, device=device) if any(pads) else None)


@torch.no_grad()
def generate_batch(
    model: LanguageModel,
    prompts: Sequence[Sequence[int] | torch.Tensor],
    max_new_tokens: int,
    sampling: Sampling = DEFAULT_SAMPLING,
    kv_cache: bool = True,
    slide: int | None = None,
    graphs: bool | None = None,
) -> list[list[int]]:
    """The `max_new_tokens` tokens that follow each prompt (token ids), all prompts decoded together.
    `graphs`: each window's one-token step replayed as a CUDA graph (None: on a CUDA device, with the
    cache), as in `stream_tokens`."""
    if max_new_tokens < 0:
        raise AttnlabError(f"--max-new-tokens {max_new_tokens}: must be >= 0")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise AttnlabError("an empty prompt: give at least one token of text for every prompt")
    max_len = model.config.max_len
    slide = default_slide(max_len) if slide is None else slide
    if not 1 <= slide <= max_len:
        raise AttnlabError(f"--slide {slide}: must be between 1 and max_len={max_len}")
    B, longest = len(prompts), max(len(p) for p in prompts)
    if (need := B * (longest + max_new_tokens) * 8) > memory_limit() // 2:
        raise AttnlabError(
            f"{B:,} prompts x {max_new_tokens:,} new tokens need {need / 2**30:,.1f} GiB to keep, more than this "
            "machine can spare; ask for fewer"
        )
    device = next(model.parameters()).device
    rows = [torch.as_tensor(p, dtype=torch.long).cpu() for p in prompts]
    seqs = [torch.cat([r, r.new_empty(max_new_tokens)]) for r in rows]  # each row's tokens, filled as it goes
    lens = [len(r) for r in rows]
    starts = [max(0, n - max_len) for n in lens]  # each row's window: seqs[b][starts[b] : lens[b]]
    # One generator per row, seeded alike, so each row draws what it would draw alone.
    generators = [sampling.generator() for _ in rows] if sampling.seed is not None and not sampling.greedy else None
    use_cache = kv_cache and model.supports_kv_cache
    graphs = use_graphs(device, use_cache, graphs)
    cache: KVCache | None = None
    step: GraphedStep | None = None
    next_B1: torch.Tensor | None = None
    out: list[list[int]] = [[] for _ in rows]
    with model.generating():
        for _ in range(max_new_tokens):
            moved = False
            for b in range(B):
                if lens[b] - starts[b] > max_len:
                    starts[b] = lens[b] - max_len - 1 + slide
                    moved = True
            if use_cache and cache is not None and not moved and next_B1 is not None:
                if graphs:
                    step = step if step is not None else graphed_step(model, cache, next_B1)
                    graphs = step is not None
                    logits_BV = (step(next_B1) if step is not None else model(next_B1, kv_cache=cache))[:, -1, :]
                else:
                    logits_BV = model(next_B1, kv_cache=cache)[:, -1, :]
            else:  # the prompts, or a window that moved: (re)fill from every row's window
                ids_BW, pad_B = _left_padded([seqs[b][starts[b] : lens[b]] for b in range(B)], device)
                if use_cache:
                    cache, step = KVCache(model.config.n_layers, max_len, pad_B), None
                    logits_BV = model(ids_BW, kv_cache=cache)[:, -1, :]
                else:
                    logits_BV = _forward_padded(model, ids_BW, pad_B)[:, -1, :]
            if generators is None:  # greedy, or draws from torch's global random state
                next_B1 = sampling.choose(logits_BV)
            else:
                next_B1 = torch.cat([sampling.choose(logits_BV[b : b + 1], g) for b, g in enumerate(generators)])
            for b, token in enumerate(next_B1[:, 0].tolist()):
                seqs[b][lens[b]] = token
                lens[b] += 1
                out[b].append(token)
    return out


def _forward_padded(model: LanguageModel, ids_BW: torch.Tensor, pad_B: torch.Tensor | None) -> torch.Tensor:
    """Logits of a left-padded batch without a cache: a Transformer told where its padding is, the MLP
    baseline as it is (it reads one token, so the padding before a row cannot reach it)."""
    if model.supports_kv_cache and pad_B is not None:
        return model(ids_BW, pad_B=pad_B)
    return model(ids_BW)
