"""The exercise checks name each mistake from a broken version written here, independently of the
catalogue (other code, the same mistake), and never raise a false alarm on a correct alternative."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.exercises import (
    CHECKS,
    CIRCUIT_CHECKS,
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
    run_all,
)
from attnlab.exercises import mistakes as catalogue
from attnlab.exercises import reference as ref

# Tested in tests/test_circuit_exercises.py.
CIRCUIT_MISTAKES = {m for name in CIRCUIT_CHECKS for m, _ in catalogue.WRONG_VERSIONS[name]}

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
    # The circuits notebook's mistakes have theirs in tests/test_circuit_exercises.py.
    assert {mistake for _, _, mistake in BROKEN} == set(MISTAKES) - CIRCUIT_MISTAKES


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


# --- grading runs: the same checks on inputs drawn from a seed (issue 23) -------------------------

SEEDS = (0, 1, 7, 23, 2**40 + 5)  # five grading runs; 0 is a seed like any other, not the notebook's inputs


def _key(args):
    """The arguments of one call as plain values (a module by its parameters): equal inputs, equal keys."""

    def plain(a):
        if isinstance(a, torch.Tensor):
            return (str(a.dtype), tuple(a.shape), tuple(a.flatten().tolist()))
        if isinstance(a, torch.nn.Module):
            return tuple(tuple(p.detach().flatten().tolist()) for p in a.parameters())
        return a

    return tuple(plain(a) for a in args)


def _inputs_seen(check, reference, seed):
    """The keys of every call a check makes with `seed` (the reference answering)."""
    seen = []

    def recording(*args):
        seen.append(_key(args))
        return reference(*args)

    assert check(recording, seed=seed).passed
    return seen


def _replaying(check, reference):
    """A function that has stored the reference's answers to every call of the notebook's check, in
    order, and answers only those (what a student could paste in after reading the inputs)."""
    answers = {}

    def recording(*args):
        out = reference(*args)
        answers.setdefault(_key(args), []).append(out)
        return out

    check(recording)
    calls = {}

    def replaying(*args):
        key = _key(args)
        if key not in answers:
            raise KeyError("not one of the notebook's inputs")
        calls[key] = calls.get(key, -1) + 1
        return answers[key][calls[key] % len(answers[key])]

    return replaying


CHECK_AND_REFERENCE = [(check, getattr(ref, name)) for name, check in CHECKS.items()]


def test_every_check_takes_a_keyword_seed_that_defaults_to_the_notebooks_inputs():
    for check in CHECKS.values():
        seed = inspect.signature(check).parameters["seed"]
        assert (seed.kind, seed.default) == (inspect.Parameter.KEYWORD_ONLY, None), check.__name__
    assert [r.message for r in run_all({"attention": ref.attention}, seed=1)] == [
        check_attention(ref.attention, seed=1).message
    ]
    for not_a_seed in (1.5, "1", True):
        with pytest.raises(TypeError, match="seed must be an int or None"):
            check_encode_doc(ref.encode_doc, seed=not_a_seed)


@pytest.mark.parametrize(("check", "reference"), CHECK_AND_REFERENCE, ids=list(CHECKS))
def test_a_seed_draws_the_same_inputs_every_time_and_other_seeds_draw_others(check, reference):
    notebook = _inputs_seen(check, reference, None)
    assert _inputs_seen(check, reference, 7) == _inputs_seen(check, reference, 7)
    drawn = [set(_inputs_seen(check, reference, seed)) for seed in (7, 8)]
    assert drawn[0] != drawn[1]
    assert all(keys - set(notebook) for keys in drawn)  # each run has inputs the notebook never showed


@pytest.mark.parametrize(("check", "reference"), CHECK_AND_REFERENCE, ids=list(CHECKS))
def test_stored_answers_to_the_notebooks_inputs_pass_the_notebook_and_fail_every_grading_run(check, reference):
    replaying = _replaying(check, reference)
    assert check(replaying).passed
    for seed in SEEDS:
        result = check(replaying, seed=seed)
        assert not result.passed and "KeyError" in result.message, (seed, result.message)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("check", "broken", "mistake"), BROKEN, ids=[f"{b.__name__}-{m}" for _, b, m in BROKEN])
def test_with_any_seed_a_broken_version_is_named(check, broken, mistake, seed):
    result = check(broken, seed=seed)
    assert (result.passed, result.mistake) == (False, mistake), result.message
    assert f"`{mistake}`" in result.message and "fix:" in result.message


# Correct alternatives that the drawn inputs must not fail: ties would fail a top-k that keeps exactly
# k indices, float64 masks and log(tril) are fine, and so is the LM built from the model's own modules.


def mask_float64_log_tril(L):  # correct: log(1) = 0, log(0) = -inf
    return torch.ones(L, L, dtype=torch.float64).tril().log()


def sample_top_k_indices(logits, temperature=1.0, top_k=None):  # correct: sample among the top-k indices
    if temperature == 0:
        return int(torch.argmax(logits))
    if top_k is None:
        return int(torch.multinomial(F.softmax(logits / temperature, -1), 1))
    values, indices = torch.topk(logits, top_k)
    return int(indices[torch.multinomial(F.softmax(values / temperature, -1), 1)])


def lm_via_modules(model, ids):  # correct: F.embedding, each block's own forward, the model's head
    x = F.embedding(ids, model.embed.tok.weight) + model.embed.pos.weight[: ids.shape[1]]
    for block in model.blocks:
        x = block(x)
    return model.unembed(model.final_ln(x))


MORE_CORRECT = [
    (check_causal_mask, mask_float64_log_tril),
    (check_sampling, sample_top_k_indices),
    (check_transformer_lm, lm_via_modules),
]


@pytest.mark.parametrize("seed", (None, *SEEDS))
@pytest.mark.parametrize(
    ("check", "fn"), CORRECT + MORE_CORRECT, ids=[f"{c.__name__}-{f.__name__}" for c, f in CORRECT + MORE_CORRECT]
)
def test_with_any_seed_a_correct_alternative_passes(check, fn, seed):
    result = check(fn, seed=seed)
    assert result.passed and result.mistake is None, result.message
    assert result.function is fn


# --- mistakes the notebook's old inputs could not see ---------------------------------------------
# Each passed the checks before issue 23 (run against that checks.py); the comment says what catches it.


def encode_below_255(doc):  # drops 'ÿ' (255): caught by the third document's code points 254-257
    return torch.tensor([ord(c) for c in doc if ord(c) < 255], dtype=torch.long)


def encode_up_to_256(doc):  # keeps 'Ā' (256) as id 256: caught by the same document
    return torch.tensor([ord(c) for c in doc if ord(c) <= 256], dtype=torch.long)


def encode_printable_only(doc):  # drops tabs and other control characters: caught by the tab in it
    return torch.tensor([ord(c) for c in doc if ord(c) < 256 and (c.isprintable() or c == "\n")], dtype=torch.long)


def mask_pasted_for_seven(L):  # the printed 7 x 7 answer pasted in: L = 1 and 4 are checked value by value now
    if L == 7:
        return torch.tensor([[0.0 if j <= i else -math.inf for j in range(7)] for i in range(7)])
    return torch.zeros(L, L)


_TRIL_8 = torch.tril(torch.ones(8, 8))  # a block_size of 8, as in many GPT-from-scratch walkthroughs


def mask_cut_from_block_size_table(L):  # right up to L = 8: a grading run's sizes go beyond 20
    return torch.zeros(L, L).masked_fill(_TRIL_8[:L, :L] == 0, float("-inf"))


def lm_crops_to_block_size(model, ids):  # keeps the last 8 positions: a grading run adds 9 to 15
    return ref.transformer_lm(model, ids[:, -8:])


def sample_naive_softmax(logits, temperature=1.0, top_k=None):  # exp without subtracting the max
    if temperature == 0:
        return int(logits.argmax())
    x = logits / temperature
    if top_k is not None:
        x = x.masked_fill(x < x.topk(top_k).values[-1], float("-inf"))
    p = torch.exp(x)  # overflows to inf, then inf / inf = NaN, once x passes 88: temperature 0.01 now
    return int(torch.multinomial(p / p.sum(), 1))


def sample_above_the_next_best(logits, temperature=1.0, top_k=None):  # index top_k is out of range at top_k = V
    if temperature == 0:
        return int(logits.argmax())
    x = logits / temperature
    if top_k is not None:
        x = x.masked_fill(x <= x.sort(descending=True).values[top_k], float("-inf"))
    return int(torch.multinomial(x.softmax(-1), 1))


MISSED = [  # (check, wrong function, the mistake named, caught on the notebook's inputs too)
    (check_encode_doc, encode_below_255, None, True),
    (check_encode_doc, encode_up_to_256, "keeps_out_of_vocab", True),
    (check_encode_doc, encode_printable_only, None, True),
    (check_causal_mask, mask_pasted_for_seven, "no_mask", True),
    (check_causal_mask, mask_cut_from_block_size_table, None, False),
    (check_transformer_lm, lm_crops_to_block_size, "wrong_shape", False),
    (check_sampling, sample_naive_softmax, None, True),
    (check_sampling, sample_above_the_next_best, None, True),
]


@pytest.mark.parametrize(
    ("check", "wrong", "mistake", "in_notebook"), MISSED, ids=[w.__name__ for _, w, _, _ in MISSED]
)
def test_a_mistake_the_old_inputs_missed_is_caught(check, wrong, mistake, in_notebook):
    for seed in ((None,) if in_notebook else ()) + SEEDS[:2]:
        result = check(wrong, seed=seed)
        assert (result.passed, result.mistake) == (False, mistake), (seed, result.message)


def test_the_edge_document_says_what_was_expected():
    message = check_encode_doc(encode_below_255).message
    assert "'¿Qué tal?\\t3 + 4 = 7, þÿĀā\\n': expected [" in message
    assert "254, 255, 10], got [" in message and "254, 10] (first difference at position 22)" in message
    assert "has ['Ā', 'ā'] beyond the vocabulary" in check_encode_doc(encode_up_to_256).message


def test_the_edge_settings_say_what_they_mean():
    overflow = check_sampling(sample_naive_softmax).message
    assert "(called with a float32 tensor of shape (8), 0.01, None)" in overflow
    assert "the logits / T reach 200: exp overflows float32" in overflow
    assert "1.0, 8); top_k 8 = V keeps every token" in check_sampling(sample_above_the_next_best).message


@pytest.mark.parametrize("seed", SEEDS)
def test_a_grading_run_draws_the_vocabularys_edge_long_masks_and_shuffled_logits(seed):
    docs = [args[0] for args in _inputs_seen(check_encode_doc, ref.encode_doc, seed)]
    drawn = docs[len(_inputs_seen(check_encode_doc, ref.encode_doc, None)) :]
    assert len(drawn) == 4 and "" in drawn
    assert {"\u00fe", "\u00ff", "\u0100", "\u0101", "\n"} <= set("".join(drawn))
    assert any(ord(c) > 0xFFFF for c in "".join(drawn))  # an emoji
    sizes = [args[0] for args in _inputs_seen(check_causal_mask, ref.make_causal_mask, seed)]
    assert sizes[:3] == [1, 4, 7] and 8 <= sizes[3] <= 20 < sizes[4] <= 64
    calls = _inputs_seen(check_sampling, ref.sample_next, seed)
    (values,) = {args[0][2] for args in calls if args[2] == 3}  # the one vector drawn at top_k 3
    logits = torch.tensor(values)
    assert logits.unique().numel() == 8 and set(logits.topk(3).indices.tolist()) != {0, 1, 2}
    assert not torch.equal(logits, torch.tensor([0.3, 2.0, -1.0, 1.2, 0.8, -0.4, 1.6, 0.0]))
