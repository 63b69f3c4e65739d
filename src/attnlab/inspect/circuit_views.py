"""What `attnlab patch`, `attribute` and `heads` show, from a run (or an untrained preset) and prompts.

```python
from attnlab.inspect import circuit_views
from attnlab.inspect.views import Subject

run = Subject("runs/lab/transformer")
circuit_views.patch_view(run, "Lily had a cat. Lily", "Tomi had a cat. Lily", answer=" ", over="resid")
circuit_views.attribution_view(run, "Once upon a ti", answer="m", wrong="n")
circuit_views.heads_view(run)  # detector scores of every head, on repeated random tokens and the run's text
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data.corpus import evaluation_split
from ..errors import AttnlabError
from ..models import TransformerLM
from ..tokenizers import Tokenizer
from ..training.checkpoint import check_checkpoint
from .attribution import direct_logit_attribution
from .circuit_pictures import attribution_figure, heads_figure, patching_figure
from .circuits import logit_diff, metric_name, need_transformer, one_token, optional_token
from .heads import HeadTable, head_table, text_pieces
from .patching import agreement, attribution_patch, patch_sweep
from .views import Subject, prompt_ids


def _load(subject: Subject, what: str) -> tuple[TransformerLM, Tokenizer]:
    if subject.is_seq2seq():
        raise AttnlabError(
            f"{what} is for language models; an encoder-decoder run is not supported yet "
            "(its hook points can be patched from Python with run_with_hooks)"
        )
    model, tokenizer = subject.load()
    return need_transformer(model, "attention heads"), tokenizer


def _ids(model: TransformerLM, tokenizer: Tokenizer, text: str) -> torch.Tensor:
    ids = prompt_ids(tokenizer, text, model.config.max_len)
    return torch.tensor([ids], device=next(model.parameters()).device)


def patch_view(
    subject: Subject,
    clean: str,
    corrupt: str,
    answer: str,
    wrong: str | None = None,
    over: str = "resid",
    out: Path | None = None,
    attribution: bool = False,
    batch: int = 32,
) -> dict[str, Any]:
    """The activation patching sweep `over` the residual stream, the heads or the heads at each position,
    measured as logit(answer) - logit(wrong) at the last position (logit(answer) without `wrong`); with
    `attribution`, attribution patching's estimate and how well it agrees; with `out`, the picture."""
    model, tokenizer = _load(subject, "patching")
    clean_1L, corrupt_1L = _ids(model, tokenizer, clean), _ids(model, tokenizer, corrupt)
    a = one_token(tokenizer, answer, "--answer")
    w = optional_token(tokenizer, wrong, "--wrong")
    metric, name = logit_diff(a, w), metric_name(w)
    sweep = patch_sweep(model, clean_1L, corrupt_1L, metric, over, batch, name)
    view = sweep.to_dict()
    estimate = fit = None
    if attribution:
        estimate = attribution_patch(model, clean_1L, corrupt_1L, metric, over, name)
        fit = agreement(sweep, estimate)
        view["attribution"] = {"values": estimate.values.tolist(), **fit}
    if out is not None:
        tokens = [[tokenizer.token_str(int(i)) for i in ids[0]] for ids in (clean_1L, corrupt_1L)]
        patching_figure(sweep, tokens[0], tokens[1], out, estimate, fit)
    return view


def format_patch(view: dict[str, Any]) -> str:
    """A sweep as a table of its values, one row per layer (per layer.head over positions)."""
    values = torch.tensor(view["values"])
    lines = [f"{view['metric']}: clean {view['clean']:.3f}, corrupted {view['corrupt']:.3f}; patched ({view['over']}):"]
    if values.dim() == 3:
        values = values.flatten(0, 1)
        labels = [f"{i}.{h}" for i in range(len(view["values"])) for h in range(len(view["values"][0]))]
    else:
        labels = [f"layer {i}" for i in range(values.shape[0])]
    columns = view["axes"][-1]
    lines.append(f"{'':>9} " + " ".join(f"{c:>7}" for c in range(values.shape[1])) + f"   <- {columns}")
    for label, row in zip(labels, values.tolist(), strict=True):
        lines.append(f"{label:>9} " + " ".join(f"{v:7.3f}" for v in row))
    if "attribution" in view:
        a = view["attribution"]
        r = f"{a['correlation']:.3f}" if a["correlation"] is not None else "n/a (the values do not vary)"
        lines.append(
            f"attribution patching: correlation {r}, largest error {a['max_abs_error']:.3f}, "
            f"mean error {a['mean_abs_error']:.3f}"
        )
    return "\n".join(lines)


def attribution_view(
    subject: Subject, prompt: str, answer: str, wrong: str | None = None, out: Path | None = None
) -> dict[str, Any]:
    """The direct logit attribution of logit(answer) - logit(wrong) (or logit(answer)) at the prompt's last
    position: the embeddings, every head, every MLP and every bias, summing to the model's value."""
    model, tokenizer = _load(subject, "attribution")
    ids_1L = _ids(model, tokenizer, prompt)
    a = one_token(tokenizer, answer, "--answer")
    w = optional_token(tokenizer, wrong, "--wrong")
    att = direct_logit_attribution(model, ids_1L, a, w)
    if out is not None:
        versus = f" over {wrong!r}" if wrong is not None else ""
        attribution_figure(att, out, f"what writes {answer!r}{versus} after {prompt[-30:]!r}")
    return att.to_dict()


def format_attribution(view: dict[str, Any]) -> str:
    key = "logit_diff" if "logit_diff" in view else "logit"
    lines = [f"{key} {view[key]:.4f} = the sum of:"]
    for part in view["parts"]:
        lines.append(f"  {part['name']:>24} {part['value']:+9.4f}  " + "#" * min(40, round(4 * abs(part["value"]))))
    return "\n".join(lines)


def run_source(subject: Subject) -> str:
    """The text a run was trained on (`--data` as it was given), or the built-in corpus for an untrained model."""
    if subject.random or subject.checkpoint is None:
        return "builtin"
    state = check_checkpoint(subject.checkpoint)[3]
    data = state.get("data")
    source = data.get("source") if isinstance(data, dict) else None
    return source if isinstance(source, str) else "builtin"


def heads_view(
    subject: Subject, data: str | None = None, out: Path | None = None, half: int | None = None, batch: int = 8
) -> dict[str, Any]:
    """The head detectors' scores (previous-token, duplicate-token, induction) of every head on repeated
    random tokens and on pieces of `data`'s validation text (default: the run's own)."""
    model, tokenizer = _load(subject, "the head detectors")
    length = min(model.config.max_len, 128)
    stream = evaluation_split(data or run_source(subject), "valid", tokenizer)
    text_BL = text_pieces(stream.tokens, length, batch)
    table: HeadTable = head_table(model, text_BL, half, batch)
    if out is not None:
        heads_figure(table, out)
    return table.to_dict()


def format_heads(view: dict[str, Any]) -> str:
    keys = [k for k in view["heads"][0] if k not in ("layer", "head")]
    lines = ["head  " + " ".join(f"{k:>20}" for k in keys)]
    for row in view["heads"]:
        cells = (f"{row[k]:20.3f}" if row[k] is not None else f"{'-':>20}" for k in keys)
        lines.append(f"{row['layer']}.{row['head']:<3} " + " ".join(cells))
    for name, best in view["best"].items():
        score = f"{best['score']:.3f}" if best["score"] is not None else "no query had a marked key"
        lines.append(f"highest {name}: head {best['layer']}.{best['head']} ({score})")
    return "\n".join(lines)
