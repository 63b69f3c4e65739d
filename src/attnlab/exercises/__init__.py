"""The lab's exercises: checks that run a student's function and say which mistake it makes.

    from attnlab.exercises import check_attention
    check_attention(attention)   # ✓ attention: correct on 4 inputs
                                 # ✗ attention: mistake `no_scaling`: the scores are not divided by sqrt(D) ...

Each check compares the student's function with the reference solution (`exercises.reference`)
on random and crafted inputs, and with the catalogue of known wrong versions (`exercises.mistakes`);
it returns a `CheckResult` (`.passed`, `.mistake`, `.message`, `.function`).
"""

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
from .mistakes import MISTAKES, Mistake
from .result import CheckResult

__all__ = [
    "CHECKS",
    "MISTAKES",
    "CheckResult",
    "Mistake",
    "check_attention",
    "check_causal_mask",
    "check_encode_doc",
    "check_merge_heads",
    "check_multi_head_attention",
    "check_sampling",
    "check_split_heads",
    "check_transformer_layer",
    "check_transformer_lm",
    "run_all",
]
