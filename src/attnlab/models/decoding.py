"""Fast generation: the key/value cache, one new token at a time.

Without a cache, every generated token runs the whole context through the model again. With one,
the prompt is run once (prefill) and its keys and values kept per layer; each new token then adds
its own k, v and attends over the cache, so its cost does not grow with the prompt length (up to
max_len). The buffers are allocated once at max_len, so a step writes one slot instead of copying
the whole cache (a beam search's reorder, which copies them anyway, leaves less room, doubled when
full).

One cache serves every model that generates: a language model's layers, and an encoder-decoder's
decoder, whose cross-attention also keeps the source's keys and values (made from the encoder's
output on the first step). Beam search reorders the cache's rows when it keeps some beams and drops
others (`KVCache.reorder`). The attention itself is `Attention.forward` (attention.py), handed a
layer's cache: its self-attention then takes `Attention.cached_step`, the same numbers in fewer
operations, and cross-attention reads the kept source (the tests compare generation with and without
the cache token for token). `compiled_decoder` runs the one-token steps through
`torch.compile`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from ..errors import AttnlabError
from ..runtime.environment import notice

T = TypeVar("T")
KeysValues = tuple[torch.Tensor, torch.Tensor]


class KVCache:
    """What a generation keeps from step to step, one `LayerCache` per layer (`layers[i]`).

    `length` is the number of positions cached: the next token's slot. The model's forward advances it
    once all its layers have appended their keys and values. `pad_B`: a batch of prompts of different
    lengths, left-padded, row b's first pad_B[b] slots padding (`attention.left_padding`); None: no padding.
    """

    def __init__(self, n_layers: int, max_len: int, pad_B: torch.Tensor | None = None) -> None:
        self.max_len = max_len
        self.pad_B = pad_B
        self.length = 0
        self.layers = [LayerCache(self) for _ in range(n_layers)]
        # Fixed shapes (`fix_shapes`): the slot of the next token as a tensor, the same shapes every step.
        self.slot: torch.Tensor | None = None

    def fix_shapes(self) -> torch.Tensor:
        """From now on one token a step, every shape the same: the new keys and values are written in
        place at `slot` (a one-element tensor, set by the caller before each step) and attention reads all
        max_len slots under a mask. Nothing then depends on a Python number, so a step can be captured
        once as a CUDA graph and replayed (`GraphedStep`). Call after the prompt's forward (prefill),
        which sized every buffer to max_len; returns the slot tensor, at the next token's slot."""
        device = torch.device("cpu")
        for layer in self.layers:
            assert layer.k_BGTD is not None and layer.v_BGTD is not None  # filled by the prefill
            # The slots not written yet are read under the mask: a weight of 0 times a stray NaN in
            # uninitialised memory is still NaN, so they must hold numbers.
            layer.k_BGTD[:, :, self.length :].zero_()
            layer.v_BGTD[:, :, self.length :].zero_()
            device = layer.k_BGTD.device
        self.slot = torch.tensor([self.length], device=device)
        return self.slot

    def reorder(self, rows_B: torch.Tensor) -> None:
        """Beam search: row b of the cache continues what row rows_B[b] held (rows may repeat or go)."""
        for layer in self.layers:
            layer.reorder(rows_B)


