"""Every command: the success path (exit 0, real output) and its bad-input paths (one line, exit 2)."""

import json
from pathlib import Path

import pytest
import torch

from attnlab import generate_text, load_checkpoint

from .conftest import TINY, run_cli, run_subprocess


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, stories: list[str]) -> Path:
    from attnlab.cli import main
    from attnlab.data.corpus import join_stories

    root = tmp_path_factory.mktemp("run")
    data = root / "stories.txt"
    data.write_text(join_stories(stories))
    args = ["train", "--model", "transformer", *TINY, "--data", str(data), "--steps", "200", "--out", str(root / "r")]
    assert main(args) == 0
    return root


def _one_line_error(code: int, err: str) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_train_writes_checkpoint_and_metrics(run_dir: Path) -> None:
    ckpt = run_dir / "r" / "checkpoint"
    assert {p.name for p in ckpt.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "state.json",
        "optimizer.safetensors",
    }
    rows = [json.loads(x) for x in (run_dir / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 10 and "train_loss" in rows[0]
    assert rows[-1]["final"] and rows[-1]["val_bpc"] < 4.0
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model"]["max_len"] == 32 and config["tokenizer"] == {"kind": "bytes"}


def test_generate_prints_a_continuation(run_dir: Path, capsys) -> None:
    args = ["generate", str(run_dir / "r"), "--prompt", "Once upon a time", "--max-new-tokens", "50", "--seed", "1"]
    code, out, _ = run_cli(args, capsys)
    ckpt = load_checkpoint(run_dir / "r")
    expected = generate_text(ckpt.model, ckpt.tokenizer, "Once upon a time", 50, seed=1)
    assert code == 0 and out == expected + "\n"  # streamed piece by piece, same text as the API
    code, greedy, _ = run_cli([*args, "--greedy"], capsys)
    assert code == 0 and greedy != out


def test_generate_past_max_len_is_the_same_with_and_without_the_kv_cache(run_dir: Path, capsys) -> None:
    args = ["generate", str(run_dir / "r"), "--prompt", "Once upon a time", "--max-new-tokens", "80", "--greedy"]
    outs = {}
    for slide in ("1", "8"):
        code, cached, _ = run_cli([*args, "--slide", slide], capsys)
        code2, plain, _ = run_cli([*args, "--slide", slide, "--no-kv-cache"], capsys)
        assert code == code2 == 0 and cached == plain  # 96 tokens in a 32-token context
        outs[slide] = cached
    ckpt = load_checkpoint(run_dir / "r")
    ids = ckpt.tokenizer.encode("Once upon a time")
    expected = ckpt.model.generate(torch.tensor([ids]), 80, greedy=True, slide=1)[0, len(ids) :].tolist()
    assert outs["1"] == ckpt.tokenizer.decode(expected) + "\n"


def test_generate_a_file_of_prompts_together_as_each_alone(run_dir: Path, tmp_path: Path, capsys) -> None:
    prompts = ["Once upon a time", "Lily", "The dog said \u201chi\u201d", "a" * 100]  # curly quotes; a cropped one
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join([prompts[0], "", *prompts[1:]]) + "\n", encoding="utf-8")
    ckpt = load_checkpoint(run_dir / "r")
    base = ["generate", str(run_dir / "r"), "--prompts-file", str(path), "--max-new-tokens", "40"]
    for flags, fields in ((["--seed", "3"], {"seed": 3}), (["--greedy", "--batch-size", "3"], {"greedy": True})):
        code, out, err = run_cli([*base, *flags], capsys)
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["prompt"] for r in rows] == prompts  # the empty line is skipped
        for r in rows:
            assert r["continuation"] == generate_text(ckpt.model, ckpt.tokenizer, r["prompt"], 40, **fields)
        assert "prompt 4: " in err and "cropped to its last 32" in err


def test_generate_crops_long_prompt_with_notice(run_dir: Path, capsys) -> None:
    code, out, err = run_cli(["generate", str(run_dir / "r"), "--prompt", "a" * 100, "--max-new-tokens", "5"], capsys)
    assert code == 0 and "cropped to its last 32" in err


