"""Hugging Face `transformers` interop: GPT-2 and Llama checkpoints in and out of attnlab models.

GPT-2 is attnlab's default block (pre-LayerNorm, learned positions, biases, tied head) with GELU;
Llama is RMSNorm + rotary positions + SwiGLU + grouped-query attention, no biases, untied head.
Both map onto the one `TransformerLM` by config and a plain state-dict copy:

| attnlab (blocks.i.) | GPT2LMHeadModel (transformer.h.i.) | LlamaForCausalLM (model.layers.i.) |
|---|---|---|
| embed.tok | transformer.wte | model.embed_tokens |
| embed.pos | transformer.wpe | (rotary) |
| ln1 / ln2 | ln_1 / ln_2 | input_layernorm / post_attention_layernorm |
| attn.w_q, w_k, w_v | attn.c_attn (fused; Conv1D, transposed) | self_attn.q_proj, k_proj, v_proj |
| attn.w_o | attn.c_proj (Conv1D) | self_attn.o_proj |
| mlp.fc_in / fc_up / fc_out | mlp.c_fc / - / c_proj (Conv1D) | mlp.gate_proj / up_proj / down_proj |
| final_ln | transformer.ln_f | model.norm |
| lm_head (untied only) | lm_head (tied) | lm_head |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import AttnlabError
from .models import LanguageModel, ModelConfig, TransformerLM
from .training.checkpoint import load_checkpoint

GPT2_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}


def _load_hf(path_or_model: Any) -> Any:
    if isinstance(path_or_model, str | Path):
        path = Path(path_or_model).expanduser()
        if not (path / "config.json").is_file():
            raise AttnlabError(f"{path}: not a Hugging Face model folder (no config.json)")
        if not any(path.glob("*.safetensors")):
            pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
            raise AttnlabError(
                f"{path}: no .safetensors weights{f' (only {pickles[0]}, a pickle)' if pickles else ''}; attnlab never "
                "unpickles a file (it can run code): save the model with save_pretrained(safe_serialization=True)"
            )
        from transformers import AutoModelForCausalLM

        try:
            return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", use_safetensors=True)
        except (OSError, ValueError, KeyError) as e:
            raise AttnlabError(f"{path}: could not load with transformers ({str(e).splitlines()[0][:200]})") from None
    return path_or_model


def _rope_theta(hf_cfg: Any) -> float:
    params = getattr(hf_cfg, "rope_parameters", None) or getattr(hf_cfg, "rope_scaling", None) or {}
    if params.get("rope_type", params.get("type", "default")) != "default":
        raise AttnlabError("rotary scaling (rope_type other than 'default') is not supported")
    theta = getattr(hf_cfg, "rope_theta", None) or params.get("rope_theta")
    return float(theta or 10000.0)


def _gpt2_names(n_layers: int) -> list[tuple[str, str, bool]]:
    """(attnlab key, GPT-2 key, transposed) for every tensor but the fused q/k/v; Conv1D stores (in, out)."""
    names = [
        ("embed.tok.weight", "transformer.wte.weight", False),
        ("embed.pos.weight", "transformer.wpe.weight", False),
        ("final_ln.weight", "transformer.ln_f.weight", False),
        ("final_ln.bias", "transformer.ln_f.bias", False),
    ]
    for i in range(n_layers):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            names += [(f"{b}{ours}.{part}", f"{h}{theirs}.{part}", False) for part in ("weight", "bias")]
        for ours, theirs in (("attn.w_o", "attn.c_proj"), ("mlp.fc_in", "mlp.c_fc"), ("mlp.fc_out", "mlp.c_proj")):
            names += [
                (f"{b}{ours}.weight", f"{h}{theirs}.weight", True),
                (f"{b}{ours}.bias", f"{h}{theirs}.bias", False),
            ]
    return names


# The config fields both directions map one to one: attnlab's name -> the family's.
GPT2_FIELDS = {
    "n_vocab": "vocab_size",
    "max_len": "n_positions",
    "emb_dim": "n_embd",
    "n_heads": "n_head",
    "n_layers": "n_layer",
    "norm_eps": "layer_norm_epsilon",
}
LLAMA_FIELDS = {
    "n_vocab": "vocab_size",
    "max_len": "max_position_embeddings",
    "emb_dim": "hidden_size",
    "n_hidden": "intermediate_size",
    "n_heads": "num_attention_heads",
    "n_layers": "num_hidden_layers",
    "norm_eps": "rms_norm_eps",
}


def _theirs(cfg: ModelConfig, fields: dict[str, str]) -> dict[str, Any]:
    return {theirs: getattr(cfg, ours) for ours, theirs in fields.items()}


def _ours(hf_cfg: Any, fields: dict[str, str]) -> dict[str, Any]:
    return {ours: getattr(hf_cfg, theirs) for ours, theirs in fields.items()}


def _gpt2_to_attnlab(hf: Any) -> TransformerLM:
    c = hf.config
    if c.activation_function not in GPT2_ACTIVATIONS:
        raise AttnlabError(f"GPT-2 activation {c.activation_function!r} is not supported")
    C, H = c.n_embd, c.n_head
    cfg = ModelConfig(
        **_ours(c, GPT2_FIELDS),
        n_hidden=c.n_inner or 4 * C,
        head_dim=C // H,
        mlp=GPT2_ACTIVATIONS[c.activation_function],
    )
    sd = hf.state_dict()
    out = {ours: sd[theirs].T if transposed else sd[theirs] for ours, theirs, transposed in _gpt2_names(c.n_layer)}
    for i in range(c.n_layer):
        # c_attn packs q, k, v side by side (Conv1D: in x 3C); our Linear weights are their transposes.
        fused_W, fused_b = sd[f"transformer.h.{i}.attn.c_attn.weight"], sd[f"transformer.h.{i}.attn.c_attn.bias"]
        for j, name in enumerate(("w_q", "w_k", "w_v")):
            out[f"blocks.{i}.attn.{name}.weight"] = fused_W[:, j * C : (j + 1) * C].T
            out[f"blocks.{i}.attn.{name}.bias"] = fused_b[j * C : (j + 1) * C]
    model = TransformerLM(cfg)  # the config's `model` is left at its default, transformer
    model.load_state_dict({k: v.detach().clone().contiguous() for k, v in out.items()})
    return model


LLAMA_NAMES = {
    "attn.w_q": "self_attn.q_proj",
    "attn.w_k": "self_attn.k_proj",
    "attn.w_v": "self_attn.v_proj",
    "attn.w_o": "self_attn.o_proj",
    "mlp.fc_in": "mlp.gate_proj",
    "mlp.fc_up": "mlp.up_proj",
    "mlp.fc_out": "mlp.down_proj",
    "ln1": "input_layernorm",
    "ln2": "post_attention_layernorm",
}


def _llama_to_attnlab(hf: Any) -> TransformerLM:
    c = hf.config
    if c.hidden_act != "silu":
        raise AttnlabError(f"Llama activation {c.hidden_act!r} is not supported (SwiGLU uses silu)")
    if getattr(c, "attention_bias", False) != getattr(c, "mlp_bias", False):
        raise AttnlabError("Llama with attention_bias != mlp_bias is not supported (one `bias` switch)")
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    cfg = ModelConfig(
        **_ours(c, LLAMA_FIELDS),
        head_dim=head_dim,
        n_kv_heads=c.num_key_value_heads or 0,
        norm="rms",
        positions="rope",
        rope_theta=_rope_theta(c),
        mlp="swiglu",
        bias=bool(getattr(c, "attention_bias", False)),
        tie_embeddings=bool(c.tie_word_embeddings),
    )
    if cfg.n_kv_heads == cfg.n_heads:
        cfg.n_kv_heads = 0
    sd = hf.state_dict()
    out = {"embed.tok.weight": sd["model.embed_tokens.weight"], "final_ln.weight": sd["model.norm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(c.num_hidden_layers):
        for ours, theirs in LLAMA_NAMES.items():
            for part in ("weight", "bias"):
                key = f"model.layers.{i}.{theirs}.{part}"
                if key in sd:
                    out[f"blocks.{i}.{ours}.{part}"] = sd[key]
    model = TransformerLM(cfg)  # the config's `model` is left at its default, transformer
    model.load_state_dict({k: v.detach().clone().contiguous() for k, v in out.items()})
    return model


def from_hf(path_or_model: Any) -> TransformerLM:
    """An attnlab model from a `GPT2LMHeadModel` or `LlamaForCausalLM` (an object, or a local folder)."""
    hf = _load_hf(path_or_model)
    kind = getattr(hf.config, "model_type", None)
    if kind == "gpt2":
        model = _gpt2_to_attnlab(hf)
    elif kind == "llama":
        model = _llama_to_attnlab(hf)
    else:
        raise AttnlabError(f"model type {kind!r} is not supported: from_hf takes GPT-2 and Llama models")
    return model.eval()


def _family(cfg: ModelConfig) -> str:
    if cfg.qk_norm:
        raise AttnlabError("this model has QK-norm, which GPT-2 and Llama do not have: export takes models without it")
    gpt2 = (
        cfg.norm == "layer"
        and cfg.norm_bias
        and cfg.norm_placement == "pre"
        and cfg.positions == "learned"
        and cfg.mlp in ("gelu", "relu")
        and cfg.bias
        and cfg.tie_embeddings
        and cfg.kv_heads == cfg.n_heads
        and cfg.n_heads * cfg.head_dim == cfg.emb_dim
    )
    if gpt2:
        return "gpt2"
    llama = cfg.norm == "rms" and cfg.norm_placement == "pre" and cfg.positions == "rope" and cfg.mlp == "swiglu"
    if llama:
        return "llama"
    raise AttnlabError(
        "this model has no transformers equivalent: export takes GPT-2-shaped models (norm=layer, positions=learned, "
        "mlp=gelu|relu, bias, tied head, n_heads*head_dim=emb_dim) or Llama-shaped ones "
        "(norm=rms, positions=rope, mlp=swiglu)"
    )


def _attnlab_to_gpt2(model: TransformerLM) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = model.config
    hf_cfg = GPT2Config(
        **_theirs(cfg, GPT2_FIELDS),
        n_inner=cfg.n_hidden,
        activation_function="gelu_new" if cfg.mlp == "gelu" else "relu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
    )
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = {theirs: sd[ours].T if transposed else sd[ours] for ours, theirs, transposed in _gpt2_names(cfg.n_layers)}
    for i in range(cfg.n_layers):
        # c_attn packs q, k, v side by side (Conv1D: in x 3C): our Linear weights, transposed and joined.
        b, h = f"blocks.{i}.attn.", f"transformer.h.{i}.attn.c_attn."
        out[h + "weight"] = torch.cat([sd[f"{b}{n}.weight"].T for n in ("w_q", "w_k", "w_v")], dim=1)
        out[h + "bias"] = torch.cat([sd[f"{b}{n}.bias"] for n in ("w_q", "w_k", "w_v")])
    return _filled(GPT2LMHeadModel(hf_cfg), out)


def _attnlab_to_llama(model: TransformerLM) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.config
    hf_cfg = LlamaConfig(
        **_theirs(cfg, LLAMA_FIELDS),
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        # transformers 4 takes rope_theta; 5 still does (into rope_parameters), though its signature leaves it out.
        rope_theta=cfg.rope_theta,  # type: ignore[call-arg]
        attention_bias=cfg.bias,
        mlp_bias=cfg.bias,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=None,
    )
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = {
        "model.embed_tokens.weight": sd["embed.tok.weight"],
        "model.norm.weight": sd["final_ln.weight"],
        "lm_head.weight": sd["lm_head.weight"] if not cfg.tie_embeddings else sd["embed.tok.weight"],
    }
    for i in range(cfg.n_layers):
        for ours, theirs in LLAMA_NAMES.items():
            for part in ("weight", "bias"):
                if f"blocks.{i}.{ours}.{part}" in sd:
                    out[f"model.layers.{i}.{theirs}.{part}"] = sd[f"blocks.{i}.{ours}.{part}"]
    return _filled(LlamaForCausalLM(hf_cfg), out)


def _filled(hf: Any, weights: dict[str, torch.Tensor]) -> Any:
    """`hf` with `weights` loaded, checked to cover every parameter it has."""
    missing, unexpected = hf.load_state_dict({k: v.contiguous() for k, v in weights.items()}, strict=False)
    missing = [k for k in missing if not k.endswith(("attn.bias", "attn.masked_bias", "lm_head.weight"))]
    if missing or unexpected:
        raise AttnlabError(f"export mapping incomplete: missing {missing[:3]}, unexpected {unexpected[:3]}")
    hf.config._attn_implementation = "eager"  # bit-comparable with attnlab's written-out attention
    return hf.eval()


def to_hf(model: LanguageModel) -> Any:
    """The same network as a `transformers` model (GPT2LMHeadModel or LlamaForCausalLM), weights copied."""
    if not isinstance(model, TransformerLM):
        raise AttnlabError("only the Transformer exports to transformers (the MLP baseline has no equivalent)")
    return _attnlab_to_gpt2(model) if _family(model.config) == "gpt2" else _attnlab_to_llama(model)


def export_hf(checkpoint: str | Path, out: str | Path) -> Any:
    """Write the Transformer of a run or checkpoint folder as a `transformers` model folder `out` (new or
    empty); returns the `transformers` model written."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise AttnlabError(f"{out} already exists and is not empty; choose a new folder for --hf")
    hf = to_hf(load_checkpoint(checkpoint).model)
    hf.save_pretrained(out)
    return hf
