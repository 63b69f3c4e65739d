"""Decoding with the encoder-decoder: greedy, and beam search with a length penalty.

Both encode the source once and then run the decoder one position at a time over a KV cache (its
self-attention's keys and values grow by one position a step; cross-attention's, made from the
encoder's output on the first step, are reused). Beam search keeps the `beam` best partial targets
by total log-probability; a finished one (it chose <eos>) is scored by its log-probability divided
by the length penalty of Wu et al. 2016 (GNMT), ((5 + length) / 6) ** alpha, so that longer targets
are not ruled out just for having more factors below 1. With `beam=1` it is greedy decoding.
"""

from __future__ import annotations

import torch

from ..errors import AttnlabError
from .decoding import KVCache
from .seq2seq import BOS, EOS, Seq2SeqTransformer


def length_penalty(length: int, alpha: float) -> float:
    return ((5 + length) / 6) ** alpha


@torch.no_grad()
def greedy_decode(
    model: Seq2SeqTransformer, src_BS: torch.Tensor, max_new_tokens: int, kv_cache: bool = True
) -> list[list[int]]:
    """Each row's most likely next token, step by step, until <eos> (not included) or `max_new_tokens`.
    Without `kv_cache`, every step runs the decoder over the whole target so far (the same tokens)."""
    tokens_BT = torch.full((src_BS.shape[0], 1), BOS, dtype=torch.long, device=src_BS.device)
    with model.generating():
        memory_BSC = model.encode(src_BS)
        cache = KVCache(model.config.n_layers, model.config.max_len) if kv_cache else None
        for _ in range(min(max_new_tokens, model.config.max_len - 1)):
            new_BL = tokens_BT[:, -1:] if cache is not None else tokens_BT
            next_B1 = model.decode(new_BL, memory_BSC, src_BS, kv_cache=cache)[:, -1:].argmax(dim=-1)
            tokens_BT = torch.cat([tokens_BT, next_B1], dim=1)
            if (tokens_BT == EOS).any(dim=1).all():
                break
    return [row[: row.index(EOS)] if EOS in row else row for row in tokens_BT[:, 1:].tolist()]


@torch.no_grad()
def beam_search(
    model: Seq2SeqTransformer,
    src_S: torch.Tensor,
    max_new_tokens: int,
    beam: int = 4,
    alpha: float = 0.6,
    kv_cache: bool = True,
) -> list[int]:
    """The best target for one source (ids, without <bos> and <eos>) among `beam` kept at each step."""
    if beam < 1:
        raise AttnlabError(f"--beam {beam}: must be >= 1")
    if not alpha >= 0:
        raise AttnlabError(f"--length-penalty {alpha}: must be >= 0")
    with model.generating():
        return _beam_search(model, src_S, max_new_tokens, beam, alpha, kv_cache)


def _beam_search(
    model: Seq2SeqTransformer, src_S: torch.Tensor, max_new_tokens: int, beam: int, alpha: float, kv_cache: bool
) -> list[int]:
    src_KS = src_S[None].expand(beam, -1)  # at most `beam` beams are kept
    memory_1SC = model.encode(src_S[None])  # one source: its keys and values serve every beam
    cache = KVCache(model.config.n_layers, model.config.max_len) if kv_cache else None
    tokens_KT = torch.full((1, 1), BOS, dtype=torch.long, device=src_S.device)
    scores_K = torch.zeros(1, device=src_S.device)  # total log-probability of each kept beam
    finished: list[tuple[float, list[int]]] = []
    steps = min(max_new_tokens, model.config.max_len - 1)
    for _ in range(steps):
        k = tokens_KT.shape[0]
        new_KL = tokens_KT[:, -1:] if cache is not None else tokens_KT
        logits_K1V = model.decode(new_KL, memory_1SC.expand(k, -1, -1), src_KS[:k], kv_cache=cache)
        logp_KV = logits_K1V[:, -1].float().log_softmax(dim=-1)
        total_KV = scores_K[:, None] + logp_KV
        V = total_KV.shape[1]
        top_scores, top_flat = total_KV.flatten().topk(min(2 * beam, total_KV.numel()))
        keep_rows, keep_scores, keep_tokens = [], [], []
        for score, flat in zip(top_scores.tolist(), top_flat.tolist(), strict=True):
            row, token = divmod(flat, V)
            if token == EOS:  # a finished target: scored with the length penalty, the beam goes on without it
                ids = tokens_KT[row, 1:].tolist()
                finished.append((score / length_penalty(len(ids) + 1, alpha), ids))
            else:
                keep_rows.append(row)
                keep_scores.append(score)
                keep_tokens.append(token)
            if len(keep_rows) == beam:
                break
        # A kept beam's log-probability only falls, and the penalty it is divided by is at most the
        # longest target's: once the best finished target beats that bound for every kept beam, stop.
        best_finished = max((s for s, _ in finished), default=float("-inf"))
        bound = max(keep_scores, default=float("-inf")) / length_penalty(steps + 1, alpha)
        if not keep_rows or best_finished >= bound:
            break
        rows_K = torch.tensor(keep_rows, device=src_S.device)
        tokens_KT = torch.cat([tokens_KT[rows_K], torch.tensor(keep_tokens, device=src_S.device)[:, None]], dim=1)
        scores_K = torch.tensor(keep_scores, device=src_S.device)
        if cache is not None:  # each kept beam continues the cache of the beam it came from
            cache.reorder(rows_K)
    if not finished:  # ran out of steps: the best unfinished target
        finished = [
            (float(s) / length_penalty(tokens_KT.shape[1], alpha), tokens_KT[i, 1:].tolist())
            for i, s in enumerate(scores_K)
        ]
    return max(finished, key=lambda f: f[0])[1]
