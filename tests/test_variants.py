"""Every block variant: same output on both attention paths, the trace reproduces it, counts match,
it trains, and its parts match an independent computation."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.data.corpus import TokenStream
from attnlab.errors import AttnlabError
from attnlab.inspect.params import param_breakdown
from attnlab.inspect.trace import trace
from attnlab.models import ModelConfig, build_model, preset_config
from attnlab.models.attention import attention, causal_mask_LK
from attnlab.models.decoding import attend_one_query
from attnlab.models.layers import Block, RMSNorm
from attnlab.models.positions import RotaryEmbedding, sinusoidal_positions_LC
from attnlab.training.train import TrainConfig, evaluate, train

from .conftest import TINY, run_cli

VARIANTS = {
    "rmsnorm": dict(norm="rms"),
    "layernorm-no-bias": dict(norm_bias=False),
    "post-norm": dict(norm_placement="post"),
    "sinusoidal": dict(positions="sinusoidal"),
    "rope": dict(positions="rope", head_dim=8),
    "no-positions": dict(positions="none"),
    "gelu": dict(mlp="gelu"),
    "swiglu": dict(mlp="swiglu"),
    "relu2": dict(mlp="relu2"),
    "gqa": dict(n_kv_heads=2),
    "qk-norm": dict(qk_norm=True, positions="rope", head_dim=8, n_kv_heads=2),
    "no-bias": dict(bias=False),
    "untied": dict(tie_embeddings=False),
    "llama-like": dict(
        norm="rms", positions="rope", mlp="swiglu", n_kv_heads=2, bias=False, tie_embeddings=False, head_dim=8
    ),
}


def _model(model: str = "transformer", n_layers: int = 2, **kw):
    torch.manual_seed(0)
    return build_model(preset_config("lab", model=model, n_layers=n_layers, max_len=16, **kw))


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_sdpa_and_explicit_paths_agree_and_trace_reproduces_it(variant: str) -> None:
    model = _model(**VARIANTS[variant]).eval()
    ids_BL = torch.randint(0, 256, (2, 16))
    fast_BLV = model(ids_BL)
    slow_BLV, _ = model.run_with_cache(ids_BL)
    assert (fast_BLV - slow_BLV).abs().max() < 1e-5
    tr = trace(model, list(b"Once upon a time")[:12])
    assert tr.max_abs_diff < 1e-5
    assert all(s.cache_diff < 1e-5 for s in tr.steps if s.cache_diff is not None)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["transformer", "mlp"])
def test_variant_parameter_formula_matches_the_modules(variant: str, kind: str) -> None:
    model = _model(kind, **VARIANTS[variant])
    counts = param_breakdown(model.config)
    assert sum(counts.values()) == model.num_params()
    modules = dict(model.named_modules())
    for name, n in counts.items():
        if name == "lm_head" and model.config.tie_embeddings:
            assert n == 0
        else:
            assert sum(p.numel() for p in modules[name].parameters()) == n, name


@pytest.fixture(scope="module")
def streams(stories: list[str]) -> tuple[TokenStream, TokenStream]:
    text = "\n".join(stories[:60]).encode()
    tokens = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
    split = len(tokens) * 9 // 10
    return TokenStream(tokens[:split], split), TokenStream(tokens[split:], len(tokens) - split)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains(variant: str, streams, tmp_path: Path) -> None:
    from attnlab.tokenizers import ByteTokenizer

    model = _model(**VARIANTS[variant])
    train_s, valid_s = streams
    before = evaluate(model, valid_s).loss
    train(model, ByteTokenizer(), train_s, valid_s, TrainConfig(steps=80, batch_size=8, eval_every=1000), tmp_path)
    after = evaluate(model, valid_s).loss
    assert before > 5.0 and after < before - 2.0, (before, after)


def test_rmsnorm_matches_its_formula() -> None:
    x = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    norm = RMSNorm(4, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0]))
    rms = math.sqrt((1 + 4 + 9 + 0.25) / 4 + 1e-6)
    expected = [1 / rms * 1, -2 / rms * 2, 3 / rms * 0.5, 0.5 / rms]
    assert norm(x)[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_sinusoidal_positions_match_the_2017_formula() -> None:
    pe_LC = sinusoidal_positions_LC(50, 16)
    for p in (0, 7, 49):
        for i in range(8):
            angle = p / 10000 ** (2 * i / 16)
            assert pe_LC[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe_LC[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_rope_rotates_each_channel_pair_by_position_times_frequency() -> None:
    rope = RotaryEmbedding(head_dim=4, max_len=10, theta=100.0)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    p = 3
    x_11LD = torch.zeros(1, 1, 5, 4)
    x_11LD[0, 0, p] = x
    out = rope(x_11LD)[0, 0, p].tolist()
    # Pairs are (channel 0, channel 2) and (channel 1, channel 3); pair i turns by p * 100^(-2i/4).
    expected = [0.0] * 4
    for i, (a, b) in enumerate([(0, 2), (1, 3)]):
        angle = p * 100.0 ** (-2 * i / 4)
        expected[a] = x[a].item() * math.cos(angle) - x[b].item() * math.sin(angle)
        expected[b] = x[a].item() * math.sin(angle) + x[b].item() * math.cos(angle)
    assert out == pytest.approx(expected, abs=1e-5)
    assert torch.equal(rope(x_11LD)[0, 0, 0], x_11LD[0, 0, 0])  # position 0 is not rotated


def test_rope_scores_depend_only_on_the_offset() -> None:
    rope = RotaryEmbedding(head_dim=8, max_len=64)
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)

    def score(pq: int, pk: int) -> float:
        qs, ks = torch.zeros(1, 1, 64, 8), torch.zeros(1, 1, 64, 8)
        qs[0, 0, pq], ks[0, 0, pk] = q, k
        return (rope(qs)[0, 0, pq] @ rope(ks)[0, 0, pk]).item()

    assert score(10, 4) == pytest.approx(score(40, 34), abs=1e-4)
    assert score(10, 4) != pytest.approx(score(10, 5), abs=1e-3)


def test_post_norm_block_normalises_after_each_residual_add() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(norm_placement="post", emb_dim=8, head_dim=4, n_heads=2, n_hidden=16, max_len=6)
    block = Block(cfg).eval()
    x_BLC = torch.randn(1, 6, 8)
    mid_BLC = block.ln1(x_BLC + block.attn(x_BLC))
    expected_BLC = block.ln2(mid_BLC + block.mlp(mid_BLC))
    assert torch.allclose(block(x_BLC), expected_BLC, atol=1e-6)
    assert block(x_BLC).mean(-1).abs().max() < 1e-5  # the output is normalised


def test_without_positions_the_last_logits_ignore_the_order_of_earlier_tokens() -> None:
    ids = torch.tensor([[10, 20, 30, 40, 50, 60, 70]])
    shuffled = torch.tensor([[40, 10, 60, 20, 50, 30, 70]])  # the same tokens before the last one, reordered
    none = _model(n_layers=1, positions="none").eval()
    assert (none(ids)[0, -1] - none(shuffled)[0, -1]).abs().max() < 1e-5
    learned = _model(n_layers=1, positions="learned").eval()
    assert (learned(ids)[0, -1] - learned(shuffled)[0, -1]).abs().max() > 1e-4


def test_grouped_query_attention_equals_multi_head_with_repeated_key_value_heads() -> None:
    gqa = _model(n_layers=1, n_kv_heads=2).eval()
    mha = _model(n_layers=1).eval()
    state = gqa.state_dict()
    D = 5
    for name in ("w_k", "w_v"):
        for part in ("weight", "bias"):
            key = f"blocks.0.attn.{name}.{part}"
            groups = state[key].view(2, D, -1) if part == "weight" else state[key].view(2, D)
            state[key] = groups.repeat_interleave(2, dim=0).reshape(4 * D, *state[key].shape[1:])
    mha.load_state_dict(state)
    ids = torch.randint(0, 256, (1, 12))
    assert (gqa(ids) - mha(ids)).abs().max() < 1e-5
    assert gqa.num_params() < mha.num_params()


def test_attention_takes_a_boolean_or_an_additive_mask() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    bool_LK = causal_mask_LK(5, 5)
    add_LK = torch.zeros(5, 5).masked_fill(~bool_LK, float("-inf"))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(attention(q, k, v, bool_LK), ref, atol=1e-6)
    assert torch.allclose(attention(q, k, v, add_LK), ref, atol=1e-6)
    assert torch.allclose(attention(q, k, v), ref, atol=1e-6)
    full = attention(q, k, v, torch.ones(5, 5, dtype=torch.bool))
    assert torch.allclose(full, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-6)


def test_one_query_attention_equals_sdpa_over_every_key() -> None:
    """The compiled decoding step's attention (one new query, all cached keys) is SDPA's."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 1, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert attend_one_query(q, k, v).shape == (2, 3, 1, 8)
    assert torch.allclose(attend_one_query(q, k, v), ref, atol=1e-6)


