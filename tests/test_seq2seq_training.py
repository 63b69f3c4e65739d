"""The encoder-decoder trains through the language models' loop: checkpoints, exact resume, evaluation
rows, Ctrl-C, the NaN stop, and the loop's options (Muon, bf16, more processes' batch split)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnlab.data.tasks import held_out_pairs
from attnlab.errors import AttnlabError
from attnlab.models import Seq2SeqTransformer
from attnlab.training.checkpoint import check_checkpoint
from attnlab.training.seq2seq_run import (
    Translation,
    evaluate_seq2seq,
    load_data,
    load_seq2seq,
    resume_seq2seq,
    seq2seq_config,
    train_seq2seq,
    translate,
)
from attnlab.training.train import TrainConfig, TrainingDiverged, TrainingInterrupted, fit

from .test_faults import ctrl_c_once_saved

SMALL = {"emb_dim": 32, "n_hidden": 64, "n_layers": 2, "head_dim": 8}
FAST = dict(config=SMALL, batch_size=16, eval_every=10, log_every=5, device="cpu")
FIXTURE = Path(__file__).parent / "fixtures" / "seq2seq_eb51d9a" / "reverse"


def _rows(out: Path) -> list[dict]:
    """The log without the wall-clock fields."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in ("elapsed_s", "tokens_per_s")} for x in lines]


def _stop_at(step: int):
    return lambda at, row: at == step


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    """A parallel text of 400 pairs (reversed words), so the training passes over it several times."""
    words = [f"{a}{b}{c}{d}" for a in "abcde" for b in "abcd" for c in "abcde" for d in "ab"]
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words))
    return path


@pytest.mark.parametrize("source", ["task", "file"])
def test_an_interrupted_run_resumes_to_the_losses_of_one_uninterrupted_run(tmp_path: Path, source, request):
    where = {"task": "reverse"} if source == "task" else {"data": str(request.getfixturevalue("pairs_file"))}
    steps = 60 if source == "file" else 30  # the file's 300-odd train pairs: several shuffled passes
    whole = train_seq2seq(tmp_path / "whole", steps=steps, **where, **FAST)
    with pytest.raises(TrainingInterrupted, match="run the same command with --resume"):
        train_seq2seq(tmp_path / "cut", steps=steps, callback=_stop_at(13), **where, **FAST)
    resumed = resume_seq2seq(tmp_path / "cut")
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "whole")
    assert resumed.steps == whole.steps == steps and resumed.final == whole.final
    a, b = (load_seq2seq(tmp_path / d).model.state_dict() for d in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_log_has_training_rows_evaluations_and_a_final_row(tmp_path: Path):
    train_seq2seq(tmp_path / "r", task="copy", steps=20, **FAST)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    # The last step's evaluation is the final one, over the whole test split.
    assert [(r["kind"], r["step"]) for r in rows] == [
        ("train", 5),
        ("eval", 10),
        ("train", 15),
        ("train", 20),
        ("final", 20),
    ]
    assert all(isinstance(r["train_loss"], float) for r in rows)
    evaluation, final = rows[1], rows[-1]
    assert evaluation["examples"] == 200 and 0 <= evaluation["exact_match"] <= 1 and evaluation["val_loss"] > 0
    assert final["examples"] == 1000 and final["exact_match"] == evaluate_seq2seq(tmp_path / "r")["exact_match"]


def test_a_checkpoint_every_eval_every_steps_that_translates(tmp_path: Path):
    with pytest.raises(TrainingInterrupted):
        train_seq2seq(tmp_path / "r", task="reverse", steps=100, callback=_stop_at(25), **FAST)
    _, _, _, state = check_checkpoint(tmp_path / "r")
    assert state["step"] == 25 and state["kind"] == "seq2seq" and "optimizer" in state
    source = held_out_pairs("reverse")[0][0]
    assert translate(tmp_path / "r", [source]) == translate(tmp_path / "r", [source])  # it loads and decodes


def test_ctrl_c_in_the_final_evaluation_keeps_the_trained_steps(tmp_path: Path):
    out = tmp_path / "r"

    with ctrl_c_once_saved(out, poll=0.005, settle=0.1):  # the save before the final evaluation is the run's first
        with pytest.raises(TrainingInterrupted, match="during the final evaluation") as caught:
            # An untrained decoder runs to max_len on the 1,000 test pairs: seconds of final evaluation.
            train_seq2seq(out, task="reverse", steps=3, **{**FAST, "eval_every": 10**6})
    assert caught.value.step == 3 and check_checkpoint(out)[3]["step"] == 3


def test_a_loss_that_stops_being_a_number_keeps_the_last_good_checkpoint(tmp_path: Path):
    data = load_data("reverse")
    torch.manual_seed(0)
    model = Seq2SeqTransformer(seq2seq_config(data.vocab, overrides=SMALL))

    def overflow_after_step_12(step: int, row: dict) -> None:  # a fault in the weights, as an overflow makes
        if step == 12:
            with torch.no_grad():
                next(p for n, p in model.named_parameters() if "embed" in n).fill_(float("inf"))

    tcfg = TrainConfig(steps=40, batch_size=16, eval_every=10, weight_decay=0.0)
    saved_at_10 = {}

    def watch(step: int, row: dict) -> None:
        if step == 10:
            saved_at_10.update({k: v.clone() for k, v in model.state_dict().items()})
        overflow_after_step_12(step, row)

    with pytest.raises(TrainingDiverged, match="at step 13") as caught:
        fit(
            model,
            Translation(data),
            tcfg,
            tmp_path / "r",
            None,
            {"kind": "seq2seq", "task": "reverse", "data": None, "vocab": data.vocab.to_dict()},
            callback=watch,
            desc="seq2seq",
        )
    assert "the last good checkpoint (step 10)" in str(caught.value)
    kept = load_seq2seq(tmp_path / "r").model.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in saved_at_10.items())


@pytest.mark.parametrize(
    ("option", "value"), [("optimizer", "muon"), ("dtype", "bf16"), ("schedule", "noam"), ("grad_accum", 2)]
)
def test_the_loops_options_train_the_encoder_decoder(tmp_path: Path, option, value):
    fields = {**FAST, option: value, "batch_size": 8 if option == "grad_accum" else 16}
    result = train_seq2seq(tmp_path / "r", task="copy", steps=12, **fields)
    first, last = _rows(tmp_path / "r")[0], _rows(tmp_path / "r")[-1]
    assert result.steps == 12 and last["train_loss"] < first["train_loss"]
    assert json.loads((tmp_path / "r" / "checkpoint" / "state.json").read_text())["train"][option] == value


def test_accumulating_gives_the_same_losses_as_one_big_batch(tmp_path: Path):
    fields = {**FAST, "config": {**SMALL, "dropout": 0.0}}
    train_seq2seq(tmp_path / "one", task="copy", steps=10, **{**fields, "batch_size": 16})
    train_seq2seq(tmp_path / "four", task="copy", steps=10, **{**fields, "batch_size": 4, "grad_accum": 4})
    one, four = _rows(tmp_path / "one"), _rows(tmp_path / "four")
    for a, b in zip(one, four, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)


def test_a_run_from_before_the_one_loop_translates_but_cannot_resume(tmp_path: Path):
    import shutil

    shutil.copytree(FIXTURE, tmp_path / "old")
    with pytest.raises(AttnlabError, match="saved by an earlier attnlab without its optimizer"):
        resume_seq2seq(tmp_path / "old", steps=40)
    assert len(translate(tmp_path / "old", ["abc"])) == 1
