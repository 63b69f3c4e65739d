"""What circuit analysis needs of a model: its components by hook name, and the metric it measures.

Patching, ablation, direct logit attribution and the head detectors (patching.py, attribution.py,
ablations.py, heads.py) all speak of the same parts of a Transformer LM, by the hook names a student
already knows from `run_with_cache`:

- the residual stream entering block l: `embed.sum_BLC` for l = 0, else the output of block l - 1
  (`blocks.{l-1}.resid_post_BLC`, or `ln2_BLC` in a post-norm block, which normalises its output);
- head h of block l: its slice `[:, h]` of `blocks.{l}.attn.z_BHLD` (the weighted sum of values,
  before the heads are merged and projected: what the head writes, through W_O's columns);
- the MLP of block l: `blocks.{l}.mlp.out_BLC`.

Axes are named as everywhere in attnlab, with N for the layers: a layer x position sweep is
`values_NL`, layer x head `values_NH`, layer x head x position `values_NHL`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import AttnlabError
from ..models import LanguageModel, TransformerLM
from ..runtime.checks import memory_limit
from ..tokenizers import Tokenizer

Metric = Callable[[torch.Tensor], torch.Tensor]  # logits_BLV -> one number per row, metric_B


def need_transformer(model: LanguageModel, what: str) -> TransformerLM:
    """`model` itself, once it is known to be a Transformer (the MLP baseline is the other language model)."""
    if not isinstance(model, TransformerLM):
        raise AttnlabError(f"the MLP model has no {what}: use a transformer checkpoint or --model transformer")
    return model


def resid_name(model: TransformerLM, layer: int) -> str:
    """The hook name of the residual stream entering block `layer` (0: the embeddings' sum)."""
    if layer == 0:
        return "embed.sum_BLC"
    out = "ln2_BLC" if model.config.norm_placement == "post" else "resid_post_BLC"
    return f"blocks.{layer - 1}.{out}"


def head_name(layer: int, head: int) -> str:
    """The name of one head as a component (attribution parts, ablation tables, the explorer)."""
    return f"blocks.{layer}.attn.head.{head}"


def check_pair(answer: int, wrong: int | None) -> None:
    """Refuse a wrong token that is the answer: their difference is 0 whatever the model does."""
    if wrong == answer:
        raise AttnlabError("the wrong token is the answer itself: their logit difference is 0 whatever the model does")


def logit_diff(answer: int, wrong: int | None = None, position: int = -1) -> Metric:
    """logit(answer) - logit(wrong) at `position` of each row (only logit(answer) when wrong is None).

    The difference, not the logit: a component that raises every logit alike changes no prediction,
    and the difference does not see it.
    """

    check_pair(answer, wrong)

    def metric(logits_BLV: torch.Tensor) -> torch.Tensor:
        at_BV = logits_BLV[:, position].float()
        return at_BV[:, answer] - (at_BV[:, wrong] if wrong is not None else 0.0)

    return metric


def metric_name(wrong: int | None) -> str:
    """What `logit_diff(answer, wrong)` measures, as the JSON and the pictures name it."""
    return "logit_diff" if wrong is not None else "logit"


def optional_token(tokenizer: Tokenizer, text: str | None, flag: str) -> int | None:
    """`one_token` of a token that may be left out (None)."""
    return one_token(tokenizer, text, flag) if text is not None else None


def one_token(tokenizer: Tokenizer, text: str, flag: str) -> int:
    """The id of `text` if it is exactly one token, else a one-line refusal naming `flag`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes the shell could not decode as UTF-8
        raise AttnlabError(
            f"{flag} is not valid UTF-8 text; pass it as UTF-8 (check the terminal's encoding)"
        ) from None
    ids = tokenizer.encode(text)
    if len(ids) != 1:
        raise AttnlabError(
            f"{flag} {text!r} is {len(ids)} tokens for this model's tokenizer, not one: give a single token "
            "(one character for a character-level model)"
        )
    return ids[0]


def forward_bytes(model: TransformerLM, L: int) -> int:
    """About the memory one row of L tokens takes in a hooked forward: each layer's attention scores,
    masked scores and weights (H x L x L, written out), and a few (L x C) and (L x F) tensors."""
    cfg = model.config
    per_layer = 3 * cfg.n_heads * L * L + 8 * L * (cfg.emb_dim + cfg.n_hidden)
    return 4 * (cfg.n_layers * per_layer + 2 * L * cfg.n_vocab)


def memory_budget(model: TransformerLM) -> int:
    """Bytes a forward's activations may take: half the free memory of the model's GPU, or half the
    machine's (or its cgroup's) memory on the CPU."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return memory_limit() // 2


def rows_that_fit(model: TransformerLM, L: int, rows: int) -> int:
    """How many of `rows` sequences of L tokens one forward can take in memory (at least one; the
    results do not depend on it), refused in one line if not even one fits."""
    one = forward_bytes(model, L)
    budget = memory_budget(model)
    if one > budget:
        raise AttnlabError(
            f"one forward of {L} tokens needs {one / 2**30:,.1f} GiB, more than this machine can spare; "
            "use a shorter prompt or a smaller model"
        )
    return max(1, min(rows, budget // one))
