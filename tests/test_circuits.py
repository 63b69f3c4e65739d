"""Circuits in a model: patching, attribution patching and direct logit attribution, held to identities
that fail when the bookkeeping is wrong (the parts sum to the logit; patching the one position where
two prompts differ restores the clean run; positions before it change nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.inspect.attribution import direct_logit_attribution
from attnlab.inspect.circuits import logit_diff, resid_name
from attnlab.inspect.patching import (
    Cell,
    agreement,
    attribution_cells,
    attribution_patch,
    patch_cells,
    patch_sweep,
    sweep_cells,
)
from attnlab.models import build_model, preset_config

from .conftest import run_cli
from .test_variants import VARIANTS

ALL = {
    "default": {},
    **VARIANTS,
    "post-norm-rms-rope": dict(norm_placement="post", norm="rms", positions="rope", head_dim=8),
}


def _model(n_layers: int = 3, max_len: int = 16, **fields):
    torch.manual_seed(0)
    model = build_model(preset_config("lab", n_layers=n_layers, max_len=max_len, **fields)).eval()
    with torch.no_grad():  # norms away from their initial 1 and 0, so that a forgotten gain or bias shows,
        for name, p in model.named_parameters():  # and weights large enough that a token changes the logits
            if "ln" in name or "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
            else:
                p.mul_(8)
    return model


def _prompts(L: int = 9, differ_at: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    clean_1L = torch.randint(0, 256, (1, L))
    corrupt_1L = clean_1L.clone()
    corrupt_1L[0, differ_at] = (clean_1L[0, differ_at] + 17) % 256
    return clean_1L, corrupt_1L


@pytest.mark.parametrize("variant", ALL)
def test_the_direct_attributions_sum_to_the_logit_difference(variant: str) -> None:
    model = _model(**ALL[variant])
    ids_1L, _ = _prompts()
    for position in (-1, 3):
        att = direct_logit_attribution(model, ids_1L, answer=7, wrong=101, position=position)
        assert att.total == pytest.approx(sum(v for _, v in att.parts), abs=1e-4)
        with torch.no_grad():
            logits_V = model(ids_1L)[0, position]
        assert att.total == pytest.approx(float(logits_V[7] - logits_V[101]), abs=1e-4)
    names = [n for n, _ in att.parts]
    H, N = model.config.n_heads, model.config.n_layers
    assert [n for n in names if ".head." in n] == [f"blocks.{i}.attn.head.{h}" for i in range(N) for h in range(H)]
    assert [n for n in names if n.endswith(".mlp")] == [f"blocks.{i}.mlp" for i in range(N)]
    assert names[0] == "embed"


def test_a_heads_attribution_is_its_output_through_the_final_norm_at_the_runs_scale() -> None:
    """One head worked by hand: its z times its columns of W_O, centred, divided by the final norm's
    scale on the whole stream, times the norm's gain, onto W_U[answer] - W_U[wrong]."""
    model = _model(n_layers=2)
    ids_1L, _ = _prompts()
    _, cache = model.run_with_cache(ids_1L)
    D = model.config.head_dim
    z_D = cache["blocks.1.attn.z_BHLD"][0, 2, -1]
    out_C = model.blocks[1].attn.w_o.weight[:, 2 * D : 3 * D] @ z_D
    stream_C = cache["blocks.1.resid_post_BLC"][0, -1]
    ln = model.final_ln
    normed_C = (out_C - out_C.mean()) / torch.sqrt(stream_C.var(unbiased=False) + ln.eps) * ln.weight
    W_U = model.embed.tok.weight
    expected = float((normed_C @ (W_U[5] - W_U[9])).detach())
    att = dict(direct_logit_attribution(model, ids_1L, answer=5, wrong=9).parts)
    assert att["blocks.1.attn.head.2"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("variant", ["default", "post-norm", "rope", "gqa"])
def test_patching_the_one_differing_position_restores_the_clean_run_and_others_change_nothing(variant: str) -> None:
    model = _model(**ALL[variant])
    clean_1L, corrupt_1L = _prompts(differ_at=4)
    sweep = patch_sweep(model, clean_1L, corrupt_1L, logit_diff(7, 101), over="resid", batch=5)
    assert sweep.axes == ("layer", "position") and sweep.values.shape == (3, 9)
    assert sweep.values[0, 4] == pytest.approx(sweep.clean, abs=1e-4)  # the only embedding that differs
    others = [p for p in range(9) if p != 4]
    assert torch.allclose(sweep.values[0, others], torch.tensor(sweep.corrupt), atol=1e-4)
    assert torch.allclose(sweep.values[:, :4], torch.tensor(sweep.corrupt), atol=1e-4)  # before it: identical
    assert abs(sweep.clean - sweep.corrupt) > 1e-3  # the test would be empty otherwise


def test_patching_every_hook_point_gives_the_clean_logits_and_patching_none_the_corrupted() -> None:
    model = _model()
    clean_1L, corrupt_1L = _prompts()
    clean_logits, clean_cache = model.run_with_cache(clean_1L)
    every = [(name, lambda t, n: clean_cache[n]) for name in model.hook_names()]
    assert torch.equal(model.run_with_hooks(corrupt_1L, every), clean_logits)
    everything_but_logits = [(n, fn) for n, fn in every if n != "logits_BLV"]
    assert torch.allclose(model.run_with_hooks(corrupt_1L, everything_but_logits), clean_logits, atol=1e-5)
    last = "blocks.2.resid_post_BLC"
    patched = patch_cells(model, clean_1L, corrupt_1L, [Cell(last, (p,)) for p in range(9)], lambda x: x[:, -1, 7])
    assert patched[-1] == pytest.approx(float(clean_logits[0, -1, 7].detach()), abs=1e-5)  # the last position's stream
    same = patch_cells(model, corrupt_1L, corrupt_1L, [Cell(last, (8,))], lambda x: x[:, -1, 7])
    assert same[0] == pytest.approx(float(model(corrupt_1L)[0, -1, 7].detach()), abs=1e-5)


@pytest.mark.parametrize("over", ["resid", "heads", "head-positions"])
def test_a_batched_sweep_equals_one_forward_per_cell(over: str) -> None:
    model = _model(n_kv_heads=2)
    clean_1L, corrupt_1L = _prompts()
    metric = logit_diff(7, 101)
    cells = sweep_cells(model, over, 9)
    one_by_one = torch.stack([patch_cells(model, clean_1L, corrupt_1L, [c], metric)[0] for c in cells])
    batched = patch_cells(model, clean_1L, corrupt_1L, cells, metric, batch=16)
    assert torch.allclose(batched, one_by_one, atol=1e-5)
    sweep = patch_sweep(model, clean_1L, corrupt_1L, metric, over=over)
    assert torch.allclose(sweep.values.flatten(), one_by_one, atol=1e-5)
    assert sweep.values.shape == {"resid": (3, 9), "heads": (3, 4), "head-positions": (3, 4, 9)}[over]


def test_attribution_patching_equals_real_patching_where_the_metric_is_linear_in_the_activation() -> None:
    model = _model()
    clean_1L, corrupt_1L = _prompts(differ_at=8)
    metric = logit_diff(7, 101)
    cells = [Cell("final_ln_BLC", (p,)) for p in range(9)]  # the logits are linear in the final norm's output
    real = patch_cells(model, clean_1L, corrupt_1L, cells, metric)
    estimate, corrupt = attribution_cells(model, clean_1L, corrupt_1L, cells, metric)
    assert torch.allclose(estimate.float(), real, atol=1e-4)
    assert estimate[-1] != pytest.approx(corrupt, abs=1e-3)  # the last position differs, and moves the metric


def test_attribution_patching_approximates_the_residual_sweep_and_says_how_well() -> None:
    model = _model()
    clean_1L, corrupt_1L = _prompts(differ_at=4)
    metric = logit_diff(7, 101)
    real = patch_sweep(model, clean_1L, corrupt_1L, metric, over="resid")
    estimate = attribution_patch(model, clean_1L, corrupt_1L, metric, over="resid")
    assert estimate.values.shape == real.values.shape and estimate.corrupt == pytest.approx(real.corrupt, abs=1e-5)
    assert torch.allclose(estimate.values[:, :4], real.values[:, :4], atol=1e-5)  # both unchanged before position 4
    fit = agreement(real, estimate)
    assert fit["max_abs_error"] == pytest.approx(float((real.values - estimate.values).abs().max()), abs=1e-6)
    pairs = torch.stack([real.values.flatten(), estimate.values.flatten()]).double()
    assert fit["correlation"] == pytest.approx(float(torch.corrcoef(pairs)[0, 1]), abs=1e-6)
    flat = attribution_patch(model, clean_1L, clean_1L, metric, over="heads")  # nothing differs: no correlation
    assert agreement(flat, flat)["correlation"] is None


def test_circuits_refuse_what_does_not_apply_in_one_line() -> None:
    model = _model()
    clean_1L, _ = _prompts()
    with pytest.raises(AttnlabError, match="same number of tokens"):
        patch_sweep(model, clean_1L, clean_1L[:, :5], logit_diff(1, 2))
    with pytest.raises(AttnlabError, match="--over"):
        sweep_cells(model, "layers", 9)
    assert resid_name(model, 0) == "embed.sum_BLC" and resid_name(model, 2) == "blocks.1.resid_post_BLC"
    assert resid_name(_model(norm_placement="post"), 1) == "blocks.0.ln2_BLC"


def test_the_detectors_mark_the_keys_each_kind_of_head_attends_to() -> None:
    from attnlab.inspect.heads import targets_BLK

    ids_BL = torch.tensor([[5, 7, 5, 7, 7]])
    marked = {d: targets_BLK(ids_BL, d)[0].nonzero().tolist() for d in ("previous", "duplicate", "induction")}
    assert marked["previous"] == [[1, 0], [2, 1], [3, 2], [4, 3]]
    assert marked["duplicate"] == [[2, 0], [3, 1], [4, 1], [4, 3]]
    assert marked["induction"] == [[2, 1], [3, 2], [4, 2]]  # the key after an earlier copy of the query's token


def test_the_detector_scores_are_the_mean_weight_on_the_marked_keys() -> None:
    from attnlab.inspect.heads import detector_scores, repeated_random_tokens, targets_BLK

    model = _model(n_kv_heads=2)
    ids_BL = repeated_random_tokens(256, 6, batch=3, seed=4)
    assert torch.equal(ids_BL[:, :6], ids_BL[:, 6:]) and ids_BL.shape == (3, 12)
    scores = detector_scores(model, ids_BL)
    _, cache = model.run_with_cache(ids_BL)
    for detector in ("previous", "duplicate", "induction"):
        marked = targets_BLK(ids_BL, detector)
        for layer, h in [(0, 0), (2, 3)]:
            w = cache[f"blocks.{layer}.attn.weights_BHLK"][:, h]
            per_query = [float(w[b, i][marked[b, i]].sum()) for b in range(3) for i in range(12) if marked[b, i].any()]
            assert float(scores[detector][layer, h]) == pytest.approx(sum(per_query) / len(per_query), abs=1e-6)


def test_zero_ablating_a_head_is_zeroing_its_columns_of_the_output_projection() -> None:
    from attnlab.inspect.ablations import ablation_table

    model = _model()
    torch.manual_seed(2)
    text_BL = torch.randint(0, 256, (4, 12))
    table = ablation_table(model, text_BL, "zero", prompt_1L=text_BL[:1, :9], metric=logit_diff(7, 101))
    D = model.config.head_dim
    with torch.no_grad():
        model.blocks[1].attn.w_o.weight[:, 2 * D : 3 * D] = 0
        logits = model(text_BL)
        loss = float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), text_BL[:, 1:].flatten()))
        metric = float(logit_diff(7, 101)(model(text_BL[:1, :9]))[0])
    assert table.loss["blocks.1.attn.head.2"] == pytest.approx(loss, abs=1e-5)
    assert table.metric["blocks.1.attn.head.2"] == pytest.approx(metric, abs=1e-4)
    assert len(table.loss) == 3 * (4 + 1) and table.rows()[0]["loss_change"] == max(
        r["loss_change"] for r in table.rows()
    )