def test_config_with_variants_round_trips_through_json() -> None:
    cfg = preset_config("small").with_overrides(
        {
            "positions": "rope",
            "norm": "rms",
            "mlp": "swiglu",
            "n_kv_heads": "2",
            "bias": "false",
            "tie_embeddings": "no",
            "rope_theta": "500000",
        }
    )
    assert (cfg.bias, cfg.tie_embeddings, cfg.n_kv_heads, cfg.rope_theta) == (False, False, 2, 500000.0)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"n_kv_heads": "3"}, "n_kv_heads=3"),
        ({"positions": "rope"}, "head_dim=5"),
        ({"norm": "batch"}, "norm='batch'"),
        ({"mlp": "tanh"}, "mlp='tanh'"),
        ({"positions": "alibi"}, "positions='alibi'"),
        ({"bias": "maybe"}, "--set bias=maybe: expected a bool"),
        ({"norm_placement": "middle"}, "norm_placement='middle'"),
    ],
)
def test_invalid_variant_combinations_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(AttnlabError, match=field.replace("(", r"\(")):
        preset_config("lab").with_overrides(overrides)


def test_cli_trains_a_variant_and_the_checkpoint_restores_it(corpus_file: Path, tmp_path: Path, capsys) -> None:
    from attnlab.training.checkpoint import load_checkpoint

    args = [
        "train",
        *TINY,
        "--data",
        str(corpus_file),
        "--steps",
        "30",
        "--out",
        str(tmp_path / "r"),
        "--set",
        "positions=rope",
        "--set",
        "norm=rms",
        "--set",
        "mlp=swiglu",
        "--set",
        "head_dim=8",
    ]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    ckpt = load_checkpoint(tmp_path / "r")
    cfg = ckpt.model.config
    assert (cfg.positions, cfg.norm, cfg.mlp) == ("rope", "rms", "swiglu")
    code, out, _ = run_cli(["trace", str(tmp_path / "r"), "--prompt", "Once", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["max_abs_diff"] < 1e-5
    code, out, _ = run_cli(["generate", str(tmp_path / "r"), "--prompt", "Once", "--max-new-tokens", "40"], capsys)
    assert code == 0 and out.strip()


@pytest.mark.parametrize("variant", [*VARIANTS, "mlp"])
def test_hook_names_come_from_the_config_in_forward_order_without_a_forward(variant: str) -> None:
    model = _model("mlp") if variant == "mlp" else _model(**VARIANTS[variant])
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    names = model.hook_names()
    assert calls == []  # no forward was run to learn the names
    _, cache = model.run_with_cache(torch.randint(0, 256, (1, 6)))
    assert list(cache) == names and len(calls) == 1  # one forward per call
    handle.remove()


def test_grouped_query_hooks_are_named_for_the_key_value_heads_they_hold() -> None:
    model = _model(n_layers=1, n_kv_heads=2)  # 4 query heads, 2 key/value heads
    _, cache = model.run_with_cache(torch.randint(0, 256, (1, 6)))
    assert cache["blocks.0.attn.k_BGKD"].shape == (1, 2, 6, 5) and cache["blocks.0.attn.v_BGKD"].shape == (1, 2, 6, 5)
    assert cache["blocks.0.attn.q_BHLD"].shape == (1, 4, 6, 5) and "blocks.0.attn.k_BHKD" not in cache


def test_editing_one_key_value_head_moves_every_query_head_it_serves() -> None:
    model = _model(n_layers=1, n_kv_heads=2)
    ids_BL = torch.randint(0, 256, (1, 6))
    _, clean = model.run_with_cache(ids_BL)
    zero_group_0 = [("blocks.0.attn.v_BGKD", lambda v_BGKD, name: v_BGKD.index_fill(1, torch.tensor([0]), 0.0))]
    _, edited = model.run_with_cache(ids_BL, fwd_hooks=zero_group_0)
    z_clean, z_edit = clean["blocks.0.attn.z_BHLD"], edited["blocks.0.attn.z_BHLD"]
    assert (z_edit[:, :2] == 0).all() and not (z_clean[:, :2] == 0).all()  # query heads 0 and 1 share group 0
    assert torch.equal(z_edit[:, 2:], z_clean[:, 2:])


def test_rope_takes_explicit_positions_for_packed_and_left_padded_sequences() -> None:
    rope = RotaryEmbedding(head_dim=8, max_len=32)
    torch.manual_seed(0)
    x_BHLD = torch.randn(2, 3, 5, 8)
    # A start offset, a slice and a tensor of positions say the same thing.
    assert torch.equal(rope(x_BHLD, 4), rope(x_BHLD, torch.arange(4, 9)))
    assert torch.equal(rope(x_BHLD, slice(4, 9)), rope(x_BHLD, 4))
    # Left padding: each row's tokens at its own positions (row 1 starts two pads later).
    pos_BL = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]])
    out = rope(x_BHLD, pos_BL)
    assert torch.equal(out[0], rope(x_BHLD[:1], 0)[0])
    assert torch.equal(out[1, :, 2:], rope(x_BHLD[1:, :, 2:], 0)[0])
    # Packing: two sequences in one row, positions starting again at 0 for the second.
    packed = rope(x_BHLD[:1], torch.tensor([0, 1, 2, 0, 1]))
    assert torch.equal(packed[..., :3, :], rope(x_BHLD[:1, :, :3], 0))
    assert torch.equal(packed[..., 3:, :], rope(x_BHLD[:1, :, 3:], 0))


