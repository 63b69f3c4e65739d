"""What a check says: passed, or which mistake, in words a student can act on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CheckResult:
    """The outcome of one exercise check; a notebook shows it as its message.

    `function` is the student's function when it passed and the reference one otherwise, so a notebook
    can go on with `encode_doc = check_encode_doc(encode_doc).function` whatever the outcome.
    """

    name: str
    passed: bool
    mistake: str | None
    message: str
    function: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "mistake": self.mistake, "message": self.message}


def shape_in_letters(shape: tuple[int, ...], letters: dict[str, int]) -> str:
    """(2, 7, 3, 4) with letters {B: 2, L: 7, H: 3, D: 4} -> "(B, L, H, D)"; sizes no letter has stay numbers."""
    by_size = {size: name for name, size in reversed(letters.items())}
    return "(" + ", ".join(by_size.get(n, str(n)) for n in shape) + ")"
