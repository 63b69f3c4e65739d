"""What the looking verbs show, from a folder (or an untrained preset) and a prompt, as data to print.

```python
from attnlab.inspect import views

subject = views.Subject("runs/lab/transformer")
views.trace_prompt(subject, "Once")                       # a Trace: format_trace(...) or .to_dict()
views.next_token_view(subject, "Tom had a red ball. To")  # {"tokens", "next"}
views.evaluate_checkpoint("runs/lab/transformer", "tinystories")
```

Each function takes a `Subject` (a run or checkpoint folder, or `random=True` for an untrained model of
a preset), decides what it needs (a language model or an encoder-decoder run, which attention, which
text) and returns what `attnlab trace / attention / embeddings / next / lens / eval` print. The
pictures and tables themselves are drawn in `inspect/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.corpus import evaluation_split
from ..errors import AttnlabError
from ..generate import encode_prompt
from ..models import LanguageModel, build_model, preset_config
from ..runtime.devices import resolve_device
from ..runtime.environment import notice
from ..tokenizers import ByteTokenizer, Tokenizer
from ..training.checkpoint import is_seq2seq, load_for_text
from ..training.run import check_fits
from ..training.seq2seq_run import Seq2SeqRun, load_seq2seq, source_and_reading
from ..training.train import evaluate
from .circuits import need_transformer
from .lens import logit_lens, next_tokens
from .pictures import (
    attention_figure,
    displayable_tokens,
    embeddings_figure,
    format_neighbours,
    nearest_neighbours,
    seq2seq_attention_figures,
)
from .trace import Trace, trace, trace_seq2seq


@dataclass(frozen=True)
class Subject:
    """The model to look at: the one in `checkpoint` (a run or checkpoint folder, with its tokenizer), or
    with `random` an untrained `model` of `preset` (default: lab) seeded with `seed`, on UTF-8 bytes."""

    checkpoint: str | None = None
    random: bool = False
    preset: str | None = None
    model: str = "transformer"
    seed: int = 0
    device: str = "cpu"

    def is_seq2seq(self) -> bool:
        """Whether the subject is an encoder-decoder run (never an untrained model)."""
        return not self.random and is_seq2seq(self.checkpoint)

    def load(self) -> tuple[LanguageModel, Tokenizer]:
        """The language model, in eval mode, and its tokenizer."""
        if self.random == bool(self.checkpoint):
            raise AttnlabError("give a checkpoint, or --random --preset NAME for an untrained model (not both)")
        device = resolve_device(self.device)
        if self.checkpoint:
            ckpt = load_for_text(self.checkpoint, device)
            assert ckpt.tokenizer is not None  # load_for_text
            return ckpt.model.eval(), ckpt.tokenizer
        torch.manual_seed(self.seed)
        tokenizer = ByteTokenizer()
        cfg = preset_config(self.preset or "lab", model=self.model, n_vocab=tokenizer.n_vocab)
        check_fits(cfg, training=False)
        return build_model(cfg).to(device).eval(), tokenizer


def prompt_ids(tokenizer: Tokenizer, prompt: str, max_len: int) -> list[int]:
    """The prompt's ids (`encode_prompt`), each notice (characters left out, cropping) said on stderr."""
    ids, notices = encode_prompt(tokenizer, prompt, max_len)
    for line in notices:
        notice(line)
    return ids


def no_target(target: str | None) -> None:
    if target is not None:
        raise AttnlabError("--target is for encoder-decoder runs (attnlab seq2seq train); drop it for a language model")


def parse_head(spec: str, model: LanguageModel) -> tuple[int, int]:
    """'LAYER.HEAD' -> (layer, head), both within the model's."""
    layer, sep, head = spec.partition(".")
    n_layers, n_heads = model.config.n_layers, model.config.n_heads
    if not (sep and layer.isdigit() and head.isdigit()) or int(layer) >= n_layers or int(head) >= n_heads:
        raise AttnlabError(
            f"unknown head {spec!r}: give LAYER.HEAD with layer 0-{n_layers - 1} and head 0-{n_heads - 1}"
        )
    return int(layer), int(head)


# ---- the views -------------------------------------------------------------------------------


def trace_prompt(subject: Subject, prompt: str, target: str | None = None) -> Trace:
    """The step-by-step trace of `prompt`: through a language model, or as an encoder-decoder's source
    with `target` (default: its greedy translation) as what its decoder reads."""
    if subject.is_seq2seq():
        run, src, tgt = _seq2seq_pair(subject, prompt, target)
        return trace_seq2seq(run.model, src, tgt, [run.vocab.token(i) for i in src], [run.vocab.token(i) for i in tgt])
    no_target(target)
    model, tokenizer = subject.load()
    ids = prompt_ids(tokenizer, prompt, model.config.max_len)
    return trace(model, ids, [tokenizer.token_str(i) for i in ids])


