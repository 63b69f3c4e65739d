"""Text generation: greedy, temperature, top-k and top-p sampling; the next-token table."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import torch

from .errors import AttnlabError
from .models import LanguageModel, TransformerLM
from .models.kv_cache import KVCache
from .tokenizers import Tokenizer


def filter_logits_BV(logits_BV: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top k, then outside the smallest set with mass >= top_p."""
    if top_k is not None and top_k < logits_BV.shape[-1]:
        kth_B1 = torch.topk(logits_BV, top_k, dim=-1).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth_B1, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_BV, order_BV = logits_BV.sort(dim=-1, descending=True)
        cum_BV = sorted_BV.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first token always stays).
        drop_sorted_BV = (cum_BV - sorted_BV.softmax(dim=-1)) >= top_p
        drop_BV = drop_sorted_BV.scatter(-1, order_BV, drop_sorted_BV)
        logits_BV = logits_BV.masked_fill(drop_BV, float("-inf"))
    return logits_BV


def check_sampling(temperature: float, top_k: int | None, top_p: float | None, max_new_tokens: int) -> None:
    if temperature <= 0:
        raise AttnlabError(f"--temperature {temperature}: must be > 0 (use --greedy for argmax decoding)")
    if top_k is not None and top_k < 1:
        raise AttnlabError(f"--top-k {top_k}: must be >= 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise AttnlabError(f"--top-p {top_p}: must be in (0, 1]")
    if max_new_tokens < 0:
        raise AttnlabError(f"--max-new-tokens {max_new_tokens}: must be >= 0")


@functools.cache
def _compiled_forward(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    # The class's forward, not each model's: one compiled function for every model of that class
    # (torch.compile's guards tell their shapes apart), and nothing stored on the model, which
    # therefore still pickles and deep-copies as before.
    return torch.compile(forward, dynamic=True, options={"post_grad_fusion_options": {"decompose_mm_pass": {}}})


def compiled_decoder(model: LanguageModel) -> Callable[..., torch.Tensor]:
    """`model`'s forward through `torch.compile`, for one-token steps over a KV cache.

    A decoding step is ~100 tiny ops whose cost is their dispatch, not their arithmetic: compiled
    (dynamic shapes, so the growing cache does not recompile), they run as a few fused kernels.
    On CPU, inductor's `decompose_mm_pass` turns each one-row matmul into a fused multiply-and-sum
    (a BLAS call costs ~10 us however small), and attention runs as `attend_one_query` instead of
    SDPA for the same reason: measured together, the step takes ~0.7x the time it took without both.
    Compiling `forward` rather than the module skips nn.Module's call machinery (~5% of a step).
    """
    return functools.partial(_compiled_forward(type(model).forward), model)


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
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    kv_cache: bool = True,
    slide: int | None = None,
    compile: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield the next token ids_B1, one step at a time.

    The model sees a window of at most max_len tokens. When a new token would make it longer, the
    window's start moves forward by `slide` tokens (default: `default_slide`), and the context
    is the tokens from that start on. With `kv_cache` (Transformer only) the window is run once
    and each new token then costs one position; when the window moves, every cached key would
    change (it depends on the tokens before it in the window), so the cache is rebuilt from the
    new window. The window does not depend on `kv_cache`: with and without it, generation computes
    the same logits, and the cache only makes it faster. `compile` runs the one-token steps through
    `compiled_decoder` (a first call compiles for ~10-30 s).
    """
    check_sampling(temperature, top_k, top_p, max_new_tokens)
    if ids_BL.shape[1] == 0:
        raise AttnlabError("empty prompt: give at least one token of text")
    max_len = model.config.max_len
    slide = default_slide(max_len) if slide is None else slide
    if not 1 <= slide <= max_len:
        raise AttnlabError(f"--slide {slide}: must be between 1 and max_len={max_len}")
    was_training = model.training
    model.eval()
    use_cache = kv_cache and isinstance(model, TransformerLM)
    decode = compiled_decoder(model) if compile and use_cache else model
    cache: KVCache | None = None
    B, prompt_len = ids_BL.shape
    ids_BT = ids_BL.new_empty(B, prompt_len + max_new_tokens)  # filled as it goes: no copy of the sequence per token
    ids_BT[:, :prompt_len] = ids_BL
    start = max(0, prompt_len - max_len)  # the window's first token
    try:
        next_B1 = None
        for n in range(prompt_len, prompt_len + max_new_tokens):  # n: tokens so far
            moved = n - start > max_len
            if moved:
                start = n - max_len - 1 + slide
            if not use_cache:
                logits_BV = model(ids_BT[:, start:n])[:, -1, :]
            elif cache is not None and not moved:
                logits_BV = decode(next_B1, kv_cache=cache)[:, -1, :]
            else:  # the prompt, or a window that moved: (re)fill the cache from the whole window
                cache = KVCache(model.config.n_layers, max_len)
                logits_BV = model(ids_BT[:, start:n], kv_cache=cache)[:, -1, :]
            logits_BV = logits_BV.float()
            if greedy:
                next_B1 = logits_BV.argmax(dim=-1, keepdim=True)
            else:
                probs_BV = filter_logits_BV(logits_BV / temperature, top_k, top_p).softmax(dim=-1)
                next_B1 = torch.multinomial(probs_BV.cpu(), 1, generator=generator).to(ids_BL.device)
            ids_BT[:, n : n + 1] = next_B1
            yield next_B1
    finally:
        model.train(was_training)


def encode_prompt(tokenizer: Tokenizer, prompt: str, max_len: int | None = None) -> tuple[list[int], list[str]]:
    """Prompt ids plus notices: characters the tokenizer cannot encode, and cropping to max_len."""
    if not prompt:
        raise AttnlabError("empty prompt: pass some text with --prompt")
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
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    seed: int | None = 0,
) -> str:
    """The continuation of `prompt` (without the prompt) as text."""
    ids, _ = encode_prompt(tokenizer, prompt, model.config.max_len)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    out = model.generate(torch.tensor([ids], device=device), max_new_tokens, temperature, top_k, top_p, greedy, gen)
    return tokenizer.decode(out[0, len(ids) :].tolist())
