"""Looking inside: activation cache and hooks, the step-by-step trace, pictures, next-token tables."""

import dataclasses
import json
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.inspect.lens import logit_lens, next_tokens
from attnlab.inspect.pictures import attention_figure, embeddings_figure, nearest_neighbours, pca_2d
from attnlab.inspect.trace import trace
from attnlab.models import build_model, preset_config
from attnlab.models.hooks import MEANINGS, generic_name, symbolic_shape
from attnlab.tokenizers import ByteTokenizer

from .conftest import run_cli

B, L = 2, 7


def _model(kind: str = "transformer", n_layers: int = 1, **kw):
    torch.manual_seed(0)
    return build_model(preset_config("lab", model=kind, n_layers=n_layers, **kw)).eval()


def _dims(model) -> dict[str, int]:
    c = model.config
    return {"B": B, "L": L, "K": L, "C": c.emb_dim, "H": c.n_heads, "D": c.head_dim, "F": c.n_hidden, "V": c.n_vocab}


@pytest.mark.parametrize("kind, n_layers", [("transformer", 1), ("transformer", 3), ("mlp", 1)])
def test_every_cache_name_has_its_documented_shape(kind: str, n_layers: int) -> None:
    model = _model(kind, n_layers)
    logits_BLV, cache = model.run_with_cache(torch.randint(0, 256, (B, L)))
    dims = _dims(model)
    for name, tensor in cache.items():
        assert generic_name(name) in MEANINGS, name  # documented
        assert tuple(tensor.shape) == tuple(dims[d] for d in symbolic_shape(name).split()), name
    expected = (
        {"embed.tok_BLC", "logits_BLV", "mlp.hidden_BLF"}
        if kind == "mlp"
        else {
            "embed.tok_BLC",
            "embed.pos_LC",
            "final_ln_BLC",
            "logits_BLV",
            *(
                f"blocks.{i}.{n}"
                for i in range(n_layers)
                for n in (
                    "ln1_BLC",
                    "attn.q_BHLD",
                    "attn.k_BHKD",
                    "attn.v_BHKD",
                    "attn.scores_BHLK",
                    "attn.weights_BHLK",
                    "attn.out_BLC",
                    "resid_mid_BLC",
                    "ln2_BLC",
                    "mlp.hidden_BLF",
                    "resid_post_BLC",
                )
            ),
        }
    )
    assert expected <= set(cache)
    assert torch.equal(cache["logits_BLV"], logits_BLV.detach())


def test_cache_agrees_with_the_fast_forward() -> None:
    model = _model(n_layers=2)
    ids_BL = torch.randint(0, 256, (B, L))
    logits_BLV, cache = model.run_with_cache(ids_BL)
    assert (logits_BLV - model(ids_BL)).abs().max() < 1e-5  # explicit attention (cache) vs SDPA
    assert torch.allclose(cache["blocks.0.attn.weights_BHLK"].sum(-1), torch.ones(B, 4, L))


def test_zeroing_a_head_changes_the_logits_and_removing_the_hook_restores_them() -> None:
    model = _model(n_layers=2)
    ids_BL = torch.randint(0, 256, (1, L))
    clean_BLV = model(ids_BL)

    def zero_head_1(z_BHLD: torch.Tensor, name: str) -> torch.Tensor:
        return z_BHLD.index_fill(1, torch.tensor([1]), 0.0)

    ablated_BLV = model.run_with_hooks(ids_BL, [("blocks.0.attn.z_BHLD", zero_head_1)])
    assert (ablated_BLV - clean_BLV).abs().max() > 1e-4
    # Same as removing head 1's slice of the output projection by hand:
    attn = model.blocks[0].attn
    with torch.no_grad():
        saved = attn.w_o.weight[:, 5:10].clone()
        attn.w_o.weight[:, 5:10] = 0
        by_hand_BLV = model(ids_BL)
        attn.w_o.weight[:, 5:10] = saved
    assert (ablated_BLV - by_hand_BLV).abs().max() < 1e-5
    assert torch.equal(model(ids_BL), clean_BLV)  # hooks live for one call only


