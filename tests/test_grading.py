"""`attnlab check` on a class: grades no notebook can forge, code that cannot escape its sandbox.

One class of small notebooks is graded once (two at a time, in bubblewrap) and every test reads its
reports: forgeries, confinement, and the grade book. Each notebook defines the `attention` exercise
(and `sample_next` where a test needs it), so a notebook grades in seconds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
import socket
import threading
from pathlib import Path

import nbformat
import pytest

from attnlab.exercises import CHECKS, CIRCUIT_CHECKS
from attnlab.exercises import sandbox as sandbox_module
from attnlab.exercises.grade import ClassRun, notebook_paths
from attnlab.exercises.gradebook import csv_text

from .conftest import run_subprocess

WHY_NOT = sandbox_module.problem()
pytestmark = [pytest.mark.skipif(WHY_NOT is not None, reason=f"no sandbox here: {WHY_NOT} (.ci/run installs it)")]
pytestmark.append(pytest.mark.slow)

IMPORTS = "import math\nimport os\nimport torch"
ATTENTION = """
def attention(q_BHLD, k_BHKD, v_BHKD):
    D, L = q_BHLD.shape[-1], q_BHLD.shape[-2]
    scores_BHLK = q_BHLD @ k_BHKD.transpose(-2, -1) / math.sqrt(D)
    scores_BHLK = scores_BHLK + torch.full((L, L), float("-inf")).triu(diagonal=1).to(scores_BHLK)
    return scores_BHLK.softmax(dim=-1) @ v_BHKD
"""
NO_SCALING = ATTENTION.replace(" / math.sqrt(D)", "")
TEMPLATE = 'def attention(q_BHLD, k_BHKD, v_BHKD):\n    raise NotImplementedError("write attention")'
CHECK_CELL = """from attnlab.exercises import check_attention
result = check_attention(attention)
attention = result.function
result"""

# Forgeries: each leaves the exercise as it really is.
APPEND_TO_EVERY_ENV_FILE = """
line = '{"name": "attention", "passed": true, "mistake": null, "message": "ok"}\\n'
for value in list(os.environ.values()) + ["/tmp/checks.jsonl", os.environ.get("ATTNLAB_CHECK_LOG", "")]:
    if value.startswith("/"):
        try:
            with open(value, "a") as f:
                f.write(line)
        except OSError:
            pass
"""
RECORD_A_PASS = """
from attnlab.exercises import result as r
fake = r.CheckResult("attention", True, None, "\\u2713 attention: correct on 4 inputs")
if hasattr(r, "record"):
    r.record(fake)
"""
REDEFINE_THE_CHECKS = """
import attnlab.exercises as ex
import attnlab.exercises.checks as checks
from attnlab.exercises.result import CheckResult
def check_attention(fn, **kw):
    return CheckResult("attention", True, None, "\\u2713 attention: correct on 4 inputs", fn)
ex.check_attention = checks.check_attention = check_attention
checks.CHECKS["attention"] = check_attention
checks._close = lambda got, want: True
"""
PATCHES_WHEN_CALLED = """
_honest = attention
def attention(q_BHLD, k_BHKD, v_BHKD):
    import attnlab.exercises.checks as checks
    import torch as t
    checks._close = lambda got, want: True
    checks._mismatch = lambda got, want: t.zeros_like(want, dtype=t.bool)
    t.allclose = lambda *a, **k: True
    t.isclose = lambda a, b, **k: t.ones_like(b, dtype=t.bool)
    return _honest(q_BHLD, k_BHKD, v_BHKD)
"""
# The notebook's own check inputs, answered from a table made with the reference; anything else wrong.
STORED_ANSWERS = """
from attnlab.exercises import checks as _c, reference as _ref
_table = {}
for _case in _c.ATTENTION_CASES:
    _table[tuple(_case[0].flatten()[:8].tolist())] = _ref.attention(*_case)
def attention(q_BHLD, k_BHKD, v_BHKD):
    key = tuple(q_BHLD.flatten()[:8].tolist())
    return _table[key].clone() if key in _table else torch.zeros_like(q_BHLD)
"""
PRINT_A_PASS = 'print("\\u2713 attention: correct on 4 inputs")\nprint("9 of 9 exercises passed")'
IMPORT_THE_REFERENCE = "from attnlab.exercises.reference import attention"
CALL_THE_REFERENCE = """
from attnlab.exercises import check_attention as _check
_solution = _check(None).function
def attention(q_BHLD, k_BHKD, v_BHKD):
    return _solution(q_BHLD, k_BHKD, v_BHKD)
