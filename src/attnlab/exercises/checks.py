"""Checks that run a student's function against the reference and the catalogue of known mistakes.

Every check returns a `CheckResult`: passed, or the mistake's id with what it means, the evidence
(which queries see which future keys, expected and got shapes in the B/L/C/H/D letters, where NaNs
appear) and the fix. A function that matches neither the reference nor a known mistake gets the
first place where it differs and by how much. A function not written yet gets one line.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..models import ModelConfig, TransformerLM
from ..models.attention import CausalSelfAttention
from ..models.layers import Block
from . import reference as ref
from .mistakes import (
    ATTENTION_MISTAKES,
    LAYER_MISTAKES,
    LM_MISTAKES,
    MERGE_MISTAKES,
    MISTAKES,
    MULTI_HEAD_MISTAKES,
    SPLIT_MISTAKES,
    temperature_ignored_probs,
    top_k_probs,
)
from .result import CheckResult, record, shape_in_letters

# Sizes chosen all different, so a shape can be read back in letters: (2, 7, 3, 4) is (B, L, H, D).
B, L, H, D, C, F, V = 2, 7, 3, 4, 10, 16, 256
LETTERS = {"B": B, "L": L, "H": H, "D": D, "E": H * D, "C": C, "F": F, "V": V}
Case = tuple[Any, ...]
Wrong = list[tuple[str, Callable[..., Any]]]


class _Stop(Exception):
    """The check ends early with this result (not written yet, raised, wrong type or shape)."""

    def __init__(self, result: CheckResult) -> None:
        self.result = result


def _result(name: str, fn: Callable[..., Any] | None, passed: bool, mistake: str | None, text: str) -> CheckResult:
    reference = getattr(ref, name)
    function = fn if passed else reference
    if mistake is not None:
        m = MISTAKES[mistake]
        text = f"{text}\n  fix: {m.fix}" if m.fix not in text else text
    return record(CheckResult(name, passed, mistake, f"{'✓' if passed else '✗'} {name}: {text}", function))


def _not_a_function(name: str, fn: Any) -> CheckResult | None:
    """The result for something that is not a function (None: it is one)."""
    return None if callable(fn) else _result(name, fn, False, None, f"expected a function, got {type(fn).__name__}")


def _diagnosis(name: str, mistake: str, evidence: str = "") -> CheckResult:
    what = MISTAKES[mistake].what
    text = f"mistake `{mistake}`: {what}" + (f"\n  evidence: {evidence}" if evidence else "")
    return _result(name, None, False, mistake, text)


def _call(name: str, fn: Callable[..., Any], args: Case) -> Any:
    """fn(*args) on copies of the tensors (a student's in-place change must not leak into the next case)."""
    copies = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
    try:
        return fn(*copies)
    except NotImplementedError:
        raise _Stop(
            _result(name, fn, False, None, "not implemented yet: write it in its cell, run that cell, then this check")
        ) from None
    except Exception as e:  # noqa: BLE001 - any error of the student's code is reported, in one line
        where = ", ".join(_describe_arg(a) for a in args)
        raise _Stop(_result(name, fn, False, None, f"raised {type(e).__name__}: {e} (called with {where})")) from None


def _describe_arg(a: Any) -> str:
    if isinstance(a, torch.Tensor):
        return f"a {str(a.dtype).replace('torch.', '')} tensor of shape {shape_in_letters(tuple(a.shape), LETTERS)}"
    if isinstance(a, nn.Module):
        return f"a {type(a).__name__}"
    return repr(a)


def _as_tensor(name: str, got: Any, want: torch.Tensor) -> torch.Tensor:
    """`got` as a tensor of `want`'s shape, or the check stops with `wrong_shape` / a type message."""
    letters = shape_in_letters(tuple(want.shape), LETTERS)
    if not isinstance(got, torch.Tensor):
        raise _Stop(_result(name, None, False, None, f"returned {type(got).__name__}, expected a tensor {letters}"))
    if got.shape != want.shape:
        evidence = (
            f"expected shape {letters} = {tuple(want.shape)}, "
            f"got {shape_in_letters(tuple(got.shape), LETTERS)} = {tuple(got.shape)}"
        )
        raise _Stop(_diagnosis(name, "wrong_shape", evidence))
    return got


def _mismatch(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """True where `got` differs from `want` beyond float32 rounding (float64 and einsum are fine);
    NaNs must sit in the same places. The one tolerance of every comparison here."""
    got, want = got.detach().double(), want.detach().double()
    scale = want.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).abs().max().item() if want.numel() else 0.0
    return ~torch.isclose(got, want, rtol=1e-4, atol=1e-5 * max(scale, 1.0), equal_nan=True)


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return not bool(_mismatch(got, want).any())


def _first_difference(got: torch.Tensor, want: torch.Tensor) -> str:
    index = tuple(int(i) for i in _mismatch(got, want).nonzero()[0])
    got, want = got.detach().double(), want.detach().double()
    diff = (got - want).abs()
    diff = torch.where(torch.isnan(got) != torch.isnan(want), torch.inf, diff.nan_to_num(nan=0.0))
    letters = shape_in_letters(tuple(want.shape), LETTERS).strip("()").split(", ")
    at = ", ".join(f"{letter.lower()}={i}" for letter, i in zip(letters, index, strict=True))
    nans = _nan_places(got)
    return (
        f"first difference at [{at}]: expected {want[index].item():.4g}, got {got[index].item():.4g}; "
        f"largest difference {diff.max().item():.3g}" + (f"; {nans}" if nans else "")
    )


def _nan_places(x: torch.Tensor) -> str:
    """ "NaN at position(s) 0, 3" for the positions (dim -2) where NaNs appear, else ""."""
    if x.dim() < 2 or not torch.isnan(x).any():
        return ""
    rows = torch.isnan(x).flatten(0, -3).any(dim=(0, 2)).nonzero().flatten().tolist() if x.dim() > 2 else [0]
    return f"NaN at position(s) {', '.join(map(str, rows))}"


def _match_mistake(got: list[torch.Tensor], cases: list[Case], wrong: Wrong) -> str | None:
    """The id of the first wrong version whose outputs equal the student's on every case."""
    for mistake, fn in wrong:
        with torch.no_grad():
            outs = [fn(*case) for case in cases]
        if all(o.shape == g.shape and _close(g, o) for g, o in zip(got, outs, strict=True)):
            return mistake
    return None


def _check_tensor_fn(
    name: str,
    fn: Callable[..., Any] | None,
    cases: list[Case],
    wrong: Wrong,
    evidence: Callable[[str, Callable[..., Any], list[Case], list[torch.Tensor]], str] | None = None,
) -> CheckResult:
    """The common check: run on every case, compare with the reference, else look for the mistake."""
    if (result := _not_a_function(name, fn)) is not None:
        return result
    reference = getattr(ref, name)
    try:
        with torch.no_grad():
            wants = [reference(*case) for case in cases]
            gots = [_as_tensor(name, _call(name, fn, case), want) for case, want in zip(cases, wants, strict=True)]
    except _Stop as stop:
        return stop.result
    if all(_close(g, w) for g, w in zip(gots, wants, strict=True)):
        return _result(name, fn, True, None, f"correct on {len(cases)} inputs")
    mistake = _match_mistake(gots, cases, wrong)
    if mistake is None:
        i = next(i for i, (g, w) in enumerate(zip(gots, wants, strict=True)) if not _close(g, w))
        where = ", ".join(_describe_arg(a) for a in cases[i])
        text = f"does not match the reference (nor a known mistake) on input {i + 1} ({where}): "
        return _result(name, fn, False, None, text + _first_difference(gots[i], wants[i]))
    try:
        with torch.no_grad():
            detail = evidence(mistake, fn, cases, gots) if evidence else ""
    except _Stop:
        detail = ""
    return _diagnosis(name, mistake, detail)


# --- encode_doc -----------------------------------------------------------------------------------

DOCS = [
    "Once upon a time, there was a little cat.",
    "Tom said: \u201cHi!\u201d \u2014 and ran. Caf\u00e9 \u00fcber na\u00efve \U0001f600 end.",
    "\u00bfQu\u00e9 tal? 3 + 4 = 7\n",
    "x",
    "\u2014",
]


def check_encode_doc(encode_doc: Callable[[str], torch.Tensor] | None) -> CheckResult:
    """Check `encode_doc(doc) -> LongTensor (L,)`: code points, characters >= 256 dropped."""
    name = "encode_doc"
    if (result := _not_a_function(name, encode_doc)) is not None:
        return result
    try:
        gots = [_call(name, encode_doc, (doc,)) for doc in DOCS]
    except _Stop as stop:
        return stop.result
    for doc, got in zip(DOCS, gots, strict=True):
        want = ref.encode_doc(doc)
        if not isinstance(got, torch.Tensor):
            return _result(name, None, False, None, f"returned {type(got).__name__} for {doc!r}, expected a tensor")
        if got.dim() != 1:
            evidence = f"for {doc!r}: expected shape (L,) = {tuple(want.shape)}, got {tuple(got.shape)}"
            return _diagnosis(name, "wrong_shape", evidence)
        if got.dtype != torch.long:
            text = f"returned {str(got.dtype).replace('torch.', '')} ids; embeddings need torch.long (int64)"
            return _result(name, None, False, None, text)
        if torch.equal(got, want):
            continue
        ids, wanted = got.tolist(), want.tolist()
        if (got >= ref.N_VOCAB).any() or len(ids) == len(doc) > len(wanted):
            kept = [ch for ch in doc if ord(ch) >= ref.N_VOCAB]
            return _diagnosis(name, "keeps_out_of_vocab", f"{doc!r} has {kept} beyond the vocabulary: got {ids}")
        if ids == wanted[:-1]:
            return _diagnosis(name, "drops_last_id", f"{doc!r}: expected {wanted}, got {ids} (the last is missing)")
        first = next(
            (i for i, (a, b) in enumerate(zip(ids, wanted, strict=False)) if a != b), min(len(ids), len(wanted))
        )
        text = f"does not match for {doc!r}: expected {wanted}, got {ids} (first difference at position {first})"
        return _result(name, None, False, None, text)
    return _result(name, encode_doc, True, None, f"correct on {len(DOCS)} documents, accents and emoji included")


# --- make_causal_mask -----------------------------------------------------------------------------

BLOCKED = -1e4  # at or below this a masked score gets weight exp(-1e4) = 0 in any float type


def _pairs(where_LL: torch.Tensor, limit: int = 3) -> str:
    """ "query 0 sees key 1; query 1 sees key 2; ..." for the True entries (query i, key j)."""
    by_query: dict[int, list[int]] = {}
    for i, j in where_LL.nonzero().tolist():
        by_query.setdefault(i, []).append(j)
    parts = [f"query {i} sees key{'s' if len(js) > 1 else ''} {', '.join(map(str, js))}" for i, js in by_query.items()]
    more = f"; ... ({len(parts)} queries)" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more


def check_causal_mask(make_causal_mask: Callable[[int], torch.Tensor] | None) -> CheckResult:
    """Check `make_causal_mask(L) -> FloatTensor (L, L)`: 0 where key j <= query i, a large negative elsewhere."""
    name = "make_causal_mask"
    if (result := _not_a_function(name, make_causal_mask)) is not None:
        return result
    try:
        for n in (1, 4, L):
            mask = _as_tensor(name, _call(name, make_causal_mask, (n,)), ref.make_causal_mask(n))
    except _Stop as stop:
        return stop.result
    allowed_LL = torch.ones(L, L, dtype=torch.bool).tril()
    if mask.dtype == torch.bool or set(mask.unique().tolist()) <= {0.0, 1.0} and mask.any():
        kind = "a bool" if mask.dtype == torch.bool else "a 0/1"
        evidence = f"make_causal_mask({L}) is {kind} matrix; added to the scores, it cannot stop the softmax"
        return _diagnosis(name, "mask_zero_one", evidence)
    if not mask.is_floating_point():
        return _result(name, None, False, None, f"returned {mask.dtype} values; the mask is added to float scores")
    m_LL = mask.double()
    if torch.isnan(m_LL).any():
        return _result(name, None, False, None, f"has NaN at (query, key) {m_LL.isnan().nonzero()[0].tolist()}")
    blocked_LL, open_LL = m_LL <= BLOCKED, m_LL == 0
    if not (blocked_LL | open_LL).all():
        i, j = (~(blocked_LL | open_LL)).nonzero()[0].tolist()
        text = (
            f"entry (query {i}, key {j}) is {m_LL[i, j].item():g}: use 0 where a query may look and -inf "
            "(or a number like -1e9 that no score can outweigh) where it may not"
        )
        return _result(name, None, False, None, text)
    if torch.equal(blocked_LL, ~allowed_LL):
        return _result(name, make_causal_mask, True, None, "correct for L = 1, 4 and 7")
    if not blocked_LL.any():
        return _diagnosis(name, "no_mask", f"make_causal_mask({L}) is all zeros: {_pairs(~allowed_LL)}")
    if (open_LL & ~allowed_LL).any():
        return _diagnosis(name, "future_visible", _pairs(open_LL & ~allowed_LL))
    if blocked_LL.diagonal().any():
        hidden = blocked_LL.diagonal().nonzero().flatten().tolist()
        return _diagnosis(name, "hides_self", f"queries {', '.join(map(str, hidden))} may not see themselves")
    i, j = (blocked_LL & allowed_LL).nonzero()[0].tolist()
    return _result(name, None, False, None, f"hides earlier keys: query {i} may not see key {j}, though j < i")


# --- attention ------------------------------------------------------------------------------------


def _qkv(seed: int, b: int, h: int, n: int, d: int, dtype: torch.dtype = torch.float32) -> Case:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, generator=gen, dtype=dtype) for _ in range(3))


