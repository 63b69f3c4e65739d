"""Circuits in a model: patching, attribution patching and direct logit attribution, held to identities
that fail when the bookkeeping is wrong (the parts sum to the logit; patching the one position where
two prompts differ restores the clean run; positions before it change nothing)."""

from __future__ import annotations

import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.inspect.attribution import direct_logit_attribution
from attnlab.inspect.circuits import logit_diff, resid_name
from attnlab.inspect.patching import (
    Cell,
    agreement,
    attribution_cells,
    attribution_patch,
    patch_cells,
    patch_sweep,
    sweep_cells,
)
from attnlab.models import build_model, preset_config

from .test_variants import VARIANTS

ALL = {
    "default": {},
    **VARIANTS,
    "post-norm-rms-rope": dict(norm_placement="post", norm="rms", positions="rope", head_dim=8),
}


def _model(n_layers: int = 3, **fields):
    torch.manual_seed(0)
    model = build_model(preset_config("lab", n_layers=n_layers, max_len=16, **fields)).eval()
    with torch.no_grad():  # norms away from their initial 1 and 0, so that a forgotten gain or bias shows,
        for name, p in model.named_parameters():  # and weights large enough that a token changes the logits
            if "ln" in name or "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
            else:
                p.mul_(8)
    return model


def _prompts(L: int = 9, differ_at: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    clean_1L = torch.randint(0, 256, (1, L))
    corrupt_1L = clean_1L.clone()
    corrupt_1L[0, differ_at] = (clean_1L[0, differ_at] + 17) % 256
    return clean_1L, corrupt_1L


@pytest.mark.parametrize("variant", ALL)
def test_the_direct_attributions_sum_to_the_logit_difference(variant: str) -> None:
    model = _model(**ALL[variant])
    ids_1L, _ = _prompts()
    for position in (-1, 3):
        att = direct_logit_attribution(model, ids_1L, answer=7, wrong=101, position=position)
        assert att.total == pytest.approx(sum(v for _, v in att.parts), abs=1e-4)
        with torch.no_grad():
            logits_V = model(ids_1L)[0, position]
        assert att.total == pytest.approx(float(logits_V[7] - logits_V[101]), abs=1e-4)
    names = [n for n, _ in att.parts]
    H, N = model.config.n_heads, model.config.n_layers
    assert [n for n in names if ".head." in n] == [f"blocks.{i}.attn.head.{h}" for i in range(N) for h in range(H)]
    assert [n for n in names if n.endswith(".mlp")] == [f"blocks.{i}.mlp" for i in range(N)]
    assert names[0] == "embed"


def test_a_heads_attribution_is_its_output_through_the_final_norm_at_the_runs_scale() -> None:
    """One head worked by hand: its z times its columns of W_O, centred, divided by the final norm's
    scale on the whole stream, times the norm's gain, onto W_U[answer] - W_U[wrong]."""
    model = _model(n_layers=2)
    ids_1L, _ = _prompts()
    _, cache = model.run_with_cache(ids_1L)
    D = model.config.head_dim
    z_D = cache["blocks.1.attn.z_BHLD"][0, 2, -1]
    out_C = model.blocks[1].attn.w_o.weight[:, 2 * D : 3 * D] @ z_D
    stream_C = cache["blocks.1.resid_post_BLC"][0, -1]
    ln = model.final_ln
    normed_C = (out_C - out_C.mean()) / torch.sqrt(stream_C.var(unbiased=False) + ln.eps) * ln.weight
    W_U = model.embed.tok.weight
    expected = float(normed_C @ (W_U[5] - W_U[9]))
    att = dict(direct_logit_attribution(model, ids_1L, answer=5, wrong=9).parts)
    assert att["blocks.1.attn.head.2"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("variant", ["default", "post-norm", "rope", "gqa"])
def test_patching_the_one_differing_position_restores_the_clean_run_and_others_change_nothing(variant: str) -> None:
    model = _model(**ALL[variant])
    clean_1L, corrupt_1L = _prompts(differ_at=4)
    sweep = patch_sweep(model, clean_1L, corrupt_1L, logit_diff(7, 101), over="resid", batch=5)
    assert sweep.axes == ("layer", "position") and sweep.values.shape == (3, 9)
    assert sweep.values[0, 4] == pytest.approx(sweep.clean, abs=1e-4)  # the only embedding that differs
    others = [p for p in range(9) if p != 4]
    assert torch.allclose(sweep.values[0, others], torch.tensor(sweep.corrupt), atol=1e-4)
    assert torch.allclose(sweep.values[:, :4], torch.tensor(sweep.corrupt), atol=1e-4)  # before it: identical
    assert abs(sweep.clean - sweep.corrupt) > 1e-3  # the test would be empty otherwise


def test_patching_every_hook_point_gives_the_clean_logits_and_patching_none_the_corrupted() -> None:
    model = _model()
    clean_1L, corrupt_1L = _prompts()
    clean_logits, clean_cache = model.run_with_cache(clean_1L)
    every = [(name, lambda t, n: clean_cache[n]) for name in model.hook_names()]
    assert torch.equal(model.run_with_hooks(corrupt_1L, every), clean_logits)
    everything_but_logits = [(n, fn) for n, fn in every if n != "logits_BLV"]
    assert torch.allclose(model.run_with_hooks(corrupt_1L, everything_but_logits), clean_logits, atol=1e-5)
    last = "blocks.2.resid_post_BLC"
    patched = patch_cells(model, clean_1L, corrupt_1L, [Cell(last, (p,)) for p in range(9)], lambda x: x[:, -1, 7])
    assert patched[-1] == pytest.approx(float(clean_logits[0, -1, 7]), abs=1e-5)  # the last position's stream
    same = patch_cells(model, corrupt_1L, corrupt_1L, [Cell(last, (8,))], lambda x: x[:, -1, 7])
    assert same[0] == pytest.approx(float(model(corrupt_1L)[0, -1, 7].detach()), abs=1e-5)


@pytest.mark.parametrize("over", ["resid", "heads", "head-positions"])
def test_a_batched_sweep_equals_one_forward_per_cell(over: str) -> None:
    model = _model(n_kv_heads=2)
    clean_1L, corrupt_1L = _prompts()
    metric = logit_diff(7, 101)
    cells = sweep_cells(model, over, 9)
    one_by_one = torch.stack([patch_cells(model, clean_1L, corrupt_1L, [c], metric)[0] for c in cells])
    batched = patch_cells(model, clean_1L, corrupt_1L, cells, metric, batch=16)
    assert torch.allclose(batched, one_by_one, atol=1e-5)
    sweep = patch_sweep(model, clean_1L, corrupt_1L, metric, over=over)
    assert torch.allclose(sweep.values.flatten(), one_by_one, atol=1e-5)
    assert sweep.values.shape == {"resid": (3, 9), "heads": (3, 4), "head-positions": (3, 4, 9)}[over]


def test_attribution_patching_equals_real_patching_where_the_metric_is_linear_in_the_activation() -> None:
    model = _model()
    clean_1L, corrupt_1L = _prompts(differ_at=8)
    metric = logit_diff(7, 101)
    cells = [Cell("final_ln_BLC", (p,)) for p in range(9)]  # the logits are linear in the final norm's output
    real = patch_cells(model, clean_1L, corrupt_1L, cells, metric)
    estimate, corrupt = attribution_cells(model, clean_1L, corrupt_1L, cells, metric)
    assert torch.allclose(estimate.float(), real, atol=1e-4)
    assert estimate[-1] != pytest.approx(corrupt, abs=1e-3)  # the last position differs, and moves the metric


def test_attribution_patching_approximates_the_residual_sweep_and_says_how_well() -> None:
    model = _model()
    clean_1L, corrupt_1L = _prompts(differ_at=4)
    metric = logit_diff(7, 101)
    real = patch_sweep(model, clean_1L, corrupt_1L, metric, over="resid")
    estimate = attribution_patch(model, clean_1L, corrupt_1L, metric, over="resid")
    assert estimate.values.shape == real.values.shape and estimate.corrupt == pytest.approx(real.corrupt, abs=1e-5)
    assert torch.allclose(estimate.values[:, :4], real.values[:, :4], atol=1e-5)  # both unchanged before position 4
    fit = agreement(real, estimate)
    assert fit["max_abs_error"] == pytest.approx(float((real.values - estimate.values).abs().max()), abs=1e-6)
    assert -1 <= fit["correlation"] <= 1


def test_circuits_refuse_what_does_not_apply_in_one_line() -> None:
    model = _model()
    clean_1L, _ = _prompts()
    with pytest.raises(AttnlabError, match="same number of tokens"):
        patch_sweep(model, clean_1L, clean_1L[:, :5], logit_diff(1, 2))
    with pytest.raises(AttnlabError, match="--over"):
        sweep_cells(model, "layers", 9)
    assert resid_name(model, 0) == "embed.sum_BLC" and resid_name(model, 2) == "blocks.1.resid_post_BLC"
    assert resid_name(_model(norm_placement="post"), 1) == "blocks.0.ln2_BLC"