def attention_picture(
    model: LanguageModel, tokenizer: Tokenizer, prompt: str, out: Path, head: str | None = None
) -> Path:
    """A language model's attention weights for `prompt`: a panel per layer x head, or one large panel for
    `head` ('LAYER.HEAD')."""
    transformer = need_transformer(model, "attention")
    chosen = parse_head(head, model) if head else None
    ids = prompt_ids(tokenizer, prompt, model.config.max_len)
    with torch.no_grad():
        _, weights = transformer.forward_with_weights(torch.tensor([ids], device=next(model.parameters()).device))
    return attention_figure([w[0] for w in weights], [tokenizer.token_str(i) for i in ids], Path(out), chosen)


def seq2seq_attention_pictures(subject: Subject, prompt: str, out: Path, target: str | None = None) -> list[Path]:
    """An encoder-decoder run's three attentions for `prompt` as its source and `target` (default: its
    greedy translation) as its target: OUT-encoder, OUT-decoder and OUT-cross."""
    run, src, tgt = _seq2seq_pair(subject, prompt, target)
    device = next(run.model.parameters()).device
    src_BS, tgt_BL = torch.tensor([src], device=device), torch.tensor([tgt], device=device)
    sources, reads = [run.vocab.token(i) for i in src], [run.vocab.token(i) for i in tgt]
    return seq2seq_attention_figures(run.model, src_BS, tgt_BL, sources, reads, Path(out), prompt)


def embedding_view(subject: Subject, out: Path, neighbours: str, top: int = 5) -> dict[str, Any]:
    """The token embeddings in two dimensions (the picture `out`) and the `top` nearest neighbours of the
    characters of `neighbours` that have a token: {"picture", "neighbours"}."""
    model, tokenizer = subject.load()
    E_VC = model.embed.tok.weight.detach()
    picture = embeddings_figure(E_VC, tokenizer, Path(out))
    shown = displayable_tokens(tokenizer)
    queries = [i for i in tokenizer.encode(neighbours) if i in set(shown)]
    return {"picture": str(picture), "neighbours": nearest_neighbours(E_VC, tokenizer, queries, k=top, among=shown)}


def format_embedding_view(view: dict[str, Any]) -> str:
    """`embedding_view` as text: the picture's path, then each character's nearest neighbours."""
    lines = [f"picture: {view['picture']}", "nearest neighbours by cosine similarity of the token embeddings:"]
    return "\n".join(lines + ([format_neighbours(view["neighbours"])] if view["neighbours"] else []))


def next_token_view(subject: Subject, prompt: str, top: int = 10, all_positions: bool = False) -> dict[str, Any]:
    """`inspect.lens.next_tokens` for `prompt`."""
    model, tokenizer = subject.load()
    ids = prompt_ids(tokenizer, prompt, model.config.max_len)
    return next_tokens(model, tokenizer, ids, top, all_positions)


def lens_view(subject: Subject, prompt: str, top: int = 5) -> dict[str, Any]:
    """The logit lens after `prompt`: {"tokens": the prompt's, "layers": `inspect.lens.logit_lens`'s rows}."""
    model, tokenizer = subject.load()
    transformer = need_transformer(model, "layers to read a logit lens from")
    ids = prompt_ids(tokenizer, prompt, model.config.max_len)
    return {"tokens": [tokenizer.token_str(i) for i in ids], "layers": logit_lens(transformer, tokenizer, ids, top)}


def _seq2seq_pair(subject: Subject, prompt: str, target: str | None) -> tuple[Seq2SeqRun, list[int], list[int]]:
    """The encoder-decoder run, the ids of `prompt` as its source and of what its decoder reads."""
    assert subject.checkpoint is not None, "an encoder-decoder is a checkpoint's (Subject.is_seq2seq)"
    run = load_seq2seq(subject.checkpoint, resolve_device(subject.device))
    src, tgt = source_and_reading(run, prompt, target)
    return run, src, tgt


# ---- evaluation ------------------------------------------------------------------------------


def evaluate_checkpoint(
    checkpoint: str | Path, data: str, split: str = "valid", device: str = "auto"
) -> dict[str, Any]:
    """Bits and nats per character (and nats per token) of a checkpoint on `data`: its validation split,
    or with `split="all"` its whole text (`data.evaluation_split`), measured as training measures it."""
    ckpt = load_for_text(checkpoint, resolve_device(device))
    assert ckpt.tokenizer is not None  # load_for_text
    stream = evaluation_split(data, split, ckpt.tokenizer)
    result = evaluate(ckpt.model, stream)
    return {
        "loss_nats_per_char": result.loss / stream.chars_per_token,
        "bpc": result.bpc,
        "chars": result.chars,
        "loss_nats_per_token": result.loss,
        "tokens": result.tokens,
        "checkpoint": str(ckpt.path),
        "data": data,
        "split": split,
    }


def format_evaluation(result: dict[str, Any]) -> str:
    """`evaluate_checkpoint`'s figures on one line."""
    return (
        f"{result['data']} ({result['split']}): {result['bpc']:.4f} bits/char, "
        f"{result['loss_nats_per_char']:.4f} nats/char, {result['loss_nats_per_token']:.4f} nats/token "
        f"over {result['chars']:,} characters"
    )
