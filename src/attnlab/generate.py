"""Text in, text out: prompts through the tokenizer, generation, and the next-token table.

The token-level loop and the `Sampling` settings live with the models (`models/sampling.py`); this
module adds the tokenizer on both ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import AttnlabError
from .models import LanguageModel, Sampling
from .models.batch_generation import generate_batch
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


def generate_texts(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 200,
    sampling: Sampling | None = None,
    batch_size: int = 64,
    kv_cache: bool = True,
    slide: int | None = None,
    **sampling_fields: Any,
) -> list[str]:
    """The continuation of each prompt, `batch_size` prompts decoded together (`generate_batch`): each the
    text `generate_text` gives it alone (greedy, or sampled with the same seed, 0 by default)."""
    if batch_size < 1:
        raise AttnlabError(f"--batch-size {batch_size}: must be >= 1")
    sampling = dataclasses.replace(sampling or Sampling(seed=0), **sampling_fields)
    ids = [encode_prompt(tokenizer, p, model.config.max_len)[0] for p in prompts]
    out: list[str] = []
    for i in range(0, len(ids), batch_size):
        new = generate_batch(model, ids[i : i + batch_size], max_new_tokens, sampling, kv_cache, slide)
        out += [tokenizer.decode(tokens) for tokens in new]
    return out


MAX_PROMPTS_BYTES = 64 << 20


def read_prompts(path: str | Path) -> list[str]:
    """The prompts of a text file, one per line (empty lines skipped), checked before any is used."""
    path = Path(path)
    if not path.is_file():
        raise AttnlabError(f"--prompts-file {path}: no such file; give a text file with one prompt per line")
    if path.stat().st_size > MAX_PROMPTS_BYTES:
        raise AttnlabError(f"--prompts-file {path} is over {MAX_PROMPTS_BYTES >> 20} MB; split it")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise AttnlabError(f"--prompts-file {path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise AttnlabError(f"--prompts-file {path} holds no prompt; write one prompt per line")
    return prompts


def continue_prompts(
    checkpoint: str | Path,
    prompts_file: str | Path,
    max_new_tokens: int = 200,
    sampling: Sampling | None = None,
    device: str = "auto",
    batch_size: int = 64,
    kv_cache: bool = True,
    slide: int | None = None,
    compile: bool = False,
) -> list[tuple[str, str]]:
    """(prompt, continuation) for each prompt of `prompts_file` (`read_prompts`), by the model of a run or
    checkpoint folder (`attnlab generate --prompts-file`), decoded `batch_size` at a time; notices for
    what a prompt loses. Everything is checked before the checkpoint is loaded."""
    if compile:
        raise AttnlabError("--compile decodes one prompt at a time; drop it with --prompts-file")
    if max_new_tokens < 0:
        raise AttnlabError(f"--max-new-tokens {max_new_tokens}: must be >= 0")
    if batch_size < 1:
        raise AttnlabError(f"--batch-size {batch_size}: must be >= 1")
    prompts = read_prompts(prompts_file)
    ckpt = load_for_text(checkpoint, resolve_device(device))
    model, tokenizer = ckpt.model, ckpt.tokenizer
    assert tokenizer is not None  # load_for_text
    for n, prompt in enumerate(prompts, 1):
        for line in encode_prompt(tokenizer, prompt, model.config.max_len)[1]:
            notice(f"prompt {n}: {line}")
    texts = generate_texts(model, tokenizer, prompts, max_new_tokens, sampling, batch_size, kv_cache, slide)
    return list(zip(prompts, texts, strict=True))


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