@pytest.mark.parametrize("kind", ["mean", "resample"])
def test_mean_and_resample_ablation_put_the_texts_own_values_in(kind: str) -> None:
    from attnlab.inspect.ablations import ablation_table

    model = _model()
    torch.manual_seed(2)
    text_BL = torch.randint(0, 256, (4, 12))
    table = ablation_table(model, text_BL, kind, prompt_1L=text_BL[:1, :9], metric=logit_diff(7, 101))
    _, cache = model.run_with_cache(text_BL)
    out_BLC = cache["blocks.0.mlp.out_BLC"]
    other_BLC = out_BLC.mean((0, 1)).expand_as(out_BLC) if kind == "mean" else out_BLC.roll(1, dims=0)
    with torch.no_grad():
        logits = model.run_with_hooks(text_BL, [("blocks.0.mlp.out_BLC", lambda t, n: other_BLC)])
    loss = float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), text_BL[:, 1:].flatten()))
    assert table.loss["blocks.0.mlp"] == pytest.approx(loss, abs=1e-5)
    assert table.loss["blocks.0.mlp"] != pytest.approx(table.base_loss, abs=1e-3)
    # The prompt takes the same values at its positions (resample: the text's first piece's).
    prompt_BLC = out_BLC.mean((0, 1)).expand(1, 9, -1) if kind == "mean" else out_BLC[:1, :9]
    with torch.no_grad():
        logits = model.run_with_hooks(text_BL[:1, :9], [("blocks.0.mlp.out_BLC", lambda t, n: prompt_BLC)])
    assert table.metric["blocks.0.mlp"] == pytest.approx(float(logit_diff(7, 101)(logits)[0]), abs=1e-4)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attnlab.tokenizers import ByteTokenizer
    from attnlab.training.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("circuits") / "checkpoint"
    save_checkpoint(path, _model(max_len=64), ByteTokenizer())
    return path


