"""The documentation site: `mkdocs build --strict` passes (a broken link, a missing page or any warning
fails), its generated pages hold every verb, config field and named mistake, every `attnlab ...`
command shown in its pages parses with the real parser, and the site opens from disk in Chromium,
where its search finds "causal mask"."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from attnlab.cli import build_parser
from attnlab.exercises import MISTAKES
from attnlab.models import ModelConfig

from .pages import launch, needs_chromium, open_offline

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("mkdocs", reason="the site needs the test extras: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "DISABLE_MKDOCS_2_WARNING": "true"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _text(page: Path) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def test_the_generated_pages_hold_every_verb_field_and_mistake(site: Path) -> None:
    cli, config, mistakes = (_text(site / "reference" / f"{name}.html") for name in ("cli", "config", "mistakes"))
    for verb in ("lab", "train", "generate", "patch", "attribute", "heads", "check", "notebook", "seq2seq train"):
        assert f"attnlab {verb}" in cli, verb
    for flag in ("--prompts-file", "--tf32", "--notebook", "--over"):
        assert flag in cli, flag
    for field in dataclasses.fields(ModelConfig):
        assert f" {field.name} " in config, field.name
    for mistake_id, mistake in MISTAKES.items():
        assert mistake_id in mistakes and " ".join(mistake.what.split()[:4]) in mistakes, mistake_id


def test_one_version_in_the_changelog_the_site_and_attnlab_info(site: Path, capsys) -> None:
    from attnlab import __version__
    from attnlab.cli import main

    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.findall(r"^## (\S+)", changelog, re.M)[0] == __version__  # the newest section is this version
    assert f"attnlab {__version__}" in _text(site / "reference" / "cli.html")
    assert f"## {__version__}".lstrip("# ") in _text(site / "changelog.html")
    assert main(["info"]) == 0 and capsys.readouterr().out.startswith(f"attnlab {__version__},")


def _commands_shown() -> list[str]:
    """Every line of a code block in the hand-written pages that runs attnlab."""
    commands = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for block in re.findall(r"```(?:bash|console)?\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            commands += [line.strip() for line in block.splitlines() if line.strip().startswith("attnlab ")]
    return commands


def test_every_command_shown_parses_with_the_real_parser() -> None:
    commands = _commands_shown()
    assert len(commands) >= 5
    parser = build_parser()
    for line in commands:
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit as e:
            pytest.fail(f"the site shows a command the parser refuses ({e.code}): {line}")


@needs_chromium
def test_the_site_opens_from_disk_and_its_search_finds_causal_mask(site: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright")
    with playwright.sync_playwright() as p:
        browser = launch(p)
        try:
            with open_offline(browser, site / "index.html") as seen:
                assert seen.blocked == [] and seen.errors == []
                assert "attnlab lab" in seen.text("article")
                assert seen.broken_images() == []
                seen.page.keyboard.press("/")  # the site's shortcut to the search box, as a reader opens it
                seen.page.keyboard.type("causal mask")
                seen.page.wait_for_selector(".md-search-result__item", timeout=15_000)
                results = " ".join(seen.texts(".md-search-result__item"))
                assert "mask" in results.lower() and "named mistakes" in results.lower(), results
        finally:
            browser.close()
