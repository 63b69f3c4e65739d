"""What the explorer shows, computed from a model and a prompt, as JSON-ready values.

Each function answers one view of the page (and one route of the API): the tokens, the attention
weights, one query-key pair's dot product dimension by dimension, the next-token bars, the logit
lens, the trace and the run card. They only read the model; the web app and the self-contained
file both call them.
"""

from __future__ import annotations

import base64
import functools
import math
import re
from collections.abc import Callable
from typing import Any

import torch

from ..errors import AttnlabError
from ..generate import encode_prompt
from ..inspect.attribution import direct_logit_attribution
from ..inspect.circuits import logit_diff, metric_name, need_transformer, one_token, optional_token
from ..inspect.lens import next_tokens
from ..inspect.params import group_totals, param_breakdown
from ..inspect.patching import patch_sweep
from ..inspect.trace import Trace, trace
from ..models import LanguageModel, TransformerLM
from ..tokenizers import Tokenizer
from ..training.train import log_rows

MAX_PROMPT_CHARS = 20_000  # longer prompts are refused before they are tokenized
MAX_NEW_TOKENS = 2_000
NO_ATTENTION = "the MLP baseline has no attention: each position sees only its own token"


def _utf8_length(lead: int) -> int:
    """The length of the UTF-8 sequence that starts with byte `lead` (1 for a byte that cannot lead one)."""
    if lead >= 0xF0 and lead < 0xF8:
        return 4
    if lead >= 0xE0:
        return 3 if lead < 0xF0 else 1
    if lead >= 0xC0:
        return 2
    return 1


SPACE = "␣"  # how a space is shown: a blank label reads as nothing at all


def _printable(ch: str) -> str:
    """One character as a label shows it: a space as ␣ and an invisible one escaped (\\n), never blank."""
    if ch == " ":
        return SPACE
    return ch if ch.isprintable() else repr(ch)[1:-1]


def printable(text: str) -> str:
    """A token's text as every view of the page labels it (the chips, the next-token bars, the lens)."""
    return "".join(_printable(ch) for ch in text)


def token_chips(tokenizer: Tokenizer, ids: list[int]) -> list[dict[str, Any]]:
    """One chip per token: its id, a readable label, and whether it holds only part of a character.

    A byte-level token that is one byte of a longer UTF-8 character is labelled with that character
    and its place, e.g. "é 1/2" and "é 2/2", instead of an unreadable "<0xC3>".
    """
    try:
        pieces = [tokenizer.decode_bytes([i]) for i in ids]
    except NotImplementedError:  # a character-level tokenizer: every token is whole characters
        pieces = [tokenizer.decode([i]).encode("utf-8") for i in ids]
    stream = b"".join(pieces)
    # The characters of the whole byte stream, each with its byte span.
    chars: list[tuple[int, int, str]] = []
    at = 0
    while at < len(stream):
        n = _utf8_length(stream[at])
        try:
            chars.append((at, at + n, stream[at : at + n].decode("utf-8")))
        except UnicodeDecodeError:
            n = 1
            chars.append((at, at + 1, f"<0x{stream[at]:02X}>"))
        at += n
    chips, start, c = [], 0, 0
    for token_id, piece in zip(ids, pieces, strict=True):
        end = start + len(piece)
        while c < len(chars) and chars[c][1] <= start:
            c += 1
        inside = [ch for ch in chars[c:] if ch[0] < end and ch[1] > start]
        whole = all(s >= start and e <= end for s, e, _ in inside)
        if whole:
            label = printable("".join(ch for _, _, ch in inside))
        else:  # part of one character: say which character and which of its bytes
            s, e, ch = inside[0]
            first, last = max(start, s) - s + 1, min(end, e) - s
            where = f"{first}/{e - s}" if first == last else f"{first}-{last}/{e - s}"
            label = f"{_printable(ch)} {where}"
        chips.append({"id": int(token_id), "text": label, "partial": not whole})
        start = end
    return chips


def token_labels(tokenizer: Tokenizer) -> Callable[[int], str]:
    """Labels of single tokens, as a chip of that token alone would show them (a space as ␣); remembered,
    since the bars and the lens ask for the same few ids at every position."""
    return functools.cache(lambda i: token_chips(tokenizer, [i])[0]["text"])


