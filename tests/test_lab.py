"""End to end: `attnlab lab` trains both models and the Transformer wins.

The default budget is 120 s per model; these tests give each model 400 steps instead (about 40 s for
the Transformer here), so the result does not depend on how busy the machine is.
"""

import json
from pathlib import Path

import pytest

from .conftest import run_subprocess, tinystories_dir

BUDGET = ["--steps", "400"]
MIN_MARGIN_BPC = 0.4  # measured: about 1.4 (builtin) and 1.0 (TinyStories) after 400 steps


def _check_lab(out: Path, source: str) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    for kind in ("mlp", "transformer"):
        m = metrics[kind]
        assert isinstance(m["params"], int) and m["params"] > 0
        assert isinstance(m["val_bpc"], float) and 0.5 < m["val_bpc"] < 8
        assert m["tokens_per_s"] > 0 and len(m["samples"]) == len(metrics["prompts"])
        assert all(isinstance(s, str) and s for s in m["samples"])
    assert metrics["data"]["source"] == source
    assert metrics["data"]["train_chars"] > 1_000_000 and metrics["data"]["val_chars"] > 100_000
    assert metrics["mlp"]["val_bpc"] - metrics["transformer"]["val_bpc"] > MIN_MARGIN_BPC
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and f"{metrics['transformer']['params']:,}" in html
    assert (out / "loss_curves.png").stat().st_size > 20_000
    return metrics


@pytest.mark.slow
def test_lab_on_the_builtin_corpus_transformer_beats_mlp(tmp_path: Path) -> None:
    proc = run_subprocess(["lab", "--data", "builtin", *BUDGET, "--out", str(tmp_path)], timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout and "better than the MLP" in proc.stdout
    _check_lab(tmp_path, "builtin")


@pytest.mark.slow
def test_lab_on_tinystories_transformer_beats_mlp(tmp_path: Path) -> None:
    tinystories_dir()  # skips without the real text
    proc = run_subprocess(["lab", "--data", "tinystories", *BUDGET, "--out", str(tmp_path)], timeout=600)
    assert proc.returncode == 0, proc.stderr
    metrics = _check_lab(tmp_path, "tinystories")
    assert metrics["data"]["val_chars"] > 1_000_000


def test_lab_preset_lab_runs_the_exact_lab_sizes(tmp_path: Path, corpus_file: Path) -> None:
    proc = run_subprocess(
        ["lab", "--data", str(corpus_file), "--preset", "lab", "--steps", "60", "--out", str(tmp_path)], timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    cfg = metrics["transformer"]["config"]
    assert (cfg["emb_dim"], cfg["n_heads"], cfg["head_dim"], cfg["n_hidden"]) == (32, 4, 5, 128)
    assert metrics["mlp"]["steps"] == metrics["transformer"]["steps"] == 60