class LayerCache:
    """One layer's part of a KVCache: its keys and values so far in (B, G, max_len, D) buffers, the
    source's keys and values for cross-attention, and weights derived once for decoding."""

    def __init__(self, cache: KVCache) -> None:
        self.cache = cache
        self.k_BGTD: torch.Tensor | None = None  # T = max_len slots, the first `cache.length` filled
        self.v_BGTD: torch.Tensor | None = None
        self.source_kv: KeysValues | None = None
        self.derived: dict[str, Any] = {}

    def append(self, k_BGLD: torch.Tensor, v_BGLD: torch.Tensor) -> KeysValues:
        """Add this step's keys and values; return all of them so far (B, G, K, D), or with fixed shapes
        (`KVCache.fix_shapes`) every slot, (B, G, max_len, D), the ones not written yet masked."""
        if self.cache.slot is not None and self.k_BGTD is not None and self.v_BGTD is not None:
            self.k_BGTD.index_copy_(2, self.cache.slot, k_BGLD)
            self.v_BGTD.index_copy_(2, self.cache.slot, v_BGLD)
            return self.k_BGTD, self.v_BGTD
        start = self.cache.length
        end = start + k_BGLD.shape[2]  # <= max_len: the model refuses longer sequences
        k_BGTD, v_BGTD = self.k_BGTD, self.v_BGTD
        if k_BGTD is None or v_BGTD is None:  # the first step (the two are made together)
            B, G, _, D = k_BGLD.shape
            k_BGTD = self.k_BGTD = k_BGLD.new_empty(B, G, self.cache.max_len, D)
            v_BGTD = self.v_BGTD = v_BGLD.new_empty(B, G, self.cache.max_len, D)
        elif end > k_BGTD.shape[2]:  # only after a reorder, which leaves less room than max_len
            k_BGTD = self.k_BGTD = _grown(k_BGTD, start, end, self.cache.max_len)
            v_BGTD = self.v_BGTD = _grown(v_BGTD, start, end, self.cache.max_len)
        k_BGTD[:, :, start:end] = k_BGLD
        v_BGTD[:, :, start:end] = v_BGLD
        return k_BGTD[:, :, :end], v_BGTD[:, :, :end]

    def source(self, make: Callable[[], KeysValues]) -> KeysValues:
        """Cross-attention's keys and values of the source: `make()` on the first step, kept for the rest."""
        if self.source_kv is None:
            self.source_kv = make()
        return self.source_kv

    def cached(self, name: str, make: Callable[[], T]) -> T:
        """`make()` computed once per cache: weights derived for decoding (e.g. the stacked q/k/v matrix).

        A cache lives for one generation, which runs without gradients, so the weights cannot change
        under it; a decoding step then skips rebuilding them.
        """
        if name not in self.derived:
            self.derived[name] = make()
        return self.derived[name]

    def reorder(self, rows_B: torch.Tensor) -> None:
        """Row b takes row rows_B[b]'s keys and values: the filled slots are copied into new buffers with
        room for about as many again (`append` doubles them when full). Gathering all max_len slots instead
        cost a beam search over short targets 7% of its time (profiled on `seq2seq-small`: 29 us a
        gather against 7 for the filled slots; benchmarks/one_machinery.py)."""
        if self.k_BGTD is not None and self.v_BGTD is not None:
            # One gather: the filled slots and the free ones after them (unread), no more than `_room` holds.
            T = min(self.k_BGTD.shape[2], _room(self.cache.length, self.cache.max_len))
            self.k_BGTD = self.k_BGTD[:, :, :T].index_select(0, rows_B)
            self.v_BGTD = self.v_BGTD[:, :, :T].index_select(0, rows_B)
        if self.source_kv is not None:
            k_BGSD, v_BGSD = self.source_kv
            self.source_kv = _source_rows(k_BGSD, rows_B), _source_rows(v_BGSD, rows_B)


class GraphedStep:
    """The one-token decoding step captured once as a CUDA graph and replayed for every token: on a GPU
    a step of a small model is ~100 kernel launches whose cost is the launching, not the arithmetic; a
    replay launches them all at once. The shapes are fixed (`KVCache.fix_shapes`), the token and the slot
    live in tensors the graph reads, and each call copies the new token in, replays and moves the slot.
    The same numbers as the eager step (tested on CPU through the fixed-shape path it captures)."""

    def __init__(self, model: torch.nn.Module, cache: KVCache, ids_B1: torch.Tensor) -> None:
        self.slot = cache.fix_shapes()
        self.ids_B1 = ids_B1.clone()
        with torch.no_grad():
            self._capture(model, cache)

    def _capture(self, model: torch.nn.Module, cache: KVCache) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(
            side
        ):  # warm-up (allocator, kernel choices); it writes the slot the first replay rewrites
            for _ in range(2):
                model(self.ids_B1, kv_cache=cache)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits_B1V = model(self.ids_B1, kv_cache=cache)

    def __call__(self, ids_B1: torch.Tensor) -> torch.Tensor:
        """The logits after token ids_B1, at the cache's next slot."""
        self.ids_B1.copy_(ids_B1)
        self.graph.replay()
        self.slot += 1
        return self.logits_B1V