def test_eval_json_on_the_validation_split_and_whole_file(run_dir: Path, capsys) -> None:
    data = str(run_dir / "stories.txt")
    code, out, _ = run_cli(["eval", str(run_dir / "r"), "--data", data, "--format", "json"], capsys)
    valid = json.loads(out)
    assert code == 0 and set(valid) >= {"loss_nats_per_char", "bpc", "chars"}
    final = json.loads((run_dir / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert valid["bpc"] == pytest.approx(final["val_bpc"], rel=1e-6)  # the same measurement as training's
    assert valid["loss_nats_per_char"] * 1.4426950408889634 == pytest.approx(valid["bpc"])
    code, out, _ = run_cli(["eval", str(run_dir / "r"), "--data", data, "--split", "all", "--format", "json"], capsys)
    whole = json.loads(out)
    assert whole["chars"] > 9 * valid["chars"]


def test_resume_continues_to_more_steps(run_dir: Path, capsys, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(run_dir / "r", tmp_path / "r")
    code, _, err = run_cli(
        ["train", "--out", str(tmp_path / "r"), "--data", str(run_dir / "stories.txt"), "--resume", "--steps", "220"],
        capsys,
    )
    assert code == 0, err
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if not r.get("final")][-2:] == [210, 220] and rows[-1]["step"] == 220


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "missing.txt", "--steps", "5", "--out", "{tmp}/x"], "no such file or folder"),
        (["train", "--data", "{tmp}/empty.txt", "--steps", "5", "--out", "{tmp}/x"], "empty"),
        (
            ["train", "--data", "{tmp}/short.txt", *TINY, "--steps", "5", "--out", "{tmp}/x"],
            "fewer than one training window",
        ),
        (["train", "--data", "builtin", "--out", "{tmp}/x"], "--steps N and/or --max-time"),
        (["train", "--data", "builtin", "--steps", "0", "--out", "{tmp}/x"], "--steps 0"),
        (["train", "--preset", "huge", "--steps", "5", "--out", "{tmp}/x"], "unknown preset 'huge'"),
        (["train", "--set", "n_heads", "--steps", "5", "--out", "{tmp}/x"], "expected key=value"),
        (["train", "--set", "n_heads=0", "--steps", "5", "--out", "{tmp}/x"], "n_heads=0"),
        (["train", "--set", "colour=red", "--steps", "5", "--out", "{tmp}/x"], "no such config field"),
        (["train", "--tokenizer", "bpe", "--steps", "5", "--out", "{tmp}/x"], "unknown tokenizer"),
        (["train", "--device", "cuda:7", "--steps", "5", "--out", "{tmp}/x"], "--device cuda:7"),
        (["train", "--resume", "--out", "{tmp}/nothing"], "no such checkpoint"),
        (["train", "--model", "rnn", "--steps", "5", "--out", "{tmp}/x"], "invalid choice"),
        (["train", "--steps", "five", "--out", "{tmp}/x"], "invalid int value"),
        (["lab", "--data", "missing.txt", "--out", "{tmp}/x"], "no such file or folder"),
        (["lab", "--max-time", "-1", "--out", "{tmp}/x"], "--max-time -1"),
        (["generate", "{tmp}/nothing", "--prompt", "x"], "no such checkpoint"),
        (["generate", "{tmp}", "--prompt", "x"], "not a checkpoint"),
        (["generate", "{run}", "--prompt", ""], "empty prompt"),
        (["generate", "{run}", "--prompt", "x", "--temperature", "0"], "--temperature 0"),
        (["generate", "{run}", "--prompt", "x", "--top-p", "1.5"], "--top-p 1.5"),
        (["generate", "{run}", "--prompt", "x", "--top-k", "0"], "--top-k 0"),
        (["generate", "{run}", "--prompt", "x", "--max-new-tokens", "-1"], "--max-new-tokens -1"),
        (["generate", "{run}", "--prompt", "x", "--slide", "0"], "--slide 0"),
        (["train", "--optimizer", "sgd", "--steps", "5", "--out", "{tmp}/x"], "invalid choice"),
        (["train", "--min-lr-ratio", "2", "--steps", "5", "--out", "{tmp}/x"], "--min-lr-ratio 2.0: must be between"),
        (["train", "--embed-lr-ratio=-1", "--steps", "5", "--out", "{tmp}/x"], "--embed-lr-ratio -1.0: must be"),
        (["train", "--schedule", "cyclic", "--steps", "5", "--out", "{tmp}/x"], "invalid choice"),
        (["generate", "{corrupt}", "--prompt", "x"], "config.json: not valid JSON"),
        (["eval", "{run}", "--data", "missing.txt"], "no such file or folder"),
        (["eval", "{nothing}", "--data", "builtin"], "no such checkpoint"),
        (["eval", "{run}", "--data", "builtin", "--split", "test"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, run_dir: Path, tmp_path: Path, capsys) -> None:
    import shutil

    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("tiny\n<|endoftext|>\nstory\n<|endoftext|>\n")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run_dir / "r" / "checkpoint", corrupt)
    (corrupt / "config.json").write_text("{not json")
    subst = {
        "{tmp}": str(tmp_path),
        "{run}": str(run_dir / "r"),
        "{corrupt}": str(corrupt),
        "{nothing}": str(tmp_path / "nothing"),
    }
    for key, value in subst.items():
        args = [a.replace(key, value) for a in args]
    code, _, err = run_cli(args, capsys)
    line = _one_line_error(code, err)
    assert message in line
    assert not (tmp_path / "x" / "checkpoint").exists()  # nothing half-written


def test_console_entry_point_runs_as_a_module(run_dir: Path) -> None:
    proc = run_subprocess(["generate", str(run_dir / "r"), "--prompt", "", "--max-new-tokens", "3"], timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "empty prompt" in proc.stderr
    proc = run_subprocess(["generate", str(run_dir / "r"), "--prompt", "One day", "--max-new-tokens", "3"], timeout=120)
    assert proc.returncode == 0 and len(proc.stdout) == 4


def test_info_works_from_a_source_tree_that_is_not_installed(monkeypatch, capsys):
    """PYTHONPATH=src python -m attnlab info: no package metadata, the version from the package itself."""
    import importlib.metadata

    import attnlab

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    code, out, err = run_cli(["info", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["attnlab"] == attnlab.__version__, err


def test_serve_without_the_explorer_extra_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as where `pip install attnlab` left it out
    monkeypatch.delitem(sys.modules, "attnlab.explorer.app", raising=False)
    code, _, err = run_cli(["serve", str(tmp_path)], capsys)
    assert code == 2 and "pip install 'attnlab[explorer]'" in err and err.count("\n") == 1, err


def test_train_takes_the_best_recipe_s_schedule_flags(tmp_path: Path, capsys) -> None:
    from attnlab.training.checkpoint import load_checkpoint

    args = ["train", "--steps", "3", "--preset", "lab", "--out", str(tmp_path / "r"), "--optimizer", "muon"]
    flags = ["--min-lr-ratio", "0", "--embed-lr-ratio", "3", "--schedule", "wsd"]
    code, _, err = run_cli(args + flags, capsys)
    assert code == 0, err
    saved = load_checkpoint(tmp_path / "r", with_state=True).state["train"]
    assert (saved["min_lr_ratio"], saved["embed_lr_ratio"], saved["schedule"]) == (0.0, 3.0, "wsd")
