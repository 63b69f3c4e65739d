"""Mixed precision, torch.compile and the bench command, at tiny sizes (bf16 matmuls are ~100x slower
than fp32 on CPUs without bf16 units; the figures themselves live in benchmarks/, not here)."""

import copy
import json
import pickle
from pathlib import Path

import pytest
import torch

from attnlab.apps.bench import run_bench
from attnlab.data.corpus import prepare_data
from attnlab.models import build_model, decoding, preset_config
from attnlab.models.decoding import attend_one_query
from attnlab.training.train import TrainConfig, train

from .conftest import run_cli


def _losses(path: Path) -> list[float]:
    return [json.loads(x)["train_loss"] for x in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_autocast_training_learns_and_keeps_fp32_weights(dtype: str, corpus_file: Path, tmp_path: Path) -> None:
    prepared = prepare_data(str(corpus_file))
    torch.manual_seed(0)
    model = build_model(preset_config("lab", max_len=16, emb_dim=16, n_hidden=32, head_dim=4))
    result = train(
        model,
        prepared.tokenizer,
        prepared.train,
        prepared.valid,
        TrainConfig(steps=60, batch_size=4, eval_every=1000, dtype=dtype, final_eval_chars=2000),
        tmp_path,
    )
    losses = _losses(tmp_path)
    assert losses[-2] < losses[0] - 1.0 and result.final.bpc < 6.0
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.slow
def test_compiled_training_matches_eager(corpus_file: Path, tmp_path: Path) -> None:
    prepared = prepare_data(str(corpus_file))
    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(preset_config("lab", max_len=16))
        train(
            model,
            prepared.tokenizer,
            prepared.train,
            prepared.valid,
            TrainConfig(steps=20, batch_size=4, log_every=5, eval_every=1000, compile=compiled, final_eval_chars=2000),
            tmp_path / str(compiled),
        )
        runs[compiled] = _losses(tmp_path / str(compiled))
    assert runs[True] == pytest.approx(runs[False], abs=1e-4)


def test_bench_reports_every_row_of_the_contract() -> None:
    result = run_bench(
        preset="lab",
        devices=["cpu"],
        compile_modes=(False,),
        dtypes=("fp32", "bf16"),
        batch_size=4,
        budget_s=0.2,
        new_tokens=20,
        gen_max_len=24,
        log=lambda m: None,
    )
    assert result["peak_matmul_flops"] > 1e9
    assert [(r["device"], r["compile"], r["dtype"]) for r in result["train"]] == [
        ("cpu", False, "fp32"),
        ("cpu", False, "bf16"),
    ]
    peaks = result["peak_matmul_flops_by_dtype"]["cpu"]
    assert set(peaks) == {"fp32", "bf16"} and result["peak_matmul_flops"] == max(peaks.values())
    for r in result["train"]:
        assert r["tokens_per_s"] > 0 and r["ms_per_step"] > 0 and 0 < r["mfu"] < 1
        assert r["mfu"] == pytest.approx(r["achieved_flops"] / result["peak_matmul_flops"])
        assert r["tokens_per_s"] == pytest.approx(4 * 64 / (r["ms_per_step"] / 1000))
    assert [(r["kv_cache"], r["compile"]) for r in result["generate"]] == [(True, False), (False, False)]
    for r in result["generate"]:  # 36 tokens in a 24-token context: the window moves
        assert (r["new_tokens"], r["prompt_len"], r["max_len"], r["slide"]) == (20, 16, 24, 6)
        assert r["tokens_per_s"] > 0


def test_bench_cli_json(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(
        [
            "bench",
            "--preset",
            "lab",
            "--device",
            "cpu",
            "--compile",
            "off",
            "--dtypes",
            "fp32",
            "--budget",
            "0.1",
            "--new-tokens",
            "10",
            "--format",
            "json",
            "--out",
            str(tmp_path / "b.json"),
        ],
        capsys,
    )
    result = json.loads(out)
    assert code == 0 and set(result) >= {"train", "generate", "peak_matmul_flops"}
    assert set(result["train"][0]) >= {"device", "compile", "dtype", "tokens_per_s", "ms_per_step", "mfu"}
    assert set(result["generate"][0]) >= {"kv_cache", "prompt_len", "new_tokens", "tokens_per_s"}
    assert json.loads((tmp_path / "b.json").read_text()) == result and (tmp_path / "b.md").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt-len", "0"], "--prompt-len 0"),
        (["--new-tokens", "-1"], "--new-tokens -1"),
        (["--dtypes", "fp32,fp8"], "--dtypes fp8: choose one of fp32, bf16, fp16"),
    ],
)
def test_bench_bad_numbers_are_clear_errors(args: list[str], message: str, capsys) -> None:
    code, _, err = run_cli(["bench", "--preset", "lab", *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bad_dtype_is_a_clear_error(capsys) -> None:
    code, _, err = run_cli(["train", "--dtype", "fp8", "--steps", "1", "--out", "x"], capsys)
    assert code == 2 and "invalid choice" in err


@pytest.mark.slow
@pytest.mark.parametrize("variant", [{}, {"positions": "rope", "n_kv_heads": 2, "head_dim": 4}])
def test_compiled_decoding_generates_the_eager_tokens(variant: dict, monkeypatch) -> None:
    """Greedy tokens through the compiled decoding step equal eager ones, far past max_len (window moves)."""
    torch.manual_seed(0)
    model = build_model(preset_config("lab", n_layers=2, max_len=16, **variant)).eval()
    ids_BL = torch.randint(0, 256, (1, 5))
    eager = model.generate(ids_BL, 40, greedy=True)
    calls = []

    @torch.compiler.disable  # runs (and counts) outside the graph: a list inside it would be guarded on
    def spy(q_BH1D: torch.Tensor, k_BHKD: torch.Tensor, v_BHKD: torch.Tensor) -> torch.Tensor:
        calls.append(q_BH1D.shape)
        return attend_one_query(q_BH1D, k_BHKD, v_BHKD)

    monkeypatch.setattr(decoding, "attend_one_query", spy)
    assert torch.equal(model.generate(ids_BL, 40, greedy=True, compile=True), eager)
    assert len(calls) > 30 * model.config.n_layers  # the compiled steps took the one-query reduction, not SDPA
    assert set(model.state_dict()) == set(build_model(model.config).state_dict())  # nothing compiled joined it
    pickle.dumps(model)  # nor the model itself: it still pickles
    twin = copy.deepcopy(model)  # a copy decodes with its own weights, not its original's
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(-1.5)
    assert torch.equal(twin.generate(ids_BL, 20, greedy=True, compile=True), twin.generate(ids_BL, 20, greedy=True))