def use_graphs(device: torch.device, use_cache: bool, graphs: bool | None) -> bool:
    """Whether generation replays its one-token steps as CUDA graphs: `graphs`, or by default (None) on a
    CUDA device whenever the cache is used; asked for elsewhere, refused in one line."""
    on_cuda = device.type == "cuda"
    if graphs and not (on_cuda and use_cache):
        raise AttnlabError("CUDA graphs replay the KV-cache step on a CUDA device: use the cache on a GPU")
    return (on_cuda and use_cache) if graphs is None else graphs


def graphed_step(model: torch.nn.Module, cache: KVCache, ids_B1: torch.Tensor) -> GraphedStep | None:
    """`GraphedStep(model, cache, ids_B1)`, or None, said in a notice, where this device or driver cannot
    capture it: generation then goes on eagerly, with the same tokens, rather than stop."""
    try:
        return GraphedStep(model, cache, ids_B1)
    except RuntimeError as e:
        cache.slot = None  # back to the growing cache: the eager step reads `length`, still the next slot
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        notice(f"CUDA graphs: the decoding step could not be captured ({first[:160]}); decoding without them")
        return None


def _room(need: int, max_len: int) -> int:
    """The slots of a buffer that holds `need` positions and as many again (at least 16, at most max_len)."""
    return min(max_len, max(2 * need, 16))


def _grown(t_BGTD: torch.Tensor, n: int, need: int, max_len: int) -> torch.Tensor:
    """t_BGTD's first n slots in a buffer with room for `need` positions and as many again."""
    B, G, _, D = t_BGTD.shape
    out_BGTD = t_BGTD.new_empty(B, G, _room(need, max_len), D)
    out_BGTD[:, :, :n] = t_BGTD[:, :, :n]
    return out_BGTD


def _source_rows(t_BGSD: torch.Tensor, rows_B: torch.Tensor) -> torch.Tensor:
    """t_BGSD's rows rows_B; one source that every row reads (a beam search's) stays one, broadcast."""
    if t_BGSD.shape[0] == 1 or t_BGSD.stride(0) == 0:
        return t_BGSD[:1].expand(len(rows_B), -1, -1, -1)
    return t_BGSD[rows_B]


def attend_one_query(q_BH1D: torch.Tensor, k_BHKD: torch.Tensor, v_BHKD: torch.Tensor) -> torch.Tensor:
    """Attention of one new query over all keys (no mask needed), as multiply-and-sum reductions.

    This is what a compiled decoding step runs instead of SDPA: inductor fuses these reductions into
    its own kernels, where SDPA stays an external call whose fixed cost outweighs its arithmetic at
    one query (measured: the compiled step is ~1.2x faster).
    """
    scores_BHK = (q_BH1D * k_BHKD).sum(-1) / math.sqrt(q_BH1D.shape[-1])
    return (scores_BHK.softmax(dim=-1)[..., None] * v_BHKD).sum(-2, keepdim=True)


@functools.cache
def _compiled_forward(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    # The class's forward, not each model's: one compiled function for every model of that class
    # (torch.compile's guards tell their shapes apart), and nothing stored on the model, which
    # therefore still pickles and deep-copies as before.
    return torch.compile(
        forward,
        dynamic=True,
        # torch's stub types `options` values as scalars; inductor's post_grad_fusion_options is a dict of passes.
        options={"post_grad_fusion_options": {"decompose_mm_pass": {}}},  # type: ignore[dict-item]
    )


def compiled_decoder(model: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """`model`'s forward through `torch.compile`, for one-token steps over a KV cache.

    A decoding step is ~100 tiny ops whose cost is their dispatch, not their arithmetic: compiled
    (dynamic shapes, so the growing cache does not recompile), they run as a few fused kernels.
    On CPU, inductor's `decompose_mm_pass` turns each one-row matmul into a fused multiply-and-sum
    (a BLAS call costs ~10 us however small), and attention runs as `attend_one_query` instead of
    SDPA for the same reason: measured together, the step takes ~0.7x the time it took without both.
    Compiling `forward` rather than the module skips nn.Module's call machinery (~5% of a step).
    """
    return functools.partial(_compiled_forward(type(model).forward), model)
