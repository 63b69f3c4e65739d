"""Faults injected into real runs: Ctrl-C at each stage, kills during saves, a cut log line, a loss
that stops being a number, leftovers of killed saves, and resuming with the optimizer as it was."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab import load_checkpoint, prepare_data
from attnlab.data.tokens import TokenStream
from attnlab.models import build_model, preset_config
from attnlab.tokenizers import ByteTokenizer
from attnlab.training import run
from attnlab.training.checkpoint import save_checkpoint
from attnlab.training.train import TrainConfig, TrainingDiverged, TrainingInterrupted, make_optimizer, train

from .conftest import run_cli

COMMAND = str(Path(sys.executable).with_name("attnlab"))  # the console script, as a user runs it
FAST = dict(data="builtin", preset="lab", eval_every=2, final_eval_chars=2000)


def _ctrl_c_as_in_a_terminal() -> None:
    """A background job (CI started with `&`) inherits SIGINT ignored; a terminal's command does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _one_line_130(proc: subprocess.Popen) -> str:
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@contextlib.contextmanager
def ctrl_c_once_saved(out: Path, poll: float, settle: float) -> Iterator[None]:
    """Ctrl-C this process `settle` s after the run in `out` first saves (checked every `poll` s), with
    Python's own Ctrl-C handler installed meanwhile (even when the tests started with SIGINT ignored)."""

    def press() -> None:
        deadline = time.time() + 120
        while not (out / "checkpoint" / "config.json").exists() and time.time() < deadline:
            time.sleep(poll)
        time.sleep(settle)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press, daemon=True).start()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def kill_during_saves(args: list[str], out: Path, step_of: Callable[[], int], times: int, pause: float) -> None:
    """Run `attnlab ARGS --resume` saving every step, killed with SIGKILL `times` times at different moments
    of a save (a few steps past where each began, then `pause` x i later): each time a checkpoint is left
    that is further on."""
    for i in range(times):
        start = step_of()
        proc = subprocess.Popen([COMMAND, *args, "--steps", "100000", "--resume"], stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline:  # until it has saved a few steps past where it started
            try:
                if json.loads((out / "checkpoint" / "state.json").read_text())["step"] >= start + 3 + i:
                    break
            except (OSError, ValueError, KeyError):  # read in the instant of a swap
                pass
            time.sleep(0.005)
        time.sleep(pause * i)  # land at different points of a save
        proc.kill()
        proc.wait()
        assert step_of() > start


@pytest.mark.parametrize("delay", [0.2, 0.5, 1.0])
def test_ctrl_c_while_the_command_starts_is_one_line_and_exit_130(tmp_path: Path, delay: float) -> None:
    proc = subprocess.Popen(
        [COMMAND, "train", "--steps", "100000", "--out", str(tmp_path / "r")],  # never done by then
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    time.sleep(delay)  # Python is up (its Ctrl-C handler is installed) and torch is still loading
    proc.send_signal(signal.SIGINT)
    assert "interrupted" in _one_line_130(proc)


def test_ctrl_c_in_the_final_evaluation_keeps_the_trained_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(preset_config("small", max_len=64))
    rng = np.random.default_rng(0)
    train_stream = TokenStream(rng.integers(0, 256, 20_000), 20_000)
    valid_stream = TokenStream(rng.integers(0, 256, 3_000_000), 3_000_000)  # a final evaluation of seconds
    tcfg = TrainConfig(steps=3, batch_size=2, eval_every=10**6, final_eval_chars=3_000_000)
    out = tmp_path / "r"

    with ctrl_c_once_saved(out, poll=0.01, settle=0.2):  # the save before the final evaluation is the run's first
        with pytest.raises(TrainingInterrupted, match="during the final evaluation") as caught:
            train(model, ByteTokenizer(), train_stream, valid_stream, tcfg, out)
    assert caught.value.step == 3
    saved = load_checkpoint(out, with_state=True)
    assert saved.state["step"] == 3
    assert all(
        torch.equal(a, b) for a, b in zip(saved.model.state_dict().values(), model.state_dict().values(), strict=True)
    )


def _interrupt_when(path: Path, proc: subprocess.Popen) -> str:
    """Ctrl-C as soon as `path` exists (a run is under way); returns the one line the command printed."""
    deadline = time.time() + 120
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.mark.slow
def test_ctrl_c_mid_run_in_lab_says_how_to_continue_and_that_works(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lab"
    args = ["lab", "--preset", "lab", "--steps", "1500", "--eval-every", "50", "--out", str(out)]
    proc = subprocess.Popen([COMMAND, *args], stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal)
    line = _interrupt_when(out / "transformer" / "checkpoint", proc)
    assert "run the same command with --resume" in line, line
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mlp"]["steps"] == 1500 and metrics["transformer"]["steps"] == 1500


@pytest.mark.slow
def test_ctrl_c_mid_run_in_compare_then_resume_continues_that_variant(tmp_path: Path, capsys) -> None:
    out = tmp_path / "c"
    args = ["compare", "--preset", "lab", "--vary", "n_heads=1", "--steps", "1500", "--eval-every", "50"]
    proc = subprocess.Popen(
        [COMMAND, *args, "--out", str(out)], stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal
    )
    line = _interrupt_when(out / "runs" / "n_heads=1" / "checkpoint", proc)
    assert "run the same command with --resume" in line, line
    step = load_checkpoint(out / "runs" / "n_heads=1", with_state=True).state["step"]
    assert 0 < step < 1500
    code, _, err = run_cli([*args, "--out", str(out), "--resume"], capsys)
    assert code == 0 and "n_heads=1, continued" in err, err
    assert json.loads((out / "results.json").read_text())[0]["steps"] == 1500


@pytest.mark.slow
def test_repeated_kills_during_saves_always_leave_a_checkpoint_that_resumes(tmp_path: Path, capsys) -> None:
    """Saving every step, killed with SIGKILL at 8 different moments: each time the run resumes."""
    out = tmp_path / "r"
    args = ["train", "--preset", "lab", "--eval-every", "1", "--out", str(out)]
    assert run_cli([*args, "--steps", "1"], capsys)[0] == 0

    def step() -> int:
        return load_checkpoint(out, with_state=True).state["step"]

    kill_during_saves(args, out, step, times=8, pause=0.003)
    code, _, err = run_cli([*args, "--steps", str(step() + 2), "--resume"], capsys)
    assert code == 0, err
    assert not list(out.glob(".checkpoint.tmp*")), "killed saves' temporary folders are cleaned up"


def test_a_cut_last_log_line_does_not_stop_resume(tmp_path: Path) -> None:
    out = tmp_path / "r"
    run.start(out, steps=4, **FAST)
    log = out / "metrics.jsonl"
    log.write_text(log.read_text() + '{"step": 5, "train_lo')  # a kill in the middle of a write
    result = run.resume(out, steps=6)
    rows = [json.loads(line) for line in log.read_text().splitlines()]  # every line is whole again
    assert result.steps == 6 and rows[-1]["final"] and rows[-1]["step"] == 6


def test_a_loss_that_stops_being_a_number_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    data = prepare_data("builtin")
    torch.manual_seed(0)
    model = build_model(preset_config("lab"))

    def overflow_after_step_3(step: int, row: dict) -> None:  # a fault in the weights, as an overflow makes
        if step == 3:
            with torch.no_grad():
                model.embed.tok.weight.fill_(float("inf"))

    tcfg = TrainConfig(steps=10, eval_every=2, final_eval_chars=2000)
    with pytest.raises(TrainingDiverged, match="the training loss became nan at step 4") as caught:
        train(model, data.tokenizer, data.train, data.valid, tcfg, tmp_path / "r", callback=overflow_after_step_3)
    assert "the last good checkpoint (step 2)" in str(caught.value)
    saved = load_checkpoint(tmp_path / "r", with_state=True)
    assert saved.state["step"] == 2 and all(p.isfinite().all() for p in saved.model.parameters())


def test_a_diverging_command_exits_1_with_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(
        [
            "train",
            "--preset",
            "lab",
            "--steps",
            "20",
            "--lr",
            "1e30",
            "--eval-every",
            "1000",
            "--out",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    last = err.strip().splitlines()[-1]  # after the notice that training started
    assert code == 1 and last.startswith("attnlab train: error: the training loss became") and "Traceback" not in err
    assert "at step" in last and "no checkpoint was saved before it" in last and "lower --lr" in last, err


def test_leftovers_of_killed_saves_are_removed_by_the_next_save(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".checkpoint.tmp{dead.stdout.strip()}"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    save_checkpoint(tmp_path / "checkpoint", build_model(preset_config("lab")), ByteTokenizer())
    assert not stale.exists() and (tmp_path / "checkpoint" / "config.json").is_file()


def test_a_resumed_optimizer_has_the_settings_of_a_fresh_one_in_type_and_value(tmp_path: Path) -> None:
    out = tmp_path / "r"
    run.start(out, steps=2, **FAST)
    ckpt = load_checkpoint(out, with_state=True)
    fresh = make_optimizer(ckpt.model, TrainConfig(steps=2), "cpu")
    resumed = make_optimizer(ckpt.model, TrainConfig(steps=2), "cpu")
    ckpt.restore_optimizer(resumed)
    for a, b in zip(fresh.param_groups, resumed.param_groups, strict=True):
        settings = {k: v for k, v in a.items() if k not in ("params", "lr", "initial_lr")}
        assert settings == {k: v for k, v in b.items() if k in settings}
        assert all(type(v) is type(b[k]) for k, v in settings.items()), settings  # betas: a tuple, not a list


def test_compare_run_again_with_other_settings_trains_those_variants_again(tmp_path: Path, capsys) -> None:
    args = ["compare", "--preset", "lab", "--vary", "n_heads=1,2", "--out", str(tmp_path / "c")]
    assert run_cli([*args, "--steps", "2"], capsys)[0] == 0
    code, _, err = run_cli([*args, "--steps", "3"], capsys)
    assert code == 0 and err.count("finished before with other settings (steps 2 -> 3)") == 2, err
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    assert [r["steps"] for r in results] == [3, 3]
    code, _, err = run_cli([*args, "--steps", "3"], capsys)  # the same settings: kept
    assert code == 0 and err.count("already finished, skipped") == 2, err


def test_from_hf_refuses_a_folder_with_only_pickled_weights(tmp_path: Path) -> None:
    from attnlab import AttnlabError, from_hf

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04 a pickle")
    with pytest.raises(AttnlabError, match="only pytorch_model.bin, a pickle"):
        from_hf(tmp_path)
