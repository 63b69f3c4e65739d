"""Prompts of different lengths generated together: each row's tokens equal its own generation alone, for
every block variant, with and without the KV cache, across window slides; padding is never attended to."""

from __future__ import annotations

import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.models import TransformerLM, build_model, preset_config
from attnlab.models.attention import left_padding
from attnlab.models.batch_generation import generate_batch
from attnlab.models.decoding import KVCache
from attnlab.models.sampling import Sampling

from .test_variants import VARIANTS

LENGTHS = (3, 9, 1, 16, 5)  # up to max_len, so the windows slide at different steps
SETTINGS = {"greedy": Sampling(greedy=True), "sampled": Sampling(temperature=1.3, top_k=50, seed=11)}


def _model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(preset_config("lab", n_layers=2, max_len=16, **overrides)).eval()
    with torch.no_grad():  # larger weights than the initialisation's: logits far apart, no near-ties
        for p in model.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    return model


def _prompts(n_vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(n_vocab, (n,), generator=gen).tolist() for n in LENGTHS]


def _alone(model, prompt: list[int], n: int, sampling: Sampling, kv_cache: bool, slide: int | None = None) -> list[int]:
    ids_1T = model.generate(torch.tensor([prompt]), n, sampling, kv_cache=kv_cache, slide=slide)
    return ids_1T[0, len(prompt) :].tolist()


@pytest.mark.parametrize("variant", ["default", *VARIANTS])
def test_each_row_of_a_batch_gets_the_tokens_it_gets_alone(variant):
    model = _model(**VARIANTS.get(variant, {}))
    prompts = _prompts(model.config.n_vocab)
    for name, sampling in SETTINGS.items():
        want = [_alone(model, p, 40, sampling, kv_cache=True) for p in prompts]
        for kv_cache in (True, False):
            assert generate_batch(model, prompts, 40, sampling, kv_cache=kv_cache) == want, (name, kv_cache)


def test_the_mlp_baseline_generates_a_batch_too():
    model = _model(model="mlp")
    prompts = _prompts(model.config.n_vocab)
    sampling = SETTINGS["sampled"]
    assert generate_batch(model, prompts, 20, sampling) == [_alone(model, p, 20, sampling, False) for p in prompts]


def test_padding_is_never_attended_to_and_positions_count_from_each_rows_first_token():
    positions_BL, sees_B1LK = left_padding(slice(0, 4), torch.tensor([0, 2]))
    assert positions_BL.tolist() == [[0, 1, 2, 3], [0, 0, 0, 1]]
    assert sees_B1LK[1, 0].int().tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    model = _model()
    ids_BL = torch.tensor([[7, 8, 9, 10], [0, 0, 9, 10]])
    with torch.no_grad():
        padded = model(ids_BL, pad_B=torch.tensor([0, 2]))
        for junk in (0, 255):  # whatever the pad tokens are, the real positions' logits do not move
            other = model(torch.tensor([[junk, junk, 9, 10]]), pad_B=torch.tensor([2]))
            torch.testing.assert_close(other[0, 2:], padded[1, 2:])
        torch.testing.assert_close(padded[1, 2:], model(torch.tensor([[9, 10]]))[0])
        cache = KVCache(model.config.n_layers, model.config.max_len, torch.tensor([0, 2]))
        torch.testing.assert_close(model(ids_BL, kv_cache=cache), padded)
        step = model(torch.tensor([[11], [11]]), kv_cache=cache)
        torch.testing.assert_close(step[1, 0], model(torch.tensor([[9, 10, 11]]))[0, -1])


def test_the_padded_slots_stay_within_the_context_as_windows_slide():
    model = _model()
    assert isinstance(model, TransformerLM)
    prompts = [[1] * 16, [2]]  # one row starts full: it slides at the first new token, the other much later
    out = generate_batch(model, prompts, 60, SETTINGS["greedy"], slide=3)
    assert out == [_alone(model, p, 60, SETTINGS["greedy"], True, slide=3) for p in prompts]


@pytest.mark.parametrize(
    ("prompts", "n", "words"),
    [([], 5, "empty prompt"), ([[1], []], 5, "empty prompt"), ([[1]], -1, "--max-new-tokens -1")],
)
def test_bad_requests_are_one_line(prompts, n, words):
    with pytest.raises(AttnlabError, match=words):
        generate_batch(_model(), prompts, n)


# --- fixed shapes: the step a CUDA graph captures --------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "rope", "qk-norm", "llama-like", "post-norm", "sinusoidal"])
def test_the_fixed_shape_step_gives_the_cached_steps_logits(variant):
    model = _model(**VARIANTS.get(variant, {}))
    prompt_BL = torch.randint(model.config.n_vocab, (3, 5), generator=torch.Generator().manual_seed(2))
    for pad_B in (None, torch.tensor([0, 2, 4])):
        plain = KVCache(model.config.n_layers, model.config.max_len, pad_B)
        fixed = KVCache(model.config.n_layers, model.config.max_len, pad_B)
        with torch.no_grad():
            torch.testing.assert_close(model(prompt_BL, kv_cache=fixed), model(prompt_BL, kv_cache=plain))
            slot = fixed.fix_shapes()
            next_B1 = torch.tensor([[1], [2], [3]])
            for _ in range(model.config.max_len - 5):  # to the last slot
                want_B1V = model(next_B1, kv_cache=plain)
                got_B1V = model(next_B1, kv_cache=fixed)
                slot += 1
                torch.testing.assert_close(got_B1V, want_B1V, rtol=1e-5, atol=1e-5)
                next_B1 = want_B1V.argmax(-1)
        assert fixed.layers[0].k_BGTD is not None and fixed.layers[0].k_BGTD.shape[2] == model.config.max_len


def test_cuda_graphs_are_refused_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the graphs run (test_graph_replayed_decoding_equals_the_eager_one)")
    with pytest.raises(AttnlabError, match="CUDA graphs"):
        _model().generate(torch.tensor([[1, 2]]), 3, greedy=True, graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: CUDA graphs need one")
def test_graph_replayed_decoding_equals_the_eager_one():
    model = _model(positions="rope", head_dim=8).cuda()
    prompts = _prompts(model.config.n_vocab)
    for p in prompts:
        ids_1L = torch.tensor([p], device="cuda")
        graphed = model.generate(ids_1L, 40, greedy=True, graphs=True)
        eager = model.generate(ids_1L, 40, greedy=True, graphs=False)
        assert torch.equal(graphed, eager)
    assert generate_batch(model, prompts, 40, SETTINGS["greedy"]) == [
        model.generate(torch.tensor([p], device="cuda"), 40, greedy=True, graphs=False)[0, len(p) :].tolist()
        for p in prompts
    ]
