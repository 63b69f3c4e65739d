"""`attnlab seq2seq train` under the faults the language models' commands are tested with: Ctrl-C as it
starts and mid-run (exit 130, a checkpoint that eval and translate load, `--resume` to the losses of an
uninterrupted run), kill -9 during saves, a loss that stops being a number, and the new flags."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from attnlab.training.checkpoint import check_checkpoint

from .conftest import run_cli
from .test_faults import COMMAND, _ctrl_c_as_in_a_terminal, _interrupt_when, _one_line_130, kill_during_saves

SMALL = ["--set", "emb_dim=32", "--set", "n_hidden=64", "--set", "n_layers=1", "--set", "head_dim=8"]


def _train(out: Path, *options: str) -> list[str]:
    return ["seq2seq", "train", "--task", "reverse", *SMALL, "--batch-size", "16", *options, "--out", str(out)]


def _rows(out: Path) -> list[dict]:
    """The log without its wall-clock fields."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in ("elapsed_s", "tokens_per_s")} for x in lines]


def _saved_step(out: Path) -> int:
    return check_checkpoint(out)[3]["step"]


def test_ctrl_c_while_seq2seq_train_starts_is_one_line_and_exit_130(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [COMMAND, *_train(tmp_path / "r", "--steps", "100000")],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    time.sleep(0.5)  # Python is up and torch is still loading
    proc.send_signal(2)
    assert "interrupted" in _one_line_130(proc)


@pytest.mark.slow
def test_ctrl_c_mid_run_leaves_a_run_that_translates_and_resumes_to_the_uninterrupted_losses(
    tmp_path: Path, capsys
) -> None:
    steps = ["--steps", "400", "--eval-every", "20"]
    cut = _train(tmp_path / "cut", *steps)
    proc = subprocess.Popen([COMMAND, *cut], stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal)
    line = _interrupt_when(tmp_path / "cut" / "checkpoint", proc)
    assert "run the same command with --resume" in line, line
    stopped = _saved_step(tmp_path / "cut")
    assert 0 < stopped < 400 and f"interrupted at step {stopped}" in line

    code, out, err = run_cli(["seq2seq", "eval", str(tmp_path / "cut"), "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["examples"] == 1000, err
    code, out, err = run_cli(["seq2seq", "translate", str(tmp_path / "cut"), "--text", "abcdef"], capsys)
    assert code == 0 and len(out.splitlines()) == 1, err  # the translation alone

    code, _, err = run_cli([*cut, "--resume"], capsys)
    assert code == 0, err
    assert run_cli(_train(tmp_path / "whole", *steps), capsys)[0] == 0
    rows = _rows(tmp_path / "cut")
    assert rows == _rows(tmp_path / "whole")
    assert {"step", "train_loss"} <= rows[0].keys() and rows[-1]["kind"] == "final" and rows[-1]["step"] == 400


@pytest.mark.slow
def test_kills_during_saves_always_leave_a_checkpoint_that_resumes(tmp_path: Path, capsys) -> None:
    """Saving every step, killed with SIGKILL at 5 different moments: each time the run resumes."""
    out = tmp_path / "r"
    args = _train(out, "--eval-every", "1")
    assert run_cli([*args, "--steps", "1"], capsys)[0] == 0
    kill_during_saves(args, out, lambda: _saved_step(out), times=5, pause=0.004)
    code, _, err = run_cli([*args, "--steps", str(_saved_step(out) + 2), "--resume"], capsys)
    assert code == 0, err
    assert not list(out.glob(".checkpoint.tmp*")), "killed saves' temporary folders are cleaned up"
    code, text, err = run_cli(["seq2seq", "translate", str(out), "--text", "abc"], capsys)
    assert code == 0 and len(text.splitlines()) == 1, err


def test_a_diverging_seq2seq_run_exits_1_with_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(_train(tmp_path / "r", "--steps", "30", "--lr", "1e30", "--eval-every", "1000"), capsys)
    last = err.strip().splitlines()[-1]  # after the notice that training started
    assert code == 1 and last.startswith("attnlab seq2seq: error: the training loss became"), err
    assert "Traceback" not in err and "lower --lr" in last, err


@pytest.mark.parametrize(
    "options",
    [
        ["--optimizer", "muon"],
        ["--dtype", "bf16"],
        ["--grad-accum", "2"],
        ["--schedule", "wsd", "--min-lr-ratio", "0", "--embed-lr-ratio", "0.5"],
        ["--schedule", "noam", "--warmup-steps", "4", "--label-smoothing", "0.1"],
    ],
    ids=lambda options: " ".join(options),
)
def test_the_training_flags_reach_the_run(tmp_path: Path, capsys, options: list[str]) -> None:
    code, _, err = run_cli(_train(tmp_path / "r", "--steps", "6", "--eval-every", "3", *options), capsys)
    assert code == 0, err
    state = check_checkpoint(tmp_path / "r")[3]
    given = dict(zip(options[::2], options[1::2], strict=True))
    train = state["train"]
    for flag, value in given.items():
        key = flag.lstrip("-").replace("-", "_")
        saved = train[key] if key in train else state[key]  # label_smoothing is the run's, not TrainConfig's
        assert str(saved) == value or float(saved) == float(value), (flag, saved)
    assert [(r["kind"], r["step"]) for r in _rows(tmp_path / "r") if r["kind"] != "train"] == [
        ("eval", 3),
        ("final", 6),
    ]
