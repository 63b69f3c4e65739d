"""Checks that run a student's function against the reference and the catalogue of known mistakes.

Every check returns a `CheckResult`: passed, or the mistake's id with what it means, the evidence
(which queries see which future keys, expected and got shapes in the B/L/C/H/D letters, where NaNs
appear) and the fix. A function that matches neither the reference nor a known mistake gets the
first place where it differs and by how much. A function not written yet gets one line.

Every check takes `seed`. None (the notebook) gives the fixed inputs below; an int (a grading run)
gives inputs drawn from it: fresh tensor values, documents, logits and extra sizes, besides the
labelled cases that make the evidence readable. A function that returns stored answers for the
notebook's inputs then fails, and a correct one passes whatever the seed.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Callable
from typing import Any, TypeVar

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
from .result import CheckResult, shape_in_letters

# Sizes chosen all different, so a shape can be read back in letters: (2, 7, 3, 4) is (B, L, H, D).
B, L, H, D, C, F, V = 2, 7, 3, 4, 10, 16, 256
LETTERS = {"B": B, "L": L, "H": H, "D": D, "E": H * D, "C": C, "F": F, "V": V}
Case = tuple[Any, ...]
Wrong = list[tuple[str, Callable[..., Any]]]
Seed = int | None
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _rng(name: str, seed: int) -> random.Random:
    """The generator of one check's inputs in grading run `seed`: its own stream per check, the same
    on every machine and Python (a str seed is hashed with SHA-512, not Python's salted hash)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or None, not {type(seed).__name__}")
    return random.Random(f"attnlab.exercises.{name}:{int(seed)}")


def _torch_seeds(name: str, seed: Seed, fixed: tuple[int, ...]) -> tuple[int, ...]:
    """The torch seeds of a check's random cases: `fixed` (the notebook's) when seed is None, else as
    many fresh ones drawn from `seed` (63 bits: never the notebook's small ones in practice)."""
    if seed is None:
        return fixed
    rng = _rng(name, seed)
    return tuple(rng.getrandbits(63) for _ in fixed)


def _listed(items: list[Any] | tuple[Any, ...]) -> str:
    """ "1, 4 and 7" """
    words = [str(x) for x in items]
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


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
    return CheckResult(name, passed, mistake, f"{'✓' if passed else '✗'} {name}: {text}", function)


def _not_a_function(name: str, fn: Any) -> CheckResult:
    """The result for something that is not a function (None or any other value)."""
    return _result(name, fn, False, None, f"expected a function, got {type(fn).__name__}")


def _diagnosis(name: str, mistake: str, evidence: str = "") -> CheckResult:
    what = MISTAKES[mistake].what
    text = f"mistake `{mistake}`: {what}" + (f"\n  evidence: {evidence}" if evidence else "")
    return _result(name, None, False, mistake, text)


def _call(name: str, fn: Callable[..., Any], args: Case, note: str = "") -> Any:
    """fn(*args) on copies of the tensors (a student's in-place change must not leak into the next case);
    `note` ends the message when it raises."""
    copies = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
    try:
        return fn(*copies)
    except NotImplementedError:
        raise _Stop(
            _result(name, fn, False, None, "not implemented yet: write it in its cell, run that cell, then this check")
        ) from None
    except Exception as e:  # any error of the student's code is reported, in one line
        where = ", ".join(_describe_arg(a) for a in args)
        text = f"raised {type(e).__name__}: {e} (called with {where}){note}"
        raise _Stop(_result(name, fn, False, None, text)) from None


def _outputs(
    name: str, fn: Callable[..., Any] | None, cases: list[Case], reference: Callable[..., torch.Tensor] | None = None
) -> list[Any] | CheckResult:
    """fn's output for each case in turn (a tensor shaped like `reference`'s for the case, if given), or
    the result that ends the check at the first case that stops it: not a function, not written yet, an
    error, a wrong type or shape."""
    if not callable(fn):
        return _not_a_function(name, fn)
    outputs = []
    try:
        for case in cases:
            got = _call(name, fn, case)
            outputs.append(got if reference is None else _as_tensor(name, got, reference(*case)))
    except _Stop as stop:
        return stop.result
    return outputs


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
    if not callable(fn):
        return _not_a_function(name, fn)
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
    # The vocabulary's edge: a tab, then code points 254 and 255 (kept) and 256 and 257 (dropped).
    "\u00bfQu\u00e9 tal?\t3 + 4 = 7, \u00fe\u00ff\u0100\u0101\n",
    "x",
    "\u2014",
]

