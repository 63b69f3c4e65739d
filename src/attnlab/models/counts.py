"""Parameter counts from a config alone, by module (`param_breakdown`) and in total (`param_count`),
equal to the built models' own counts (tested): what memory checks and `attnlab params` count."""

from __future__ import annotations

from .config import ModelConfig
from .positions import SCHEMES


def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _norm(cfg: ModelConfig) -> int:
    """LayerNorm: weight (+ bias); RMSNorm: weight only."""
    return cfg.emb_dim * (2 if cfg.norm == "layer" and cfg.norm_bias else 1)


def _mlp_components(cfg: ModelConfig, prefix: str = "mlp.") -> dict[str, int]:
    C, F = cfg.emb_dim, cfg.n_hidden
    parts = {prefix + "fc_in": _linear(C, F, cfg.bias)}
    if cfg.mlp == "swiglu":
        parts[prefix + "fc_up"] = _linear(C, F, cfg.bias)
    parts[prefix + "fc_out"] = _linear(F, C, cfg.bias)
    return parts


def block_components(cfg: ModelConfig) -> dict[str, int]:
    """One block's parameters, by the module names inside `blocks.{i}` (weight + bias each)."""
    C, HD, GD = cfg.emb_dim, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    return {
        "ln1": _norm(cfg),
        "attn.w_q": _linear(C, HD, cfg.bias),
        "attn.w_k": _linear(C, GD, cfg.bias),  # grouped-query attention: fewer key/value heads
        "attn.w_v": _linear(C, GD, cfg.bias),
        "attn.w_o": _linear(HD, C, cfg.bias),
        **({"attn.q_norm": cfg.head_dim, "attn.k_norm": cfg.head_dim} if cfg.qk_norm else {}),  # their gains
        "ln2": _norm(cfg),
        **_mlp_components(cfg),
    }


def _seq2seq_blocks(cfg: ModelConfig) -> tuple[dict[str, int], dict[str, int]]:
    """One encoder block's and one decoder block's parameters (the decoder adds cross-attention)."""
    C, HD = cfg.emb_dim, cfg.n_heads * cfg.head_dim
    attn = {p: _linear(C, HD, cfg.bias) for p in ("w_q", "w_k", "w_v")} | {"w_o": _linear(HD, C, cfg.bias)}
    encoder = {
        "ln1": _norm(cfg),
        **{f"attn.{k}": n for k, n in attn.items()},
        "ln2": _norm(cfg),
        **_mlp_components(cfg),
    }
    cross = {"ln_cross": _norm(cfg), **{f"cross.{k}": n for k, n in attn.items()}}
    decoder = {k: n for k, n in encoder.items() if not k.startswith(("ln2", "mlp."))} | cross
    decoder |= {"ln2": _norm(cfg), **_mlp_components(cfg)}
    return encoder, decoder


def _seq2seq_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """The encoder-decoder's parameters by module (`Seq2SeqTransformer`): with one shared vocabulary,
    one embedding table serves source, target and (tied) the output layer."""
    V, C = cfg.n_vocab, cfg.emb_dim
    pos = SCHEMES[cfg.positions].n_params(cfg)
    counts = {"embed.tok": V * C, **({"embed.pos": pos} if pos else {})}
    if cfg.n_src_vocab:
        counts |= {"src_embed.tok": cfg.n_src_vocab * C, **({"src_embed.pos": pos} if pos else {})}
    encoder, decoder = _seq2seq_blocks(cfg)
    for i in range(cfg.n_enc_layers or cfg.n_layers):
        counts.update({f"encoder.{i}.{part}": n for part, n in encoder.items()})
    for i in range(cfg.n_layers):
        counts.update({f"decoder.{i}.{part}": n for part, n in decoder.items()})
    if cfg.norm_placement == "pre":
        counts |= {"enc_ln": _norm(cfg), "dec_ln": _norm(cfg)}
    counts["lm_head"] = 0 if cfg.tie_embeddings else V * C
    return counts


def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Parameter count per named module, in model order; the values sum to the model's total.

    `lm_head` is 0 when tied: the output layer reuses `embed.tok.weight`, so it adds nothing.
    """
    V, C = cfg.n_vocab, cfg.emb_dim
    head = 0 if cfg.tie_embeddings else V * C
    if cfg.model == "mlp":
        return {"embed.tok": V * C, **_mlp_components(cfg), "lm_head": head}
    if cfg.model == "seq2seq":
        return _seq2seq_breakdown(cfg)
    counts = {"embed.tok": V * C}
    if n_pos := SCHEMES[cfg.positions].n_params(cfg):  # sinusoidal and rotary positions are computed, not learned
        counts["embed.pos"] = n_pos
    block = block_components(cfg)
    for i in range(cfg.n_layers):
        counts.update({f"blocks.{i}.{part}": n for part, n in block.items()})
    if cfg.norm_placement == "pre":  # post-norm blocks end in their own norm
        counts["final_ln"] = _norm(cfg)
    counts["lm_head"] = head
    return counts


def param_count(cfg: ModelConfig) -> int:
    """The model's total parameters from its config alone: the sum of `param_breakdown` without its
    per-layer rows, so a config with any number of layers is counted at once (memory checks)."""
    V, C = cfg.n_vocab, cfg.emb_dim
    head = 0 if cfg.tie_embeddings else V * C
    if cfg.model == "mlp":
        return V * C + sum(_mlp_components(cfg).values()) + head
    if cfg.model == "seq2seq":
        encoder, decoder = _seq2seq_blocks(cfg)
        pos = SCHEMES[cfg.positions].n_params(cfg)
        embeddings = V * C + pos + ((cfg.n_src_vocab * C + pos) if cfg.n_src_vocab else 0)
        blocks = (cfg.n_enc_layers or cfg.n_layers) * sum(encoder.values()) + cfg.n_layers * sum(decoder.values())
        return embeddings + blocks + (2 * _norm(cfg) if cfg.norm_placement == "pre" else 0) + head
    blocks = cfg.n_layers * sum(block_components(cfg).values())
    final = _norm(cfg) if cfg.norm_placement == "pre" else 0
    return V * C + SCHEMES[cfg.positions].n_params(cfg) + blocks + final + head