ATTENTION_CASES: list[Case] = [
    _qkv(0, B, H, L, D),
    _qkv(1, B, H, L, D)[:2] + (torch.arange(L * D, dtype=torch.float32).reshape(1, 1, L, D).expand(B, H, L, D),),
    _qkv(2, 1, 1, 5, 16),  # D = 16: q.k / 1, / 4 and / 16 all differ
    _qkv(3, B, H, L, D, torch.float64),
]


def _future_reach(f: Callable[[int], torch.Tensor], base: torch.Tensor, n: int) -> torch.Tensor:
    """(n, n) True where output position i changes when the input at a later position j > i changes."""
    reach_LL = torch.zeros(n, n, dtype=torch.bool)
    for j in range(n):
        moved_L = (f(j) - base).abs().nan_to_num(nan=1.0).flatten(0, -3).amax(dim=(0, 2)) > 1e-6
        reach_LL[:, j] = moved_L & (torch.arange(n) < j)
    return reach_LL


def _attention_evidence(mistake: str, fn: Callable[..., Any], cases: list[Case], gots: list[torch.Tensor]) -> str:
    q, k, v = cases[0]
    if mistake in ("no_scaling", "scaled_by_d"):
        divisor = 1 if mistake == "no_scaling" else D
        return f"with D = {D}, your scores match q.k / {divisor}, not q.k / sqrt({D}) = {math.sqrt(D):g}"
    nans = _nan_places(gots[0])
    if mistake == "hides_self" and nans:
        return f"{nans}: query 0 has no key left to see, and softmax over only -inf is 0/0"

    def moved(j: int) -> torch.Tensor:
        k2, v2 = k.clone(), v.clone()
        k2[..., j, :] += 1.0
        v2[..., j, :] += 1.0
        return fn(q.clone(), k2, v2)

    reach = _future_reach(moved, gots[0], q.shape[-2])
    seen = f"changing key/value j moves query i < j: {_pairs(reach)}" if reach.any() else ""
    return "; ".join(x for x in (seen, nans) if x)


