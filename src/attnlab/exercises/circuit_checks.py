"""The circuits notebook's checks: a logit difference, a residual patch, a direct logit attribution and a
mean ablation, each compared with the reference and with the mistakes a student makes with it.

As in the lab's checks (exercises/checks.py), `seed` None gives the notebook's fixed inputs and an int
a grading run's fresh ones, and each check returns a `CheckResult`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models import TransformerLM
from .checks import B, C, Case, H, L, Seed, V, _check_tensor_fn, _config, _randomised, _rng, _torch_seeds
from .mistakes import ABLATION_MISTAKES, ATTRIBUTION_MISTAKES, LOGIT_DIFF_MISTAKES, PATCH_MISTAKES
from .result import CheckResult

P = 9  # parts of the final residual stream in the attribution cases: not one of the other sizes


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pair(seed: Seed) -> tuple[int, int]:
    """An answer and a wrong token, different: fixed for the notebook, drawn for a grading run."""
    if seed is None:
        return 76, 84  # "L" and "T"
    answer, wrong = _rng("logit_difference.pair", seed).sample(range(V), 2)
    return answer, wrong


def check_logit_difference(logit_difference: Callable[..., torch.Tensor] | None, *, seed: Seed = None) -> CheckResult:
    """Check `logit_difference(logits_BLV, answer, wrong) -> diff_B`: logit(answer) - logit(wrong) at the
    last position of each row."""
    (s_logits,) = _torch_seeds("logit_difference", seed, (5,))
    logits_BLV = torch.randn(B, L, V, generator=_gen(s_logits)) * 3
    answer, wrong = _pair(seed)
    cases: list[Case] = [(logits_BLV, answer, wrong), (logits_BLV[:1, :4], wrong, answer)]
    return _check_tensor_fn("logit_difference", logit_difference, cases, LOGIT_DIFF_MISTAKES)


def _prompts(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A clean batch and a corrupted copy that differs from it at two positions of every row."""
    gen = _gen(seed)
    clean_BL = torch.randint(V, (B, L), generator=gen)
    corrupt_BL = clean_BL.clone()
    corrupt_BL[:, 2] = (clean_BL[:, 2] + 1 + torch.randint(V - 1, (B,), generator=gen)) % V
    corrupt_BL[:, 5] = (clean_BL[:, 5] + 1 + torch.randint(V - 1, (B,), generator=gen)) % V
    return clean_BL, corrupt_BL


def check_patch_residual(patch_residual: Callable[..., torch.Tensor] | None, *, seed: Seed = None) -> CheckResult:
    """Check `patch_residual(model, clean_BL, corrupt_BL, layer, position) -> logits_BLV`: the corrupted
    run with the residual stream entering block `layer` at `position` taken from the clean run."""
    s_model, s_ids = _torch_seeds("patch_residual", seed, (6, 7))
    model = _randomised(TransformerLM(_config()), s_model)
    clean_BL, corrupt_BL = _prompts(s_ids)
    cases: list[Case] = [
        (model, clean_BL, corrupt_BL, 0, 2),
        (model, clean_BL, corrupt_BL, 1, 5),
        (model, clean_BL[:1], corrupt_BL[:1], 1, 2),
    ]
    return _check_tensor_fn("patch_residual", patch_residual, cases, PATCH_MISTAKES)


def _parts(seed: int, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Parts of a final stream with a mean and a scale far from 0 and 1 (so leaving out the centring or
    the scale shows), a norm weight and a direction."""
    gen = _gen(seed)
    parts_PC = torch.randn(p, C, generator=gen) * 2 + torch.randn(p, 1, generator=gen)
    ln_weight_C = 1 + torch.randn(C, generator=gen) * 0.5
    direction_C = torch.randn(C, generator=gen)
    return parts_PC, ln_weight_C, direction_C


def check_logit_attribution(logit_attribution: Callable[..., torch.Tensor] | None, *, seed: Seed = None) -> CheckResult:
    """Check `logit_attribution(parts_PC, ln_weight_C, direction_C, eps) -> values_P`: each part of the final
    stream through the final LayerNorm at the run's scale, onto the direction."""
    s0, s1 = _torch_seeds("logit_attribution", seed, (8, 9))
    cases: list[Case] = [(*_parts(s0, P), 1e-5), (*_parts(s1, 3), 0.5)]
    return _check_tensor_fn("logit_attribution", logit_attribution, cases, ATTRIBUTION_MISTAKES)


def check_mean_ablate(mean_ablate: Callable[..., torch.Tensor] | None, *, seed: Seed = None) -> CheckResult:
    """Check `mean_ablate(z_BHLD, head, z_ref_BHLD) -> z_BHLD`: head `head` replaced by its mean over the
    reference's sequences and positions."""
    s_z, s_ref = _torch_seeds("mean_ablate", seed, (10, 11))
    z_BHLD = torch.randn(B, H, L, 4, generator=_gen(s_z))
    z_ref_BHLD = torch.randn(5, H, L, 4, generator=_gen(s_ref)) + torch.arange(L).view(1, 1, L, 1) * 0.5
    head = 1 if seed is None else _rng("mean_ablate.head", seed).randrange(H)
    cases: list[Case] = [(z_BHLD, head, z_ref_BHLD), (z_BHLD[:1], (head + 1) % H, z_ref_BHLD)]
    return _check_tensor_fn("mean_ablate", mean_ablate, cases, ABLATION_MISTAKES)


# The circuits notebook's exercises, in its order; each check is called as check(function, seed=None | int).
CIRCUIT_CHECKS: dict[str, Callable[..., CheckResult]] = {
    "logit_difference": check_logit_difference,
    "patch_residual": check_patch_residual,
    "logit_attribution": check_logit_attribution,
    "mean_ablate": check_mean_ablate,
}