def test_knocking_out_position_embeddings_makes_the_model_order_blind() -> None:
    model = _model()
    ids_BL = torch.tensor([[5, 6, 7, 8]])
    swapped_BL = torch.tensor([[6, 5, 7, 8]])
    no_pos = [("embed.pos_LC", lambda pos_LC, name: torch.zeros_like(pos_LC))]
    a = model.run_with_hooks(ids_BL, no_pos)[0, -1]
    b = model.run_with_hooks(swapped_BL, no_pos)[0, -1]
    assert (a - b).abs().max() < 1e-5  # the last position sees a bag of tokens
    assert (model(ids_BL)[0, -1] - model(swapped_BL)[0, -1]).abs().max() > 1e-4


def test_unknown_hook_names_are_rejected() -> None:
    with pytest.raises(AttnlabError, match="unknown hook name 'blocks.9.attn.q_BHLD'"):
        _model().run_with_hooks(torch.zeros(1, 2, dtype=torch.long), [("blocks.9.attn.q_BHLD", lambda t, n: t)])


@pytest.mark.parametrize("kind, n_layers", [("transformer", 1), ("transformer", 2), ("mlp", 1)])
def test_trace_recomputed_from_parts_matches_the_model(kind: str, n_layers: int) -> None:
    model = _model(kind, n_layers)
    tr = trace(model, list(b"Once upon"))
    assert tr.max_abs_diff < 1e-5
    checked = [s for s in tr.steps if s.cache_diff is not None]
    assert len(checked) >= len(tr.steps) - 2 and all(s.cache_diff < 1e-5 for s in checked)
    walk = [s.name for s in tr.steps]
    if kind == "transformer":
        order = [
            "ids_BL",
            "embed.tok_BLC",
            "embed.pos_LC",
            "embed.sum_BLC",
            "blocks.0.ln1_BLC",
            "blocks.0.attn.q_BHLD",
            "blocks.0.attn.scores_BHLK",
            "blocks.0.attn.masked_BHLK",
            "blocks.0.attn.weights_BHLK",
            "blocks.0.attn.z_BHLD",
            "blocks.0.attn.out_BLC",
            "blocks.0.resid_mid_BLC",
            "blocks.0.mlp.hidden_BLF",
            "blocks.0.resid_post_BLC",
            "final_ln_BLC",
            "logits_BLV",
        ]
        assert [walk.index(n) for n in order] == sorted(walk.index(n) for n in order)
        assert len(tr.heads) == 4 * n_layers


def test_value_paths_have_the_per_head_parameter_counts() -> None:
    tr = trace(_model(), list(b"abc"))
    C, D = 32, 5
    head = tr.heads[0]
    assert head["value_down"]["shape"] == [C, D] and head["value_down"]["params"] == C * D + D
    assert head["value_up"]["shape"] == [D, C] and head["value_up"]["params"] == D * C
    assert head["sum_diff"] < 1e-5  # the heads' value-up outputs add up to the attention output


def _png_stats(path: Path) -> tuple[int, int, float]:
    img = matplotlib.image.imread(path)
    return img.shape[1], img.shape[0], float(np.std(img[..., :3]))


def test_attention_picture_is_written_and_not_blank(tmp_path: Path) -> None:
    model = _model(n_layers=2)
    _, weights = model.forward_with_weights(torch.tensor([list(b"Once upon")]))
    out = attention_figure([w[0].detach() for w in weights], list("Once upon"), tmp_path / "a.png")
    w, h, std = _png_stats(out)
    assert w > 800 and h > 500 and std > 0.05
    one = attention_figure([w[0].detach() for w in weights], list("Once upon"), tmp_path / "b.png", head=(1, 2))
    assert _png_stats(one)[2] > 0.05


def test_embedding_picture_and_neighbours(tmp_path: Path) -> None:
    model = _model()
    tok = ByteTokenizer()
    out = embeddings_figure(model.embed.tok.weight.detach(), tok, tmp_path / "e.png")
    w, h, std = _png_stats(out)
    assert w > 600 and h > 600 and std > 0.05
    E_VC = torch.zeros(256, 4)
    E_VC[ord("a")] = torch.tensor([1.0, 0, 0, 0])
    E_VC[ord("b")] = torch.tensor([0.9, 0.1, 0, 0])
    E_VC[ord("c")] = torch.tensor([0, 1.0, 0, 0])
    near = nearest_neighbours(E_VC, tok, [ord("a")], k=2, among=[ord("a"), ord("b"), ord("c")])
    assert near["a"][0][0] == "b" and near["a"][0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-4)
    assert near["a"][1] == ("c", 0.0)