# What a drawn document is made of: ASCII with newlines and tabs, the rest of Latin-1 (C1 controls,
# no-break space, symbols, 254 and 255), then beyond the vocabulary: 256 and up, punctuation, CJK, emoji.
_CHARACTERS = [
    [chr(c) for c in range(32, 127)] + ["\n", "\t"],
    [chr(c) for c in range(128, 256)],
    [chr(c) for c in range(256, 384)]
    + [chr(c) for c in range(0x2010, 0x2040)]
    + [chr(c) for c in range(0x4E00, 0x4E40)],
    [chr(c) for c in range(0x1F600, 0x1F650)],
]


def _documents(seed: Seed) -> list[str]:
    """The notebook's documents, then for a grading run four drawn ones: the vocabulary's edge (254, 255,
    256, 257), a newline and an emoji among drawn characters, two drawn mixes, and the empty document."""
    if seed is None:
        return DOCS
    rng = _rng("encode_doc", seed)

    def drawn(n: int) -> list[str]:
        return [rng.choice(rng.choices(_CHARACTERS, weights=(5, 3, 2, 1))[0]) for _ in range(n)]

    edge = ["\u00fe", "\u00ff", "\u0100", "\u0101", "\n", rng.choice(_CHARACTERS[-1]), *drawn(rng.randint(4, 16))]
    rng.shuffle(edge)
    fresh = [
        "".join(edge) + rng.choice("abcxyz."),
        "".join(drawn(rng.randint(1, 30))),
        "".join(drawn(rng.randint(1, 30))),
        "",
    ]
    rng.shuffle(fresh)
    return DOCS + fresh


def check_encode_doc(encode_doc: Callable[[str], torch.Tensor] | None, *, seed: Seed = None) -> CheckResult:
    """Check `encode_doc(doc) -> LongTensor (L,)`: code points, characters >= 256 dropped."""
    name = "encode_doc"
    docs = _documents(seed)
    gots = _outputs(name, encode_doc, [(doc,) for doc in docs])
    if isinstance(gots, CheckResult):
        return gots
    for doc, got in zip(docs, gots, strict=True):
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
    return _result(name, encode_doc, True, None, f"correct on {len(docs)} documents, accents and emoji included")


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


MASK_SIZES = (1, 4, L)
_NOT_LETTERS = [n for n in range(8, 65) if n not in LETTERS.values()]  # sizes that read as numbers, not letters


def _mask_sizes(seed: Seed) -> tuple[int, ...]:
    """L = 1, 4 and 7, then for a grading run two drawn sizes beyond: one up to 20, one up to 64 (the
    lab's context), so a mask cut from a fixed-size table (a `block_size` of 8 or 16) fails."""
    if seed is None:
        return MASK_SIZES
    rng = _rng("make_causal_mask", seed)
    return (
        *MASK_SIZES,
        rng.choice([n for n in _NOT_LETTERS if n <= 20]),
        rng.choice([n for n in _NOT_LETTERS if n > 20]),
    )


