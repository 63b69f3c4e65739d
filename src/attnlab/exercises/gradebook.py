"""The grade book of a class: every notebook's grades as CSV or JSON, and the class report as one HTML page.

`attnlab check` grades each notebook into a `NotebookReport`; this module only reads those reports,
so the whole class can be summarised (and tested) without running a notebook:

    csv_text(reports)                      # notebook,score,encode_doc,...,sample_next,errors
    json_text(reports)                     # one report: its JSON; several: {"notebooks", "summary"}
    write_class_report(reports, "class.html")

The class report tells an instructor how many students passed each exercise, which mistakes to go over
next (with what each means and its fix), every student's grades, the notebooks whose functions are the
same code once renamed and reformatted (`same_functions`: a hint to look, never a verdict), and the
notebooks that failed or hit a limit. Notebook paths, messages and errors come from students: the
page escapes them (Jinja2 autoescaping) and the CSV quotes them (the csv module).
"""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..report import _environment
from .catalogue import ordered
from .checks import CHECKS
from .grades import GRADE_WORDS, NOT_CHECKED, NOT_WRITTEN, PASSED, REFERENCE, WRONG, NotebookReport
from .mistakes import MISTAKES

ERRORS_CHARS = 300  # the CSV's errors cell: enough to see what failed; the JSON has every error in full


def _exercises(reports: Sequence[NotebookReport]) -> list[str]:
    """The exercises of the notebooks graded, in order: the CSV's columns, the summary's keys, the page's
    rows. A class of lab notebooks gets exactly the lab's (`CHECKS`); without reports, the lab's too."""
    names = {e["name"] for r in reports for e in r.exercises}
    return ordered(names) if names else list(CHECKS)


def _grade(report: NotebookReport, exercise: str) -> str:
    # A report without a grade for an exercise never got to check it (a notebook that stopped early).
    return report.grades.get(exercise, NOT_CHECKED)