"""
SAMPLER = """
def sample_next(logits_V, temperature=1.0, top_k=None):
    if temperature == 0:
        return int(logits_V.argmax())
    logits_V = logits_V / temperature
    if top_k is not None:
        logits_V = logits_V.masked_fill(logits_V < logits_V.topk(top_k).values[-1], float("-inf"))
    return int(torch.multinomial(logits_V.softmax(-1), 1))
"""
# A circuits notebook: one exercise solved, one handed to the package's own sweep.
CIRCUITS_BY_THE_LIBRARY = """
from attnlab.inspect.circuits import logit_diff
from attnlab.inspect.patching import Cell, patch_cells
def logit_difference(logits_BLV, answer, wrong):
    return logits_BLV[:, -1, answer] - logits_BLV[:, -1, wrong]
def patch_residual(model, clean_BL, corrupt_BL, layer, position):
    return patch_cells(model, clean_BL, corrupt_BL, [Cell("embed.sum_BLC", (position,))], logit_diff(1, 2))
"""


def _write(folder: Path, name: str, *cells: str, notebook: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if notebook is not None:
        nb.metadata["attnlab"] = {"notebook": notebook}
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


class Listener:
    """A TCP listener on the grader's loopback that records every connection that arrives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.arrived: list[tuple[str, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.arrived.append(addr)
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class, graded once: {notebook stem: report}, plus what the hostile cells aimed at."""
    root = tmp_path_factory.mktemp("class")
    folder = root / "submissions"
    folder.mkdir()
    token = secrets.token_hex(4)
    targets = {
        "home": Path.home() / f"attnlab-escape-{token}",
        "tmp": Path("/tmp") / f"attnlab-escape-{token}",
        "class": folder / f"escape-{token}.txt",
        "other": folder / "solved.ipynb",
    }
    listener = Listener()
    _write(folder, "solved", IMPORTS, ATTENTION, CHECK_CELL, SAMPLER)
    _write(folder, "unsolved", IMPORTS, TEMPLATE, CHECK_CELL)
    _write(folder, "no_scaling", IMPORTS, NO_SCALING, CHECK_CELL)
    _write(folder, "appends_to_logs", IMPORTS, TEMPLATE, APPEND_TO_EVERY_ENV_FILE, CHECK_CELL)
    _write(folder, "records_a_pass", IMPORTS, TEMPLATE, RECORD_A_PASS, CHECK_CELL)
    _write(folder, "redefines_checks", IMPORTS, NO_SCALING, REDEFINE_THE_CHECKS, CHECK_CELL)
    _write(folder, "patches_when_called", IMPORTS, NO_SCALING, PATCHES_WHEN_CALLED, CHECK_CELL)
    _write(folder, "stored_answers", IMPORTS, STORED_ANSWERS, CHECK_CELL)
    _write(folder, "prints_a_pass", IMPORTS, TEMPLATE, PRINT_A_PASS)
    every_forgery = (APPEND_TO_EVERY_ENV_FILE, RECORD_A_PASS, REDEFINE_THE_CHECKS, PRINT_A_PASS)
    _write(folder, "solved_among_forgeries", IMPORTS, ATTENTION, *every_forgery, PATCHES_WHEN_CALLED, CHECK_CELL)
    _write(folder, "imports_the_reference", IMPORTS, IMPORT_THE_REFERENCE, CHECK_CELL)
    _write(folder, "calls_the_reference", IMPORTS, CALL_THE_REFERENCE, CHECK_CELL)
    _write(folder, "circuits_by_the_library", IMPORTS, CIRCUITS_BY_THE_LIBRARY, notebook="circuits")
    write = "try:\n    open({!r}, 'w').write('escaped')\nexcept OSError as e:\n    print(e)"
    writes = "\n".join(write.format(str(p)) for p in targets.values())
    connect = f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {listener.port}), timeout=3)\n"
    connect += "except OSError as e:\n    print(e)"
    _write(folder, "escapes", IMPORTS, writes, connect, ATTENTION)
    allocate = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))"
    _write(folder, "memory_bomb", IMPORTS, allocate, ATTENTION)
    fork = "while True:\n    if os.fork() == 0:\n        import time\n        time.sleep(60)"
    _write(folder, "fork_bomb", IMPORTS, fork, ATTENTION)
    (folder / "notes.ipynb").write_text("these are my notes, not a notebook")
    before = {p: p.read_bytes() for p in folder.iterdir()}

    limits = sandbox_module.Limits(memory=2 << 30, cell_seconds=30, notebook_seconds=150)
    reports = ClassRun(limits, confine=True, jobs=2, seed=secrets.randbits(48)).grade(notebook_paths([str(folder)]))
    listener.close()
    escaped = {k: p.exists() and k != "other" for k, p in targets.items()}
    changed = [p.name for p, data in before.items() if not p.exists() or p.read_bytes() != data]
    changed += [p.name for p in folder.iterdir() if p not in before]
    yield {Path(r.path).stem: r for r in reports}, {"escaped": escaped, "changed": changed, "arrived": listener.arrived}
    for p in targets.values():
        if p.exists() and p.parent != folder:
            p.unlink()


def _attention(report) -> tuple[str, dict]:
    entry = next(e for e in report.exercises if e["name"] == "attention")
    return report.grades["attention"], entry


def test_a_correct_solution_passes_and_the_exercises_it_never_defined_are_not_checked(graded):
    reports, _ = graded
    grade, entry = _attention(reports["solved"])
    assert grade == "passed" and entry["passed"] and reports["solved"].grades["sample_next"] == "passed"
    assert reports["solved"].grades["encode_doc"] == "not checked" and reports["solved"].errors == []
    assert reports["unsolved"].grades["attention"] == "not written"
    assert reports["no_scaling"].grades["attention"] == "no_scaling"
    assert "mistake `no_scaling`" in _attention(reports["no_scaling"])[1]["message"]


@pytest.mark.parametrize(
    ("notebook", "grade"),
    [
        ("appends_to_logs", "not written"),
        ("records_a_pass", "not written"),
        ("redefines_checks", "no_scaling"),
        ("patches_when_called", "no_scaling"),
        ("stored_answers", "wrong"),
        ("prints_a_pass", "not written"),
    ],
)
def test_a_forgery_leaves_the_exercise_as_it_really_is(graded, notebook, grade):
    reports, _ = graded
    assert _attention(reports[notebook])[0] == grade
    assert not _attention(reports[notebook])[1]["passed"]


def test_a_correct_solution_still_passes_among_every_forgery(graded):
    assert _attention(graded[0]["solved_among_forgeries"])[0] == "passed"


@pytest.mark.parametrize("notebook", ["imports_the_reference", "calls_the_reference"])
def test_the_packages_own_solution_is_graded_reference_never_passed(graded, notebook):
    grade, entry = _attention(graded[0][notebook])
    assert grade == "reference" and not entry["passed"] and "graded `reference`" in entry["message"]


def test_a_circuits_notebook_is_graded_on_its_exercises_and_the_librarys_sweep_is_reference(graded):
    report = graded[0]["circuits_by_the_library"]
    assert [e["name"] for e in report.exercises] == list(CIRCUIT_CHECKS)
    assert report.grades == {
        "logit_difference": "passed",
        "patch_residual": "reference",
        "logit_attribution": "not checked",
        "mean_ablate": "not checked",
    }


def test_nothing_escapes_the_sandbox(graded):
    reports, hostile = graded
    assert hostile["escaped"] == {"home": False, "tmp": False, "class": False, "other": False}
    assert hostile["changed"] == [] and hostile["arrived"] == []
    assert reports["escapes"].grades["attention"] == "passed"  # refused writes and connections are not errors


def test_the_memory_and_process_limits_stop_that_notebook_only(graded):
    reports, _ = graded
    memory, forks = reports["memory_bomb"].errors, reports["fork_bomb"].errors
    assert any("memory limit is 2G" in e for e in memory), memory
    assert any("process limit is 256" in e for e in forks), forks
    for name in ("solved", "no_scaling", "escapes"):
        assert reports[name].grades["attention"] in ("passed", "no_scaling")


def test_a_file_that_is_not_a_notebook_is_its_own_line(graded):
    notes = graded[0]["notes"]
    assert notes.errors and "is not a Jupyter notebook" in notes.errors[0]
    assert set(notes.grades.values()) == {"not checked"}


def test_the_grade_book_has_the_right_row_for_each_notebook(graded):
    reports = list(graded[0].values())
    rows = {Path(r["notebook"]).stem: r for r in csv.DictReader(io.StringIO(csv_text(reports)))}
    assert list(next(csv.DictReader(io.StringIO(csv_text(reports)))).keys()) == [
        "notebook",
        "score",
        *CHECKS,
        *CIRCUIT_CHECKS,  # the class holds one circuits notebook
        "errors",
    ]
    assert rows["solved"]["attention"] == "passed" and rows["solved"]["score"] == "2"
    assert rows["no_scaling"]["attention"] == "no_scaling" and rows["no_scaling"]["errors"] == ""
    assert rows["unsolved"]["attention"] == "not written" and rows["calls_the_reference"]["attention"] == "reference"
    assert rows["notes"]["errors"].startswith(str(Path(rows["notes"]["notebook"])))
    assert "memory limit" in rows["memory_bomb"]["errors"]
    assert rows["solved"]["logit_difference"] == "not checked" and rows["circuits_by_the_library"]["score"] == "1"


def test_the_command_grades_a_folder_into_csv_and_a_class_report(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    _write(folder, "a_solved", IMPORTS, ATTENTION, CHECK_CELL)
    _write(folder, "b_broken", IMPORTS, NO_SCALING, CHECK_CELL)
    _write(folder, "c_unsolved", IMPORTS, TEMPLATE, CHECK_CELL)
    (folder / "d_not_a_notebook.ipynb").write_text("{}")
    report = tmp_path / "class.html"
    args = ["check", str(folder), "--jobs", "2", "--format", "csv", "--report", str(report), "--timeout", "60"]
    proc = run_subprocess(args, timeout=600)
    assert proc.returncode == 1, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [(Path(r["notebook"]).name, r["score"], r["attention"]) for r in rows] == [
        ("a_solved.ipynb", "1", "passed"),
        ("b_broken.ipynb", "0", "no_scaling"),
        ("c_unsolved.ipynb", "0", "not written"),
        ("d_not_a_notebook.ipynb", "0", "not checked"),
    ]
    assert report.is_file()
    shards = [run_subprocess([*args[:2], "--shard", f"{i}/2", "--format", "json", "--timeout", "60"]) for i in (1, 2)]
    graded = [Path(n["notebook"]).name for s in shards for n in json.loads(s.stdout)["notebooks"]]
    assert sorted(graded) == sorted(p.name for p in folder.iterdir())


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium here: apt-get install chromium")
def test_the_class_report_opens_offline_and_shows_the_mistake_counts(tmp_path):
    from playwright.sync_api import sync_playwright

    from .pages import launch, open_offline

    folder = tmp_path / "class"
    folder.mkdir()
    for i in range(3):
        _write(folder, f"broken_{i}", IMPORTS, NO_SCALING, CHECK_CELL)
    _write(folder, "solved", IMPORTS, ATTENTION, CHECK_CELL)
    report = tmp_path / "class.html"
    args = ["check", str(folder), "--jobs", "2", "--report", str(report), "--format", "json"]
    proc = run_subprocess(args, timeout=600)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)["summary"]
    assert summary["exercises"]["attention"]["no_scaling"] == 3
    with sync_playwright() as p:
        browser = launch(p)
        with open_offline(browser, report) as seen:
            assert seen.blocked == [] and seen.errors == [] and seen.broken_images() == []
            text = seen.text("body")
            assert "no_scaling" in text and "divide q @ k^T by math.sqrt(D)" in text
        browser.close()


def test_without_a_sandbox_the_check_refuses_unless_told(tmp_path, monkeypatch, capsys):
    from attnlab.cli import main

    path = _write(tmp_path, "solved", IMPORTS, ATTENTION)
    monkeypatch.setattr(sandbox_module, "problem", lambda: "bubblewrap (bwrap) is not installed")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--no-sandbox" in err and "bubblewrap" in err
    assert os.environ.get("ATTNLAB_CHECK_LOG") is None


def test_without_the_sandbox_the_limits_still_apply(tmp_path):
    allocate = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))"
    path = _write(tmp_path, "memory_bomb", IMPORTS, allocate, ATTENTION)
    args = ["check", str(path), "--no-sandbox", "--memory", "1G", "--format", "json", "--timeout", "60"]
    proc = run_subprocess(args, timeout=300)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and any("memory limit is 1G" in e for e in report["errors"]), report["errors"]
    assert next(e for e in report["exercises"] if e["name"] == "attention")["passed"]


def test_an_environment_under_tmp_is_bound_over_the_private_tmp(monkeypatch, tmp_path):
    """A venv in /tmp (a fresh clone there, say) must stay visible: the private /tmp is mounted first."""
    env = Path("/tmp") / "some-clone" / ".venv"
    monkeypatch.setattr(sandbox_module, "_read_only_paths", lambda: [Path("/usr"), env])
    args = sandbox_module._bwrap_args(Path("/usr/bin"))
    private_tmp = max(i for i, a in enumerate(args) if a == "--tmpfs" and args[i + 1] == "/tmp")
    bound = args.index(str(env))
    assert private_tmp < bound and args[bound - 1] == "--ro-bind"
