"""The exercise checks name each mistake from a broken version written here, independently of the
catalogue (other code, the same mistake), and never raise a false alarm on a correct alternative."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.exercises import (
    MISTAKES,
    check_attention,
    check_causal_mask,
    check_encode_doc,
    check_merge_heads,
    check_multi_head_attention,
    check_sampling,
    check_split_heads,
    check_transformer_layer,
    check_transformer_lm,
)
from attnlab.exercises import reference as ref

# --- encode_doc -----------------------------------------------------------------------------------


def encode_keeps_everything(doc):
    return torch.LongTensor(list(map(ord, doc)))


def encode_forgets_last(doc):
    ids = [ord(c) for c in doc if ord(c) < 256]
    return torch.tensor(ids[: len(ids) - 1], dtype=torch.int64)


def encode_via_latin1(doc):  # a correct alternative: Latin-1 bytes are exactly the code points < 256
    return torch.tensor(list(doc.encode("latin-1", errors="ignore")), dtype=torch.long)


# --- the mask -------------------------------------------------------------------------------------


def mask_with_diagonal_hidden(L):
    return torch.triu(torch.ones(L, L), diagonal=0) * -1e9


def mask_one_future_step(L):
    m = torch.zeros(L, L)
    m[torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=2)] = float("-inf")
    return m


def mask_zero_one(L):
    return torch.tril(torch.ones(L, L))


def mask_nothing(L):
    return torch.zeros(L, L)


def mask_large_negative(L):  # correct: -1e9 instead of -inf
    return torch.where(torch.arange(L)[None, :] > torch.arange(L)[:, None], -1e9, 0.0)


# --- attention ------------------------------------------------------------------------------------


def _scores(q, k, scale):
    return torch.einsum("bhld,bhkd->bhlk", q, k) * scale


def _causal(L):
    return torch.ones(L, L).tril().bool()


def attention_unscaled(q, k, v):
    s = _scores(q, k, 1.0).masked_fill(~_causal(q.shape[2]), -math.inf)
    return torch.softmax(s, -1) @ v


def attention_over_d(q, k, v):
    s = _scores(q, k, 1.0 / q.shape[-1]).masked_fill(~_causal(q.shape[2]), -math.inf)
    return torch.softmax(s, -1) @ v


def attention_softmax_queries(q, k, v):
    s = _scores(q, k, q.shape[-1] ** -0.5).masked_fill(~_causal(q.shape[2]), -math.inf)
    return torch.softmax(s, dim=2) @ v


def attention_unmasked(q, k, v):
    return torch.softmax(_scores(q, k, q.shape[-1] ** -0.5), -1) @ v


def attention_mask_then_softmax_swapped(q, k, v):
    w = torch.softmax(_scores(q, k, q.shape[-1] ** -0.5), -1)
    return w.masked_fill(~_causal(q.shape[2]), 0.0) @ v


def attention_multiplied_mask(q, k, v):
    s = _scores(q, k, q.shape[-1] ** -0.5) * torch.tril(torch.ones(q.shape[2], q.shape[2]))
    return torch.softmax(s, -1) @ v


def attention_strict_mask(q, k, v):
    L = q.shape[2]
    s = _scores(q, k, q.shape[-1] ** -0.5).masked_fill(torch.ones(L, L).triu().bool(), float("-inf"))
    return torch.softmax(s, -1) @ v


def attention_mask_transposed(q, k, v):
    s = _scores(q, k, q.shape[-1] ** -0.5).masked_fill(~_causal(q.shape[2]).T, float("-inf"))
    return torch.softmax(s, -1) @ v


def attention_transposes_result(q, k, v):
    return ref.attention(q, k, v).transpose(1, 2)


def attention_sdpa(q, k, v):  # correct
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def attention_float64(q, k, v):  # correct
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + ref.make_causal_mask(q.shape[2]).double()
    return s.softmax(-1) @ v


def attention_additive_large(q, k, v):  # correct: matmul, an additive -1e9 mask
    L = q.shape[-2]
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + mask_large_negative(L).to(q.dtype)
    return s.softmax(-1) @ v


# --- heads ----------------------------------------------------------------------------------------


def split_reshape_only(x, n_heads):
    B, L, E = x.shape
    return x.view(B, n_heads, L, E // n_heads)


def split_permute(x, n_heads):  # correct
    B, L, E = x.shape
    return x.reshape(B, L, n_heads, -1).permute(0, 2, 1, 3)


def split_forgets_transpose_back(x, n_heads):
    B, L, E = x.shape
    return x.view(B, L, n_heads, E // n_heads)


def merge_reshape_only(z):
    return z.contiguous().view(z.shape[0], z.shape[2], -1)


def merge_einops_style(z):  # correct
    return torch.cat(z.unbind(dim=1), dim=-1)


# --- multi-head attention, layer, LM --------------------------------------------------------------


def mha_with(split, attend, merge):
    def mha(x, attn):
        q, k, v = (split(w(x), attn.n_heads) for w in (attn.w_q, attn.w_k, attn.w_v))
        return attn.w_o(merge(attend(q, k, v)))

    return mha


def layer_without_residual(block, x):
    h = block.attn(block.ln1(x))
    return block.mlp(block.ln2(h))


def layer_post_norm(block, x):
    x = block.ln1(x + block.attn(x))
    return block.ln2(x + block.mlp(x))


def layer_via_block(block, x):  # correct: the module's own forward
    return block(x)


def lm_without_positions(model, ids):
    x = model.embed.tok(ids)
    for block in model.blocks:
        x = ref.transformer_layer(block, x)
    return F.linear(model.final_ln(x), model.embed.tok.weight)


def lm_via_model(model, ids):  # correct
    return model(ids)


# --- sampling -------------------------------------------------------------------------------------


def sample_argmin(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return logits.argmin().item()
    return ref.sample_next(logits, temperature, top_k)


def sample_temperature_late(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return int(logits.argmax())
    if top_k is not None:
        logits = torch.where(logits >= logits.topk(top_k).values.min(), logits, -torch.inf)
    probs = F.softmax(logits, dim=-1) / temperature
    return torch.multinomial(probs, 1).item()


def sample_top_k_plus_one(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None:
        cut = torch.sort(logits, descending=True).values[top_k]  # the (k+1)-th best kept too
        logits = logits.masked_fill(logits < cut, -float("inf"))
    return int(torch.multinomial(logits.softmax(-1), 1))


def sample_numpy(logits, temperature=1.0, top_k=None):  # correct, with numpy's generator
    import numpy as np

    if temperature == 0:
        return np.argmax(logits.numpy())
    x = logits.double().numpy() / temperature
    if top_k is not None:
        x = np.where(x >= np.sort(x)[-top_k], x, -np.inf)
    p = np.exp(x - x.max())
    return _np_draw(p / p.sum())


_RNG = None


def _np_draw(p):
    import numpy as np

    global _RNG
    _RNG = _RNG or np.random.default_rng(7)
    return _RNG.choice(len(p), p=p)


# --- the tests ------------------------------------------------------------------------------------

BROKEN = [
    (check_encode_doc, encode_keeps_everything, "keeps_out_of_vocab"),
    (check_encode_doc, encode_forgets_last, "drops_last_id"),
    (check_causal_mask, mask_with_diagonal_hidden, "hides_self"),
    (check_causal_mask, mask_one_future_step, "future_visible"),
    (check_causal_mask, mask_zero_one, "mask_zero_one"),
    (check_causal_mask, mask_nothing, "no_mask"),
    (check_attention, attention_unscaled, "no_scaling"),
    (check_attention, attention_over_d, "scaled_by_d"),
    (check_attention, attention_softmax_queries, "softmax_wrong_axis"),
    (check_attention, attention_unmasked, "no_mask"),
    (check_attention, attention_mask_then_softmax_swapped, "mask_after_softmax"),
    (check_attention, attention_multiplied_mask, "mask_zero_one"),
    (check_attention, attention_strict_mask, "hides_self"),
    (check_attention, attention_mask_transposed, "future_visible"),
    (check_attention, attention_transposes_result, "wrong_shape"),
    (check_split_heads, split_reshape_only, "split_without_transpose"),
    (check_split_heads, split_forgets_transpose_back, "wrong_shape"),
    (check_merge_heads, merge_reshape_only, "merge_without_transpose"),
    (
        check_multi_head_attention,
        mha_with(split_reshape_only, ref.attention, ref.merge_heads),
        "split_without_transpose",
    ),
    (
        check_multi_head_attention,
        mha_with(ref.split_heads, ref.attention, merge_reshape_only),
        "merge_without_transpose",
    ),
    (check_multi_head_attention, mha_with(ref.split_heads, attention_unmasked, ref.merge_heads), "no_mask"),
    (check_multi_head_attention, mha_with(ref.split_heads, attention_unscaled, ref.merge_heads), "no_scaling"),
    (check_transformer_layer, layer_without_residual, "no_residual"),
    (check_transformer_layer, layer_post_norm, "norm_after_residual"),
    (check_transformer_lm, lm_without_positions, "no_position_embeddings"),
    (check_sampling, sample_argmin, "greedy_argmin"),
    (check_sampling, sample_temperature_late, "temperature_after_softmax"),
    (check_sampling, sample_top_k_plus_one, "top_k_off_by_one"),
]

CORRECT = [
    (check_encode_doc, ref.encode_doc),
    (check_encode_doc, encode_via_latin1),
    (check_causal_mask, ref.make_causal_mask),
    (check_causal_mask, mask_large_negative),
    (check_attention, ref.attention),
    (check_attention, attention_sdpa),
    (check_attention, attention_float64),
    (check_attention, attention_additive_large),
    (check_split_heads, ref.split_heads),
    (check_split_heads, split_permute),
    (check_merge_heads, ref.merge_heads),
    (check_merge_heads, merge_einops_style),
    (check_multi_head_attention, ref.multi_head_attention),
    (check_multi_head_attention, mha_with(split_permute, attention_sdpa, merge_einops_style)),
    (check_transformer_layer, ref.transformer_layer),
    (check_transformer_layer, layer_via_block),
    (check_transformer_lm, ref.transformer_lm),
    (check_transformer_lm, lm_via_model),
    (check_sampling, ref.sample_next),
    (check_sampling, sample_numpy),
]


def test_every_mistake_id_has_a_broken_version_here():
    assert {mistake for _, _, mistake in BROKEN} == set(MISTAKES)


@pytest.mark.parametrize(("check", "broken", "mistake"), BROKEN, ids=[f"{b.__name__}-{m}" for _, b, m in BROKEN])
def test_a_broken_version_is_named(check, broken, mistake):
    result = check(broken)
    assert (result.passed, result.mistake) == (False, mistake), result.message
    assert f"`{mistake}`" in result.message and "fix:" in result.message


@pytest.mark.parametrize(("check", "fn"), CORRECT, ids=[f"{c.__name__}-{f.__name__}" for c, f in CORRECT])
def test_a_correct_alternative_passes(check, fn):
    result = check(fn)
    assert result.passed and result.mistake is None, result.message
    assert result.function is fn


def test_evidence_names_the_future_keys_and_the_nans():
    leak = check_attention(attention_unmasked).message
    assert "query 0 sees keys 1, 2, 3, 4, 5, 6" in leak
    nans = check_attention(attention_strict_mask).message
    assert "NaN at position(s) 0" in nans
    mask = check_causal_mask(mask_one_future_step).message
    assert "query 0 sees key 1; query 1 sees key 2; query 2 sees key 3" in mask


def test_a_wrong_shape_is_given_in_letters():
    message = check_split_heads(split_forgets_transpose_back).message
    assert "expected shape (B, H, L, D) = (2, 3, 7, 4), got (B, L, H, D) = (2, 7, 3, 4)" in message


def test_split_evidence_says_where_the_channels_came_from():
    message = check_split_heads(split_reshape_only).message
    assert "head 0 at position 1 holds position 0's channels 4-7, not position 1's channels 0-3" in message


def test_not_written_yet_is_one_line_and_the_reference_goes_on():
    def attention(q, k, v):
        raise NotImplementedError("write attention")

    result = check_attention(attention)
    assert not result.passed and result.mistake is None
    assert "not implemented yet" in result.message and "\n" not in result.message
    assert result.function is ref.attention


def test_an_error_in_the_students_code_is_one_line():
    result = check_split_heads(lambda x, n: x.view(n, -1, 5))
    assert not result.passed and result.message.count("\n") == 0
    assert "raised RuntimeError" in result.message


def test_an_unknown_mistake_gives_the_first_difference():
    result = check_attention(lambda q, k, v: ref.attention(q, k, v) * 1.5)
    assert result.mistake is None and not result.passed
    assert "first difference at [b=0, h=0, l=0, d=0]" in result.message


def test_a_result_displays_as_its_message():
    result = check_encode_doc(ref.encode_doc)
    assert repr(result) == result.message == "✓ encode_doc: correct on 5 documents, accents and emoji included"
