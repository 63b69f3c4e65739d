"""Pages made from the code when the site is built (mkdocs-gen-files), so they cannot drift from it:
every command and flag from the argparse parser itself, every model config field from the dataclass
(its type, default and the comment beside it), and every named mistake from the catalogue."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from pathlib import Path

import mkdocs_gen_files

from attnlab import __version__
from attnlab.cli import build_parser
from attnlab.exercises import CHECKS, CIRCUIT_CHECKS, MISTAKES
from attnlab.exercises import mistakes as catalogue
from attnlab.models.config import CHOICES, ModelConfig


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _verb(name: str, parser: argparse.ArgumentParser, lines: list[str]) -> None:
    lines += [f"## `attnlab {name}`", ""]
    if parser.description:
        lines += [parser.description, ""]
    lines += ["```", parser.format_usage().strip(), "```", ""]
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flags = ", ".join(f"`{f}`" for f in action.option_strings) or f"`{action.dest}`"
        default = (
            "" if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings else action.default
        )
        choices = " \\| ".join(map(str, action.choices)) if action.choices else ""
        rows.append(f"| {flags} | {_cell(action.help or '')} | {_cell(choices)} | {_cell(default)} |")
    if rows:
        lines += ["| flag | what it does | choices | default |", "|---|---|---|---|", *rows, ""]


def cli_page() -> str:
    lines = [
        "# Command line",
        "",
        f"Every verb of `attnlab` {__version__} and every flag, read from the parser itself when this site is built.",
        "Bad input is one line on stderr and exit status 2.",
        "",
    ]
    for name, parser in _subparsers(build_parser()).items():
        nested = _subparsers(parser)
        if nested:
            for sub, sub_parser in nested.items():
                _verb(f"{name} {sub}", sub_parser, lines)
        else:
            _verb(name, parser, lines)
    return "\n".join(lines)


def _field_comments() -> dict[str, str]:
    """Each field's comment in the dataclass's source, with the comment lines that go on with it (in lower
    case; a capitalised comment line heads the fields after it)."""
    comments: dict[str, str] = {}
    last = None
    for line in inspect.getsource(ModelConfig).splitlines():
        if m := re.match(r"\s+(\w+): [^=]+=[^#]*#\s*(.*)$", line):
            last = m.group(1)
            comments[last] = m.group(2)
        elif (m := re.match(r"\s+#\s*([a-z\"].*)$", line)) and last is not None:  # a comment going on
            comments[last] += " " + m.group(1)
        elif line.strip() and not line.strip().startswith("#"):
            last = None
    return comments


def config_page() -> str:
    comments = _field_comments()
    lines = [
        "# Model config fields",
        "",
        "Every field of `attnlab.ModelConfig`, read from the dataclass when this site is built. On the command",
        "line, `--set FIELD=VALUE` changes one (`attnlab train --set n_heads=8 --set positions=rope`); in",
        'Python, `preset_config("small", n_heads=8)` or `config.with_overrides({...})`.',
        "",
        "| field | type | default | choices | meaning |",
        "|---|---|---|---|---|",
    ]
    for field in dataclasses.fields(ModelConfig):
        choices = " \\| ".join(CHOICES.get(field.name, ()))
        kind = field.type if isinstance(field.type, str) else field.type.__name__
        lines.append(
            f"| `{field.name}` | {kind} | `{field.default}` | {choices} | {_cell(comments.get(field.name, ''))} |"
        )
    return "\n".join(lines) + "\n"


def mistakes_page() -> str:
    notebook = {name: "lab" for name in CHECKS} | {name: "circuits" for name in CIRCUIT_CHECKS}
    exercises = {f"{name} ({notebook[name]})": wrong for name, wrong in catalogue.WRONG_VERSIONS.items()}
    where: dict[str, list[str]] = {}
    for exercise, wrong in exercises.items():
        for mistake, _ in wrong:
            if exercise not in where.setdefault(mistake, []):
                where[mistake].append(exercise)
    lines = [
        "# The named mistakes",
        "",
        "Every mistake a check can name, read from `attnlab.exercises.MISTAKES` when this site is built: what",
        "the code does wrong and how to fix it. The lab's exercises are "
        + ", ".join(f"`{n}`" for n in CHECKS)
        + "; the circuits notebook's "
        + ", ".join(f"`{n}`" for n in CIRCUIT_CHECKS)
        + ".",
        "",
        "The last column names the exercises whose check compares a function with a wrong version that makes",
        "the mistake; the others are recognised from the output itself (the mask's entries, a sampler's",
        "draws, a tensor's shape).",
        "",
        "| mistake | what it means | the fix | wrong versions in |",
        "|---|---|---|---|",
    ]
    for mistake_id, mistake in MISTAKES.items():
        found_in = ", ".join(where.get(mistake_id, []))
        lines.append(f"| `{mistake_id}` | {_cell(mistake.what)} | {_cell(mistake.fix)} | {found_in} |")
    return "\n".join(lines) + "\n"


with open(Path(__file__).parent.parent / "CHANGELOG.md", encoding="utf-8") as changelog:
    changes = changelog.read()

for path, text in (
    ("changelog.md", changes),
    ("reference/cli.md", cli_page()),
    ("reference/config.md", config_page()),
    ("reference/mistakes.md", mistakes_page()),
):
    with mkdocs_gen_files.open(path, "w") as f:
        f.write(text)
