import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.errors import AttnlabError
from attnlab.inspect.params import param_breakdown
from attnlab.inspect.trace import trace
from attnlab.models import (
    PRESETS,
    CausalSelfAttention,
    FeedForwardLM,
    ModelConfig,
    TransformerLM,
    build_model,
    causal_mask_LK,
    preset_config,
)
from attnlab.models.hooks import Hook


def _naive_attention_BLC(attn: CausalSelfAttention, x_BLC: torch.Tensor) -> torch.Tensor:
    """An independent, loop-over-heads reference for multi-head causal attention."""
    B, L, C = x_BLC.shape
    H, D = attn.n_heads, attn.head_dim
    heads = []
    for h in range(H):
        sl = slice(h * D, (h + 1) * D)
        q = x_BLC @ attn.w_q.weight[sl].T + attn.w_q.bias[sl]
        k = x_BLC @ attn.w_k.weight[sl].T + attn.w_k.bias[sl]
        v = x_BLC @ attn.w_v.weight[sl].T + attn.w_v.bias[sl]
        out = torch.zeros(B, L, D)
        for i in range(L):
            s = (q[:, i : i + 1] @ k[:, : i + 1].transpose(1, 2)) / math.sqrt(D)
            out[:, i] = (s.softmax(-1) @ v[:, : i + 1])[:, 0]
        heads.append(out)
    return attn.w_o(torch.cat(heads, dim=-1))


def test_explicit_attention_matches_a_loop_over_heads_and_positions() -> None:
    torch.manual_seed(0)
    attn = CausalSelfAttention(ModelConfig(emb_dim=32, n_heads=4, head_dim=5, attn_impl="explicit"))
    x_BLC = torch.randn(2, 9, 32)
    cache: dict[str, torch.Tensor] = {}
    out_BLC = attn(x_BLC, Hook(cache=cache))
    weights_BHLL = cache["weights_BHLK"]
    assert (out_BLC - _naive_attention_BLC(attn, x_BLC)).abs().max() < 1e-5
    assert weights_BHLL.shape == (2, 4, 9, 9)
    assert torch.allclose(weights_BHLL.sum(-1), torch.ones(2, 4, 9))
    assert (weights_BHLL.masked_select(~causal_mask_LK(9, 9)) == 0).all()


@pytest.mark.parametrize("preset", ["lab", "small"])
def test_sdpa_path_equals_the_explicit_path(preset: str) -> None:
    torch.manual_seed(0)
    model = build_model(preset_config(preset)).eval()
    ids_BL = torch.randint(0, 256, (3, model.config.max_len))
    fast_BLV = model(ids_BL)
    for block in model.blocks:
        block.attn.impl = "explicit"
    slow_BLV, weights = model.forward_with_weights(ids_BL)
    assert (fast_BLV - slow_BLV).abs().max().item() < 1e-5
    assert len(weights) == model.config.n_layers and weights[0].shape[1] == model.config.n_heads


def test_lm_head_is_tied_to_the_token_embedding() -> None:
    torch.manual_seed(0)
    for model in (TransformerLM.from_fields(n_vocab=50, max_len=8), FeedForwardLM.from_fields(n_vocab=50)):
        names = [n for n, _ in model.named_parameters()]
        assert not any("head" in n for n in names)  # no second V x C matrix
        ids_BL = torch.randint(0, 50, (2, 8))
        before = model(ids_BL)
        with torch.no_grad():
            model.embed.tok.weight[7] += torch.randn(
                model.config.emb_dim
            )  # not a constant: LayerNorm's output sums to 0
        after = model(ids_BL)
        assert (after[..., 7] != before[..., 7]).all()  # output logits of token 7 moved too
        loss = F.cross_entropy(model(ids_BL).flatten(0, 1), ids_BL.flatten())
        loss.backward()
        assert model.embed.tok.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("n_layers", [1, 3])
def test_transformer_is_causal(n_layers: int) -> None:
    torch.manual_seed(0)
    model = TransformerLM.from_fields(max_len=16, n_layers=n_layers).eval()
    ids_BL = torch.randint(0, 256, (1, 16))
    changed = ids_BL.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 256
    a, b = model(ids_BL), model(changed)
    assert torch.equal(a[:, :10], b[:, :10])  # changing later tokens never changes earlier logits
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_mlp_sees_only_its_own_token() -> None:
    torch.manual_seed(0)
    model = FeedForwardLM.from_fields(n_vocab=256, emb_dim=32, n_hidden=128).eval()
    ids_BL = torch.randint(0, 256, (1, 12))
    changed = ids_BL.clone()
    changed[0, :11] = torch.randint(0, 256, (11,))
    assert torch.equal(model(ids_BL)[:, -1], model(changed)[:, -1])
    assert torch.allclose(model(ids_BL[:, 5:6])[0, 0], model(ids_BL)[0, 5], atol=1e-7, rtol=1e-5)


def test_parameter_counts_match_the_formula() -> None:
    V, L, C, F_, D, H = 256, 64, 32, 128, 5, 4
    mlp = FeedForwardLM.from_fields(n_vocab=V, emb_dim=C, n_hidden=F_)
    assert mlp.num_params() == V * C + (C * F_ + F_) + (F_ * C + C)
    tf = TransformerLM(ModelConfig(n_vocab=V, max_len=L, emb_dim=C, n_hidden=F_, head_dim=D, n_heads=H, n_layers=2))
    attn = 3 * (C * H * D + H * D) + (H * D * C + C)
    block = 2 * 2 * C + attn + (C * F_ + F_) + (F_ * C + C)
    assert tf.num_params() == V * C + L * C + 2 * block + 2 * C


