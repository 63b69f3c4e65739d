"""What grading one notebook gives: each exercise's message as the student would read it, and its grade.

A grade is one word an instructor can count: `passed`, the id of a named mistake (`no_scaling`, ...),
`wrong` (no named mistake), `reference` (the function is, or calls, the package's own solution),
`not written` (still raises NotImplementedError) or `not checked` (never defined, or the notebook
stopped before it could be checked).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PASSED, WRONG, REFERENCE, NOT_WRITTEN, NOT_CHECKED = "passed", "wrong", "reference", "not written", "not checked"
GRADE_WORDS = (PASSED, WRONG, REFERENCE, NOT_WRITTEN, NOT_CHECKED)  # besides these, a mistake's id


@dataclass
class NotebookReport:
    """One notebook's exercises in the lab's order (`name`, `passed`, `mistake`, `message`), their grades
    by name, the cells that failed or the limits hit (`errors`), and each exercise function's source as
    the notebook defines it ("" when it defines none), read from the file, never run, for the integrity hints."""

    path: str
    exercises: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)
    grades: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def score(self) -> int:
        """Exercises passed."""
        return sum(e["passed"] for e in self.exercises)

    @property
    def all_passed(self) -> bool:
        return all(e["passed"] for e in self.exercises) and not self.errors

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of one notebook (its keys are a contract: notebook, exercises, errors)."""
        return {"notebook": self.path, "exercises": self.exercises, "errors": self.errors}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        lines = [f"{self.path}: {self.score} of {len(self.exercises)} exercises passed"]
        lines += [e["message"] for e in self.exercises]
        lines += [f"! {e}" for e in self.errors]
        return "\n".join(lines)
