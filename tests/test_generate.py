import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.generate import encode_prompt, generate_text, next_token_table
from attnlab.models import build_model, preset_config
from attnlab.models.sampling import filter_logits_BV
from attnlab.tokenizers import ByteTokenizer, CodepointTokenizer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(preset_config("lab", max_len=16)).eval()


def test_greedy_generation_is_the_argmax_chain(model) -> None:
    ids_BL = torch.tensor([[72, 105]])
    out_BL = model.generate(ids_BL, 5, greedy=True)
    expected = ids_BL
    for _ in range(5):
        nxt = model(expected[:, -16:])[:, -1].argmax(-1, keepdim=True)
        expected = torch.cat([expected, nxt], 1)
    assert torch.equal(out_BL, expected)


def test_generation_past_max_len_with_slide_1_keeps_the_last_max_len_tokens(model) -> None:
    out_BL = model.generate(torch.tensor([[65] * 10]), 20, greedy=True, slide=1)
    assert out_BL.shape == (1, 30)
    for n in range(17, 30):  # every token was predicted from exactly the 16 tokens before it
        assert out_BL[0, n] == model(out_BL[:, n - 16 : n])[0, -1].argmax()


def test_full_window_moves_by_slide_tokens(model) -> None:
    """max_len 16, slide 4: the 17th token's prediction sees the last 13 tokens, the window then grows to 16."""
    out_BL = model.generate(torch.tensor([[65] * 10]), 30, greedy=True, slide=4, kv_cache=False)
    start, moves = 0, 0
    for n in range(10, 40):
        if n - start > 16:
            start, moves = n - 16 - 1 + 4, moves + 1
        assert (13 if moves else 10) <= n - start <= 16
        assert out_BL[0, n] == model(out_BL[:, start:n])[0, -1].argmax()
    assert moves == 6  # at 17, 21, 25, 29, 33 and 37 tokens


@pytest.mark.parametrize("slide", [0, 17])
def test_slide_outside_1_to_max_len_is_refused(model, slide: int) -> None:
    with pytest.raises(AttnlabError, match="--slide"):
        model.generate(torch.tensor([[65]]), 3, slide=slide)


def test_sampling_is_reproducible_for_a_seed(model) -> None:
    tok = ByteTokenizer()
    a = generate_text(model, tok, "Once", 30, seed=3)
    b = generate_text(model, tok, "Once", 30, seed=3)
    c = generate_text(model, tok, "Once", 30, seed=4)
    assert a == b and a != c


def test_top_k_keeps_exactly_k_tokens() -> None:
    logits_BV = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = filter_logits_BV(logits_BV, top_k=2).isfinite()
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs_BV = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits_BV = probs_BV.log()
    assert filter_logits_BV(logits_BV, top_p=0.75).isfinite().tolist() == [[True, True, False, False]]
    assert filter_logits_BV(logits_BV, top_p=0.8).isfinite().tolist() == [[True, True, False, False]]
    assert filter_logits_BV(logits_BV, top_p=0.81).isfinite().tolist() == [[True, True, True, False]]
    assert filter_logits_BV(logits_BV, top_p=0.1).isfinite().tolist() == [[True, False, False, False]]


def test_top_k_1_sampling_equals_greedy(model) -> None:
    tok = ByteTokenizer()
    assert generate_text(model, tok, "The", 20, top_k=1, seed=1) == generate_text(model, tok, "The", 20, greedy=True)


@pytest.mark.parametrize(
    "extreme", [{"top_p": 1e-300}, {"top_p": 1e-12}, {"temperature": 1e-300}, {"temperature": 1e-30}]
)
def test_extreme_sampling_settings_are_greedy_not_nan(model, extreme: dict) -> None:
    """A nucleus that rounds to 0 in float32, or a temperature whose 1/T overflows: the top token, always."""
    tok = ByteTokenizer()
    assert generate_text(model, tok, "The", 20, seed=1, **extreme) == generate_text(model, tok, "The", 20, greedy=True)


def test_next_token_table_lists_probabilities_in_order(model) -> None:
    table = next_token_table(model, ByteTokenizer(), "Once upon", k=10)
    probs = [p for _, p in table]
    assert len(table) == 10 and probs == sorted(probs, reverse=True)
    full = model(torch.tensor([list(b"Once upon")]))[0, -1].softmax(-1)
    assert probs[0] == pytest.approx(full.max().item())


def test_long_prompt_is_cropped_with_a_notice() -> None:
    ids, notices = encode_prompt(ByteTokenizer(), "x" * 40, max_len=16)
    assert len(ids) == 16 and "cropped to its last 16" in notices[0]


def test_unencodable_prompt_characters_are_reported() -> None:
    ids, notices = encode_prompt(CodepointTokenizer(), "“Hi”", max_len=16)
    assert ids == [72, 105] and "'“'" in notices[0]
    with pytest.raises(AttnlabError, match="no character the tokenizer can encode"):
        encode_prompt(CodepointTokenizer(), "“”")
    with pytest.raises(AttnlabError, match="empty prompt"):
        encode_prompt(ByteTokenizer(), "")


