"""Which exercises each notebook has: the lab's (`CHECKS`, a contract) and the circuits notebook's.

A notebook built by attnlab names itself in its metadata (`"attnlab": {"notebook": "circuits"}`); one
without that name is the lab's, as every copy was before the circuits notebook existed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import AttnlabError
from .checks import CHECKS
from .circuit_checks import CIRCUIT_CHECKS
from .result import CheckResult

NOTEBOOK_CHECKS: dict[str, dict[str, Callable[..., CheckResult]]] = {"lab": CHECKS, "circuits": CIRCUIT_CHECKS}
EVERY_CHECK: dict[str, Callable[..., CheckResult]] = {
    name: check for checks in NOTEBOOK_CHECKS.values() for name, check in checks.items()
}


def check_kind(kind: str) -> str:
    """`kind` itself, once it is known to name a notebook."""
    if kind not in NOTEBOOK_CHECKS:
        raise AttnlabError(f"notebook {kind!r}: choose one of {', '.join(NOTEBOOK_CHECKS)}")
    return kind


def notebook_kind(nb: Any) -> str:
    """The notebook a parsed .ipynb says it is ("lab" when it says nothing)."""
    meta = nb.metadata.get("attnlab") if hasattr(nb, "metadata") else None
    kind = meta.get("notebook", "lab") if isinstance(meta, dict) else "lab"
    if not isinstance(kind, str) or kind not in NOTEBOOK_CHECKS:
        raise AttnlabError(
            f"its metadata names the notebook {str(kind)[:40]!r}, not one of {', '.join(NOTEBOOK_CHECKS)}; "
            "grade it with --notebook NAME"
        )
    return kind


def ordered(names: set[str] | list[str]) -> list[str]:
    """Exercise names in the notebooks' order (the lab's first)."""
    wanted = set(names)
    return [n for n in EVERY_CHECK if n in wanted]
