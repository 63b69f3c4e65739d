"""The grade book of a class, from synthetic notebook reports: the CSV contract row by row, the JSON of one
notebook and of several with its summary, the integrity hints, and the class report's page."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from markupsafe import escape

from attnlab.exercises import CHECKS, CIRCUIT_CHECKS, MISTAKES
from attnlab.exercises.gradebook import (
    SameFunction,
    csv_text,
    json_text,
    normalised_function,
    same_functions,
    summary,
    write_class_report,
)
from attnlab.exercises.grades import NotebookReport

EXERCISES = list(CHECKS)

# Written by a student, with a docstring, comments, type hints and the lab's names.
ATTENTION = '''
def attention(q_BHLD: torch.Tensor, k_BHKD: torch.Tensor, v_BHKD: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention, causal."""
    L, D = q_BHLD.shape[-2], q_BHLD.shape[-1]
    scores_BHLK = q_BHLD @ k_BHKD.transpose(-2, -1) / math.sqrt(D)  # scale so the softmax is not too peaked
    scores_BHLK = scores_BHLK + make_causal_mask(L)
    return scores_BHLK.softmax(dim=-1) @ v_BHKD
'''
# The same code copied: other argument and variable names, spacing, comments and docstring, no type hints.
ATTENTION_RENAMED = """
def attention(q,k,   v):
    # my own attention!
    '''Attention as in the lecture.'''
    n , d = q.shape[-2], q.shape[-1]

    s = q @ k.transpose(-2,-1) / math.sqrt( d )
    s = s + make_causal_mask(n)   # no peeking
    return s.softmax(dim = -1) @ v
"""
ATTENTION_TIMES = ATTENTION.replace("/ math.sqrt(D)", "* math.sqrt(D)")  # one operator changed
ATTENTION_LOG = ATTENTION.replace(".softmax(dim=-1)", ".log_softmax(dim=-1)")  # one attribute changed
TEMPLATE = """
def attention(q_BHLD: torch.Tensor, k_BHKD: torch.Tensor, v_BHKD: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError("write attention")
"""
BROKEN = "def attention(q, k, v):\n    return q @@ k\n"


def notebook(
    path: str,
    default: str = "passed",
    errors: tuple[str, ...] = (),
    sources: dict[str, str] | None = None,
    exercises_of: list[str] = EXERCISES,
    **grades: str,
) -> NotebookReport:
    """A report as `attnlab check` makes it: every exercise (of the lab, or `exercises_of`) graded `default`
    unless named in `grades`."""
    graded = {e: grades.get(e, default) for e in exercises_of}
    exercises = [
        {
            "name": e,
            "passed": g == "passed",
            "mistake": g if g in MISTAKES else None,
            "message": f"{'✓' if g == 'passed' else '✗'} {e}: {g}",
        }
        for e, g in graded.items()
    ]
    return NotebookReport(path, exercises, list(errors), graded, dict(sources or {}))


def synthetic_class() -> list[NotebookReport]:
    """Six notebooks: solved, copied, with named mistakes and errors, unsolved, reference, stopped early.
    Their paths and errors hold commas, quotes, newlines and markup, as students' files may."""
    return [
        notebook("class/ada/lab.ipynb", sources={"attention": ATTENTION}),
        notebook("class/ben/lab.ipynb", make_causal_mask="future_visible", sources={"attention": ATTENTION_RENAMED}),
        notebook(
            'class/carl, "the second"/lab.ipynb',
            attention="no_scaling",
            multi_head_attention="no_scaling",
            split_heads="split_without_transpose",
            merge_heads="wrong",
            errors=(
                "cell 12: RuntimeError: shape '[2, 7, 3, 4]' is invalid, for input of size 10",
                "time limit: cell 15 ran\nfor 300 s",
            ),
            sources={"attention": ATTENTION_TIMES},
        ),
        notebook("class/dee/lab.ipynb", default="not written", sources={"attention": TEMPLATE}),
        notebook(
            "class/eve/<b>lab</b>.ipynb",
            attention="reference",
            transformer_layer="no_residual",
            sample_next="temperature_after_softmax",
            sources={"attention": TEMPLATE},
        ),
        notebook(
            "class/fay/lab.ipynb",
            default="not checked",
            encode_doc="passed",
            make_causal_mask="future_visible",
            attention="no_scaling",
            errors=("kernel died: memory limit 2 GiB hit <script>alert(1)</script>",),
            sources={"attention": BROKEN},
        ),
    ]


def _grades(report: NotebookReport) -> list[str]:
    return [report.grades[e] for e in EXERCISES]


# --- CSV --------------------------------------------------------------------------------------------


def test_the_csv_header_is_notebook_score_each_exercise_in_the_labs_order_and_errors():
    header = csv_text(synthetic_class()).splitlines()[0]
    assert header == (
        "notebook,score,encode_doc,make_causal_mask,attention,split_heads,merge_heads,"
        "multi_head_attention,transformer_layer,transformer_lm,sample_next,errors"
    )
    assert header.split(",")[2:-1] == EXERCISES


def test_every_csv_row_reads_back_as_the_path_score_grade_words_and_errors():
    reports = synthetic_class()
    rows = list(csv.reader(io.StringIO(csv_text(reports))))
    assert rows[1:] == [
        ["class/ada/lab.ipynb", "9", *["passed"] * 9, ""],
        ["class/ben/lab.ipynb", "8", "passed", "future_visible", *["passed"] * 7, ""],
        [
            'class/carl, "the second"/lab.ipynb',
            "5",
            "passed",
            "passed",
            "no_scaling",
            "split_without_transpose",
            "wrong",
            "no_scaling",
            "passed",
            "passed",
            "passed",
            "cell 12: RuntimeError: shape '[2, 7, 3, 4]' is invalid, for input of size 10; "
            "time limit: cell 15 ran for 300 s",
        ],
        ["class/dee/lab.ipynb", "0", *["not written"] * 9, ""],
        [
            "class/eve/<b>lab</b>.ipynb",
            "6",
            "passed",
            "passed",
            "reference",
            *["passed"] * 3,
            "no_residual",
            "passed",
            "temperature_after_softmax",
            "",
        ],
        [
            "class/fay/lab.ipynb",
            "1",
            "passed",
            "future_visible",
            "no_scaling",
            *["not checked"] * 6,
            "kernel died: memory limit 2 GiB hit <script>alert(1)</script>",
        ],
    ]
    by_name = list(csv.DictReader(io.StringIO(csv_text(reports))))
    assert [row["notebook"] for row in by_name] == [r.path for r in reports]
    assert [[row[e] for e in EXERCISES] for row in by_name] == [_grades(r) for r in reports]
    assert [int(row["score"]) for row in by_name] == [r.score for r in reports]


def test_a_path_with_a_newline_and_quotes_reads_back_exactly_and_rows_end_in_newlines():
    path = 'odd\nname, "quoted".ipynb'
    text = csv_text([notebook(path, errors=('a "quoted", multi\nline\r\nerror',))])
    assert text.endswith("\n") and "\r" not in text.replace("\r\n", "")
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["notebook"] == path and row["errors"] == 'a "quoted", multi line error'


def test_the_csv_errors_cell_is_cut_near_300_characters_and_the_json_keeps_them_all():
    errors = tuple(f"cell {i}: ValueError: " + "x" * 60 for i in range(10))
    report = notebook("long.ipynb", errors=errors)
    (row,) = csv.DictReader(io.StringIO(csv_text([report])))
    assert len(row["errors"]) == 300 and row["errors"].endswith("…")
    assert row["errors"].startswith("cell 0: ValueError: xxx")
    assert json.loads(json_text([report]))["errors"] == list(errors)


# --- JSON -------------------------------------------------------------------------------------------


def test_the_json_of_one_notebook_is_exactly_its_report():
    report = synthetic_class()[2]
    text = json_text([report])
    assert text == report.to_json()
    assert set(json.loads(text)) == {"notebook", "exercises", "errors"}


def test_the_json_of_several_notebooks_holds_each_report_and_the_summary():
    reports = synthetic_class()
    doc = json.loads(json_text(reports))
    assert set(doc) == {"notebooks", "summary"}
    assert doc["notebooks"] == [r.to_dict() for r in reports]
    assert doc["summary"] == json.loads(json.dumps(summary(reports)))


def test_the_summary_counts_every_grade_per_exercise_and_ranks_the_mistakes():
    s = summary(synthetic_class())
    assert {k: s[k] for k in ("notebooks", "mean_score", "max_score", "all_passed", "with_errors")} == {
        "notebooks": 6,
        "mean_score": round((9 + 8 + 5 + 0 + 6 + 1) / 6, 2),
        "max_score": 9,
        "all_passed": 1,
        "with_errors": 2,
    }
    assert list(s["exercises"]) == EXERCISES
    zero = {"wrong": 0, "reference": 0, "not written": 0, "not checked": 0}
    assert s["exercises"]["encode_doc"] == {"passed": 5, **zero, "not written": 1}
    assert s["exercises"]["make_causal_mask"] == {"passed": 3, "future_visible": 2, **zero, "not written": 1}
    assert list(s["exercises"]["attention"].items()) == [
        ("passed", 2),
        ("no_scaling", 2),
        ("wrong", 0),
        ("reference", 1),
        ("not written", 1),
        ("not checked", 0),
    ]
    assert s["exercises"]["merge_heads"] == {**zero, "passed": 3, "wrong": 1, "not written": 1, "not checked": 1}
    assert s["exercises"]["sample_next"] == {
        "passed": 3,
        "temperature_after_softmax": 1,
        **zero,
        "not written": 1,
        "not checked": 1,
    }
    for e in EXERCISES:
        assert sum(s["exercises"][e].values()) == 6
    assert [(m["id"], m["count"], m["exercises"]) for m in s["mistakes"]] == [
        ("no_scaling", 3, ["attention", "multi_head_attention"]),
        ("future_visible", 2, ["make_causal_mask"]),
        ("no_residual", 1, ["transformer_layer"]),
        ("split_without_transpose", 1, ["split_heads"]),
        ("temperature_after_softmax", 1, ["sample_next"]),
    ]
    for m in s["mistakes"]:
        assert (m["what"], m["fix"]) == (MISTAKES[m["id"]].what, MISTAKES[m["id"]].fix)
    assert s["same_functions"] == [
        {"exercise": "attention", "notebooks": ["class/ada/lab.ipynb", "class/ben/lab.ipynb"], "size": 61}
    ]


def test_the_summary_of_no_notebooks_has_no_mean_score():
    doc = json.loads(json_text([]))
    assert doc["notebooks"] == [] and doc["summary"]["notebooks"] == 0 and doc["summary"]["mean_score"] is None
    assert doc["summary"]["mistakes"] == [] and doc["summary"]["same_functions"] == []


# --- integrity hints --------------------------------------------------------------------------------


def test_a_function_differing_only_in_names_spacing_comments_docstrings_and_hints_is_the_same():
    assert normalised_function(ATTENTION, "attention") == normalised_function(ATTENTION_RENAMED, "attention")
    hints = same_functions(
        [
            notebook("a.ipynb", sources={"attention": ATTENTION}),
            notebook("b.ipynb", sources={"attention": ATTENTION_RENAMED}),
        ]
    )
    assert hints == [SameFunction("attention", ("a.ipynb", "b.ipynb"), 61)]


def test_one_operator_or_attribute_changed_is_a_different_function():
    same = normalised_function(ATTENTION, "attention")
    assert normalised_function(ATTENTION_TIMES, "attention") != same
    assert normalised_function(ATTENTION_LOG, "attention") != same
    sources = [ATTENTION, ATTENTION_TIMES, ATTENTION_LOG]
    assert same_functions([notebook(f"{i}.ipynb", sources={"attention": s}) for i, s in enumerate(sources)]) == []


def test_global_names_are_kept_while_local_ones_are_renamed():
    a = "def f(x):\n    y = torch.relu(x)\n    return y\n"
    assert normalised_function(a, "f") == normalised_function("def f(z):\n    w = torch.relu(z)\n    return w\n", "f")
    assert normalised_function(a, "f") != normalised_function("def f(x):\n    y = numpy.relu(x)\n    return y\n", "f")
    # Renaming is by first appearance, so swapping which argument is used where is a different function.
    assert normalised_function("def f(a, b):\n    return a - b\n", "f") != normalised_function(
        "def f(a, b):\n    return b - a\n", "f"
    )


def test_the_untouched_template_or_an_empty_body_is_never_a_hint():
    stubs = [
        TEMPLATE,
        TEMPLATE.replace("\n    raise", '\n    """Doc."""\n    raise'),
        "def attention(q, k, v):\n    pass\n",
    ]
    assert all(normalised_function(s, "attention") is None for s in stubs)
    reports = [notebook(f"{i}.ipynb", sources={"attention": s}) for i, s in enumerate([*stubs, TEMPLATE])]
    assert same_functions(reports) == []


def test_sources_that_do_not_parse_or_are_missing_are_skipped():
    for source in (BROKEN, BROKEN, "", "x = 1\n", "def attention(\x00):\n    pass\n"):
        assert normalised_function(source, "attention") is None
    reports = [notebook("a.ipynb", sources={"attention": BROKEN}), notebook("b.ipynb", sources={"attention": BROKEN})]
    reports += [notebook("c.ipynb"), notebook("d.ipynb")]  # no sources at all
    assert same_functions(reports) == []


def test_the_last_definition_in_a_cell_is_the_one_compared_and_a_notebook_given_twice_is_one():
    redefined = "def attention(q, k, v):\n    return q\n" + ATTENTION
    assert normalised_function(redefined, "attention") == normalised_function(ATTENTION, "attention")
    twice = [notebook("a.ipynb", sources={"attention": ATTENTION})] * 2
    assert same_functions(twice) == []


def test_larger_shared_functions_come_first():
    small = "def split_heads(x, n):\n    return x.view(x.shape[0], x.shape[1], n, -1).transpose(1, 2)\n"
    reports = [
        notebook(f"{name}.ipynb", sources={"split_heads": small, "attention": ATTENTION}) for name in ("a", "b", "c")
    ]
    hints = same_functions(reports)
    assert [(h.exercise, h.notebooks) for h in hints] == [
        ("attention", ("a.ipynb", "b.ipynb", "c.ipynb")),
        ("split_heads", ("a.ipynb", "b.ipynb", "c.ipynb")),
    ]
    assert hints[0].size > hints[1].size


# --- the class report -------------------------------------------------------------------------------


def test_the_class_report_is_one_escaped_self_contained_page(tmp_path: Path):
    page = write_class_report(synthetic_class(), tmp_path / "out" / "class.html")
    html = page.read_text(encoding="utf-8")
    assert page == tmp_path / "out" / "class.html"
    assert "<script" not in html and "<b>lab</b>" not in html
    # In the grades table a path may wrap after its slashes (<wbr>), the only markup added to it.
    assert "class/<wbr>eve/<wbr>&lt;b&gt;lab&lt;/<wbr>b&gt;.ipynb" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "class/carl, &#34;the second&#34;/lab.ipynb" in html
    assert re.findall(r'src="([^"]{0,22})', html) == ["data:image/png;base64,"]
    assert not re.search(r"(href|src)=\"?(https?:)?//", html) and "@import" not in html
    assert "Data:" not in html  # the lab reports' data line is not this page's
    for m in summary(synthetic_class())["mistakes"]:
        assert escape(m["what"]) in html and escape(m["fix"]) in html


def test_the_class_report_of_a_class_without_mistakes_has_no_chart(tmp_path: Path):
    html = write_class_report([notebook("a.ipynb"), notebook("b.ipynb")], tmp_path / "class.html").read_text()
    assert "<img" not in html and "No named mistake was made." in html and "No two notebooks share a function." in html


def test_a_class_of_circuits_notebooks_has_their_columns_and_a_mixed_class_both():
    circuits = list(CIRCUIT_CHECKS)
    ann = notebook("class/ann/circuits.ipynb", exercises_of=circuits, patch_residual="patched_backwards")
    bob = notebook("class/bob/circuits.ipynb", exercises_of=circuits, logit_attribution="no_norm_scale")
    rows = list(csv.reader(io.StringIO(csv_text([ann, bob]))))
    assert rows[0] == ["notebook", "score", *circuits, "errors"]
    assert rows[1] == ["class/ann/circuits.ipynb", "3", "passed", "patched_backwards", "passed", "passed", ""]
    facts = summary([ann, bob])
    assert facts["max_score"] == 4 and list(facts["exercises"]) == circuits
    assert [(m["id"], m["exercises"]) for m in facts["mistakes"]] == [
        ("no_norm_scale", ["logit_attribution"]),
        ("patched_backwards", ["patch_residual"]),
    ]
    lab = notebook("class/cat/lab.ipynb")
    rows = list(csv.reader(io.StringIO(csv_text([lab, ann]))))
    assert rows[0] == ["notebook", "score", *EXERCISES, *circuits, "errors"]
    assert rows[1][2 + len(EXERCISES) :] == ["not checked"] * len(circuits) + [""]
    assert rows[2][2 : 2 + len(EXERCISES)] == ["not checked"] * len(EXERCISES)