def _mask_verdict(name: str, n: int, mask: torch.Tensor) -> CheckResult | None:
    """What is wrong with `mask` = make_causal_mask(n), or None when it is right."""
    allowed_LL = torch.ones(n, n, dtype=torch.bool).tril()
    if mask.dtype == torch.bool or set(mask.unique().tolist()) <= {0.0, 1.0} and mask.any():
        kind = "a bool" if mask.dtype == torch.bool else "a 0/1"
        evidence = f"make_causal_mask({n}) is {kind} matrix; added to the scores, it cannot stop the softmax"
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
        return None
    if not blocked_LL.any():
        return _diagnosis(name, "no_mask", f"make_causal_mask({n}) is all zeros: {_pairs(~allowed_LL)}")
    if (open_LL & ~allowed_LL).any():
        return _diagnosis(name, "future_visible", _pairs(open_LL & ~allowed_LL))
    if blocked_LL.diagonal().any():
        hidden = blocked_LL.diagonal().nonzero().flatten().tolist()
        return _diagnosis(name, "hides_self", f"queries {', '.join(map(str, hidden))} may not see themselves")
    i, j = (blocked_LL & allowed_LL).nonzero()[0].tolist()
    return _result(name, None, False, None, f"hides earlier keys: query {i} may not see key {j}, though j < i")


def check_causal_mask(make_causal_mask: Callable[[int], torch.Tensor] | None, *, seed: Seed = None) -> CheckResult:
    """Check `make_causal_mask(L) -> FloatTensor (L, L)`: 0 where key j <= query i, a large negative elsewhere."""
    name = "make_causal_mask"
    sizes = _mask_sizes(seed)
    gots = _outputs(name, make_causal_mask, [(n,) for n in sizes], ref.make_causal_mask)
    if isinstance(gots, CheckResult):
        return gots
    masks = dict(zip(sizes, gots, strict=True))
    # L = 7 first (the verdict the notebook has always shown), then every other size: each one's values count.
    for n in sorted(sizes, key=lambda n: n != L):
        if (wrong := _mask_verdict(name, n, masks[n])) is not None:
            return wrong
    return _result(name, make_causal_mask, True, None, f"correct for L = {_listed(sizes)}")


# --- attention ------------------------------------------------------------------------------------


def _qkv(seed: int, b: int, h: int, n: int, d: int, dtype: torch.dtype = torch.float32) -> Case:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, generator=gen, dtype=dtype) for _ in range(3))


def _attention_cases(seed: Seed) -> list[Case]:
    s0, s1, s2, s3 = _torch_seeds("attention", seed, (0, 1, 2, 3))
    return [
        _qkv(s0, B, H, L, D),
        _qkv(s1, B, H, L, D)[:2] + (torch.arange(L * D, dtype=torch.float32).reshape(1, 1, L, D).expand(B, H, L, D),),
        _qkv(s2, 1, 1, 5, 16),  # D = 16: q.k / 1, / 4 and / 16 all differ
        _qkv(s3, B, H, L, D, torch.float64),
    ]


ATTENTION_CASES: list[Case] = _attention_cases(None)


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


def check_attention(attention: Callable[..., torch.Tensor] | None, *, seed: Seed = None) -> CheckResult:
    """Check `attention(q_BHLD, k_BHKD, v_BHKD) -> z_BHLD`: scaled by sqrt(D), causal, softmax over keys."""
    cases = ATTENTION_CASES if seed is None else _attention_cases(seed)
    return _check_tensor_fn("attention", attention, cases, ATTENTION_MISTAKES, _attention_evidence)


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


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def check_split_heads(
    split_heads: Callable[[torch.Tensor, int], torch.Tensor] | None, *, seed: Seed = None
) -> CheckResult:
    """Check `split_heads(x_BLE, n_heads) -> x_BHLD` (E = H x D)."""
    (s,) = _torch_seeds("split_heads", seed, (0,))
    cases: list[Case] = [(_labelled_BLE(), H), (_randn(s, 1, 5, 16), 2)]
    return _check_tensor_fn("split_heads", split_heads, cases, SPLIT_MISTAKES, _split_evidence)


def check_merge_heads(merge_heads: Callable[[torch.Tensor], torch.Tensor] | None, *, seed: Seed = None) -> CheckResult:
    """Check `merge_heads(z_BHLD) -> z_BLE` (E = H x D)."""
    (s,) = _torch_seeds("merge_heads", seed, (0,))
    cases: list[Case] = [(_labelled_BHLD(),), (_randn(s, 1, 2, 5, 8),)]
    return _check_tensor_fn("merge_heads", merge_heads, cases, MERGE_MISTAKES, _merge_evidence)