def test_lab_preset_has_the_lab_sizes() -> None:
    cfg = preset_config("lab")
    assert (cfg.emb_dim, cfg.n_heads, cfg.head_dim, cfg.n_hidden, cfg.n_layers) == (32, 4, 5, 128, 1)
    assert set(PRESETS) >= {"lab", "small", "medium", "large"}


def test_sequences_longer_than_max_len_are_rejected() -> None:
    with pytest.raises(AttnlabError, match="longer than max_len=8"):
        TransformerLM.from_fields(max_len=8)(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize(
    "overrides, message",
    [({"n_heads": "0"}, "n_heads=0"), ({"bogus": "1"}, "no such config field"), ({"emb_dim": "x"}, "expected a int")],
)
def test_bad_config_overrides_name_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(AttnlabError, match=message):
        preset_config("lab").with_overrides(overrides)


def test_config_round_trips_through_a_dict() -> None:
    cfg = preset_config("small", model="mlp", n_vocab=80).with_overrides({"dropout": "0.1"})
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_models_are_built_from_a_config_or_its_fields() -> None:
    cfg = preset_config("lab", n_layers=2)
    assert TransformerLM(cfg).config == cfg and build_model(cfg).config == cfg
    assert TransformerLM.from_fields(n_vocab=256, emb_dim=32, n_heads=4, head_dim=5).config == ModelConfig()
    mlp = FeedForwardLM(ModelConfig(emb_dim=16))  # the class decides the kind, whatever the config said
    assert mlp.config.model == "mlp" and build_model(mlp.config).__class__ is FeedForwardLM
    with pytest.raises(AttnlabError, match="n_heads=0"):
        TransformerLM.from_fields(n_heads=0)


def test_overrides_take_set_strings_or_typed_values() -> None:
    typed = preset_config("lab").with_overrides({"bias": False, "n_heads": 2, "dropout": 0.1})
    assert typed == preset_config("lab").with_overrides({"bias": "false", "n_heads": "2", "dropout": "0.1"})
    assert (typed.bias, typed.n_heads, typed.dropout) == (False, 2, 0.1)


def test_zero_init_starts_every_block_as_the_identity() -> None:
    model = build_model(preset_config("lab", n_layers=3, zero_init=True)).eval()
    assert all(torch.all(m.weight == 0) for name, m in model.named_modules() if name.endswith(("w_o", "fc_out")))
    ids_BL = torch.randint(0, 256, (2, 16))
    _, cache = model.run_with_cache(ids_BL)
    for i in range(3):
        assert torch.equal(cache[f"blocks.{i}.resid_post_BLC"], cache["embed.sum_BLC"])
    assert build_model(preset_config("lab")).blocks[0].attn.w_o.weight.abs().sum() > 0  # the default: GPT-2's


def test_qk_norm_gives_each_head_s_queries_and_keys_their_learned_length() -> None:
    torch.manual_seed(0)
    model = build_model(preset_config("lab", qk_norm=True, n_layers=2, positions="rope", head_dim=8)).eval()
    with torch.no_grad():  # gains other than the initial ones, so a gain left out would show
        for block in model.blocks:
            block.attn.q_norm.weight.uniform_(0.5, 2.0)
            block.attn.k_norm.weight.uniform_(0.5, 2.0)
    ids_BL = torch.randint(0, 256, (2, 16))
    logits_BLV, cache = model.run_with_cache(ids_BL)
    assert (logits_BLV - model(ids_BL)).abs().max() < 1e-5  # the fused kernel sees the same q and k
    for i, block in enumerate(model.blocks):
        # The hooked q_BHLD: each head's query scaled to RMS 1, times the gains, then rotated.
        x_BLC = cache[f"blocks.{i}.ln1_BLC"]
        q_BHLD = block.attn.w_q(x_BLC).view(2, 16, 4, 8).transpose(1, 2)
        unit_BHLD = q_BHLD / q_BHLD.pow(2).mean(-1, keepdim=True).add(block.attn.q_norm.eps).sqrt()
        rotate = model.embed.pos.rotation(slice(0, 16))
        assert torch.allclose(cache[f"blocks.{i}.attn.q_BHLD"], rotate(unit_BHLD * block.attn.q_norm.weight), atol=1e-5)
    tr = trace(model, list(b"Once upon a time"))
    assert tr.max_abs_diff < 1e-5 and all(s.cache_diff < 1e-5 for s in tr.steps if s.cache_diff is not None)
    names = dict(model.named_parameters())
    assert names["blocks.0.attn.q_norm.weight"].shape == (8,)
    assert sum(param_breakdown(model.config).values()) == model.num_params()
    with pytest.raises(AttnlabError, match="no n_kv_heads, rotary positions or qk_norm"):
        preset_config("lab", model="seq2seq", qk_norm=True)


def test_the_rolled_rotation_the_model_runs_is_rotate_pairs_to_the_bit() -> None:
    from attnlab.models.positions import RotaryEmbedding, rotate_pairs

    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=8, max_len=32)
    x_BHLD = torch.randn(2, 3, 32, 8).transpose(1, 2).contiguous().transpose(1, 2)  # any strides
    assert torch.equal(rope.rotation(slice(0, 32))(x_BHLD), rotate_pairs(x_BHLD, rope.cos_LD, rope.sin_LD))
    positions_BL = torch.randint(0, 32, (2, 32))  # one row of positions per sequence
    cos_B1LD, sin_B1LD = rope.cos_LD[positions_BL][:, None], rope.sin_LD[positions_BL][:, None]
    assert torch.equal(rope.rotation(positions_BL)(x_BHLD), rotate_pairs(x_BHLD, cos_B1LD, sin_B1LD))