def test_attnlab_patch_prints_the_contracts_json_and_its_numbers_are_the_models(ckpt: Path, tmp_path: Path, capsys):
    clean, corrupt = "Lily met Ben. Lil", "Anna met Ben. Lil"
    args = ["patch", str(ckpt), "--clean", clean, "--corrupt", corrupt, "--answer", "y", "--wrong", "a"]
    code, out, _ = run_cli([*args, "--over", "resid", "--format", "json", "--out", str(tmp_path / "p.png")], capsys)
    view = json.loads(out)
    assert code == 0 and set(view) == {"metric", "over", "axes", "values", "clean", "corrupt"}
    assert view["metric"] == "logit_diff" and view["over"] == "resid" and view["axes"] == ["layer", "position"]
    model = _model(max_len=64)
    ids = {t: torch.tensor([list(t.encode())]) for t in (clean, corrupt)}
    with torch.no_grad():
        diff = {t: float(model(i)[0, -1, ord("y")] - model(i)[0, -1, ord("a")]) for t, i in ids.items()}
    assert view["clean"] == pytest.approx(diff[clean], abs=1e-4) and view["corrupt"] == pytest.approx(
        diff[corrupt], abs=1e-4
    )
    sweep = patch_sweep(model, ids[clean], ids[corrupt], logit_diff(ord("y"), ord("a")), "resid")
    assert torch.allclose(torch.tensor(view["values"]), sweep.values, atol=1e-5)
    assert len(view["values"]) == 3 and len(view["values"][0]) == len(clean)
    after = torch.tensor(view["values"][0][4:])  # the embeddings after the name are the same in both runs
    assert torch.allclose(after, torch.tensor(view["corrupt"]), atol=1e-4)
    assert matplotlib.image.imread(tmp_path / "p.png").shape[1] > 400
    code, out, _ = run_cli([*args, "--over", "head-positions", "--attribution", "--format", "json"], capsys)
    view = json.loads(out)
    assert view["axes"] == ["layer", "head", "position"] and torch.tensor(view["values"]).shape == (3, 4, len(clean))
    assert set(view["attribution"]) == {"values", "correlation", "max_abs_error", "mean_abs_error"}


