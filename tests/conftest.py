"""Shared fixtures: a small story corpus on disk, a tiny model config, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnlab.cli import main
from attnlab.data.builtin_corpus import builtin_stories
from attnlab.data.corpus import join_stories


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Token caches go to a temporary folder, never to the user's home.
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    # A fixed thread count (here and in the processes tests start): a count adapted to whatever else the
    # machine runs would change rounding in the last bits, and the tests compare losses exactly.
    monkeypatch.setenv("ATTNLAB_THREADS", str(torch.get_num_threads()))


@pytest.fixture(scope="session")
def stories() -> list[str]:
    return builtin_stories(seed=1, n_chars=150_000)


@pytest.fixture
def corpus_file(tmp_path: Path, stories: list[str]) -> Path:
    """A TinyStories-format file (stories ending with <|endoftext|> lines) of about 150 kB."""
    path = tmp_path / "stories.txt"
    path.write_text(join_stories(stories))
    return path


TINY = ["--preset", "lab", "--set", "max_len=32"]


def tinystories_dir() -> Path:
    """The real TinyStories text named by $ATTNLAB_TINYSTORIES, or skip the test."""
    folder = os.environ.get("ATTNLAB_TINYSTORIES")
    if not folder or not (Path(folder) / "valid.txt").is_file():
        pytest.skip("ATTNLAB_TINYSTORIES is not set to a folder with train.txt and valid.txt (.ci/run sets it)")
    return Path(folder)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `attnlab ARGS` in this process; returns (exit status, stdout, stderr)."""
    try:
        code = main(args)
    except SystemExit as e:  # argparse usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(args: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "attnlab", *args], capture_output=True, text=True, timeout=timeout, **kw
    )


def _lab_run(tmp_path_factory: pytest.TempPathFactory, data: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`attnlab lab --data DATA` with 400 steps per model (about a minute here), in its own folder."""
    out = tmp_path_factory.mktemp(f"lab-{data}")
    env = {
        **os.environ,
        "ATTNLAB_CACHE": str(tmp_path_factory.mktemp("cache")),
        "ATTNLAB_THREADS": str(torch.get_num_threads()),
    }
    proc = run_subprocess(["lab", "--data", data, "--steps", "400", "--out", str(out)], timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="session")
def lab_builtin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One `attnlab lab` run on the built-in corpus, shared by the tests of its numbers and of its page."""
    return _lab_run(tmp_path_factory, "builtin")


@pytest.fixture(scope="session")
def lab_tinystories(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The same on the real TinyStories text (skipped without it)."""
    tinystories_dir()
    return _lab_run(tmp_path_factory, "tinystories")