# --- multi-head attention, the layer and the LM ---------------------------------------------------


def _config(**changes: Any) -> ModelConfig:
    fields = dict(n_vocab=V, max_len=16, emb_dim=C, n_hidden=F, head_dim=D, n_heads=H, n_layers=2, positions="learned")
    return ModelConfig(**{**fields, **changes})


def _randomised(module: ModuleT, seed: int) -> ModuleT:
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


def check_multi_head_attention(
    multi_head_attention: Callable[..., torch.Tensor] | None, *, seed: Seed = None
) -> CheckResult:
    """Check `multi_head_attention(x_BLC, attn) -> out_BLC` with the projections attn.w_q, w_k, w_v, w_o."""
    s_attn, s_x0, s_x1 = _torch_seeds("multi_head_attention", seed, (0, 0, 1))
    attn = _randomised(CausalSelfAttention(_config()), s_attn)
    cases: list[Case] = [(_x_BLC(s_x0), attn), (_x_BLC(s_x1)[:1, :5], attn)]
    return _check_tensor_fn("multi_head_attention", multi_head_attention, cases, MULTI_HEAD_MISTAKES, _inputs_evidence)


def check_transformer_layer(transformer_layer: Callable[..., torch.Tensor] | None, *, seed: Seed = None) -> CheckResult:
    """Check `transformer_layer(block, x_BLC) -> x_BLC`: pre-norm, attention then MLP, each with a residual."""
    s_block, s_x0, s_x1 = _torch_seeds("transformer_layer", seed, (1, 2, 3))
    block = _randomised(Block(_config()), s_block)
    cases: list[Case] = [(block, _x_BLC(s_x0)), (block, _x_BLC(s_x1)[:1, :5])]
    return _check_tensor_fn("transformer_layer", transformer_layer, cases, LAYER_MISTAKES, _inputs_evidence)


def check_transformer_lm(transformer_lm: Callable[..., torch.Tensor] | None, *, seed: Seed = None) -> CheckResult:
    """Check `transformer_lm(model, ids_BL) -> logits_BLV`: embeddings + positions, blocks, final norm, head.
    A grading run adds one longer sequence (9 to 15 of the 16 positions), a batch of one."""
    s_model, s_ids = _torch_seeds("transformer_lm", seed, (2, 4))
    model = _randomised(TransformerLM(_config()), s_model)
    gen = torch.Generator().manual_seed(s_ids)
    cases: list[Case] = [
        (model, torch.randint(V, (B, L), generator=gen)),
        (model, torch.randint(V, (1, 5), generator=gen)),
    ]
    if seed is not None:
        longer = _rng("transformer_lm.length", seed).choice([n for n in _NOT_LETTERS if 8 < n < model.config.max_len])
        cases.append((model, torch.randint(V, (1, longer), generator=gen)))
    return _check_tensor_fn("transformer_lm", transformer_lm, cases, LM_MISTAKES, _inputs_evidence)


# --- sampling -------------------------------------------------------------------------------------

DRAWS = 10_000  # the drawn frequencies are then within about 0.02 (total variation) of the truth


def _frequencies(
    name: str, fn: Callable[..., Any], logits_V: torch.Tensor, temperature: float, top_k: int | None
) -> torch.Tensor:
    counts_V = torch.zeros(len(logits_V), dtype=torch.float64)
    args = (logits_V, temperature, top_k)
    if callable(draws := getattr(fn, "draws", None)):  # run elsewhere (attnlab check): every draw in one request
        got = _call(name, lambda *a: draws(a, DRAWS, 0), args)
        for token in got if isinstance(got, list) else [got]:  # not a list: the first answer that is no id
            counts_V[_token_id(name, token, len(logits_V))] += 1
        return counts_V / DRAWS
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for _ in range(DRAWS):
            counts_V[_token_id(name, _call(name, fn, args), len(logits_V))] += 1
    return counts_V / DRAWS