def check_attention(attention: Callable[..., torch.Tensor] | None) -> CheckResult:
    """Check `attention(q_BHLD, k_BHKD, v_BHKD) -> z_BHLD`: scaled by sqrt(D), causal, softmax over keys."""
    return _check_tensor_fn("attention", attention, ATTENTION_CASES, ATTENTION_MISTAKES, _attention_evidence)


# --- splitting and merging heads ------------------------------------------------------------------


def _labelled_BLE() -> torch.Tensor:
    """x[b, l, e] = 1000 b + 100 l + e: each value says where it came from."""
    b, l, e = torch.meshgrid(torch.arange(B), torch.arange(L), torch.arange(H * D), indexing="ij")
    return (1000 * b + 100 * l + e).float()


def _labelled_BHLD() -> torch.Tensor:
    """z[b, h, l, d] = 1000 b + 100 h + 10 l + d."""
    b, h, l, d = torch.meshgrid(torch.arange(B), torch.arange(H), torch.arange(L), torch.arange(D), indexing="ij")
    return (1000 * b + 100 * h + 10 * l + d).float()


def _split_evidence(mistake: str, fn: Callable[..., Any], cases: list[Case], gots: list[torch.Tensor]) -> str:
    got = gots[0][0, 0, 1].long().tolist()  # head 0, position 1 of the labelled input
    pos, lo, hi = got[0] % 1000 // 100, got[0] % 100, got[-1] % 100
    return f"head 0 at position 1 holds position {pos}'s channels {lo}-{hi}, not position 1's channels 0-{D - 1}"


