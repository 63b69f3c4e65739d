import json

import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.inspect.params import flops_per_token, format_params_table, param_breakdown, params_report
from attnlab.models import PRESETS, Seq2SeqTransformer, build_model, preset_config

# Parameter counts of the released GPT-2 checkpoints (wte, wpe, 12/24/36/48 blocks, ln_f; head tied).
GPT2_TOTALS = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
}

# n_params of Brown et al. 2020, Table 2.1.
GPT3_TABLE_2_1 = {
    "gpt3-125m": 125e6,
    "gpt3-350m": 350e6,
    "gpt3-760m": 760e6,
    "gpt3-1.3b": 1.3e9,
    "gpt3-2.7b": 2.7e9,
    "gpt3-6.7b": 6.7e9,
    "gpt3-13b": 13.0e9,
    "gpt3-175b": 175.0e9,
}


def _built_on_meta(name: str, model: str) -> torch.nn.Module:
    """The real module tree with shapes only: no memory, so even gpt3-175b builds in well under a second."""
    cfg = preset_config(name, model=model)  # the encoder-decoder presets stay encoder-decoders
    with torch.device("meta"):
        return Seq2SeqTransformer(cfg) if cfg.model == "seq2seq" else build_model(cfg)


@pytest.mark.parametrize("name", list(GPT2_TOTALS))
def test_gpt2_presets_count_exactly_the_released_checkpoints(name: str) -> None:
    assert sum(param_breakdown(preset_config(name)).values()) == GPT2_TOTALS[name]
    assert params_report(preset_config(name))["total"] == GPT2_TOTALS[name]


@pytest.mark.parametrize("name", list(GPT3_TABLE_2_1))
def test_gpt3_presets_are_within_2_percent_of_table_2_1(name: str) -> None:
    total = params_report(preset_config(name))["total"]
    assert abs(total - GPT3_TABLE_2_1[name]) / GPT3_TABLE_2_1[name] < 0.02


def test_gpt3_175b_one_query_head_is_about_1_6m_and_attention_about_600m_per_layer() -> None:
    cfg = preset_config("gpt3-175b")
    assert (cfg.emb_dim, cfg.head_dim, cfg.n_heads) == (12288, 128, 96)
    parts = param_breakdown(cfg)
    q_head = parts["blocks.0.attn.w_q"] // cfg.n_heads
    assert q_head == 12288 * 128 + 128 == params_report(cfg)["per_head"]["attn.w_q"]
    assert abs(q_head - 1.6e6) / 1.6e6 < 0.03
    assert parts["blocks.0.attn.w_k"] // cfg.n_heads == q_head
    attn_layer = sum(parts[f"blocks.0.attn.{w}"] for w in ("w_q", "w_k", "w_v", "w_o"))
    assert attn_layer == 4 * 12288**2 + 4 * 12288 == 604_028_928
    assert abs(attn_layer - 604e6) / 604e6 < 0.02
    assert round(attn_layer, -8) == 600_000_000


@pytest.mark.parametrize("model", ["transformer", "mlp"])
@pytest.mark.parametrize("name", list(PRESETS))
def test_breakdown_matches_the_built_model_module_by_module(name: str, model: str) -> None:
    parts = param_breakdown(preset_config(name, model=model))
    built = _built_on_meta(name, model)
    assert sum(parts.values()) == sum(p.numel() for p in built.parameters())
    modules = dict(built.named_modules())
    assert parts.pop("lm_head") == 0 and "lm_head" not in modules  # tied: no module, no parameters
    for component, n in parts.items():
        assert sum(p.numel() for p in modules[component].parameters()) == n, component


@pytest.mark.parametrize("name", ["lab", "small"])
def test_breakdown_matches_a_model_built_on_the_cpu(name: str) -> None:
    cfg = preset_config(name)
    assert sum(param_breakdown(cfg).values()) == build_model(cfg).num_params()


def test_published_presets_carry_their_vocabulary_and_an_explicit_one_wins() -> None:
    assert preset_config("gpt2").n_vocab == 50257
    assert preset_config("gpt3-175b").n_vocab == 50257
    assert preset_config("gpt2", n_vocab=80).n_vocab == 80
    assert preset_config("lab").n_vocab == 256
    assert preset_config("small", model="mlp", n_vocab=80).n_vocab == 80
    assert preset_config("lab", max_len=32).max_len == 32