def _token_id(name: str, got: Any, n: int) -> int:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Integral) or not 0 <= int(got) < n:
        raise _Stop(_result(name, None, False, None, f"returned {got!r}; expected one token id, an int in [0, {n})"))
    return int(got)


def _distance(p_V: torch.Tensor, q_V: torch.Tensor) -> float:
    return 0.5 * (p_V - q_V).abs().sum().item()  # total variation: 0 (same) to 1 (disjoint)


# Tokens in shuffled order so that "the first k" is not "the best k".
SAMPLING_LOGITS = torch.tensor([0.3, 2.0, -1.0, 1.2, 0.8, -0.4, 1.6, 0.0])
SETTINGS: tuple[tuple[float, int | None], ...] = ((1.0, None), (0.5, None), (1.0, 3), (0.7, 4))  # (temperature, top_k)
EDGE_DRAWS = 20  # at the edge settings one token (or any) is certain, so a few draws tell
APART = 0.1  # drawn logits put some setting this far (total variation) from each wrong sampler's draws


def _edge_settings(logits_V: torch.Tensor) -> list[tuple[float, int | None, str]]:
    """(temperature, top_k, what it means): a temperature near 0 but not 0, top_k = 1 and top_k = V."""
    top = logits_V.max().item() / 0.01
    return [
        (
            0.01,
            None,
            f"at temperature 0.01 the logits / T reach {top:g}: exp overflows float32 past 88 unless the "
            "largest is subtracted first, as softmax does, and nearly every draw is the best token",
        ),
        (1.0, 1, "top_k 1 keeps only the best token"),
        (1.0, len(logits_V), f"top_k {len(logits_V)} = V keeps every token"),
    ]


def _greedy_logits(seed: Seed) -> list[torch.Tensor]:
    """Five (V,) logits vectors, each with one largest logit (no tie for the argmax to break)."""
    (s,) = _torch_seeds("sample_next.greedy", seed, (0,))
    gen = torch.Generator().manual_seed(s)
    vectors: list[torch.Tensor] = []
    while len(vectors) < 5:
        logits_V = torch.randn(V, generator=gen) * 3
        if (logits_V == logits_V.max()).sum() == 1:
            vectors.append(logits_V)
    return vectors