def encode(model: LanguageModel, tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt's ids, refused in one line when empty, too long or not encodable."""
    if not isinstance(prompt, str) or not prompt:
        raise AttnlabError("the prompt is empty; type some text")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise AttnlabError(f"the prompt has {len(prompt):,} characters; at most {MAX_PROMPT_CHARS:,} are shown")
    ids, _ = encode_prompt(tokenizer, prompt)
    if not ids:
        raise AttnlabError("no character of the prompt is in the model's vocabulary")
    if len(ids) > model.config.max_len:
        raise AttnlabError(
            f"the prompt is {len(ids)} tokens; this model sees at most {model.config.max_len}: shorten it"
        )
    return ids


def _tokens(model: LanguageModel, tokenizer: Tokenizer, prompt: str) -> tuple[list[int], dict[str, Any]]:
    """The prompt's ids, and the token fields every view's answer starts with."""
    ids = encode(model, tokenizer, prompt)
    chips = token_chips(tokenizer, ids)
    return ids, {"tokens": [c["text"] for c in chips], "chips": chips, "ids": ids}


@torch.no_grad()
def attention(model: LanguageModel, tokenizer: Tokenizer, prompt: str) -> dict[str, Any]:
    """`tokens`, `chips` and `weights[layer][head][query][key]` (None for a model without attention)."""
    ids, out = _tokens(model, tokenizer, prompt)
    if not isinstance(model, TransformerLM):
        return out | {"weights": None, "why": NO_ATTENTION}
    model.eval()
    return out | {"weights": [w.tolist() for w in _weights(model, ids)]}


THUMB = 128  # the model view draws each head at most THUMB x THUMB: long prompts are max-pooled to it


def _weights(model: TransformerLM, ids: list[int]) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    _, weights = model.forward_with_weights(torch.tensor([ids], device=device))
    return [w[0].float().cpu() for w in weights]  # per layer: H x L x L


@torch.no_grad()
def overview(model: LanguageModel, tokenizer: Tokenizer, prompt: str) -> dict[str, Any]:
    """The model view's data: every head as a small byte image (weight x 255; prompts longer than
    THUMB tokens max-pooled to THUMB x THUMB, so a 1,024-token prompt stays a few hundred kB)."""
    ids, out = _tokens(model, tokenizer, prompt)
    if not isinstance(model, TransformerLM):
        return out | {"layers": 0, "heads": 0, "size": 0, "thumbs": [], "why": NO_ATTENTION}
    weights = _weights(model, ids)
    L = len(ids)
    size = min(L, THUMB)
    thumbs = []
    for w_HLL in weights:
        if L > size:
            w_HLL = torch.nn.functional.adaptive_max_pool2d(w_HLL[None], size)[0]
        thumbs.append([(w_LL * 255).round().to(torch.uint8).numpy().tobytes() for w_LL in w_HLL])
    return out | {"layers": len(weights), "heads": int(weights[0].shape[0]), "size": size, "thumbs": thumbs}


def as_text(overview_: dict[str, Any]) -> dict[str, Any]:
    """The overview with its byte images as base64 text (JSON has no bytes)."""
    return overview_ | {
        "thumbs": [[base64.b64encode(b).decode("ascii") for b in layer] for layer in overview_["thumbs"]]
    }


def _check_head(model: LanguageModel, layer: int, head: int) -> TransformerLM:
    """The model, once it is known to have attention, and `layer` and `head` to exist in it."""
    if not isinstance(model, TransformerLM):
        raise AttnlabError(NO_ATTENTION)
    cfg = model.config
    if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
        raise AttnlabError(f"layer {layer}, head {head}: this model has {cfg.n_layers} layers of {cfg.n_heads} heads")
    return model


@torch.no_grad()
def head(model: LanguageModel, tokenizer: Tokenizer, prompt: str, layer: int, head: int) -> bytes:
    """One head's weights, query x key, as little-endian float32 bytes (exact, for the head view)."""
    transformer = _check_head(model, layer, head)
    ids = encode(model, tokenizer, prompt)
    return _weights(transformer, ids)[layer][head].numpy().astype("<f4").tobytes()


def _attention_cache(model: TransformerLM, ids: list[int], layers: range | list[int]) -> dict[str, torch.Tensor]:
    """One forward that keeps the queries, keys, values and weights of `layers`."""
    kv = "BGKD" if model.config.grouped else "BHKD"
    names = [f"blocks.{i}.attn.{n}" for i in layers for n in ("q_BHLD", f"k_{kv}", f"v_{kv}", "weights_BHLK")]
    _, cache = model.run_with_cache(torch.tensor([ids], device=next(model.parameters()).device), names=names)
    return cache


def _one_head(model: TransformerLM, cache: dict[str, torch.Tensor], layer: int, head: int) -> list[torch.Tensor]:
    """q_LD, k_LD, v_LD and weights_LL of one head (with grouped-query attention, its key/value head's)."""
    cfg, p = model.config, f"blocks.{layer}.attn."
    kv, g = ("BGKD" if cfg.grouped else "BHKD"), head // (cfg.n_heads // cfg.kv_heads)
    return [
        cache[name][0, h].float().cpu()
        for name, h in ((p + "q_BHLD", head), (p + f"k_{kv}", g), (p + f"v_{kv}", g), (p + "weights_BHLK", head))
    ]


def _qkv_dict(
    model: TransformerLM, layer: int, head: int, q_LD: torch.Tensor, k_LD: torch.Tensor, v_LD: torch.Tensor
) -> dict[str, Any]:
    scale = 1 / math.sqrt(model.config.head_dim)
    return {"layer": layer, "head": head, "q": q_LD.tolist(), "k": k_LD.tolist(), "v": v_LD.tolist(), "scale": scale}


@torch.no_grad()
def query_key(
    model: LanguageModel, tokenizer: Tokenizer, prompt: str, layer: int, head: int, query: int, key: int
) -> dict[str, Any]:
    """The score of one query-key pair dimension by dimension (q_d k_d / sqrt(D) add up to it), the
    weight it becomes, and the value vector the key passes on."""
    transformer = _check_head(model, layer, head)
    ids = encode(model, tokenizer, prompt)
    if not 0 <= key <= query < len(ids):
        raise AttnlabError(f"query {query}, key {key}: need key <= query < {len(ids)} (a query sees only earlier keys)")
    q_LD, k_LD, v_LD, w_LL = _one_head(transformer, _attention_cache(transformer, ids, [layer]), layer, head)
    products_D = q_LD[query] * k_LD[key] / math.sqrt(model.config.head_dim)
    return {
        "q": q_LD[query].tolist(),
        "k": k_LD[key].tolist(),
        "products": products_D.tolist(),
        "score": float(products_D.sum()),
        "weight": float(w_LL[query, key]),
        "value": v_LD[key].tolist(),
    }


@torch.no_grad()
def qkv(model: LanguageModel, tokenizer: Tokenizer, prompt: str, layer: int, head: int) -> dict[str, Any]:
    """One head's queries, keys and values at every position (L x D each), for the query . key view."""
    transformer = _check_head(model, layer, head)
    ids = encode(model, tokenizer, prompt)
    q_LD, k_LD, v_LD, _ = _one_head(transformer, _attention_cache(transformer, ids, [layer]), layer, head)
    return _qkv_dict(transformer, layer, head, q_LD, k_LD, v_LD)


@torch.no_grad()
def every_head(model: LanguageModel, tokenizer: Tokenizer, prompt: str) -> dict[str, dict[str, Any]]:
    """Each head's exact weights (base64 float32) and q/k/v, keyed "layer,head", from one forward
    (a self-contained page embeds them all); {} for a model without attention."""
    if not isinstance(model, TransformerLM):
        return {}
    ids = encode(model, tokenizer, prompt)
    cfg = model.config
    cache = _attention_cache(model, ids, range(cfg.n_layers))
    heads = {}
    for layer in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            q_LD, k_LD, v_LD, w_LL = _one_head(model, cache, layer, h)
            f32 = base64.b64encode(w_LL.numpy().astype("<f4").tobytes()).decode("ascii")
            heads[f"{layer},{h}"] = {"f32": f32, "qkv": _qkv_dict(model, layer, h, q_LD, k_LD, v_LD)}
    return heads


@torch.no_grad()
def lens_all(model: TransformerLM, tokenizer: Tokenizer, ids: list[int], k: int = 3) -> list[list[dict[str, Any]]]:
    """The logit lens at every position in one forward: [position][embeddings, after block 0, ...],
    each the top-k tokens read from the residual stream through the final norm and the LM head."""
    token_label = token_labels(tokenizer)
    device = next(model.parameters()).device
    out = "ln2_BLC" if model.config.norm_placement == "post" else "resid_post_BLC"
    names = ["embed.sum_BLC"] + [f"blocks.{i}.{out}" for i in range(model.config.n_layers)]
    _, cache = model.run_with_cache(torch.tensor([ids], device=device), names=names)
    per_layer = []
    for name in names:
        resid_LC = cache[name][0]
        logits_LV = model.unembed(model.final_ln(resid_LC) if model.final_ln is not None else resid_LC)
        top = logits_LV.float().softmax(-1).topk(k)
        per_layer.append((top.values.cpu().tolist(), top.indices.cpu().tolist()))
    labels = ["embeddings"] + [f"after block {i}" for i in range(model.config.n_layers)]
    return [
        [
            {
                "layer": label,
                "top": [{"token": token_label(i), "id": i, "prob": p} for p, i in zip(ps[t], js[t], strict=True)],
            }
            for label, (ps, js) in zip(labels, per_layer, strict=True)
        ]
        for t in range(len(ids))
    ]


@torch.no_grad()
def next_token(model: LanguageModel, tokenizer: Tokenizer, prompt: str, k: int = 10) -> dict[str, Any]:
    """The top-k next tokens after every position of the prompt, and the logit lens at each."""
    ids = encode(model, tokenizer, prompt)
    if not 1 <= k <= 100:
        raise AttnlabError(f"k = {k}: ask for 1 to 100 next tokens")
    table = next_tokens(model, tokenizer, ids, k=k, all_positions=True)
    # Relabelled as the chips are: the prompt's tokens in context ("é 1/2"), the guesses one by one.
    chips, label = token_chips(tokenizer, ids), token_labels(tokenizer)
    positions = [
        row
        | {
            "token": chips[t]["text"],
            "actual_next": chips[t + 1]["text"] if t + 1 < len(ids) else None,
            "top": [guess | {"token": label(guess["id"])} for guess in row["top"]],
        }
        for t, row in enumerate(table["positions"])
    ]
    lens = lens_all(model, tokenizer, ids) if isinstance(model, TransformerLM) else None
    return {"positions": positions, "lens": lens}


def trace_steps(model: LanguageModel, tokenizer: Tokenizer, prompt: str) -> dict[str, Any]:
    """`attnlab trace` as data: each step's name, shapes, meaning and a small grid of its values."""
    ids = encode(model, tokenizer, prompt)
    return trace_payload(trace(model, ids, [c["text"] for c in token_chips(tokenizer, ids)]))


def trace_payload(tr: Trace, max_values: int = 48) -> dict[str, Any]:
    """A walk's steps with a grid of at most max_values x max_values of each tensor's values."""
    steps = []
    for step in tr.steps:
        row = step.row()
        t = step.tensor.detach().float().cpu()
        t = t[0] if t.dim() >= 3 else t  # the batch's one sequence
        while t.dim() > 2:  # heads: show the first
            t = t[0]
        grid = t.reshape(t.shape[0], -1) if t.dim() == 2 else t.reshape(1, -1)
        # JSON has no infinity: the masked scores' -inf become null (drawn as empty cells).
        # 4 significant digits: the picture needs no more, and the JSON is a third of full precision.
        values = grid[:max_values, :max_values].tolist()
        row["values"] = [[float(f"{v:.4g}") if math.isfinite(v) else None for v in r] for r in values]
        steps.append(row)
    return {"tokens": tr.tokens, "steps": steps, "max_abs_diff": tr.max_abs_diff}


# The curves a run card draws, by the kind of log row they read (train.log_kind): the metric and its label.
CURVES = {
    "eval": ("val_bpc", "validation bits per character"),
    "train": ("train_loss", "training loss (nats per token)"),
}


def loss_curve(rows: list[dict[str, Any]] | None, kind: str) -> dict[str, Any]:
    """The card's curve from a run's metrics.jsonl rows: the rows of one kind ("eval" or "train"), so the
    page draws what the card names instead of guessing from a row's keys (the final row, a bigger
    evaluation, is not a point of the validation curve)."""
    metric, label = CURVES[kind]
    points = [
        {"step": r["step"], "value": r[metric]}
        for r in log_rows(rows or [], kind)
        if isinstance(r.get("step"), int) and isinstance(r.get(metric), int | float)
    ]
    return {"metric": metric, "label": label, "points": points}


def run_card(
    model: LanguageModel, info: dict[str, Any] | None = None, metrics: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The config, parameters by component, and the validation curve and samples when the run has them."""
    cfg = model.config
    return {
        "config": cfg.to_dict() if hasattr(cfg, "to_dict") else vars(cfg),
        "params": group_totals(param_breakdown(cfg)),
        "total_params": model.num_params(),
        "info": info or {},
        "curve": loss_curve(metrics, "eval"),
    }


# ---- circuits: direct logit attribution and activation patching ----------------------------------


@torch.no_grad()
def attribution(
    model: LanguageModel, tokenizer: Tokenizer, prompt: str, answer: str | None = None, wrong: str | None = None
) -> dict[str, Any]:
    """The direct logit attribution of logit(answer) - logit(wrong) after the prompt: a part per head, per
    MLP, the embeddings and the biases. Without `answer`, the model's most likely next token; without
    `wrong`, the most likely other one (why this token rather than the runner-up)."""
    transformer = need_transformer(model, "heads to attribute")
    ids = encode(model, tokenizer, prompt)
    ids_1L = torch.tensor([ids], device=next(model.parameters()).device)
    top = model(ids_1L)[0, -1].float().topk(2).indices.tolist()
    # An empty field on the page is a token left out.
    a, w = (
        optional_token(tokenizer, answer or None, "the answer"),
        optional_token(tokenizer, wrong or None, "the wrong token"),
    )
    if a is None:  # the model's choice, or its runner-up when the wrong token given is its choice
        a = top[1] if w == top[0] else top[0]
    if w is None:
        w = top[1] if a == top[0] else top[0]
    att = direct_logit_attribution(transformer, ids_1L, a, w)
    label = token_labels(tokenizer)
    parts = []
    for name, value in att.parts:
        head = re.fullmatch(r"blocks\.(\d+)\.attn\.head\.(\d+)", name)
        parts.append({"name": name, "value": value, "head": [int(head[1]), int(head[2])] if head else None})
    return {
        "answer": label(a),
        "answer_id": a,
        "wrong": label(w),
        "wrong_id": w,
        "logit_diff": att.total,
        "parts": parts,
    }


def patching(
    model: LanguageModel,
    tokenizer: Tokenizer,
    clean: str,
    corrupt: str,
    answer: str,
    wrong: str | None = None,
    over: str = "resid",
) -> dict[str, Any]:
    """`attnlab patch`'s sweep for two prompts of the same number of tokens, with both prompts' chips."""
    transformer = need_transformer(model, "heads to patch")
    device = next(model.parameters()).device
    clean_ids, corrupt_ids = encode(model, tokenizer, clean), encode(model, tokenizer, corrupt)
    clean_1L, corrupt_1L = (torch.tensor([i], device=device) for i in (clean_ids, corrupt_ids))
    a = one_token(tokenizer, answer, "the answer")
    w = optional_token(tokenizer, wrong or None, "the wrong token")
    sweep = patch_sweep(
        transformer,
        clean_1L,
        corrupt_1L,
        logit_diff(a, w),
        over,
        metric_name=metric_name(w),
    )
    return sweep.to_dict() | {
        "clean_chips": token_chips(tokenizer, clean_ids),
        "corrupt_chips": token_chips(tokenizer, corrupt_ids),
    }
