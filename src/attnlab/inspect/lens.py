"""Reading next-token distributions: after the prompt, at every position, and after every layer."""

from __future__ import annotations

from typing import Any

import torch

from ..models import LanguageModel, TransformerLM
from ..tokenizers import Tokenizer


def _top(probs_V: torch.Tensor, tokenizer: Tokenizer, k: int) -> list[dict[str, Any]]:
    top = torch.topk(probs_V, min(k, probs_V.numel()))
    return [
        {"token": tokenizer.token_str(i), "id": i, "prob": p}
        for i, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)
    ]


@torch.no_grad()
def next_tokens(
    model: LanguageModel, tokenizer: Tokenizer, ids: list[int], k: int = 10, all_positions: bool = False
) -> dict[str, Any]:
    """Top-k next tokens after the prompt, and (optionally) after every prefix of it."""
    model.eval()
    device = next(model.parameters()).device
    probs_LV = model(torch.tensor([ids], device=device))[0].float().softmax(-1)
    out: dict[str, Any] = {"tokens": [tokenizer.token_str(i) for i in ids], "next": _top(probs_LV[-1], tokenizer, k)}
    if all_positions:
        out["positions"] = [
            {
                "position": t,
                "token": tokenizer.token_str(ids[t]),
                "actual_next": tokenizer.token_str(ids[t + 1]) if t + 1 < len(ids) else None,
                "top": _top(probs_LV[t], tokenizer, k),
            }
            for t in range(len(ids))
        ]
    return out


@torch.no_grad()
def logit_lens(model: TransformerLM, tokenizer: Tokenizer, ids: list[int], k: int = 5) -> list[dict[str, Any]]:
    """The next-token distribution read from the residual stream after each layer.

    Each residual stream (the embeddings, then every block's output) goes through the final
    norm and the LM head, as if the model stopped there (nostalgebraist's "logit lens").
    The last row equals the model's own prediction.
    """
    model.eval()
    device = next(model.parameters()).device
    n = model.config.n_layers
    out = "ln2_BLC" if model.config.norm_placement == "post" else "resid_post_BLC"  # each block's output
    names = ["embed.sum_BLC"] + [f"blocks.{i}.{out}" for i in range(n)]
    _, cache = model.run_with_cache(torch.tensor([ids], device=device), names=names)
    rows = []
    for label, name in zip(["embeddings"] + [f"after block {i}" for i in range(n)], names, strict=True):
        resid_C = cache[name][0, -1]
        logits_V = model.unembed(model.final_ln(resid_C) if model.final_ln is not None else resid_C)
        rows.append({"layer": label, "name": name, "top": _top(logits_V.float().softmax(-1), tokenizer, k)})
    return rows


def format_next_tokens(result: dict[str, Any], prompt: str) -> str:
    """`next_tokens` as text: a bar per likely next token, then (if asked for) the top five after each prefix."""
    lines = [f"next token after {prompt[-40:]!r}:"]
    for row in result["next"]:
        lines.append(f"  {row['token']!r:>8}  {row['prob']:.4f}  " + "#" * round(40 * row["prob"]))
    for pos in result.get("positions", []):
        top = "  ".join(f"{r['token']!r} {r['prob']:.2f}" for r in pos["top"][:5])
        lines.append(f"  after {pos['position']:>3} {pos['token']!r:>6} (actual next {pos['actual_next']!r}): {top}")
    return "\n".join(lines)


def format_lens(rows: list[dict[str, Any]], prompt: str) -> str:
    """`logit_lens` as text: the top guesses read after each layer."""
    lines = [f"next token after {prompt[-40:]!r}, read from the residual stream after each layer:"]
    for row in rows:
        lines.append(f"  {row['layer']:>14}: " + "  ".join(f"{r['token']!r} {r['prob']:.2f}" for r in row["top"]))
    return "\n".join(lines)