def _first_k_probs(logits_V: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """A sampler that keeps the first k tokens instead of the best k."""
    kept_V = torch.full(logits_V.shape, float("-inf"), dtype=torch.float64)
    kept_V[:top_k] = logits_V[:top_k].double() / temperature
    return kept_V.softmax(dim=-1)


def _wrong_draws(logits_V: torch.Tensor, temperature: float, top_k: int | None) -> dict[str, torch.Tensor]:
    """What a wrong sampler draws from at one setting, by what it gets wrong."""
    wrong: dict[str, torch.Tensor] = {}
    if temperature != 1.0:
        wrong["temperature ignored"] = temperature_ignored_probs(logits_V, temperature, top_k)
        wrong["temperature inverted"] = top_k_probs(logits_V, 1 / temperature, top_k)
    if top_k is not None:
        wrong["top-k one short"] = top_k_probs(logits_V, temperature, top_k - 1)
        wrong["top-k one over"] = top_k_probs(logits_V, temperature, top_k + 1)
        wrong["top-k ignored"] = top_k_probs(logits_V, temperature, None)
        wrong["the first k"] = _first_k_probs(logits_V, temperature, top_k)
    return wrong


def _telling(logits_V: torch.Tensor) -> bool:
    """Whether the settings' draws tell the reference from every wrong sampler of `_wrong_draws` (at
    some setting APART from it, in total variation), and the edge draws tell too: no ties, and a best
    token over 0.9 (exp(best / 0.01) overflows float32) ahead of the next by 0.3 or more."""
    best, second = logits_V.topk(2).values.tolist()
    if logits_V.unique().numel() < len(logits_V) or best < 0.9 or best - second < 0.3:
        return False
    apart: dict[str, float] = {}
    for temperature, top_k in SETTINGS:
        want_V = top_k_probs(logits_V, temperature, top_k)
        for wrong, wrong_V in _wrong_draws(logits_V, temperature, top_k).items():
            apart[wrong] = max(apart.get(wrong, 0.0), _distance(want_V, wrong_V))
    return min(apart.values()) >= APART


def _sampling_logits(seed: Seed) -> torch.Tensor:
    """The notebook's 8 logits, or for a grading run 8 drawn ones: a best logit from 1.0 to 2.5, then
    steps down of 0.3 to 0.5 (the top five close enough for top-k's edge to matter) and 0.2 to 0.8,
    shuffled, kept when they tell every mistake apart (`_telling`; about 99 draws in 100 do)."""
    if seed is None:
        return SAMPLING_LOGITS
    rng = _rng("sample_next", seed)
    while True:
        steps = [rng.choice((0.3, 0.4, 0.5)) for _ in range(4)] + [rng.choice((0.2, 0.4, 0.6, 0.8)) for _ in range(3)]
        best = rng.randint(10, 25) / 10
        values = [round(best - sum(steps[:i]), 1) for i in range(len(steps) + 1)]
        rng.shuffle(values)
        if _telling(logits_V := torch.tensor(values)):
            return logits_V


def _edge_draws(
    name: str, fn: Callable[..., Any], logits_V: torch.Tensor, temperature: float, top_k: int | None, note: str
) -> CheckResult | None:
    """The result when a draw at an edge setting fails or is a token with (next to) no chance there, else None."""
    want_V = top_k_probs(logits_V, temperature, top_k)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for _ in range(EDGE_DRAWS):
            got = _token_id(name, _call(name, fn, (logits_V, temperature, top_k), f"; {note}"), len(logits_V))
            if want_V[got] < 1e-9:
                text = (
                    f"with temperature {temperature}, top_k {top_k}: drew token {got}, which has probability "
                    f"{want_V[got].item():.2g} there (expected {_rounded(want_V)}); {note}"
                )
                return _result(name, None, False, None, text)
    return None


def check_sampling(sample_next: Callable[..., int] | None, *, seed: Seed = None) -> CheckResult:
    """Check `sample_next(logits_V, temperature, top_k) -> int`: greedy at temperature 0, else a draw
    from softmax(logits / T) over the top_k best tokens. Draws are counted, so this takes a second;
    a few more at the edges (temperature 0.01, top_k 1, top_k V) come last."""
    name = "sample_next"
    if not callable(sample_next):
        return _not_a_function(name, sample_next)
    logits_V = _sampling_logits(seed)
    try:
        for greedy_V in _greedy_logits(seed):
            got = _token_id(name, _call(name, sample_next, (greedy_V, 0.0, None)), V)
            if got != int(greedy_V.argmax()):
                if got == int(greedy_V.argmin()):
                    return _diagnosis(name, "greedy_argmin", f"at temperature 0 it returned {got}, the lowest logit")
                best = int(greedy_V.argmax())
                text = f"at temperature 0 returned token {got} (logit {greedy_V[got]:.2f}), not the argmax {best}"
                return _result(name, None, False, None, text)
        for temperature, top_k in SETTINGS:
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
        for temperature, top_k, note in _edge_settings(logits_V):
            if (wrong := _edge_draws(name, sample_next, logits_V, temperature, top_k, note)) is not None:
                return wrong
    except _Stop as stop:
        return stop.result
    return _result(
        name, sample_next, True, None, f"greedy, temperature and top-k correct ({len(SETTINGS) * DRAWS} draws)"
    )


def _rounded(p_V: torch.Tensor) -> list[float]:
    return [round(x, 2) for x in p_V.tolist()]


def run_all(functions: dict[str, Callable[..., Any] | None], *, seed: Seed = None) -> list[CheckResult]:
    """Every check whose student function is in `functions` (by the exercise's name), in the lab's order,
    on the notebook's inputs (seed None) or on those drawn for grading run `seed`."""
    return [CHECKS[n](functions[n], seed=seed) for n in CHECKS if n in functions]


# Each check is called as check(function, seed=None | int).
CHECKS: dict[str, Callable[..., CheckResult]] = {
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