def test_pca_finds_the_direction_of_largest_variance() -> None:
    x = torch.zeros(50, 3)
    x[:, 1] = torch.linspace(-5, 5, 50)
    x[:, 2] = torch.linspace(-1, 1, 50) ** 2
    xy = pca_2d(x)
    assert np.allclose(np.abs(xy[:, 0]), np.abs(x[:, 1].numpy()), atol=1e-6)


def test_next_tokens_match_softmax_of_the_logits() -> None:
    model = _model()
    ids = list(b"Once")
    result = next_tokens(model, ByteTokenizer(), ids, k=3, all_positions=True)
    probs_V = model(torch.tensor([ids]))[0, -1].softmax(-1)
    assert [r["id"] for r in result["next"]] == probs_V.topk(3).indices.tolist()
    assert result["next"][0]["prob"] == pytest.approx(probs_V.max().item())
    assert [p["actual_next"] for p in result["positions"]] == ["n", "c", "e", None]


def test_logit_lens_last_layer_is_the_model_prediction() -> None:
    model = _model(n_layers=2)
    ids = list(b"Once upon")
    rows = logit_lens(model, ByteTokenizer(), ids, k=3)
    assert [r["layer"] for r in rows] == ["embeddings", "after block 0", "after block 1"]
    probs_V = model(torch.tensor([ids]))[0, -1].softmax(-1)
    assert rows[-1]["top"][0]["prob"] == pytest.approx(probs_V.max().item(), abs=1e-6)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attnlab.training.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("inspect") / "checkpoint"
    save_checkpoint(path, _model(n_layers=2), ByteTokenizer())
    return path


def test_trace_cli_json_contract(ckpt: Path, capsys) -> None:
    code, out, _ = run_cli(["trace", str(ckpt), "--prompt", "Once upon", "--format", "json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["max_abs_diff"] < 1e-5
    step = next(s for s in result["steps"] if s["name"] == "blocks.1.attn.q_BHLD")
    assert step["symbolic"] == "B H L D" and step["shape"] == [1, 4, 9, 5] and step["meaning"]
    code, out, _ = run_cli(
        ["trace", "--random", "--preset", "small", "--model", "mlp", "--prompt", "Hi", "--format", "json"], capsys
    )
    assert code == 0 and json.loads(out)["steps"][1]["shape"] == [1, 2, 128]
    for fmt in ("table", "markdown"):
        code, out, _ = run_cli(["trace", str(ckpt), "--prompt", "Hi", "--format", fmt], capsys)
        assert code == 0 and "blocks.0.attn.weights_BHLK" in out and "value down" in out


def test_picture_and_table_commands(ckpt: Path, tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(
        ["attention", str(ckpt), "--prompt", "Lily saw Lily", "--out", str(tmp_path / "a.png")], capsys
    )
    assert code == 0 and _png_stats(tmp_path / "a.png")[2] > 0.05
    code, _, _ = run_cli(
        [
            "attention",
            "--random",
            "--preset",
            "lab",
            "--prompt",
            "Hi there",
            "--head",
            "0.3",
            "--out",
            str(tmp_path / "h.png"),
        ],
        capsys,
    )
    assert code == 0 and (tmp_path / "h.png").stat().st_size > 5000
    code, out, _ = run_cli(["embeddings", str(ckpt), "--out", str(tmp_path / "e.png"), "--format", "json"], capsys)
    assert code == 0 and set(json.loads(out)["neighbours"]) >= {"a", "e", "."}
    code, out, _ = run_cli(["next", str(ckpt), "--prompt", "Once", "--top", "4", "--format", "json"], capsys)
    assert code == 0 and len(json.loads(out)["next"]) == 4
    code, out, _ = run_cli(["lens", str(ckpt), "--prompt", "Once", "--format", "json"], capsys)
    assert code == 0 and len(json.loads(out)["layers"]) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["trace", "{ckpt}", "--prompt", ""], "empty prompt"),
        (["trace", "{ckpt}", "--random", "--prompt", "x"], "not both"),
        (["trace", "--prompt", "x"], "give a checkpoint"),
        (["trace", "{tmp}/missing", "--prompt", "x"], "no such checkpoint"),
        (["trace", "{corrupt}", "--prompt", "x"], "corrupt or incomplete"),
        (["attention", "{ckpt}", "--prompt", "x", "--head", "9.9", "--out", "{tmp}/x.png"], "unknown head '9.9'"),
        (["attention", "{ckpt}", "--prompt", "x", "--head", "first", "--out", "{tmp}/x.png"], "unknown head"),
        (["attention", "--random", "--model", "mlp", "--prompt", "x", "--out", "{tmp}/x.png"], "no attention"),
        (["next", "{ckpt}", "--prompt", ""], "empty prompt"),
        (["lens", "--random", "--model", "mlp", "--prompt", "x"], "MLP model has no"),
        (["embeddings", "{tmp}/missing", "--out", "{tmp}/x.png"], "no such checkpoint"),
        (["trace", "--random", "--preset", "gigantic", "--prompt", "x"], "unknown preset"),
    ],
)
def test_inspect_bad_input_is_one_line_and_exit_2(args, message, ckpt: Path, tmp_path: Path, capsys) -> None:
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(ckpt, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 10)
    args = [
        a.replace("{ckpt}", str(ckpt)).replace("{tmp}", str(tmp_path)).replace("{corrupt}", str(corrupt)) for a in args
    ]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "x.png").exists()