KV_VARIANTS = [
    {},
    {"positions": "rope", "mlp": "swiglu", "n_kv_heads": 2, "norm": "rms", "head_dim": 8},
    {"positions": "sinusoidal", "norm_placement": "post"},
    {"positions": "none", "tie_embeddings": False},
    {"positions": "rope", "bias": False, "n_kv_heads": 1, "head_dim": 6},
    {"positions": "rope", "qk_norm": True, "n_kv_heads": 2, "head_dim": 8},
]


@pytest.mark.parametrize("slide", [1, None])
@pytest.mark.parametrize("variant", KV_VARIANTS)
def test_kv_cache_generation_equals_generation_without_it_past_max_len(variant: dict, slide: int | None) -> None:
    torch.manual_seed(0)
    model = build_model(preset_config("lab", n_layers=2, max_len=16, **variant)).eval()
    ids_BL = torch.randint(0, 256, (2, 5))
    cached = model.generate(ids_BL, 40, greedy=True, kv_cache=True, slide=slide)  # 45 tokens: past max_len 16
    plain = model.generate(ids_BL, 40, greedy=True, kv_cache=False, slide=slide)
    assert torch.equal(cached, plain)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(
        model.generate(ids_BL, 40, top_k=20, generator=g1, kv_cache=True, slide=slide),
        model.generate(ids_BL, 40, top_k=20, generator=g2, kv_cache=False, slide=slide),
    )


def test_kv_cache_runs_one_position_per_new_token_until_the_window_is_full() -> None:
    torch.manual_seed(0)
    model = build_model(preset_config("lab", max_len=16)).eval()
    lengths = []
    handle = model.embed.tok.register_forward_hook(lambda mod, args, out: lengths.append(args[0].shape[1]))
    model.generate(torch.zeros(1, 6, dtype=torch.long), 20, greedy=True, kv_cache=True, slide=4)
    handle.remove()
    # the 6-token prompt once, then one position per token; past 16 tokens the window moves by 4
    # and the cache is rebuilt from the 13 tokens left, then grows one position at a time again
    assert lengths == [6] + [1] * 10 + [13] + [1] * 3 + [13] + [1] * 3 + [13]


def test_cached_logits_equal_the_full_forward() -> None:
    from attnlab.models.decoding import KVCache

    torch.manual_seed(0)
    model = build_model(preset_config("lab", n_layers=2, max_len=16)).eval()
    ids_BL = torch.randint(0, 256, (1, 12))
    cache = KVCache(2, 16)
    prefix_BLV = model(ids_BL[:, :7], kv_cache=cache)
    steps = [model(ids_BL[:, t : t + 1], kv_cache=cache) for t in range(7, 12)]
    full_BLV = model(ids_BL)
    assert (torch.cat([prefix_BLV, *steps], dim=1) - full_BLV).abs().max() < 1e-5


def test_a_reordered_cache_continues_each_row_it_kept() -> None:
    """The cache's rows follow the rows kept (beam search's move), for a language model too, and keep
    doing so past the room a reorder leaves (16 slots here, then grown by doubling up to max_len)."""
    from attnlab.models.decoding import KVCache

    torch.manual_seed(0)
    model = build_model(preset_config("lab", n_layers=2, max_len=48, positions="rope", head_dim=4)).eval()
    ids_BT = torch.randint(0, 256, (2, 5))
    cache = KVCache(2, 48)
    model(ids_BT, kv_cache=cache)
    rows_B = torch.tensor([1, 1, 0])
    cache.reorder(rows_B)
    assert cache.layers[0].k_BGTD.shape == (3, 4, 16, 4)  # the 5 filled slots and room after them
    ids_BT = ids_BT[rows_B]
    for step in range(40):
        ids_BT = torch.cat([ids_BT, torch.tensor([[7 + step], [8], [9 * step % 256]])], dim=1)
        step_BV = model(ids_BT[:, -1:], kv_cache=cache)[:, -1]
        assert (step_BV - model(ids_BT)[:, -1]).abs().max() < 1e-5, step
        if step == 20:
            cache.reorder(torch.tensor([2, 0, 0]))
            ids_BT = ids_BT[[2, 0, 0]]
    assert cache.layers[0].k_BGTD.shape == (3, 4, 48, 4)  # grown to max_len, no further


def test_generation_runs_in_eval_mode_and_gives_back_the_mode_it_found() -> None:
    """A model in training mode (dropout on) generates as in eval mode and is in training mode again
    after; a model in eval mode stays in it."""
    torch.manual_seed(0)
    model = build_model(preset_config("lab", n_layers=2, max_len=32, dropout=0.5))
    ids_BL = torch.randint(0, 256, (2, 4))
    tokens = {}
    for training in (True, False):
        model.train(training)
        tokens[training] = model.generate(ids_BL, 12, greedy=True)
        assert model.training is training and all(m.training is training for m in model.modules())
    assert torch.equal(tokens[True], tokens[False])
