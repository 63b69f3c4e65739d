import dataclasses
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attnlab.data.corpus import prepare_data
from attnlab.errors import AttnlabError
from attnlab.models import build_model, preset_config
from attnlab.training.checkpoint import load_checkpoint, save_checkpoint
from attnlab.training.train import TrainConfig, TrainingInterrupted, cosine_lr, evaluate, scheduled_lr, train

from .conftest import TINY, run_cli


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s")} for r in rows]


def _setup(corpus_file: Path, dropout: float = 0.1):
    prepared = prepare_data(str(corpus_file))
    torch.manual_seed(0)
    model = build_model(preset_config("lab", max_len=32, dropout=dropout))
    return prepared, model


def test_training_loss_drops_well_below_uniform(corpus_file: Path, tmp_path: Path) -> None:
    prepared, model = _setup(corpus_file, dropout=0.0)
    before = evaluate(model, prepared.valid)
    assert abs(before.loss - math.log(256)) < 0.05  # untrained: about uniform over 256 bytes
    tcfg = TrainConfig(steps=300, batch_size=16, eval_every=100, log_every=10)
    result = train(model, prepared.tokenizer, prepared.train, prepared.valid, tcfg, tmp_path)
    assert result.final.bpc < 3.7  # uniform is 8 bits per character; a bigram model about 3.4
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows if "val_bpc" in r] == [100, 200, 300]
    assert rows[-1]["final"] and rows[-1]["step"] == 300 and "val_loss" in rows[-1]
    assert all("train_loss" in r for r in rows)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resumed_run_reproduces_the_uninterrupted_losses_exactly(
    corpus_file: Path, tmp_path: Path, optimizer: str
) -> None:
    tcfg = dict(steps=40, batch_size=8, eval_every=10, log_every=5, optimizer=optimizer)
    prepared, model = _setup(corpus_file)
    train(model, prepared.tokenizer, prepared.train, prepared.valid, TrainConfig(**tcfg), tmp_path / "a")

    prepared, model = _setup(corpus_file)
    with pytest.raises(TrainingInterrupted) as stop:
        train(
            model,
            prepared.tokenizer,
            prepared.train,
            prepared.valid,
            TrainConfig(**tcfg),
            tmp_path / "b",
            callback=lambda step, row: step == 17,
        )
    assert stop.value.step == 17
    ckpt = load_checkpoint(tmp_path / "b", with_state=True)
    assert ckpt.state["step"] == 17
    train(
        ckpt.model,
        ckpt.tokenizer,
        prepared.train,
        prepared.valid,
        TrainConfig(**ckpt.state["train"]),
        tmp_path / "b",
        resume=ckpt,
    )
    assert _rows(tmp_path / "b") == _rows(tmp_path / "a")
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_cosine_schedule_warms_up_then_decays_to_min() -> None:
    lrs = [cosine_lr(s, s / 100, 1.0, 10, 0.1) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[50] == pytest.approx(0.55) and lrs[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_wsd_schedule_holds_lr_then_decays_linearly_over_the_cooldown() -> None:
    tcfg = TrainConfig(steps=100, lr=2.0, warmup_steps=10, min_lr_ratio=0.1, schedule="wsd", cooldown_frac=0.4)
    lrs = [scheduled_lr(tcfg, s, s / 100) for s in range(101)]
    assert lrs[0] == pytest.approx(0.2) and lrs[9] == pytest.approx(2.0)
    assert lrs[10:61] == pytest.approx([2.0] * 51)  # stable until the last 40%
    assert lrs[80] == pytest.approx(1.1) and lrs[100] == pytest.approx(0.2)  # halfway down, then min_lr
    assert scheduled_lr(dataclasses.replace(tcfg, schedule="cosine"), 50, 0.5) == cosine_lr(50, 0.5, 2.0, 10, 0.2)
    with pytest.raises(AttnlabError, match="--schedule inverse: choose one of cosine, wsd, noam"):
        dataclasses.replace(tcfg, schedule="inverse").validate()
    with pytest.raises(AttnlabError, match="--cooldown-frac 0.0: must be in"):
        dataclasses.replace(tcfg, cooldown_frac=0.0).validate()


def test_the_noam_schedule_is_the_papers_for_any_model():
    from attnlab.training.train import noam_lr

    tcfg = TrainConfig(steps=100, lr=2e-3, warmup_steps=4000, schedule="noam")
    tcfg.validate()
    # lr / 1e-3 scales the paper's d_model^-0.5 min(step^-0.5, step warmup^-1.5); its peak is at the warm-up's end.
    assert scheduled_lr(tcfg, 3999, 0.5, d_model=512) == pytest.approx(2 * 512**-0.5 * 4000**-0.5)
    assert scheduled_lr(tcfg, 99, 0.5, d_model=512) == pytest.approx(2 * noam_lr(100, 512, 4000))
    assert scheduled_lr(tcfg, 15999, 0.5, d_model=512) == pytest.approx(2 * 512**-0.5 * 16000**-0.5)


def test_bits_per_character_accounts_for_characters_per_token(tmp_path: Path) -> None:
    # The same text measured with bytes and with codepoints gives the same loss per character
    # when the model is uniform: bytes predict more tokens, each standing for fewer characters.
    path = tmp_path / "wide.txt"
    path.write_text("\n".join(["héllo wörld"] * 200))
    for tok, n_vocab in (("bytes", 256), ("codepoint", 256)):
        prepared = prepare_data(str(path), tok)
        model = build_model(preset_config("lab", n_vocab=n_vocab, max_len=16))
        torch.nn.init.zeros_(model.embed.tok.weight)  # uniform predictions
        ev = evaluate(model, prepared.valid)
        bits_per_token = math.log2(256)
        assert ev.bpc == pytest.approx(bits_per_token / prepared.valid.chars_per_token, rel=1e-4)


def test_a_kill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    script = f"""
import os, torch, attnlab.training.checkpoint as c
from attnlab.models import build_model, preset_config
from attnlab.tokenizers import ByteTokenizer
torch.manual_seed(0)
m = build_model(preset_config("lab"))
c.save_checkpoint({str(tmp_path / "ck")!r}, m, ByteTokenizer(), {{"step": 1}})
real = c.save_file
def dying(tensors, path):
    real(tensors, path)
    os._exit(9)  # killed after writing new weights, before the swap
c.save_file = dying
with torch.no_grad():
    m.embed.tok.weight.add_(1.0)
c.save_checkpoint({str(tmp_path / "ck")!r}, m, ByteTokenizer(), {{"step": 2}})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9
    ckpt = load_checkpoint(tmp_path / "ck")
    assert ckpt.state["step"] == 1
    torch.manual_seed(0)
    fresh = build_model(preset_config("lab"))
    assert torch.equal(ckpt.model.embed.tok.weight, fresh.embed.tok.weight)


def test_checkpoint_between_the_two_renames_is_found_as_old(tmp_path: Path) -> None:
    model = build_model(preset_config("lab"))
    from attnlab.tokenizers import ByteTokenizer

    save_checkpoint(tmp_path / "checkpoint", model, ByteTokenizer(), {"step": 5})
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.old")
    assert load_checkpoint(tmp_path).state["step"] == 5


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    from attnlab.tokenizers import ByteTokenizer

    save_checkpoint(tmp_path / "checkpoint", build_model(preset_config("lab")), ByteTokenizer())
    (tmp_path / "checkpoint" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(AttnlabError, match="corrupt or incomplete"):
        load_checkpoint(tmp_path)


def test_budget_is_required(corpus_file: Path, tmp_path: Path) -> None:
    prepared, model = _setup(corpus_file)
    with pytest.raises(AttnlabError, match="--steps N and/or --max-time"):
        train(model, prepared.tokenizer, prepared.train, prepared.valid, TrainConfig(), tmp_path)


def test_max_time_bounds_training(corpus_file: Path, tmp_path: Path) -> None:
    prepared, model = _setup(corpus_file)
    result = train(
        model, prepared.tokenizer, prepared.train, prepared.valid, TrainConfig(max_time=1.0, batch_size=4), tmp_path
    )
    assert 1.0 <= result.train_time_s < 2.0
    assert _rows(tmp_path)[-1]["final"]


def _wait_for_rows(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("no metrics rows appeared")


def test_resume_runs_on_this_machine_not_on_the_saved_runs_device(corpus_file: Path, tmp_path: Path, capsys) -> None:
    """A run saved on a GPU (state says cuda:0) resumes on a CPU-only machine, with a notice."""
    args = ["train", "--preset", "lab", "--data", str(corpus_file), "--out", str(tmp_path / "r")]
    code, _, err = run_cli([*args, "--steps", "2"], capsys)
    assert code == 0, err
    state_path = tmp_path / "r" / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    state["train"]["device"] = "cuda:0"
    state_path.write_text(json.dumps(state))
    code, _, err = run_cli([*args, "--steps", "4", "--resume"], capsys)
    if torch.cuda.is_available():
        pytest.skip("cuda:0 exists here: the saved device is used as it is")
    assert code == 0, err
    assert "--device cuda:0 of the saved run is not available here" in err and "on cpu" in err
    assert load_checkpoint(tmp_path / "r", with_state=True).state["step"] == 4


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_matches_the_uninterrupted_run(corpus_file: Path, tmp_path: Path) -> None:
    args = [
        "train",
        "--model",
        "transformer",
        *TINY,
        "--data",
        str(corpus_file),
        "--steps",
        "3000",
        "--batch-size",
        "4",
        "--eval-every",
        "1000",
        "--set",
        "dropout=0.1",
    ]
    cmd = [sys.executable, "-m", "attnlab"]
    full = subprocess.run([*cmd, *args, "--out", str(tmp_path / "full")], capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen([*cmd, *args, "--out", str(tmp_path / "cut")], stderr=subprocess.PIPE, text=True)
    _wait_for_rows(tmp_path / "cut" / "metrics.jsonl", 3, proc)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "Traceback" not in err
    step = load_checkpoint(tmp_path / "cut", with_state=True).state["step"]
    assert 30 <= step < 3000
    resumed = subprocess.run(
        [*cmd, "train", "--out", str(tmp_path / "cut"), "--data", str(corpus_file), "--resume"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "full")


def test_tf32_is_set_on_cuda_only_and_said_in_the_runs_notice():
    from attnlab.cli import build_parser
    from attnlab.cli.options import training_fields
    from attnlab.runtime.devices import matmul_note, set_matmul_precision

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        set_matmul_precision("cuda", False)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
        set_matmul_precision("cuda:1", True)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
        set_matmul_precision("cpu", False)  # no TF32 there: nothing changes
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    assert matmul_note("cuda", "fp32", True) == "fp32 matmuls in TF32; --tf32 off for full fp32"
    assert matmul_note("cuda", "bf16", True) is None and matmul_note("cpu", "fp32", True) is None
    for argv, want in ((["train", "--out", "r"], None), (["train", "--out", "r", "--tf32", "off"], False)):
        fields = training_fields(build_parser().parse_args(argv))
        assert fields.get("tf32") is want
        assert TrainConfig(**fields).tf32 is (want if want is not None else True)