def _errors_cell(errors: Sequence[str], limit: int = ERRORS_CHARS) -> str:
    """The errors on one line, cut at `limit` characters: a cell to read in a spreadsheet, not a log."""
    text = "; ".join(" ".join(e.split()) for e in errors)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def csv_text(reports: Sequence[NotebookReport]) -> str:
    """The grade book as CSV, one row per notebook in the order given (the Contract):
    `notebook,score,<each exercise graded, in order: CHECKS's for the lab>,errors`, each exercise's cell its
    grade word (`not checked` for one the row's notebook does not have).
    Rows end in "\\n" and the text ends with one, so it can be written to stdout as it is."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    exercises = _exercises(reports)
    writer.writerow(["notebook", "score", *exercises, "errors"])
    for r in reports:
        writer.writerow([r.path, r.score, *(_grade(r, e) for e in exercises), _errors_cell(r.errors)])
    return out.getvalue()


# --- integrity hints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SameFunction:
    """Notebooks whose function for `exercise` is the same code once names, spacing, comments, docstrings
    and type hints are set aside. `size` counts the function's syntax-tree nodes: short functions are
    often written alike independently, so a large one shared is the stronger hint."""

    exercise: str
    notebooks: tuple[str, ...]
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"exercise": self.exercise, "notebooks": list(self.notebooks), "size": self.size}


class _Canonical(ast.NodeTransformer):
    """Renames the function's own names (itself, its arguments, its local variables) to v0, v1, ... in
    the order the tree is walked; globals, attributes, keywords and literals keep theirs, since they
    are what the code does."""

    def __init__(self, local: set[str]) -> None:
        self.local = local
        self.names: dict[str, str] = {}

    def _canon(self, name: str) -> str:
        return self.names.setdefault(name, f"v{len(self.names)}") if name in self.local else name

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self._canon(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg, node.annotation = self._canon(node.arg), None
        return node

    def _visit_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        node.name, node.returns = self._canon(node.name), None
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_def

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.name = self._canon(node.name)
        return self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        if node.name:
            node.name = self._canon(node.name)
        return self.generic_visit(node)


def _local_names(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """The names the function binds: its own, its (and nested functions') arguments, what it assigns."""
    bound, declared = {fn.name}, set()
    for node in ast.walk(fn):
        if isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
    # Imports inside the function stay as written: the module named is what the code uses.
    return bound - declared


def _is_text(stmt: ast.stmt) -> bool:
    """A bare string statement: a docstring, or a string used as a comment; it does nothing."""
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _without_text(fn: ast.AST) -> None:
    for node in ast.walk(fn):
        for block in ("body", "orelse", "finalbody"):
            stmts = getattr(node, block, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                setattr(node, block, [s for s in stmts if not _is_text(s)] or [ast.Pass()])


def _is_stub(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Still the template (`raise NotImplementedError(...)`), or a body that does nothing: everyone's is the same."""

    def empty(stmt: ast.stmt) -> bool:
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            return True
        if isinstance(stmt, ast.Raise) and stmt.exc is not None:
            exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
            return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
        return False

    return all(empty(s) for s in fn.body)


def _function(source: str, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The definition of `name` in `source` (the last one, as when the cell runs), or None."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: a null byte in the source
        return None
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    named = [d for d in defs if d.name == name]
    found = named or defs
    return found[-1] if found else None


def normalised_function(source: str, name: str) -> tuple[str, int] | None:
    """`ast.dump` of the function `name` in `source` with its names made canonical (arguments, locals and
    the function itself: v0, v1, ... in order of appearance), docstrings, string comments and type hints
    dropped (comments and spacing are gone once parsed), and its size in nodes. None when the source
    does not parse, defines no function, or the function is still the template. Parsed only, never run."""
    fn = _function(source, name)
    if fn is None:
        return None
    try:
        _without_text(fn)
        if _is_stub(fn):
            return None
        fn = _Canonical(_local_names(fn)).visit(fn)
        return ast.dump(fn), sum(not isinstance(node, ast.expr_context) for node in ast.walk(fn))
    except RecursionError:  # a pathologically deep tree: no hint rather than no report
        return None


def same_functions(reports: Sequence[NotebookReport]) -> list[SameFunction]:
    """Integrity hints: for each exercise, the groups of two or more notebooks whose functions are the same
    after `normalised_function`. Largest functions first (the stronger hints), then in the lab's order."""
    exercises = _exercises(reports)
    order = {e: i for i, e in enumerate(exercises)}
    hints = []
    for exercise in exercises:
        groups: dict[str, list[str]] = defaultdict(list)
        sizes: dict[str, int] = {}
        for r in reports:
            normal = normalised_function(r.sources.get(exercise) or "", exercise)
            if normal is None:
                continue
            key = hashlib.sha256(normal[0].encode("utf-8")).hexdigest()
            sizes[key] = normal[1]
            if r.path not in groups[key]:  # a notebook given twice is not two students
                groups[key].append(r.path)
        hints += [SameFunction(exercise, tuple(paths), sizes[k]) for k, paths in groups.items() if len(paths) > 1]
    return sorted(hints, key=lambda h: (-h.size, order[h.exercise], h.notebooks))


# --- the summary ------------------------------------------------------------------------------------


def _grade_order(counts: Counter[str]) -> list[str]:
    """passed first, then the named mistakes (most frequent first), then the other grade words."""
    mistakes = sorted((g for g in counts if g not in GRADE_WORDS), key=lambda g: (-counts[g], g))
    return [PASSED, *mistakes, WRONG, REFERENCE, NOT_WRITTEN, NOT_CHECKED]


def summary(reports: Sequence[NotebookReport]) -> dict[str, Any]:
    """The class in numbers (the "summary" of `json_text` for several notebooks):

    notebooks: how many; mean_score (null without notebooks) and max_score (the number of exercises);
    all_passed and with_errors: how many notebooks passed everything without an error, and had errors;
    exercises: per exercise, in the lab's order, how many notebooks got each grade (every grade word,
    0 included, and each mistake that occurred); mistakes: each named mistake, most frequent first, with
    its count (over notebooks and exercises), the exercises it occurred in, what it means and its fix;
    same_functions: the integrity hints (`same_functions`)."""
    exercises = _exercises(reports)
    per_exercise = {e: Counter(_grade(r, e) for r in reports) for e in exercises}
    mistakes: Counter[str] = Counter()
    where: dict[str, list[str]] = defaultdict(list)
    for e in exercises:
        for grade, n in per_exercise[e].items():
            if grade in MISTAKES:
                mistakes[grade] += n
                where[grade].append(e)
    return {
        "notebooks": len(reports),
        "mean_score": round(sum(r.score for r in reports) / len(reports), 2) if reports else None,
        "max_score": len(exercises),
        "all_passed": sum(r.all_passed for r in reports),
        "with_errors": sum(bool(r.errors) for r in reports),
        "exercises": {e: {g: per_exercise[e][g] for g in _grade_order(per_exercise[e])} for e in exercises},
        "mistakes": [
            {"id": m, "count": n, "exercises": where[m], "what": MISTAKES[m].what, "fix": MISTAKES[m].fix}
            for m, n in sorted(mistakes.items(), key=lambda item: (-item[1], item[0]))
        ],
        "same_functions": [h.to_dict() for h in same_functions(reports)],
    }


def json_text(reports: Sequence[NotebookReport]) -> str:
    """One notebook: exactly its `to_json()` (the Contract). Several (or none):
    `{"notebooks": [each report's to_dict()], "summary": summary(reports)}`."""
    if len(reports) == 1:
        return reports[0].to_json()
    doc = {"notebooks": [r.to_dict() for r in reports], "summary": summary(reports)}
    return json.dumps(doc, indent=2)


def format_reports(reports: Sequence[NotebookReport], fmt: str = "text") -> str:
    """The grades as `fmt`: "text" (each notebook's report), "json" (`json_text`) or "csv" (`csv_text`),
    ending with a line break."""
    if fmt == "csv":
        return csv_text(reports)
    if fmt == "json":
        return json_text(reports) + "\n"
    return "\n\n".join(r.to_text() for r in reports) + "\n"


# --- the class report -------------------------------------------------------------------------------


def mistakes_figure(mistakes: Sequence[dict[str, Any]]) -> Figure:
    """Horizontal bars of the mistakes' counts, the most frequent on top, each bar labelled with its count."""
    fig = Figure(figsize=(9, 0.9 + 0.42 * max(len(mistakes), 1)), dpi=110, constrained_layout=True)
    ax = fig.subplots()
    ids = [m["id"] for m in mistakes][::-1]
    counts = [m["count"] for m in mistakes][::-1]
    bars = ax.barh(ids, counts, color="#d9822b")
    ax.bar_label(bars, padding=3, fontsize=10)
    ax.set_xlabel("times made (notebooks × exercises)")
    ax.set_title("Most frequent mistakes")
    ax.tick_params(axis="y", labelsize=11)
    locator = ax.xaxis.get_major_locator()
    assert isinstance(locator, MaxNLocator)  # a new axes' AutoLocator, a MaxNLocator: it takes `integer`
    locator.set_params(integer=True)
    ax.set_xlim(0, max(counts, default=1) * 1.12)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _grade_class(grade: str) -> str:
    """The CSS class that colours a grade cell: passed, a named mistake, wrong, reference, not done."""
    if grade in MISTAKES:
        return "g-mistake"
    return {PASSED: "g-passed", WRONG: "g-wrong", REFERENCE: "g-reference"}.get(grade, "g-missing")


def _breakable(text: str) -> Markup:
    """`text` (escaped) allowed to wrap after its underscores and slashes, so long ids and paths fit a
    narrow column in lines a person reads as words, not cut anywhere."""
    return Markup("").join(
        escape(part) + (Markup("<wbr>") if part in ("_", "/") else "") for part in re.split("([_/])", text)
    )


def write_class_report(reports: Sequence[NotebookReport], path: str | Path) -> Path:
    """The class report at `path`: one self-contained HTML page (the chart embedded, no links), every
    student-written text escaped. Notebooks appear in the order given."""
    path = Path(path)
    facts = summary(reports)
    exercises = _exercises(reports)
    n = len(reports)
    rows = []
    for e in exercises:
        counts = facts["exercises"][e]
        rows.append(
            {
                "name": e,
                "passed": counts[PASSED],
                "share": counts[PASSED] / n if n else None,
                "mistakes": [(g, c) for g, c in counts.items() if g in MISTAKES and c],
                "wrong": counts[WRONG],
                "reference": counts[REFERENCE],
                "not_written": counts[NOT_WRITTEN],
                "not_checked": counts[NOT_CHECKED],
            }
        )
    students = [
        {
            "path": r.path,
            "score": r.score,
            "grades": [(g, _grade_class(g)) for g in (_grade(r, e) for e in exercises)],
            "errors": len(r.errors),
        }
        for r in reports
    ]
    mistakes = facts["mistakes"]
    html = (
        _environment()
        .get_template("class_report.html")
        .render(
            title="attnlab check: class report",
            summary=facts,
            exercises=rows,
            exercise_names=[_breakable(e) for e in exercises],
            mistakes=mistakes,
            chart=_png(mistakes_figure(mistakes)) if mistakes else None,
            students=students,
            hints=facts["same_functions"],
            with_errors=[r for r in reports if r.errors],
            breakable=_breakable,
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