def test_a_new_position_scheme_is_one_class(monkeypatch) -> None:
    """Registered in SCHEMES alone, a scheme is accepted by the config, built, traced and counted."""
    from attnlab.models.positions import SCHEMES, LearnedPositions

    class HalfLearned(LearnedPositions):  # a learned table for the first half of the channels only
        @classmethod
        def from_config(cls, cfg: ModelConfig) -> "HalfLearned":
            return cls(cfg.max_len, cfg.emb_dim)

        def table_LC(self, positions: slice | torch.Tensor) -> torch.Tensor:
            table_LC = self.weight[positions]
            return torch.cat(
                [table_LC[:, : table_LC.shape[1] // 2], torch.zeros_like(table_LC)[:, table_LC.shape[1] // 2 :]], 1
            )

    monkeypatch.setitem(SCHEMES, "half-learned", HalfLearned)
    model = _model(n_layers=1, positions="half-learned").eval()
    assert isinstance(model.embed.pos, HalfLearned) and "embed.pos_LC" in model.hook_names()
    assert sum(param_breakdown(model.config).values()) == model.num_params()
    tr = trace(model, list(b"Tom had a"))
    assert tr.max_abs_diff < 1e-5 and all(s.cache_diff < 1e-5 for s in tr.steps if s.cache_diff is not None)
    with pytest.raises(AttnlabError, match="choose one of learned, sinusoidal, rope, none, half-learned"):
        _model(positions="quarter-learned")
