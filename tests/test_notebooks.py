"""The lab and circuits notebooks: each built from one source, shipped, runnable top to bottom, and graded
by `attnlab check` on its own exercises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from attnlab.exercises import CHECKS, CIRCUIT_CHECKS
from attnlab.notebooks import NOTEBOOKS, SOLUTIONS, STUDENT, notebook_paths
from attnlab.notebooks.build import build, split_solutions

from .conftest import run_cli, run_subprocess

EXERCISES = list(CHECKS)


def test_the_built_notebooks_are_current_and_hold_no_outputs():
    for path, text in build().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is stale: python -m attnlab.notebooks.build"
        nb = nbformat.reads(text, as_version=4)
        assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize(("name", "exercises"), [("lab", EXERCISES), ("circuits", list(CIRCUIT_CHECKS))])
def test_the_student_notebook_leaves_every_exercise_to_write(name, exercises):
    student, solved = (
        "\n".join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
        for p in notebook_paths(name)
    )
    assert len(re.findall(r"raise NotImplementedError\(", student)) == len(exercises)
    assert "NotImplementedError" not in solved and "SOLUTION" not in solved + student
    for exercise in exercises:
        assert f"def {exercise}(" in student


def test_each_notebook_names_itself_for_the_grader():
    assert list(NOTEBOOKS) == ["lab", "circuits"]
    for name in NOTEBOOKS:
        for path in notebook_paths(name):
            assert nbformat.read(path, as_version=4).metadata["attnlab"] == {"notebook": name}


def test_solution_markers_become_one_line_at_the_same_indentation():
    code = "def f(x):\n    # BEGIN SOLUTION: write f\n    y = x + 1\n    return y\n    # END SOLUTION\n"
    assert split_solutions(code, student=True) == 'def f(x):\n    raise NotImplementedError("write f")'
    assert split_solutions(code, student=False) == "def f(x):\n    y = x + 1\n    return y"
    with pytest.raises(ValueError, match="without END"):
        split_solutions("# BEGIN SOLUTION\nx = 1", student=True)


def test_attnlab_notebook_copies_either_version_and_never_overwrites(tmp_path, capsys):
    assert run_cli(["notebook", "--out", str(tmp_path)], capsys)[0] == 0
    assert (tmp_path / "lab.ipynb").read_bytes() == STUDENT.read_bytes()
    assert run_cli(["notebook", "--solutions", "--out", str(tmp_path)], capsys)[0] == 0
    assert (tmp_path / "lab_solutions.ipynb").read_bytes() == SOLUTIONS.read_bytes()
    code, _, err = run_cli(["notebook", "--out", str(tmp_path)], capsys)
    assert code == 2 and "exists" in err and err.count("\n") == 1
    code, _, err = run_cli(["notebook", "--out", str(tmp_path / "lab.ipynb")], capsys)
    assert code == 2 and "is a file" in err
    assert run_cli(["notebook", "circuits", "--out", str(tmp_path)], capsys)[0] == 0
    assert (tmp_path / "circuits.ipynb").read_bytes() == notebook_paths("circuits")[0].read_bytes()
    code, _, err = run_cli(["notebook", "circuitz", "--out", str(tmp_path)], capsys)
    assert code == 2 and "invalid choice" in err and err.count("\n") == 1


def _notebook(tmp_path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "student.ipynb"
    nbformat.write(nb, path)
    return path


def test_check_reports_failing_and_hanging_cells_in_one_line_each(tmp_path):
    path = _notebook(
        tmp_path,
        "from attnlab.exercises import check_split_heads\nimport time",
        "1 / 0",
        "time.sleep(60)",
        "def split_heads(x, n):\n    return x.reshape(x.shape[0], n, x.shape[1], -1)",
        "check_split_heads(split_heads)",
    )
    proc = run_subprocess(["check", str(path), "--timeout", "5", "--format", "json"], timeout=120)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["errors"] == [
        "cell 1: ZeroDivisionError: division by zero",
        "cell 2: still running after 5 s; stopped",
    ]
    by_name = {e["name"]: e for e in report["exercises"]}
    assert [e["name"] for e in report["exercises"]] == EXERCISES
    assert by_name["split_heads"]["mistake"] == "split_without_transpose"
    assert set(by_name["split_heads"]) == {"name", "passed", "mistake", "message"}
    assert "not checked" in by_name["attention"]["message"]


def test_check_refuses_a_file_that_is_not_a_notebook(tmp_path, capsys):
    bad = tmp_path / "lab.ipynb"
    bad.write_text("{ this is not json")
    code, out, err = run_cli(["check", str(bad)], capsys)
    assert code == 2 and out == "" and "is not a Jupyter notebook" in err and err.count("\n") == 1
    code, _, err = run_cli(["check", str(tmp_path / "missing.ipynb")], capsys)
    assert code == 2 and "no such file or folder" in err


def _check(path: Path, tmp_path: Path) -> dict:
    proc = run_subprocess(["check", str(path), "--format", "json"], timeout=900, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_the_solutions_notebook_runs_top_to_bottom_and_passes_every_check(tmp_path):
    report = _check(SOLUTIONS, tmp_path)
    assert report["errors"] == []
    assert [(e["name"], e["passed"]) for e in report["exercises"]] == [(n, True) for n in EXERCISES]


@pytest.mark.slow
def test_the_student_notebook_runs_and_says_what_is_not_written_yet(tmp_path):
    report = _check(STUDENT, tmp_path)
    assert report["errors"] == []  # every other cell runs on the reference versions
    for e in report["exercises"]:
        assert not e["passed"] and e["mistake"] is None and "not implemented yet" in e["message"], e


@pytest.mark.slow
def test_check_names_the_mistakes_in_a_broken_notebook(tmp_path):
    nb = nbformat.read(SOLUTIONS, as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.replace("/ math.sqrt(D)", "")  # attention without scaling
        cell.source = cell.source.replace(
            "x_BLE.view(B, L, n_heads, E // n_heads).transpose(1, 2)", "x_BLE.view(B, n_heads, L, E // n_heads)"
        )
    broken = tmp_path / "broken.ipynb"
    nbformat.write(nb, broken)
    report = _check(broken, tmp_path)
    mistakes = {e["name"]: e["mistake"] for e in report["exercises"] if not e["passed"]}
    assert mistakes == {"attention": "no_scaling", "split_heads": "split_without_transpose"}
    assert report["errors"] == []


@pytest.mark.slow
def test_the_circuits_solutions_run_top_to_bottom_and_pass_every_check(tmp_path):
    report = _check(notebook_paths("circuits")[1], tmp_path)
    assert report["errors"] == []
    assert [(e["name"], e["passed"]) for e in report["exercises"]] == [(n, True) for n in CIRCUIT_CHECKS]


@pytest.mark.slow
def test_check_names_the_mistakes_in_a_broken_circuits_notebook(tmp_path):
    nb = nbformat.read(notebook_paths("circuits")[1], as_version=4)
    for cell in nb.cells:  # patched the wrong way, and the attribution without the final norm's scale
        cell.source = cell.source.replace(
            "model.run_with_cache(clean_BL, names=[name])", "model.run_with_cache(corrupt_BL, names=[name])"
        )
        cell.source = cell.source.replace(
            "model.run_with_hooks(corrupt_BL, [(name, patch)])", "model.run_with_hooks(clean_BL, [(name, patch)])"
        )
        cell.source = cell.source.replace("(centred_PC / scale * ln_weight_C)", "(centred_PC * ln_weight_C)")
    broken = tmp_path / "broken.ipynb"
    nbformat.write(nb, broken)
    report = _check(broken, tmp_path)
    mistakes = {e["name"]: e["mistake"] for e in report["exercises"] if not e["passed"]}
    assert mistakes == {"patch_residual": "patched_backwards", "logit_attribution": "no_norm_scale"}


def test_check_grades_the_exercises_of_the_notebook_named(tmp_path):
    path = _notebook(tmp_path, "def logit_difference(logits_BLV, answer, wrong):\n    return logits_BLV[:, -1, answer]")
    nb = nbformat.read(path, as_version=4)
    nb.metadata["attnlab"] = {"notebook": "circuits"}  # as `attnlab notebook circuits` writes it
    nbformat.write(nb, path)
    report = json.loads(run_subprocess(["check", str(path), "--format", "json"], timeout=300).stdout)
    assert [e["name"] for e in report["exercises"]] == list(CIRCUIT_CHECKS)
    assert report["exercises"][0]["mistake"] == "logit_not_difference"
    proc = run_subprocess(["check", str(path), "--format", "csv", "--notebook", "lab"], timeout=300)
    assert proc.stdout.splitlines()[0] == ",".join(["notebook", "score", *EXERCISES, "errors"])


def test_attnlab_notebook_says_how_to_open_it_and_what_to_install_without_jupyterlab(tmp_path, monkeypatch):
    import shutil

    from attnlab.notebooks import how_to_open

    path = tmp_path / "lab.ipynb"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert (
        how_to_open(path)
        == f"JupyterLab is not installed here: pip install 'attnlab[student]', then: jupyter lab {path}"
    )
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/jupyter-lab" if name == "jupyter-lab" else None)
    assert how_to_open(path) == f"open it with: jupyter lab {path}"
