"""The circuits notebook's checks: the reference and correct alternatives pass, each mistake a student
makes is named (written here as a student would write it, not taken from the catalogue), and a grading
run's inputs are drawn fresh, as for the lab's checks (tests/test_exercises.py)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from attnlab.exercises import (
    CHECKS,
    CIRCUIT_CHECKS,
    MISTAKES,
    NOTEBOOK_CHECKS,
    check_logit_attribution,
    check_logit_difference,
    check_mean_ablate,
    check_patch_residual,
)
from attnlab.exercises import reference as ref
from attnlab.exercises.mistakes import WRONG_VERSIONS
from attnlab.inspect.circuits import resid_name

from .test_exercises import CIRCUIT_MISTAKES, SEEDS, _inputs_seen, _replaying

# --- as students write them -----------------------------------------------------------------------


def diff_gather(logits_BLV, answer, wrong):
    last_BV = logits_BLV[:, -1, :]
    return last_BV.gather(1, torch.tensor([[answer, wrong]]).expand(len(last_BV), 2)) @ torch.tensor([1.0, -1.0])


def diff_logit_only(logits_BLV, answer, wrong):
    return logits_BLV[:, -1, answer]


def diff_swapped(logits_BLV, answer, wrong):
    return logits_BLV[:, -1][:, wrong] - logits_BLV[:, -1][:, answer]


def diff_first(logits_BLV, answer, wrong):
    return logits_BLV[:, 0, answer] - logits_BLV[:, 0, wrong]


def diff_probs(logits_BLV, answer, wrong):
    p_BV = F.softmax(logits_BLV[:, -1], dim=-1)
    return p_BV[:, answer] - p_BV[:, wrong]


def _student_patch(into_clean=False, all_positions=False, leaving=False):
    def patch_residual(model, clean_BL, corrupt_BL, layer, position):
        name = resid_name(model, layer + 1 if leaving else layer)
        source, target = (corrupt_BL, clean_BL) if into_clean else (clean_BL, corrupt_BL)
        _, cache = model.run_with_cache(source)
        keep_L = torch.zeros(source.shape[1], dtype=torch.bool)
        keep_L[position] = True

        def hook(x_BLC, _name):
            if all_positions:
                return cache[name]
            return torch.where(keep_L[None, :, None], cache[name], x_BLC)

        return model.run_with_hooks(target, [(name, hook)])

    patch_residual.__name__ = "patch" + ("_into_clean" * into_clean) + ("_all" * all_positions) + ("_leaving" * leaving)
    return patch_residual


def attribution_layer_norm(parts_PC, ln_weight_C, direction_C, eps):
    # LayerNorm is linear once its scale is frozen: the final stream's own.
    final_C = parts_PC.sum(0).double()
    frozen = torch.rsqrt(final_C.var(unbiased=False) + eps)
    centred = parts_PC.double() - parts_PC.double().mean(-1, keepdim=True)
    return torch.einsum("pc,c,c->p", centred * frozen, ln_weight_C.double(), direction_C.double()).float()


def attribution_unscaled(parts_PC, ln_weight_C, direction_C, eps):
    return (parts_PC - parts_PC.mean(-1, keepdim=True)) @ (ln_weight_C * direction_C)


def attribution_uncentred(parts_PC, ln_weight_C, direction_C, eps):
    scale = torch.sqrt(parts_PC.sum(0).var(unbiased=False) + eps)
    return (parts_PC / scale * ln_weight_C) @ direction_C


def attribution_each_normed(parts_PC, ln_weight_C, direction_C, eps):
    return F.layer_norm(parts_PC, parts_PC.shape[-1:], ln_weight_C, None, eps) @ direction_C


def attribution_no_gain(parts_PC, ln_weight_C, direction_C, eps):
    scale = torch.sqrt(parts_PC.sum(0).var(unbiased=False) + eps)
    return ((parts_PC - parts_PC.mean(-1, keepdim=True)) / scale) @ direction_C


def ablate_where(z_BHLD, head, z_ref_BHLD):
    mean_D = z_ref_BHLD[:, head].reshape(-1, z_ref_BHLD.shape[-1]).mean(0)
    chosen = (torch.arange(z_BHLD.shape[1]) == head)[None, :, None, None]
    return torch.where(chosen, mean_D, z_BHLD)


def ablate_zero(z_BHLD, head, z_ref_BHLD):
    z = z_BHLD.clone()
    z[:, head] = 0
    return z


def ablate_own_mean(z_BHLD, head, z_ref_BHLD):
    z = z_BHLD.clone()
    z[:, head] = z_BHLD[:, head].mean((0, 1))
    return z


def ablate_per_position(z_BHLD, head, z_ref_BHLD):
    z = z_BHLD.clone()
    z[:, head] = z_ref_BHLD[:, head].mean(0)
    return z


def ablate_every_head(z_BHLD, head, z_ref_BHLD):
    return z_ref_BHLD.mean((0, 2), keepdim=True).expand_as(z_BHLD).clone()


BROKEN = [
    (check_logit_difference, diff_logit_only, "logit_not_difference"),
    (check_logit_difference, diff_swapped, "difference_reversed"),
    (check_logit_difference, diff_first, "not_last_position"),
    (check_logit_difference, diff_probs, "probability_difference"),
    (check_patch_residual, _student_patch(into_clean=True), "patched_backwards"),
    (check_patch_residual, _student_patch(all_positions=True), "patched_every_position"),
    (check_patch_residual, _student_patch(leaving=True), "patched_after_block"),
    (check_logit_attribution, attribution_unscaled, "no_norm_scale"),
    (check_logit_attribution, attribution_uncentred, "no_norm_centring"),
    (check_logit_attribution, attribution_each_normed, "norm_per_part"),
    (check_logit_attribution, attribution_no_gain, "no_norm_weight"),
    (check_mean_ablate, ablate_zero, "zero_not_mean"),
    (check_mean_ablate, ablate_own_mean, "mean_of_own_batch"),
    (check_mean_ablate, ablate_per_position, "mean_per_position"),
    (check_mean_ablate, ablate_every_head, "every_head_ablated"),
]
CORRECT = [
    (check_logit_difference, ref.logit_difference),
    (check_logit_difference, diff_gather),
    (check_patch_residual, ref.patch_residual),
    (check_patch_residual, _student_patch()),
    (check_logit_attribution, ref.logit_attribution),
    (check_logit_attribution, attribution_layer_norm),
    (check_mean_ablate, ref.mean_ablate),
    (check_mean_ablate, ablate_where),
]
IDS = [f"{b.__name__}-{m}" for _, b, m in BROKEN]


def test_every_circuits_mistake_has_a_broken_version_here_and_a_catalogue_entry():
    assert {mistake for _, _, mistake in BROKEN} == CIRCUIT_MISTAKES
    assert CIRCUIT_MISTAKES <= set(MISTAKES)
    assert set(WRONG_VERSIONS) <= set(CHECKS) | set(CIRCUIT_CHECKS)  # each list belongs to an exercise


def test_the_notebooks_exercises_are_apart_and_the_labs_are_unchanged():
    assert NOTEBOOK_CHECKS == {"lab": CHECKS, "circuits": CIRCUIT_CHECKS}
    assert list(CHECKS) == [
        "encode_doc",
        "make_causal_mask",
        "attention",
        "split_heads",
        "merge_heads",
        "multi_head_attention",
        "transformer_layer",
        "transformer_lm",
        "sample_next",
    ]
    assert list(CIRCUIT_CHECKS) == ["logit_difference", "patch_residual", "logit_attribution", "mean_ablate"]


@pytest.mark.parametrize(("check", "broken", "mistake"), BROKEN, ids=IDS)
def test_a_broken_version_is_named(check, broken, mistake):
    result = check(broken)
    assert (result.passed, result.mistake) == (False, mistake), result.message
    assert f"`{mistake}`" in result.message and "fix:" in result.message


@pytest.mark.parametrize(("check", "fn"), CORRECT, ids=[f"{c.__name__}-{f.__name__}" for c, f in CORRECT])
def test_a_correct_alternative_passes(check, fn):
    result = check(fn)
    assert result.passed and result.mistake is None, result.message
    assert result.function is fn


@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize(("check", "broken", "mistake"), BROKEN, ids=IDS)
def test_with_any_seed_a_broken_version_is_named(check, broken, mistake, seed):
    assert check(broken, seed=seed).mistake == mistake


@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize(("check", "fn"), CORRECT, ids=[f"{c.__name__}-{f.__name__}" for c, f in CORRECT])
def test_with_any_seed_a_correct_alternative_passes(check, fn, seed):
    result = check(fn, seed=seed)
    assert result.passed, result.message


CHECK_AND_REFERENCE = [(check, getattr(ref, name)) for name, check in CIRCUIT_CHECKS.items()]


@pytest.mark.parametrize(("check", "reference"), CHECK_AND_REFERENCE, ids=list(CIRCUIT_CHECKS))
def test_a_seed_draws_the_same_inputs_every_time_and_other_seeds_draw_others(check, reference):
    assert inspect.signature(check).parameters["seed"].default is None
    notebook = _inputs_seen(check, reference, None)
    assert _inputs_seen(check, reference, 7) == _inputs_seen(check, reference, 7)
    drawn = [set(_inputs_seen(check, reference, seed)) for seed in (7, 8)]
    assert drawn[0] != drawn[1]
    assert all(keys - set(notebook) for keys in drawn)


@pytest.mark.parametrize(("check", "reference"), CHECK_AND_REFERENCE, ids=list(CIRCUIT_CHECKS))
def test_stored_answers_to_the_notebooks_inputs_pass_the_notebook_and_fail_every_grading_run(check, reference):
    replaying = _replaying(check, reference)
    assert check(replaying).passed
    for seed in SEEDS:
        result = check(replaying, seed=seed)
        assert not result.passed and "KeyError" in result.message, (seed, result.message)


def test_not_written_yet_is_one_line():
    def logit_difference(logits_BLV, answer, wrong):
        raise NotImplementedError("write logit_difference")

    result = check_logit_difference(logit_difference)
    assert not result.passed and result.mistake is None and "not implemented yet" in result.message
    assert result.function is ref.logit_difference  # the notebook goes on with the reference


def test_the_patch_check_runs_the_model_it_was_given():
    seen = []

    def patch_residual(model, clean_BL, corrupt_BL, layer, position):
        seen.append((type(model).__name__, tuple(clean_BL.shape), layer, position))
        return ref.patch_residual(model, clean_BL, corrupt_BL, layer, position)

    assert check_patch_residual(patch_residual).passed
    assert seen == [("TransformerLM", (2, 7), 0, 2), ("TransformerLM", (2, 7), 1, 5), ("TransformerLM", (1, 7), 1, 2)]
