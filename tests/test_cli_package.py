"""The command line is thin: small modules, verbs that parse, call one library function and print, and
the flags several verbs share added once (`attnlab.cli.options.add_flags`), so the verbs that train take
the same ones."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import attnlab.cli
from attnlab.cli import build_parser
from attnlab.cli.options import GROUPS

from .conftest import run_cli

CLI = Path(attnlab.cli.__file__).parent
MAX_MODULE_LINES = 300
MAX_VERB_LINES = 25


def _verbs() -> dict[str, argparse.ArgumentParser]:
    """Every verb's parser ("seq2seq train" for the nested ones)."""

    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})

    out = {}
    for verb, parser in subparsers(build_parser()).items():
        out.update({f"{verb} {name}": nested for name, nested in subparsers(parser).items()} or {verb: parser})
    return out


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[-1]: a for a in parser._actions if a.option_strings}


def _verb_functions() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("cmd_"):
                found.append((f"{path.name}:{node.name}", node))
    return found


def test_no_cli_module_is_longer_than_300_lines():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in CLI.glob("*.py")}
    assert len(sizes) >= 7 and max(sizes.values()) <= MAX_MODULE_LINES, sizes


def test_each_verb_function_only_parses_calls_and_prints():
    """At most 25 lines each; no decision of their own: they raise nothing (the library says what is
    wrong) and hold no tensors (the cli package never imports torch)."""
    verbs = _verb_functions()
    assert len(verbs) == 25, [name for name, _ in verbs]  # every verb and seq2seq's four
    for name, fn in verbs:
        assert fn.end_lineno - fn.lineno + 1 <= MAX_VERB_LINES, name
        assert not any(isinstance(node, ast.Raise) for node in ast.walk(fn)), name
    for path in CLI.glob("*.py"):
        imports = [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Import)]
        assert not any(alias.name == "torch" for n in imports for alias in n.names), path.name


def test_every_verb_takes_threads_and_runs_a_function():
    for verb, parser in _verbs().items():
        assert "--threads" in _flags(parser), verb
        assert callable(parser.get_default("func")), verb


def test_the_verbs_that_train_take_the_same_training_and_model_flags():
    verbs = _verbs()
    for flag in (f for group in ("data", "model", "training") for f in GROUPS[group]):
        actions = [_flags(verbs[verb]).get(flag) for verb in ("train", "lab", "compare")]
        assert all(actions), flag
        kinds = {(a.type, a.default, a.choices, a.nargs, a.const, type(a).__name__) for a in actions}
        assert len(kinds) == 1, (flag, kinds)


def test_lab_set_changes_the_transformer_only(corpus_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lab"
    args = ["lab", "--data", str(corpus_file), "--set", "n_heads=8", "--steps", "2", "--out", str(out)]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "the Transformer is" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    tf, mlp = metrics["transformer"]["config"], metrics["mlp"]["config"]
    assert (tf["n_heads"], tf["positions"], tf["n_layers"]) == (8, "rope", 3)  # --set, after the recipe's changes
    assert mlp["n_heads"] == 4 and metrics["transformer"]["steps"] == metrics["mlp"]["steps"] == 2
    saved = json.loads((out / "transformer" / "checkpoint" / "config.json").read_text())
    assert saved["model"]["n_heads"] == 8
    assert "n_heads=8" in (out / "report.html").read_text()


def test_lab_set_is_refused_in_one_line_before_training(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lab"
    code, _, err = run_cli(["lab", "--set", "n_heads", "--steps", "2", "--out", str(out)], capsys)
    assert code == 2 and "expected key=value" in err and err.count("\n") == 1
    code, _, err = run_cli(["lab", "--set", "colour=red", "--steps", "2", "--out", str(out)], capsys)
    assert code == 2 and "no such config field" in err and err.count("\n") == 1
    assert not out.exists()


def test_compare_set_changes_every_variant(corpus_file: Path, tmp_path: Path, capsys) -> None:
    args = ["compare", "--data", str(corpus_file), "--preset", "lab", "--set", "n_layers=1", "--vary", "n_heads=1,2"]
    code, _, err = run_cli([*args, "--steps", "2", "--out", str(tmp_path / "c")], capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    assert [(r["config"]["n_heads"], r["config"]["n_layers"]) for r in results] == [(1, 1), (2, 1)]