def _merge_evidence(mistake: str, fn: Callable[..., Any], cases: list[Case], gots: list[torch.Tensor]) -> str:
    got = gots[0][0, 1, :D].long().tolist()  # position 1, the first head's D channels
    h, pos = got[0] % 1000 // 100, got[0] % 100 // 10
    return f"position 1's channels 0-{D - 1} hold head {h}'s output at position {pos}, not head 0's at position 1"


def check_split_heads(split_heads: Callable[[torch.Tensor, int], torch.Tensor] | None) -> CheckResult:
    """Check `split_heads(x_BLE, n_heads) -> x_BHLD` (E = H x D)."""
    cases: list[Case] = [(_labelled_BLE(), H), (torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(0)), 2)]
    return _check_tensor_fn("split_heads", split_heads, cases, SPLIT_MISTAKES, _split_evidence)


def check_merge_heads(merge_heads: Callable[[torch.Tensor], torch.Tensor] | None) -> CheckResult:
    """Check `merge_heads(z_BHLD) -> z_BLE` (E = H x D)."""
    cases: list[Case] = [(_labelled_BHLD(),), (torch.randn(1, 2, 5, 8, generator=torch.Generator().manual_seed(0)),)]
    return _check_tensor_fn("merge_heads", merge_heads, cases, MERGE_MISTAKES, _merge_evidence)