def test_unencodable_prompt_characters_are_reported(tmp_path: Path, capsys) -> None:
    from attnlab.tokenizers import CharTokenizer
    from attnlab.training.checkpoint import save_checkpoint

    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ")
    save_checkpoint(tmp_path / "c", _model(n_vocab=tok.n_vocab), tok)
    code, out, err = run_cli(["next", str(tmp_path / "c"), "--prompt", "hello WORLD"], capsys)
    assert code == 0 and "cannot encode" in err and "'W'" in err
    code, _, err = run_cli(["next", str(tmp_path / "c"), "--prompt", "ÉÉ"], capsys)
    assert code == 2 and "no character the tokenizer can encode" in err


def test_the_readme_hook_table_is_the_meanings_table() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| ([A-Z ]+) \| (.+) \|$", readme, flags=re.M)
    documented = {generic_name(name.replace("{i}", "0")): (shape, meaning) for name, shape, meaning in rows}
    assert documented == {name: (symbolic_shape(name), text) for name, text in MEANINGS.items()}


@pytest.mark.parametrize("positions", ["learned", "rope", "sinusoidal"])
def test_without_positions_is_the_same_model_blind_to_order(positions: str) -> None:
    from attnlab.inspect.ablations import without_positions

    model = _model("transformer", 1, positions=positions, head_dim=8)  # one block: the last position sees a set
    ids_BL = torch.randint(0, 256, (1, 12))
    before = model(ids_BL)
    with without_positions(model):
        blind = model(ids_BL)
        shuffled_BL = torch.cat([ids_BL[:, :-1].flip(1), ids_BL[:, -1:]], 1)
        assert (model(shuffled_BL)[0, -1] - blind[0, -1]).abs().max() < 1e-5  # order no longer matters
    assert torch.equal(model(ids_BL), before)  # the positions are back
    if positions != "sinusoidal":  # the same weights in a model built without positions give the same logits
        twin = build_model(dataclasses.replace(model.config, positions="none")).eval()
        twin.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("embed.pos")})
        assert (twin(ids_BL) - blind).abs().max() < 1e-6
    with pytest.raises(AttnlabError, match="no positions"), without_positions(_model("mlp", 1)):
        pass


