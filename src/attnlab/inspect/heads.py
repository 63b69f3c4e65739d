"""Head detectors: which heads attend to the previous token, to earlier copies of the current token, or
to the token that followed an earlier copy (an induction head, Olsson et al. 2022).

Each detector marks, for every query position i, the key positions j its kind of head would attend to:

- previous-token: j = i - 1;
- duplicate-token: j < i holding the same token as i;
- induction: 0 < j < i whose previous token (at j - 1) is the same as i's: the head that, having seen
  "... A B ... A", looks at B to predict it comes next.

A head's score is the attention weight it puts on the marked keys, averaged over the queries that have
any (so 1 is a head that does nothing else, and chance is small). The scores are measured on repeated
random tokens (a random sequence, then the same again: in its second half every token has an earlier
copy, and only a head that matches patterns can know what comes next) and on real text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import AttnlabError
from ..models import TransformerLM
from .circuits import forward_bytes, rows_that_fit

DETECTORS = ("previous", "duplicate", "induction")


def targets_BLK(ids_BL: torch.Tensor, detector: str) -> torch.Tensor:
    """True at (b, i, j) where `detector`'s kind of head, at query i, would attend to key j."""
    B, L = ids_BL.shape
    i_L1 = torch.arange(L, device=ids_BL.device)[:, None]
    j_1K = torch.arange(L, device=ids_BL.device)[None, :]
    earlier_LK = j_1K < i_L1
    if detector == "previous":
        return (j_1K == i_L1 - 1).expand(B, L, L)
    if detector == "duplicate":
        return earlier_LK & (ids_BL[:, None, :] == ids_BL[:, :, None])
    if detector == "induction":
        before_BK = torch.cat([torch.full_like(ids_BL[:, :1], -1), ids_BL[:, :-1]], dim=1)  # the token before j
        return earlier_LK & (j_1K > 0) & (before_BK[:, None, :] == ids_BL[:, :, None])
    raise AttnlabError(f"unknown detector {detector!r}: choose one of {', '.join(DETECTORS)}")


@torch.no_grad()
def detector_scores(model: TransformerLM, ids_BL: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every detector's score for every head, scores_NH (N layers, H heads), on the sequences ids_BL."""
    N = model.config.n_layers
    names = [f"blocks.{layer}.attn.weights_BHLK" for layer in range(N)]
    _, cache = model.run_with_cache(ids_BL, names=names)
    weights_NBHLK = torch.stack([cache[n].float() for n in names])
    scores = {}
    for detector in DETECTORS:
        marked_BLK = targets_BLK(ids_BL, detector)
        has_BL = marked_BLK.any(-1)
        if not has_BL.any():
            scores[detector] = torch.full(weights_NBHLK.shape[2:3], float("nan")).expand(N, -1).clone()
            continue
        on_NBHL = (weights_NBHLK * marked_BLK[None, :, None]).sum(-1)  # weight on the marked keys, per query
        scores[detector] = (on_NBHL * has_BL[None, :, None]).sum((1, 3)) / has_BL.sum()
    return scores


def repeated_random_tokens(
    n_vocab: int, half: int, batch: int, seed: int = 0, ids: torch.Tensor | None = None
) -> torch.Tensor:
    """ids_BL: `batch` random sequences of `half` tokens, each followed by itself again (L = 2 x half),
    drawn from `ids` (default: the whole vocabulary; a model only knows the tokens its text has)."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.arange(n_vocab) if ids is None else ids.unique().cpu()
    first_BL = pool[torch.randint(0, len(pool), (batch, half), generator=g)]
    return torch.cat([first_BL, first_BL], dim=1)


@dataclass
class HeadTable:
    """The detectors' scores_NH on repeated random tokens and on text, keyed by where they were measured."""

    scores: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # where -> detector -> scores_NH

    def rows(self) -> list[dict[str, Any]]:
        """One row per head: its layer, head and every score."""
        first = next(iter(self.scores.values()))["previous"]
        N, H = first.shape
        out = []
        for layer in range(N):
            for h in range(H):
                row: dict[str, Any] = {"layer": layer, "head": h}
                for where, by_detector in self.scores.items():
                    for detector, s_NH in by_detector.items():
                        score = float(s_NH[layer, h])  # NaN: no query had a marked key (JSON: null)
                        row[f"{detector}_{where}"] = round(score, 4) if math.isfinite(score) else None
                out.append(row)
        return out

    def best(self, detector: str, where: str = "random") -> tuple[int, int, float]:
        """The head with the highest score of `detector`, as (layer, head, score)."""
        s_NH = self.scores[where][detector]
        flat = int(s_NH.flatten().nan_to_num(-1.0).argmax())
        layer, h = divmod(flat, s_NH.shape[1])
        return layer, h, float(s_NH[layer, h])

    def to_dict(self) -> dict[str, Any]:
        best = {
            f"{d}_{w}": {"layer": layer, "head": h, "score": score if math.isfinite(score) else None}
            for w in self.scores
            for d in DETECTORS
            for layer, h, score in [self.best(d, w)]
        }
        return {"heads": self.rows(), "best": best}


def head_table(
    model: TransformerLM, text_BL: torch.Tensor | None = None, half: int | None = None, batch: int = 8, seed: int = 0
) -> HeadTable:
    """The detectors on `batch` repeated random sequences (`half` tokens twice; default as long as the
    context allows, at most 64) and, if given, on text_BL (pieces of real text), whose tokens are then
    the ones the random sequences are drawn from."""
    L = model.config.max_len
    half = min(64, L // 2) if half is None else half
    if not 2 <= 2 * half <= L:
        raise AttnlabError(f"--half {half}: twice it must fit the context (max_len={L}) and be at least 2")
    check_batch(model, max(2 * half, text_BL.shape[1] if text_BL is not None else 0), batch)
    device = next(model.parameters()).device
    random_BL = repeated_random_tokens(model.config.n_vocab, half, batch, seed, text_BL).to(device)
    table = HeadTable({"random": detector_scores(model, random_BL)})
    if text_BL is not None:
        table.scores["text"] = detector_scores(model, text_BL.to(device))
    return table


def check_batch(model: TransformerLM, L: int, batch: int) -> None:
    """Refuse, before anything is allocated, `batch` sequences of L tokens that would not fit in memory."""
    if rows_that_fit(model, L, batch) < batch:
        need = forward_bytes(model, L) * batch
        raise AttnlabError(
            f"--batch {batch}: {batch} sequences at once need {need / 2**30:,.1f} GiB, more than this machine "
            "can spare; ask for fewer"
        )


def text_pieces(tokens: Any, length: int, count: int) -> torch.Tensor:
    """`count` pieces of `length` tokens from a token array, spread evenly over it (ids_BL)."""
    n = len(tokens)
    if n < length:
        raise AttnlabError(f"the text has {n} tokens, fewer than one piece of {length}: give a longer text")
    starts = torch.linspace(0, n - length, steps=min(count, n - length + 1)).long().unique()
    return torch.stack([torch.as_tensor(tokens[int(s) : int(s) + length]).long() for s in starts])