def test_attnlab_attribute_prints_parts_that_sum_to_the_logit_difference(ckpt: Path, tmp_path: Path, capsys):
    args = ["attribute", str(ckpt), "--prompt", "Once upon a ti", "--answer", "m", "--wrong", "n", "--format", "json"]
    code, out, _ = run_cli([*args, "--out", str(tmp_path / "a.png")], capsys)
    view = json.loads(out)
    assert code == 0 and set(view) == {"logit_diff", "parts"}
    names = [p["name"] for p in view["parts"]]
    assert {"embed", "blocks.0.attn.head.0", "blocks.2.attn.head.3", "blocks.1.mlp", "final_ln.bias"} <= set(names)
    assert sum(p["value"] for p in view["parts"]) == pytest.approx(view["logit_diff"], abs=1e-4)
    with torch.no_grad():
        logits = _model(max_len=64)(torch.tensor([list(b"Once upon a ti")]))[0, -1]
    assert view["logit_diff"] == pytest.approx(float(logits[ord("m")] - logits[ord("n")]), abs=1e-4)
    assert (tmp_path / "a.png").stat().st_size > 5000


def test_attnlab_heads_scores_every_head_on_random_tokens_and_the_runs_text(ckpt: Path, tmp_path: Path, capsys):
    code, out, _ = run_cli(
        ["heads", str(ckpt), "--format", "json", "--batch", "3", "--out", str(tmp_path / "h.png")], capsys
    )
    view = json.loads(out)
    assert code == 0 and len(view["heads"]) == 3 * 4
    from attnlab.data.corpus import evaluation_split
    from attnlab.inspect.heads import detector_scores, repeated_random_tokens, text_pieces
    from attnlab.tokenizers import ByteTokenizer

    text_BL = text_pieces(evaluation_split("builtin", "valid", ByteTokenizer()).tokens, 64, 3)
    model = _model(max_len=64)
    scores = {
        "text": detector_scores(model, text_BL),
        "random": detector_scores(model, repeated_random_tokens(256, 32, 3, 0, text_BL)),
    }
    for row in view["heads"]:
        for where, by_detector in scores.items():
            for detector, s_NH in by_detector.items():
                assert row[f"{detector}_{where}"] == pytest.approx(float(s_NH[row["layer"], row["head"]]), abs=1e-4)
    assert set(view["heads"][0]) == {"layer", "head"} | {
        f"{d}_{w}" for d in ("previous", "duplicate", "induction") for w in ("random", "text")
    }
    assert all(0 <= row["induction_random"] <= 1 for row in view["heads"])
    assert (tmp_path / "h.png").stat().st_size > 5000


