"""Text in, text out: prompts through the tokenizer, generation, and the next-token table.

The token-level loop and the `Sampling` settings live with the models (`models/sampling.py`); this
module adds the tokenizer on both ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import AttnlabError
from .models import LanguageModel, Sampling
from .models.sampling import stream_tokens
from .runtime.devices import resolve_device
from .runtime.environment import notice
from .tokenizers import Tokenizer
from .training.checkpoint import load_for_text


def encode_prompt(tokenizer: Tokenizer, prompt: str, max_len: int | None = None) -> tuple[list[int], list[str]]:
    """Prompt ids plus notices: characters the tokenizer cannot encode, and cropping to max_len."""
    if not prompt:
        raise AttnlabError("empty prompt: pass some text with --prompt")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes the shell or a client could not decode as UTF-8
        raise AttnlabError(
            "the prompt is not valid UTF-8 text; pass it as UTF-8 (check the terminal's encoding)"
        ) from None
    notices = []
    dropped = tokenizer.unencodable(prompt)
    if dropped:
        chars = ", ".join(f"{ch!r}" for ch in dropped)
        notices.append(f"notice: the prompt has characters the tokenizer cannot encode, left out: {chars}")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise AttnlabError("the prompt has no character the tokenizer can encode; use other text")
    if max_len is not None and len(ids) > max_len:
        notices.append(f"notice: prompt of {len(ids)} tokens cropped to its last {max_len} (the context length)")
        ids = ids[-max_len:]
    return ids, notices


@torch.no_grad()
def next_token_table(model: LanguageModel, tokenizer: Tokenizer, prompt: str, k: int = 10) -> list[tuple[str, float]]:
    """The k most likely next tokens after `prompt`, as (token text, probability)."""
    ids, _ = encode_prompt(tokenizer, prompt, model.config.max_len)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits_V = model(torch.tensor([ids], device=device))[0, -1].float()
    model.train(was_training)
    probs_V = logits_V.softmax(dim=-1)
    top = torch.topk(probs_V, min(k, probs_V.numel()))
    return [(tokenizer.token_str(i), p) for i, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)]


def generate_text(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 200,
    sampling: Sampling | None = None,
    **sampling_fields: Any,
) -> str:
    """The continuation of `prompt` (without the prompt) as text.

    `sampling` (or its fields as keywords) says how tokens are chosen; the default seed is 0, so the
    same call gives the same text.
    """
    sampling = dataclasses.replace(sampling or Sampling(seed=0), **sampling_fields)
    ids, _ = encode_prompt(tokenizer, prompt, model.config.max_len)
    device = next(model.parameters()).device
    out = model.generate(torch.tensor([ids], device=device), max_new_tokens, sampling)
    return tokenizer.decode(out[0, len(ids) :].tolist())


def stream_continuation(
    checkpoint: str | Path,
    prompt: str,
    max_new_tokens: int = 200,
    sampling: Sampling | None = None,
    device: str = "auto",
    kv_cache: bool = True,
    slide: int | None = None,
    compile: bool = False,
) -> Iterator[str]:
    """The continuation of `prompt` by the model of a run or checkpoint folder, as the pieces of text each
    new token completes (`attnlab generate`). The checkpoint is loaded and the prompt encoded (with a
    notice for what it loses) before this returns; the tokens are drawn as the pieces are read."""
    if max_new_tokens < 0:
        raise AttnlabError(f"--max-new-tokens {max_new_tokens}: must be >= 0")
    ckpt = load_for_text(checkpoint, resolve_device(device))
    model, tokenizer = ckpt.model, ckpt.tokenizer
    assert tokenizer is not None  # load_for_text
    ids, notices = encode_prompt(tokenizer, prompt, model.config.max_len)
    for line in notices:
        notice(line)
    ids_BL = torch.tensor([ids], device=next(model.parameters()).device)
    sampling = sampling or Sampling(seed=0)
    tokens = stream_tokens(model, ids_BL, max_new_tokens, sampling, kv_cache=kv_cache, slide=slide, compile=compile)
    return _pieces(tokenizer, tokens)


def _pieces(tokenizer: Tokenizer, tokens: Iterator[torch.Tensor]) -> Iterator[str]:
    decoder = tokenizer.stream_decoder()
    for next_B1 in tokens:
        yield decoder.feed(next_B1[0].tolist())
    yield decoder.flush()
