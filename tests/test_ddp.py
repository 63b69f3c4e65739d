"""Data-parallel training under torchrun (gloo on CPU): same losses as one process with the same
global batch, and a checkpoint from two processes resumes in one."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ARGS = ["--preset", "lab", "--set", "max_len=32", "--eval-every", "10", "--seed", "3"]


def _train(corpus: Path, out: Path, procs: int, batch: int, steps: int, *extra: str) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    cmd = [
        *(launcher if procs > 1 else [sys.executable]),
        "-m",
        "attnlab",
        "train",
        "--data",
        str(corpus),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--batch-size",
        str(batch),
        *ARGS,
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_curve(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], abs=1e-5), (ra["step"], key)


def test_two_processes_give_the_single_process_loss_curve(corpus_file: Path, tmp_path: Path) -> None:
    _train(corpus_file, tmp_path / "one", 1, 16, 20, "--set", "dropout=0.0")
    _train(corpus_file, tmp_path / "two", 2, 8, 20, "--set", "dropout=0.0")
    _train(corpus_file, tmp_path / "accum", 1, 4, 20, "--grad-accum", "4", "--set", "dropout=0.0")
    one = _rows(tmp_path / "one")
    assert len(one) == 3 and one[-1]["final"]
    _assert_same_curve(one, _rows(tmp_path / "two"))
    _assert_same_curve(one, _rows(tmp_path / "accum"))


def test_a_two_process_checkpoint_resumes_in_one_process(corpus_file: Path, tmp_path: Path) -> None:
    _train(corpus_file, tmp_path / "one", 1, 16, 10)
    _train(corpus_file, tmp_path / "two", 2, 8, 10)
    for run in ("one", "two"):  # both continue to step 20 in a single process
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "attnlab",
                "train",
                "--out",
                str(tmp_path / run),
                "--resume",
                "--steps",
                "20",
                "--data",
                str(corpus_file),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((tmp_path / "two" / "checkpoint" / "state.json").read_text())
    assert state["train"]["batch_size"] == 16 and state["world_size"] == 1  # the global batch was kept
    _assert_same_curve(_rows(tmp_path / "one"), _rows(tmp_path / "two"))


SEQ2SEQ = """
import sys
from attnlab.training.seq2seq_run import train_seq2seq
out, batch = sys.argv[1], int(sys.argv[2])
config = {"emb_dim": 32, "n_hidden": 64, "n_layers": 2, "head_dim": 8, "dropout": 0.0}
train_seq2seq(out, task="copy", steps=20, batch_size=batch, eval_every=10, log_every=5, config=config, seed=3)
"""


def test_the_encoder_decoder_trains_in_two_processes_as_in_one(tmp_path: Path) -> None:
    script = tmp_path / "train_seq2seq.py"
    script.write_text(SEQ2SEQ)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for cmd in (
        [sys.executable, str(script), str(tmp_path / "one"), "16"],
        [*launcher, str(script), str(tmp_path / "two"), "8"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert one[-1]["final"] and [r["kind"] for r in one] == [r["kind"] for r in two]
    _assert_same_curve(one, two)
    assert one[-1]["exact_match"] == two[-1]["exact_match"]
