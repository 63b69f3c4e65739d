"""A training run as one library call (`attnlab.training.run.start` / `resume`), and checkpoints of a model and
its optimizer alone (no tokenizer, no run folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attnlab import load_checkpoint, save_checkpoint
from attnlab.data.corpus import prepare_data
from attnlab.errors import AttnlabError
from attnlab.models import ModelConfig, TransformerLM, build_model, preset_config
from attnlab.training import run
from attnlab.training.train import TrainingInterrupted

SMALL = {"n_heads": 2, "head_dim": 8, "emb_dim": 16, "n_hidden": 32, "max_len": 16}


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s")} for r in rows]


def test_start_builds_the_preset_with_the_fields_changed_and_trains_it(corpus_file: Path, tmp_path: Path) -> None:
    result = run.start(tmp_path / "r", data=str(corpus_file), preset="lab", config=SMALL, steps=30, batch_size=4)
    cfg = load_checkpoint(tmp_path / "r").model.config
    assert cfg == preset_config("lab", **SMALL) and result.model.config == cfg
    assert result.steps == 30 and result.final.bpc < 8.0 and result.tokenizer.name == "bytes"
    state = json.loads((tmp_path / "r" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 30 and state["data"]["source"] == str(corpus_file) and state["preset"] == "lab"


def test_an_interrupted_run_resumes_to_the_losses_of_one_uninterrupted_run(corpus_file: Path, tmp_path: Path) -> None:
    settings = {"data": str(corpus_file), "preset": "lab", "config": {**SMALL, "dropout": 0.1}, "batch_size": 4}
    budget = {"steps": 40, "eval_every": 10, "log_every": 5}
    run.start(tmp_path / "whole", **settings, **budget)
    with pytest.raises(TrainingInterrupted):
        run.start(tmp_path / "cut", **settings, **budget, callback=lambda step, row: step == 17)
    result = run.resume(tmp_path / "cut")
    assert result.steps == 40 and _rows(tmp_path / "cut") == _rows(tmp_path / "whole")


def test_resume_with_a_larger_budget_extends_the_run(corpus_file: Path, tmp_path: Path) -> None:
    run.start(tmp_path / "r", data=str(corpus_file), preset="lab", config=SMALL, steps=10, batch_size=4)
    result = run.resume(tmp_path / "r", steps=25)
    state = json.loads((tmp_path / "r" / "checkpoint" / "state.json").read_text())
    assert result.steps == 25 and state["step"] == 25 and state["train"]["steps"] == 25
    assert [r["step"] for r in _rows(tmp_path / "r")] == [10, 20, 25]


def test_resume_refuses_a_folder_without_a_training_state(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m" / "checkpoint", build_model(preset_config("lab")))
    with pytest.raises(AttnlabError, match="no training state to resume from"):
        run.resume(tmp_path / "m", steps=10)
    with pytest.raises(AttnlabError, match="is a checkpoint folder; give the run folder that holds it"):
        run.resume(tmp_path / "m" / "checkpoint", steps=10)  # resuming there would nest a checkpoint in it


def test_runs_can_share_one_tokenized_corpus(corpus_file: Path, tmp_path: Path) -> None:
    prepared = prepare_data(str(corpus_file))
    a = run.start(tmp_path / "a", data=prepared, preset="lab", config=SMALL, steps=5, batch_size=4)
    cfg = ModelConfig(model="mlp", emb_dim=16, n_hidden=32, max_len=16)
    b = run.start(tmp_path / "b", data=prepared, config=cfg, steps=5, batch_size=4)
    assert a.model.config.model == "transformer" and b.model.config == cfg  # n_vocab from the tokenizer: 256


def test_a_model_and_its_optimizer_round_trip_without_a_tokenizer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = preset_config("lab", **SMALL)
    model = TransformerLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids_BL = torch.randint(0, 256, (4, 16))

    def step(m: TransformerLM, o: torch.optim.Optimizer) -> None:
        o.zero_grad()
        F.cross_entropy(m(ids_BL[:, :-1]).flatten(0, 1), ids_BL[:, 1:].flatten()).backward()
        o.step()

    for _ in range(3):
        step(model, opt)
    save_checkpoint(tmp_path / "ck", model, optimizer=opt, state={"epoch": 3})
    assert not (tmp_path / "ck" / "tokenizer.json").exists()
    twin = TransformerLM(cfg)
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=1e-2)
    ckpt = load_checkpoint(tmp_path / "ck", model=twin, optimizer=twin_opt)
    assert ckpt.model is twin and ckpt.tokenizer is None and ckpt.state["epoch"] == 3
    step(model, opt)
    step(twin, twin_opt)  # the restored moments give exactly the next update
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert load_checkpoint(tmp_path / "ck").model.config == cfg  # built back from its config alone


def test_loading_into_another_model_or_an_optimizer_alone_is_refused(tmp_path: Path) -> None:
    model = TransformerLM(preset_config("lab", **SMALL))
    save_checkpoint(tmp_path / "ck", model)
    with pytest.raises(AttnlabError, match="another model's config"):
        load_checkpoint(tmp_path / "ck", model=TransformerLM(preset_config("lab")))
    with pytest.raises(AttnlabError, match="model=..."):
        load_checkpoint(tmp_path / "ck", optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(AttnlabError, match="saved without an optimizer"):
        load_checkpoint(tmp_path / "ck", model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_commands_that_need_text_refuse_a_checkpoint_without_a_tokenizer(tmp_path: Path, capsys) -> None:
    from .conftest import run_cli

    save_checkpoint(tmp_path / "ck", build_model(preset_config("lab")))
    for args in (
        ["generate", str(tmp_path / "ck"), "--prompt", "Hi"],
        ["trace", str(tmp_path / "ck"), "--prompt", "Hi"],
    ):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and "saved without a tokenizer" in err and len(err.strip().splitlines()) == 1


def test_resume_refuses_token_files_of_another_tokenizer(corpus_file: Path, tmp_path: Path) -> None:
    from attnlab.data.token_files import prepare_token_files

    run.start(tmp_path / "r", data=str(corpus_file), preset="lab", config=SMALL, steps=3, batch_size=4)
    prepare_token_files(str(corpus_file), tmp_path / "chars.bin", "char")
    with pytest.raises(AttnlabError, match="another tokenizer"):
        run.resume(tmp_path / "r", steps=6, data=str(tmp_path / "chars.bin"))