# --- multi-head attention, the layer and the LM ---------------------------------------------------


def _config(**changes: Any) -> ModelConfig:
    fields = dict(n_vocab=V, max_len=16, emb_dim=C, n_hidden=F, head_dim=D, n_heads=H, n_layers=2, positions="learned")
    return ModelConfig(**{**fields, **changes})


def _randomised(module: nn.Module, seed: int) -> nn.Module:
    """`module` with every parameter drawn from N(0, 0.5^2): the usual 0.02 init would hide mistakes in rounding."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module.eval()


def _x_BLC(seed: int) -> torch.Tensor:
    return torch.randn(B, L, C, generator=torch.Generator().manual_seed(seed))


def _inputs_evidence(mistake: str, fn: Callable[..., Any], cases: list[Case], gots: list[torch.Tensor]) -> str:
    """For a module-level exercise: where NaNs appear and which positions see later inputs."""
    args = cases[0]
    at = next(i for i, a in enumerate(args) if isinstance(a, torch.Tensor))  # the input: x_BLC or ids_BL

    def moved(j: int) -> torch.Tensor:
        x = args[at].clone()
        if x.is_floating_point():
            x[:, j] += 1.0
        else:
            x[:, j] = (x[:, j] + 1) % V
        return fn(*args[:at], x, *args[at + 1 :]).unsqueeze(1)

    as_B1LX = gots[0].unsqueeze(1)  # positions on dim -2, as _future_reach and _nan_places expect
    reach = _future_reach(moved, as_B1LX, args[at].shape[1])
    seen = f"changing the input at position j moves the output at i < j: {_pairs(reach)}" if reach.any() else ""
    return "; ".join(s for s in (seen, _nan_places(as_B1LX)) if s)


def check_multi_head_attention(multi_head_attention: Callable[..., torch.Tensor] | None) -> CheckResult:
    """Check `multi_head_attention(x_BLC, attn) -> out_BLC` with the projections attn.w_q, w_k, w_v, w_o."""
    attn = _randomised(CausalSelfAttention(_config()), 0)
    cases: list[Case] = [(_x_BLC(0), attn), (_x_BLC(1)[:1, :5], attn)]
    return _check_tensor_fn("multi_head_attention", multi_head_attention, cases, MULTI_HEAD_MISTAKES, _inputs_evidence)


def check_transformer_layer(transformer_layer: Callable[..., torch.Tensor] | None) -> CheckResult:
    """Check `transformer_layer(block, x_BLC) -> x_BLC`: pre-norm, attention then MLP, each with a residual."""
    block = _randomised(Block(_config()), 1)
    cases: list[Case] = [(block, _x_BLC(2)), (block, _x_BLC(3)[:1, :5])]
    return _check_tensor_fn("transformer_layer", transformer_layer, cases, LAYER_MISTAKES, _inputs_evidence)


def check_transformer_lm(transformer_lm: Callable[..., torch.Tensor] | None) -> CheckResult:
    """Check `transformer_lm(model, ids_BL) -> logits_BLV`: embeddings + positions, blocks, final norm, head."""
    model = _randomised(TransformerLM(_config()), 2)
    gen = torch.Generator().manual_seed(4)
    cases: list[Case] = [
        (model, torch.randint(V, (B, L), generator=gen)),
        (model, torch.randint(V, (1, 5), generator=gen)),
    ]
    return _check_tensor_fn("transformer_lm", transformer_lm, cases, LM_MISTAKES, _inputs_evidence)


# --- sampling -------------------------------------------------------------------------------------

DRAWS = 10_000  # the drawn frequencies are then within about 0.02 (total variation) of the truth


def _frequencies(
    name: str, fn: Callable[..., Any], logits_V: torch.Tensor, temperature: float, top_k: int | None
) -> torch.Tensor:
    counts_V = torch.zeros(len(logits_V), dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for _ in range(DRAWS):
            counts_V[_token_id(name, _call(name, fn, (logits_V, temperature, top_k)), len(logits_V))] += 1
    return counts_V / DRAWS


def _token_id(name: str, got: Any, n: int) -> int:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Integral) or not 0 <= got < n:
        raise _Stop(_result(name, None, False, None, f"returned {got!r}; expected one token id, an int in [0, {n})"))
    return int(got)


def _distance(p_V: torch.Tensor, q_V: torch.Tensor) -> float:
    return 0.5 * (p_V - q_V).abs().sum().item()  # total variation: 0 (same) to 1 (disjoint)


def check_sampling(sample_next: Callable[..., int] | None) -> CheckResult:
    """Check `sample_next(logits_V, temperature, top_k) -> int`: greedy at temperature 0, else a draw
    from softmax(logits / T) over the top_k best tokens. Draws are counted, so this takes a second."""
    name = "sample_next"
    if (result := _not_a_function(name, sample_next)) is not None:
        return result
    gen = torch.Generator().manual_seed(0)
    try:
        for _ in range(5):
            logits_V = torch.randn(V, generator=gen) * 3
            got = _token_id(name, _call(name, sample_next, (logits_V, 0.0, None)), V)
            if got != int(logits_V.argmax()):
                if got == int(logits_V.argmin()):
                    return _diagnosis(name, "greedy_argmin", f"at temperature 0 it returned {got}, the lowest logit")
                best = int(logits_V.argmax())
                text = f"at temperature 0 returned token {got} (logit {logits_V[got]:.2f}), not the argmax {best}"
                return _result(name, None, False, None, text)
        # Tokens in shuffled order so that "the first k" is not "the best k".
        logits_V = torch.tensor([0.3, 2.0, -1.0, 1.2, 0.8, -0.4, 1.6, 0.0])
        for temperature, top_k in ((1.0, None), (0.5, None), (1.0, 3), (0.7, 4)):
            freq_V = _frequencies(name, sample_next, logits_V, temperature, top_k)
            want_V = top_k_probs(logits_V, temperature, top_k)
            if _distance(freq_V, want_V) < 0.05:
                continue
            setting = f"temperature {temperature}, top_k {top_k}"
            seen = f"with {setting}: expected {_rounded(want_V)}, drew {_rounded(freq_V)} over {DRAWS} draws"
            if top_k is not None:
                for k in (top_k - 1, top_k + 1):
                    if _distance(freq_V, top_k_probs(logits_V, temperature, k)) < 0.05:
                        return _diagnosis(name, "top_k_off_by_one", f"{seen}: that is top-{k}")
            if _distance(freq_V, temperature_ignored_probs(logits_V, temperature, top_k)) < 0.05:
                return _diagnosis(name, "temperature_after_softmax", f"{seen}: that is temperature 1")
            return _result(name, None, False, None, f"draws from the wrong distribution {seen}")
    except _Stop as stop:
        return stop.result
    return _result(name, sample_next, True, None, f"greedy, temperature and top-k correct ({4 * DRAWS} draws)")


def _rounded(p_V: torch.Tensor) -> list[float]:
    return [round(x, 2) for x in p_V.tolist()]


def run_all(functions: dict[str, Callable[..., Any] | None]) -> list[CheckResult]:
    """Every check whose student function is in `functions` (by the exercise's name), in the lab's order."""
    return [CHECKS[n](functions[n]) for n in CHECKS if n in functions]


CHECKS: dict[str, Callable[[Any], CheckResult]] = {
    "encode_doc": check_encode_doc,
    "make_causal_mask": check_causal_mask,
    "attention": check_attention,
    "split_heads": check_split_heads,
    "merge_heads": check_merge_heads,
    "multi_head_attention": check_multi_head_attention,
    "transformer_layer": check_transformer_layer,
    "transformer_lm": check_transformer_lm,
    "sample_next": check_sampling,
}
