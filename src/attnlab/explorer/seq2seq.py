"""What the explorer shows of an encoder-decoder run: its three attentions for a source and the model's
own translation of it, any layer and head, query . key, and the trace through encoder and decoder.

The attention views answer for one `kind`: "encoder" (source positions attend to source positions),
"decoder" (the target read so far, causal) or "cross" (target positions attend to source positions).
Queries are the rows and keys the columns, as for a language model; only the decoder's are causal.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..data.tasks import held_out_pairs
from ..errors import AttnlabError
from ..inspect.params import group_totals, param_breakdown
from ..inspect.trace import trace_seq2seq
from ..models.seq2seq import ATTENTIONS, attention_names, attention_prefix
from ..training.seq2seq_run import Seq2SeqRun, source_and_reading
from .payloads import MAX_PROMPT_CHARS, THUMB, loss_curve, printable, trace_payload


class Seq2SeqView:
    """A run, and its reading of the last source asked for (the views of one source share one forward)."""

    def __init__(self, run: Seq2SeqRun) -> None:
        run.model.eval()
        self.run = run
        self._last: tuple[str, tuple[list[int], list[int], dict[str, torch.Tensor]]] | None = None

    @torch.no_grad()
    def read(self, source: str) -> tuple[list[int], list[int], dict[str, torch.Tensor]]:
        """The source's ids, what the decoder reads (<bos> and the greedy translation), and every
        attention's queries, keys, values and weights."""
        if not isinstance(source, str) or not source:
            raise AttnlabError("the source is empty; type some text to translate")
        if len(source) > MAX_PROMPT_CHARS:
            raise AttnlabError(f"the source has {len(source):,} characters; at most {MAX_PROMPT_CHARS:,} are shown")
        if self._last is not None and self._last[0] == source:
            return self._last[1]
        model = self.run.model
        src, tgt = source_and_reading(self.run, source)
        device = next(model.parameters()).device
        names = [n for kind in ATTENTIONS for layer in range(self.layers(kind)) for n in attention_names(kind, layer)]
        _, cache = model.run_with_cache(torch.tensor([src], device=device), torch.tensor([tgt], device=device), names)
        self._last = (source, (src, tgt, cache))
        return self._last[1]

    def chips(self, ids: list[int]) -> list[dict[str, Any]]:
        return [{"id": i, "text": printable(self.run.vocab.token(i)), "partial": False} for i in ids]

    def layers(self, kind: str) -> int:
        attention_prefix(kind, 0)  # an unknown kind is named there
        return len(self.run.model.encoder if kind == "encoder" else self.run.model.decoder)

    def _check_head(self, kind: str, layer: int, head: int) -> None:
        n_layers, n_heads = self.layers(kind), self.run.model.config.n_heads
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise AttnlabError(f"layer {layer}, head {head}: the {kind} has {n_layers} layers of {n_heads} heads")


@torch.no_grad()
def overview(view: Seq2SeqView, source: str, kind: str = "cross") -> dict[str, Any]:
    """The source, the translation, and every layer's heads of one attention as small byte images
    (weight x 255; longer sides max-pooled to THUMB): queries (`chips`) are rows, `key_chips` columns."""
    n_layers = view.layers(kind)
    src, tgt, cache = view.read(source)
    queries = src if kind == "encoder" else tgt
    keys = tgt if kind == "decoder" else src
    rows, cols = min(len(queries), THUMB), min(len(keys), THUMB)
    thumbs = []
    for layer in range(n_layers):
        w_HLK = cache[attention_names(kind, layer)[3]][0].float().cpu()
        if w_HLK.shape[-2:] != (rows, cols):
            w_HLK = torch.nn.functional.adaptive_max_pool2d(w_HLK[None], (rows, cols))[0]
        thumbs.append([(w_LK * 255).round().to(torch.uint8).numpy().tobytes() for w_LK in w_HLK])
    chips = view.chips(queries)
    return {
        "kind": kind,
        "causal": kind == "decoder",
        "source": view.chips(src),
        "target": view.chips(tgt),
        "translation": view.run.vocab.decode(tgt[1:]),
        "tokens": [c["text"] for c in chips],
        "chips": chips,
        "ids": queries,
        "key_chips": view.chips(keys),
        "layers": n_layers,
        "heads": view.run.model.config.n_heads,
        "size": rows,
        "cols": cols,
        "thumbs": thumbs,
    }


def _one_head(view: Seq2SeqView, source: str, kind: str, layer: int, head: int) -> list[torch.Tensor]:
    view._check_head(kind, layer, head)
    cache = view.read(source)[2]
    return [cache[name][0, head].float().cpu() for name in attention_names(kind, layer)]


def head(view: Seq2SeqView, source: str, kind: str, layer: int, head: int) -> bytes:
    """One head's weights, query x key, as little-endian float32 bytes."""
    return _one_head(view, source, kind, layer, head)[3].numpy().astype("<f4").tobytes()


def qkv(view: Seq2SeqView, source: str, kind: str, layer: int, head: int) -> dict[str, Any]:
    """One head's queries (one per query position) and keys and values (one per key position)."""
    q_LD, k_KD, v_KD, _ = _one_head(view, source, kind, layer, head)
    scale = 1 / math.sqrt(view.run.model.config.head_dim)
    return {"layer": layer, "head": head, "q": q_LD.tolist(), "k": k_KD.tolist(), "v": v_KD.tolist(), "scale": scale}


def trace_steps(view: Seq2SeqView, source: str) -> dict[str, Any]:
    """`attnlab trace` of the source and its translation: encoder, then decoder."""
    src, tgt, _ = view.read(source)
    vocab = view.run.vocab
    tr = trace_seq2seq(view.run.model, src, tgt, [vocab.token(i) for i in src], [vocab.token(i) for i in tgt])
    return trace_payload(tr) | {"source_tokens": tr.sources}


def run_card(view: Seq2SeqView, metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The config, parameters by component, the training loss curve, and the run's task or file."""
    run = view.run
    state = run.state
    return {
        "config": run.model.config.to_dict(),
        "params": group_totals(param_breakdown(run.model.config)),
        "total_params": run.model.num_params(),
        "info": {
            "task": state.get("task") or state.get("data"),
            "steps": state.get("step"),
            "example": _example(state),
        },
        "curve": loss_curve(metrics, "train"),  # a seq2seq run logs training rows only
    }


def _example(state: dict[str, Any]) -> str:
    """The first source of the run's test split: what the page shows first (a task's; "" for a file)."""
    return held_out_pairs(state["task"])[0][0] if state.get("task") else ""