@pytest.mark.parametrize(
    "positions, tokens, added, entering, query",
    [
        (
            "learned",
            "token embeddings: one row of the embedding table per token",
            "position embeddings: one learned vector per position",
            "the residual stream entering block 0: token embeddings + learned position embeddings",
            "queries: what each position looks for, per head",
        ),
        (
            "sinusoidal",
            "token embeddings: one row of the embedding table per token, x sqrt(C) so that the sin/cos table added"
            " next does not drown them",
            "position embeddings: the fixed sin/cos table of Vaswani et al. 2017",
            "the residual stream entering block 0: token embeddings x sqrt(C) + the sin/cos position table",
            "queries: what each position looks for, per head",
        ),
        (
            "rope",
            "token embeddings: one row of the embedding table per token (no position vector is added: RoPE turns"
            " each head's queries and keys instead)",
            None,
            "the residual stream entering block 0: the token embeddings alone (RoPE brings positions in inside"
            " attention)",
            "queries: what each position looks for, per head, then turned by its position's angle (RoPE)",
        ),
        (
            "none",
            "token embeddings: one row of the embedding table per token (this model has no positions)",
            None,
            "the residual stream entering block 0: the token embeddings alone (no positions)",
            "queries: what each position looks for, per head",
        ),
    ],
    ids=["learned", "sinusoidal", "rope", "none"],
)
def test_the_trace_says_what_this_transformers_position_scheme_does(positions, tokens, added, entering, query) -> None:
    from attnlab.models.positions import SCHEMES

    assert positions in SCHEMES
    steps = {s.name: s.meaning for s in trace(_model(positions=positions, head_dim=8), list(b"Hi there")).steps}
    assert steps["embed.tok_BLC"] == tokens
    assert steps.get("embed.pos_LC") == added  # only the schemes that add vectors have this step
    assert steps["embed.sum_BLC"] == entering
    assert steps["blocks.0.attn.q_BHLD"] == query
    assert steps["blocks.0.attn.k_BHKD"] == query.replace(
        "queries: what each position looks for", "keys: what each position offers to be found by"
    )
    assert ("RoPE" in " ".join(steps.values())) == (positions == "rope")
    assert ("sqrt(C)" in " ".join(steps.values())) == (positions == "sinusoidal")


def test_every_position_scheme_has_its_own_trace_words() -> None:
    from attnlab.inspect.trace import _SUM_UNDER, _TOKENS_UNDER
    from attnlab.models.positions import SCHEMES

    assert set(_TOKENS_UNDER) == set(_SUM_UNDER) == set(SCHEMES)


def test_the_mlp_trace_mentions_no_positions_and_no_attention() -> None:
    steps = trace(_model("mlp"), list(b"Hi there")).steps
    assert {s.name: s.meaning for s in steps} == {
        "ids_BL": "token ids: the text after the tokenizer",
        "embed.tok_BLC": "token embeddings: one row of the embedding table per token, the MLP's only input",
        "mlp.pre_BLF": "MLP hidden layer before the activation (W1 x)",
        "mlp.hidden_BLF": "MLP hidden layer after the activation: ReLU(W1 x)",
        "mlp.out_BLC": "MLP output, projected back to C: what the LM head reads (no residual stream, no norm)",
        "logits_BLV": "logits: one score per vocabulary entry for the next token",
        "probs_BLV": "softmax of the logits: next-token probabilities",
    }
    for step in steps:
        assert not re.search(r"position|attention|attend|RoPE|sqrt\(C\)|head[^ ]", step.meaning), step


def test_the_trace_names_this_models_norm_placement_activation_and_attention_variants() -> None:
    model = _model(norm="rms", norm_placement="post", mlp="swiglu", n_kv_heads=2, qk_norm=True, positions="none")
    steps = {s.name: s.meaning for s in trace(model, list(b"Hi")).steps}
    assert steps["blocks.0.ln1_BLC"] == (
        "RMSNorm of the residual stream after adding the attention output (post-norm): the MLP's input"
    )
    assert steps["blocks.0.ln2_BLC"] == (
        "RMSNorm of the residual stream after adding the MLP output (post-norm): the block's output"
    )
    assert steps["blocks.0.resid_post_BLC"] == (
        "residual stream after adding the MLP output, before the block's norm (ln2_BLC)"
    )
    assert steps["blocks.0.attn.k_BGKD"] == (
        "keys, per key/value head (grouped-query attention: each serves 2 query heads), normalised to a learned"
        " length (QK-norm)"
    )
    assert steps["blocks.0.mlp.hidden_BLF"] == "MLP hidden layer after the activation: SiLU(W1 x) * W3 x (SwiGLU)"
    assert "final_ln_BLC" not in steps  # a post-norm block ends in its own norm
    pre = {s.name: s.meaning for s in trace(_model(mlp="gelu"), list(b"Hi")).steps}
    assert pre["blocks.0.ln1_BLC"] == "LayerNorm of the residual stream: the attention's input"
    assert pre["final_ln_BLC"] == "final LayerNorm of the residual stream: what the LM head reads"
    assert pre["blocks.0.mlp.hidden_BLF"] == "MLP hidden layer after the activation: GELU(W1 x), tanh approximation"
