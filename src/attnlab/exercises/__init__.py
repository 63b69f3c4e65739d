"""The notebooks' exercises: checks that run a student's function and say which mistake it makes.

    from attnlab.exercises import check_attention
    check_attention(attention)   # ✓ attention: correct on 4 inputs
                                 # ✗ attention: mistake `no_scaling`: the scores are not divided by sqrt(D) ...

Each check compares the student's function with the reference solution (`exercises.reference`)
on random and crafted inputs, and with the catalogue of known wrong versions (`exercises.mistakes`);
it returns a `CheckResult` (`.passed`, `.mistake`, `.message`, `.function`).

`CHECKS` are the lab's exercises, `CIRCUIT_CHECKS` the circuits notebook's, `NOTEBOOK_CHECKS` both by
notebook name.
"""

from .catalogue import NOTEBOOK_CHECKS
from .checks import (
    CHECKS,
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
from .circuit_checks import (
    CIRCUIT_CHECKS,
    check_logit_attribution,
    check_logit_difference,
    check_mean_ablate,
    check_patch_residual,
)
from .mistakes import MISTAKES, Mistake
from .result import CheckResult

__all__ = [
    "CHECKS",
    "CIRCUIT_CHECKS",
    "MISTAKES",
    "NOTEBOOK_CHECKS",
    "CheckResult",
    "Mistake",
    "check_attention",
    "check_causal_mask",
    "check_encode_doc",
    "check_logit_attribution",
    "check_logit_difference",
    "check_mean_ablate",
    "check_merge_heads",
    "check_multi_head_attention",
    "check_patch_residual",
    "check_sampling",
    "check_split_heads",
    "check_transformer_layer",
    "check_transformer_lm",
    "run_all",
]
