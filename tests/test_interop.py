"""Hugging Face interop: random GPT-2 and Llama models (no download) converted both ways."""

from pathlib import Path

import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.models import build_model, preset_config

transformers = pytest.importorskip("transformers", reason="transformers is in the test extra: pip install -e '.[test]'")
from attnlab import from_hf, to_hf  # noqa: E402

V = 120


def _gpt2(activation: str = "gelu_new", vocab_size: int = V):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=48,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function=activation,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


def _llama(tied: bool = False, kv_heads: int = 2):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        head_dim=8,
        max_position_embeddings=48,
        rope_theta=5000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tied,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # random norm weights, so the test would catch a norm mapped to the wrong place
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def _hf_logits(hf, ids_BL: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(ids_BL).logits


MAKERS = {
    "gpt2": _gpt2,
    "gpt2-relu": lambda: _gpt2("relu"),
    "llama-gqa": _llama,
    "llama-tied-mha": lambda: _llama(tied=True, kv_heads=4),
}


@pytest.mark.parametrize("kind", MAKERS)
def test_from_hf_gives_the_same_logits_and_greedy_tokens(kind: str) -> None:
    hf = MAKERS[kind]()
    hf.config._attn_implementation = "eager"
    model = from_hf(hf)
    ids_BL = torch.randint(0, V, (2, 20))
    assert (model(ids_BL) - _hf_logits(hf, ids_BL)).abs().max() < 1e-4
    prompt_BL = ids_BL[:1, :5]
    theirs = hf.generate(prompt_BL, max_new_tokens=15, do_sample=False, pad_token_id=0, eos_token_id=None)
    ours = model.generate(prompt_BL, 15, greedy=True)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("kind", MAKERS)
def test_to_hf_round_trip_and_save_pretrained(kind: str, tmp_path: Path) -> None:
    model = from_hf(MAKERS[kind]())
    hf = to_hf(model)
    ids_BL = torch.randint(0, V, (2, 20))
    assert (model(ids_BL) - _hf_logits(hf, ids_BL)).abs().max() < 1e-4
    hf.save_pretrained(tmp_path / "hf")
    reloaded = from_hf(tmp_path / "hf")
    assert (reloaded(ids_BL) - model(ids_BL)).abs().max() < 1e-5


@pytest.mark.parametrize(
    "overrides",
    [
        {"mlp": "gelu"},
        {
            "positions": "rope",
            "norm": "rms",
            "mlp": "swiglu",
            "n_kv_heads": 2,
            "bias": False,
            "tie_embeddings": False,
        },
    ],
)
def test_attnlab_models_export_to_transformers(overrides: dict) -> None:
    torch.manual_seed(0)
    model = build_model(preset_config("lab", n_layers=2, head_dim=8, **overrides)).eval()
    hf = to_hf(model)
    ids_BL = torch.randint(0, 256, (1, 30))
    assert (model(ids_BL) - _hf_logits(hf, ids_BL)).abs().max() < 1e-4


def test_models_without_a_transformers_twin_are_refused_clearly() -> None:
    lab = build_model(preset_config("lab"))  # 4 heads x 5 != 32 channels: no GPT-2 shape
    with pytest.raises(AttnlabError, match="no transformers equivalent"):
        to_hf(lab)
    with pytest.raises(AttnlabError, match="only the Transformer"):
        to_hf(build_model(preset_config("lab", model="mlp")))
    llama_but_qk_norm = dict(norm="rms", positions="rope", mlp="swiglu", head_dim=8, qk_norm=True)
    with pytest.raises(AttnlabError, match="QK-norm, which GPT-2 and Llama do not have"):
        to_hf(build_model(preset_config("lab", **llama_but_qk_norm)))


def test_from_hf_rejects_other_folders(tmp_path: Path) -> None:
    with pytest.raises(AttnlabError, match="no config.json"):
        from_hf(tmp_path)


def test_export_cli_writes_a_folder_transformers_loads(tmp_path: Path, capsys) -> None:
    from attnlab.tokenizers import ByteTokenizer
    from attnlab.training.checkpoint import save_checkpoint

    from .conftest import run_cli

    torch.manual_seed(0)
    model = build_model(preset_config("lab", head_dim=8, mlp="gelu")).eval()
    save_checkpoint(tmp_path / "ck", model, ByteTokenizer())
    code, out, err = run_cli(["export", str(tmp_path / "ck"), "--hf", str(tmp_path / "hf")], capsys)
    assert code == 0, err
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager")
    ids_BL = torch.randint(0, 256, (1, 16))
    assert (_hf_logits(hf, ids_BL) - model(ids_BL)).abs().max() < 1e-4
    code, _, err = run_cli(["export", str(tmp_path / "ck"), "--hf", str(tmp_path / "hf")], capsys)
    assert code == 2 and "already exists" in err
    lab = tmp_path / "lab"
    save_checkpoint(lab, build_model(preset_config("lab")), ByteTokenizer())
    code, _, err = run_cli(["export", str(lab), "--hf", str(tmp_path / "x")], capsys)
    assert code == 2 and "no transformers equivalent" in err and not (tmp_path / "x").exists()


def test_a_converted_gpt2_with_its_bpe_files_can_be_traced_like_any_checkpoint(tmp_path: Path, capsys) -> None:
    """The README's recipe for looking inside GPT-2: from_hf + the GPT-2 tokenizer files -> a checkpoint."""
    import json

    from attnlab.tokenizers.bpe import BPETokenizer
    from attnlab.training.checkpoint import save_checkpoint

    from .conftest import run_cli

    bpe = BPETokenizer.train("Once upon a time there was a little cat. " * 30, vocab_size=280)
    bpe.save_gpt2_files(tmp_path / "tok")
    tok = BPETokenizer.from_gpt2_files(tmp_path / "tok" / "vocab.json", tmp_path / "tok" / "merges.txt")
    model = from_hf(_gpt2(vocab_size=tok.n_vocab))
    save_checkpoint(tmp_path / "gpt2", model, tok)
    code, out, err = run_cli(
        ["trace", str(tmp_path / "gpt2"), "--prompt", "Once upon a time", "--format", "json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["max_abs_diff"] < 1e-4
    code, _, err = run_cli(
        ["attention", str(tmp_path / "gpt2"), "--prompt", "Once upon", "--out", str(tmp_path / "a.png")], capsys
    )
    assert code == 0 and (tmp_path / "a.png").stat().st_size > 10_000
