"""Checkpoints written by earlier versions keep loading, give the same logits, and resume as before.

The fixtures in tests/fixtures/checkpoints_bfe4523 were written by the code of commit bfe4523 (see
the README there), before the model core was reorganised.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnlab import load_checkpoint
from attnlab.models import build_model, preset_config

from .conftest import run_cli

OLD = Path(__file__).parent / "fixtures" / "checkpoints_bfe4523"
EXPECTED = load_file(OLD / "expected_logits.safetensors")


@pytest.mark.parametrize("name", ["transformer_run", "llama_like", "post_sinusoidal", "mlp"])
def test_an_old_checkpoint_gives_the_logits_it_gave_before(name: str) -> None:
    ckpt = load_checkpoint(OLD / name)
    ids_BL = EXPECTED[f"{name}.ids"]
    assert ckpt.tokenizer.encode("Tom had a red ball.")[:16] == ids_BL[0].tolist()
    with torch.no_grad():
        logits_BLV = ckpt.model.eval()(ids_BL)
    # The fixtures were computed on another CPU: its matmul and SDPA kernels may round the last bit
    # differently (4e-8 here, on a machine with AVX-512 and AMX), so equal up to float32 rounding.
    torch.testing.assert_close(logits_BLV, EXPECTED[f"{name}.logits"], rtol=1e-6, atol=1e-6)


def test_the_same_seed_builds_the_same_initial_weights_as_before() -> None:
    old = {name: load_checkpoint(OLD / name).model for name in ("llama_like", "post_sinusoidal")}
    torch.manual_seed(1)  # as the fixtures were made: one seed, then both models in this order
    for name in ("llama_like", "post_sinusoidal"):
        model = build_model(old[name].config)
        for key, tensor in old[name].state_dict().items():
            assert torch.equal(model.state_dict()[key], tensor), (name, key)


def test_an_old_run_resumes_to_the_losses_the_old_code_logged(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(OLD / "transformer_run", run)
    code, _, err = run_cli(
        ["train", "--resume", "--out", str(run), "--steps", "9", "--data", str(OLD / "corpus.txt")], capsys
    )
    assert code == 0, err
    keep = ("step", "train_loss", "lr", "val_loss", "val_bpc", "final")

    def rows(path: Path) -> list[dict]:
        return [{k: r[k] for k in keep if k in r} for r in map(json.loads, path.read_text().splitlines())]

    got, old = rows(run / "metrics.jsonl"), rows(OLD / "transformer_run_resumed_to_9.jsonl")
    assert [r.keys() for r in got] == [r.keys() for r in old]
    for a, b in zip(got, old, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)


def test_a_preset_model_still_has_the_parameter_names_of_old_checkpoints() -> None:
    old = load_checkpoint(OLD / "transformer_run").model
    assert set(build_model(preset_config("lab", max_len=16)).state_dict()) == set(old.state_dict())


SEQ2SEQ = Path(__file__).parent / "fixtures" / "seq2seq_eb51d9a"


def test_an_old_encoder_decoder_gives_the_logits_and_translations_it_gave_before() -> None:
    from attnlab.training.seq2seq_run import load_seq2seq, translate

    expected = load_file(SEQ2SEQ / "expected.safetensors")
    run = load_seq2seq(SEQ2SEQ / "reverse")
    with torch.no_grad():
        logits = run.model(expected["src"], expected["dec"])
    torch.testing.assert_close(logits, expected["logits"], rtol=1e-6, atol=1e-6)
    said = json.loads((SEQ2SEQ / "expected_translations.json").read_text())
    assert translate(SEQ2SEQ / "reverse", said["texts"]) == said["greedy"]
    assert translate(SEQ2SEQ / "reverse", said["texts"], beam=4) == said["beam4"]