def test_lab_forward_flops_per_token_equal_the_hand_computed_number() -> None:
    # lab: V=256, C=32, F=128, H=4, D=5 (H*D=20), one layer, context 64.
    matmuls = 2 * (4 * 32 * 20 + 2 * 32 * 128)  # w_q, w_k, w_v, w_o and fc_in, fc_out: 2 * 10,752
    attention = 2 * 1 * 64 * 20 * 2  # QK^T and weights @ V over 64 keys
    lm_head = 2 * 32 * 256
    assert matmuls + attention + lm_head == 21_504 + 5_120 + 16_384 == 43_008
    flops = flops_per_token(preset_config("lab"))
    assert flops == {"forward": 43_008, "train": 3 * 43_008}


@pytest.mark.parametrize("name", ["lab", "gpt2", "gpt3-175b"])
def test_train_is_three_forwards_and_the_attention_term_doubles_with_the_context(name: str) -> None:
    cfg = preset_config(name)
    for L in (64, 1024, 8192):
        flops = flops_per_token(cfg, L)
        assert flops["train"] == 3 * flops["forward"]
        attention = params_report(cfg, L)["flop_terms"]["attention"]
        assert params_report(cfg, 2 * L)["flop_terms"]["attention"] == 2 * attention
        assert flops_per_token(cfg, 2 * L)["forward"] - flops["forward"] == attention


def test_mlp_model_flops_do_not_depend_on_the_context() -> None:
    cfg = preset_config("lab", model="mlp")
    assert flops_per_token(cfg, 8) == flops_per_token(cfg, 4096) == {"forward": 32_768, "train": 98_304}


def test_scaling_table_doubles_the_context_past_max_len_and_scores_grow_quadratically() -> None:
    rows = params_report(preset_config("gpt2"))["scaling"]
    assert [r["context"] for r in rows] == [64, 128, 256, 512, 1024, 2048, 4096]
    scores_bytes = [r["attention_scores_bytes_per_layer"] for r in rows]
    assert scores_bytes == [12 * L * L * 4 for L in (64, 128, 256, 512, 1024, 2048, 4096)]  # H x L x L fp32
    shares = [r["attention_share"] for r in rows]
    assert shares == sorted(shares) and 0 < shares[0] < 0.01 and shares[-1] > 0.35
    at_max_len = rows[4]
    assert at_max_len["flops_per_token_forward"] == flops_per_token(preset_config("gpt2"))["forward"]


def test_report_groups_add_up_and_the_report_is_plain_json() -> None:
    report = params_report(preset_config("small"))
    assert sum(report["groups"].values()) == report["total"] == 842_496
    assert report["per_layer"] * 4 + report["groups"]["embeddings"] + 2 * 128 == report["total"]
    assert report["context"] == 128 and report["config"]["emb_dim"] == 128
    assert json.loads(json.dumps(report)) == report


def test_table_shows_the_total_with_thousands_separators_and_says_the_head_is_tied() -> None:
    text = format_params_table(params_report(preset_config("gpt2")))
    assert "124,439,808" in text
    assert "tied" in text and "blocks.*.attn.w_q" in text and "x12" in text
    assert "4,096*" in text  # a context past max_len is marked
    mlp_text = format_params_table(params_report(preset_config("lab", model="mlp")))
    assert "16,544" in mlp_text and "mlp.fc_in" in mlp_text


def test_a_context_below_one_is_rejected() -> None:
    with pytest.raises(AttnlabError, match="context=0"):
        flops_per_token(preset_config("lab"), 0)


@pytest.mark.parametrize("name", ["lab", "small", "gpt2", "gpt3-175b"])
@pytest.mark.parametrize("changes", [{}, {"tie_embeddings": False, "positions": "none"}, {"norm_placement": "post"}])
def test_param_count_is_the_breakdowns_total_without_its_rows(name, changes):
    from attnlab.models.counts import param_count

    cfg = preset_config(name, **changes)
    assert param_count(cfg) == sum(param_breakdown(cfg).values())
    assert param_count(preset_config(name, model="mlp")) == sum(
        param_breakdown(preset_config(name, model="mlp")).values()
    )