def test_the_residual_sweep_and_the_head_attributions_equal_transformerlenss(tmp_path: Path, monkeypatch) -> None:
    """The same GPT-2-architecture weights (a small random config, exported with to_hf) in TransformerLens:
    its layer x position residual patching and its per-head direct logit attribution (LayerNorm folded,
    value biases left with their heads, as attnlab counts them) equal attnlab's."""
    pytest.importorskip("transformer_lens", reason="TransformerLens is not installed (pip install transformer-lens)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import transformer_lens.patching as tl_patching
    from transformer_lens.model_bridge import TransformerBridge

    from attnlab.interop import to_hf

    model = _model(n_layers=2, max_len=32, mlp="gelu", head_dim=8)
    hf = to_hf(model).eval()
    hf.save_pretrained(tmp_path / "hf")
    bridge = TransformerBridge.boot_transformers(str(tmp_path / "hf"), hf_model=hf, device="cpu")
    bridge.enable_compatibility_mode(disable_warnings=True, fold_value_biases=False)
    clean_1L, corrupt_1L = _prompts(L=10, differ_at=3)
    answer, wrong = 7, 101

    def tl_metric(logits_BLV: torch.Tensor) -> torch.Tensor:
        return logits_BLV[0, -1, answer] - logits_BLV[0, -1, wrong]

    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(clean_1L)
        theirs_NL = tl_patching.get_act_patch_resid_pre(bridge, corrupt_1L, clean_cache, tl_metric)
        stack, labels = clean_cache.stack_head_results(layer=-1, pos_slice=-1, apply_ln=True, return_labels=True)
        theirs_heads = stack[:, 0] @ (bridge.W_U[:, answer] - bridge.W_U[:, wrong])
    ours = patch_sweep(model, clean_1L, corrupt_1L, logit_diff(answer, wrong), over="resid")
    assert torch.allclose(ours.values, theirs_NL.float(), atol=1e-4)
    parts = dict(direct_logit_attribution(model, clean_1L, answer, wrong).parts)
    assert labels == [f"L{layer}H{h}" for layer in range(2) for h in range(4)]
    ours_heads = torch.tensor([parts[f"blocks.{layer}.attn.head.{h}"] for layer in range(2) for h in range(4)])
    assert torch.allclose(ours_heads, theirs_heads.float(), atol=1e-4)
    assert ours_heads.abs().max() > 0.05  # heads that write something, so the comparison means something


def test_a_sweep_takes_fewer_rows_per_forward_when_memory_is_short_and_refuses_when_none_fit(monkeypatch) -> None:
    from attnlab.inspect import circuits

    model = _model()
    clean_1L, corrupt_1L = _prompts()
    cells = sweep_cells(model, "resid", 9)
    metric = logit_diff(7, 101)
    whole = patch_cells(model, clean_1L, corrupt_1L, cells, metric, batch=64)
    monkeypatch.setattr(circuits, "memory_limit", lambda: 2 * 3 * circuits.forward_bytes(model, 9))
    assert circuits.rows_that_fit(model, 9, 64) == 3
    assert torch.allclose(patch_cells(model, clean_1L, corrupt_1L, cells, metric, batch=64), whole, atol=1e-5)
    monkeypatch.setattr(circuits, "memory_limit", lambda: circuits.forward_bytes(model, 9))
    with pytest.raises(AttnlabError, match="GiB, more than this machine can spare"):
        patch_cells(model, clean_1L, corrupt_1L, cells, metric)
