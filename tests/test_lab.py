"""End to end: `attnlab lab` trains both models and the Transformer wins.

The default budget is 150 s per model; these tests give each model 400 steps instead (about 30 s for
the Transformer here; the runs are conftest's `lab_builtin` and `lab_tinystories`, whose pages
tests/test_pages_browser.py checks), so the result does not depend on how busy the machine is.
"""

import json
from pathlib import Path

import pytest

from .conftest import run_subprocess

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
    assert metrics["recipe"]["name"] == "fast" and metrics["transformer"]["config"]["positions"] == "rope"
    assert 0.5 < metrics["transformer"]["known_words"] <= 1 and metrics["mlp"]["known_words"] < 1
    lesson = metrics["positions_lesson"]
    assert lesson["val_bpc_without_positions"] > lesson["val_bpc"] + 0.1  # order matters to the trained model
    html = (out / "report.html").read_text()
    assert "Why position embeddings" in html and "Recipe" in html
    assert "data:image/png;base64," in html and f"{metrics['transformer']['params']:,}" in html
    assert (out / "loss_curves.png").stat().st_size > 20_000
    return metrics


@pytest.mark.slow
def test_lab_on_the_builtin_corpus_transformer_beats_mlp(lab_builtin) -> None:
    out, proc = lab_builtin
    assert "report:" in proc.stdout and "better than the MLP" in proc.stdout
    _check_lab(out, "builtin")


@pytest.mark.slow
def test_lab_on_tinystories_transformer_beats_mlp(lab_tinystories) -> None:
    metrics = _check_lab(lab_tinystories[0], "tinystories")
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


@pytest.mark.parametrize(
    ("recipe", "positions", "layers", "optimizer"), [("fast", "rope", 3, "muon"), ("classic", "learned", 4, "adamw")]
)
def test_the_recipe_decides_how_the_default_model_trains(
    recipe: str, positions: str, layers: int, optimizer: str, tmp_path: Path, corpus_file: Path
) -> None:
    from attnlab.apps.lab import run_lab

    metrics = run_lab(str(corpus_file), tmp_path, max_time=None, steps=3, recipe=recipe, sample_tokens=8)
    cfg = metrics["transformer"]["config"]
    assert (cfg["positions"], cfg["n_layers"], metrics["recipe"]["train"]["optimizer"]) == (
        positions,
        layers,
        optimizer,
    )
    assert metrics["mlp"]["config"]["n_layers"] == 4  # the MLP baseline keeps the preset's sizes (it has no blocks)
    assert json.loads((tmp_path / "mlp" / "checkpoint" / "state.json").read_text())["train"]["optimizer"] == optimizer


def test_the_fast_recipe_resumes_exactly_and_traces(tmp_path: Path, corpus_file: Path) -> None:
    from attnlab.apps.lab import RECIPES
    from attnlab.inspect.trace import trace
    from attnlab.training import run
    from attnlab.training.train import TrainingInterrupted

    fast = RECIPES["fast"]
    settings = {
        "data": str(corpus_file),
        "config": {**fast.transformer, "max_len": 32},
        "steps": 24,
        "batch_size": 4,
        "eval_every": 8,
        "log_every": 4,
        **fast.train,
    }
    whole = run.start(tmp_path / "whole", **settings)
    with pytest.raises(TrainingInterrupted):
        run.start(tmp_path / "cut", **settings, callback=lambda step, row: step == 10)
    resumed = run.resume(tmp_path / "cut")

    def rows(out: Path) -> list[dict]:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in ("elapsed_s", "tokens_per_s")} for x in lines]

    assert rows(tmp_path / "cut") == rows(tmp_path / "whole") and resumed.final.loss == whole.final.loss
    tr = trace(resumed.model, resumed.tokenizer.encode("Once upon a time"))
    assert tr.max_abs_diff < 1e-5 and all(s.cache_diff < 1e-5 for s in tr.steps if s.cache_diff is not None)
