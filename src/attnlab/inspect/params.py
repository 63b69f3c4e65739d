"""Parameter and FLOPs counts of a model, by formula from its `ModelConfig` (no model is built).

Counting by formula means a 175B-parameter preset costs nothing to inspect, and the numbers can be
checked against the real modules (tests/test_params.py does, to the parameter). Component names are
the module names of `TransformerLM` / `FeedForwardLM` (`blocks.0.attn.w_q`, `mlp.fc_in`, ...), so
`dict(model.named_modules())[name]` holds exactly the parameters counted under `name`.

Letters as in CONVENTIONS.md: V vocabulary, C emb_dim, H heads, D head_dim, F n_hidden, L context.

FLOPs per token (a multiply-add counts as 2 FLOPs), after Kaplan et al. 2020, "Scaling Laws for
Neural Language Models", Table 1 (C_forward ~ 2N + 2 n_layer n_ctx d_attn):

    forward = 2 * N_matmul                     every weight matrix of the blocks (w_q, w_k, w_v, w_o,
                                               fc_in, fc_out) is used once per token: one multiply-add
            + 2 * n_layers * L * (H*D) * 2     attention: q . k for L keys (QK^T) and the weighted sum
                                               of L values (weights @ V)
            + 2 * C * V                        the LM head (tied to embed.tok, so no parameters, but
                                               still a C x V matmul per token)
    train   = 3 * forward                      backward costs twice the forward (the "6N" rule)

The attention term uses the full context L for every token: an upper bound. With causal masking the
token at position i only attends to i + 1 keys, so the useful work averages about half of it; Kaplan's
2 n_layer n_ctx d_attn is this term with that halving applied. Biases, LayerNorms, softmax, ReLU, the
embedding lookups and the residual adds are left out: O(C) or O(H*L) per token, well under 1%.
"""

from __future__ import annotations

from typing import Any

from ..errors import AttnlabError
from ..models.config import ModelConfig
from ..models.counts import block_components, param_breakdown

BYTES_FP32 = 4
SCALING_START = 64  # the first context of the scaling table (or max_len, if that is shorter)
SCALING_PAST_MAX_LEN = 2  # doublings past max_len shown in the scaling table


def _group_of(name: str) -> str:
    if name.startswith(("embed.", "src_embed.")) or name == "lm_head":
        return "embeddings"
    if ".attn." in name or ".cross." in name:
        return "attention"
    if name.startswith("mlp.") or ".mlp." in name:
        return "mlp"
    return "norms"  # ln1, ln2, final_ln


def group_totals(breakdown: dict[str, int]) -> dict[str, int]:
    """Sum a breakdown into embeddings (incl. the tied head), attention, mlp and norms."""
    groups = {"embeddings": 0, "attention": 0, "mlp": 0, "norms": 0}
    for name, n in breakdown.items():
        groups[_group_of(name)] += n
    return groups


def _flop_terms(cfg: ModelConfig, context: int) -> dict[str, int]:
    """Forward FLOPs per token split into the three terms of the module docstring."""
    C, F, V, HD = cfg.emb_dim, cfg.n_hidden, cfg.n_vocab, cfg.n_heads * cfg.head_dim
    GD = cfg.kv_heads * cfg.head_dim
    mlp_matrices = 3 if cfg.mlp == "swiglu" else 2
    if cfg.model == "mlp":  # one token at a time: no attention, the context does not matter
        return {"matmul": 2 * mlp_matrices * C * F, "attention": 0, "lm_head": 2 * C * V}
    if cfg.model == "seq2seq":  # per (source token, target token) pair, both sequences `context` long
        enc, dec = cfg.n_enc_layers or cfg.n_layers, cfg.n_layers
        block = 4 * C * HD + mlp_matrices * C * F  # q, k, v, o and the MLP
        matmul_params = enc * block + dec * (block + 4 * C * HD)  # + cross-attention's q, k, v, o
        return {"matmul": 2 * matmul_params, "attention": 2 * (enc + 2 * dec) * context * HD * 2, "lm_head": 2 * C * V}
    matmul_params = cfg.n_layers * (2 * C * HD + 2 * C * GD + mlp_matrices * C * F)
    return {
        "matmul": 2 * matmul_params,
        "attention": 2 * cfg.n_layers * context * HD * 2,
        "lm_head": 2 * C * V,
    }


def _check_context(cfg: ModelConfig, context: int | None) -> int:
    context = cfg.max_len if context is None else context
    if context < 1:
        raise AttnlabError(f"context={context}: must be a positive integer")
    return context


def flops_per_token(cfg: ModelConfig, context: int | None = None) -> dict[str, int]:
    """Forward and training FLOPs per token at `context` tokens (default `max_len`); see the module docstring."""
    terms = _flop_terms(cfg, _check_context(cfg, context))
    forward = sum(terms.values())
    return {"forward": forward, "train": 3 * forward}


def _scaling_contexts(max_len: int) -> list[int]:
    """64, 128, ... up to max_len (included even if not a power of two), then a few doublings past it."""
    start = SCALING_START
    while start > max_len:
        start //= 2
    contexts = []
    L = start
    while L < max_len:
        contexts.append(L)
        L *= 2
    contexts.append(max_len)
    contexts += [max_len * 2**k for k in range(1, SCALING_PAST_MAX_LEN + 1)]
    return contexts


def scaling_table(cfg: ModelConfig) -> list[dict[str, Any]]:
    """How FLOPs per token and attention-score memory grow as the context doubles.

    The matmul and LM-head FLOPs per token stay fixed while the attention term grows linearly with L,
    so its share of the work rises; the scores of one layer (H x L x L, fp32, batch 1) grow as L^2,
    which is what the explicit attention path (and `need_weights`) has to hold in memory.
    """
    rows = []
    for L in _scaling_contexts(cfg.max_len):
        terms = _flop_terms(cfg, L)
        forward = sum(terms.values())
        scores_bytes = 0 if cfg.model == "mlp" else cfg.n_heads * L * L * BYTES_FP32
        rows.append(
            {
                "context": L,
                "flops_per_token_forward": forward,
                "attention_share": terms["attention"] / forward,
                "attention_scores_bytes_per_layer": scores_bytes,
            }
        )
    return rows


def _shapes(cfg: ModelConfig) -> dict[str, str]:
    """A readable shape per component kind: `in x out + bias` for Linear, `rows x C` for embeddings."""
    V, C, F = cfg.n_vocab, cfg.emb_dim, cfg.n_hidden
    HD, GD = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim

    def lin(n_in: int, n_out: int) -> str:
        return f"{n_in} x {n_out}" + (f" + {n_out}" if cfg.bias else "")

    norm = f"{C} + {C}" if cfg.norm == "layer" and cfg.norm_bias else f"{C}"
    return {
        "embed.tok": f"{V} x {C}",
        "embed.pos": f"{cfg.max_len} x {C}",
        "ln1": norm,
        "attn.w_q": lin(C, HD),
        "attn.w_k": lin(C, GD),
        "attn.w_v": lin(C, GD),
        "attn.w_o": lin(HD, C),
        "attn.q_norm": f"{cfg.head_dim}",
        "attn.k_norm": f"{cfg.head_dim}",
        "ln2": norm,
        "mlp.fc_in": lin(C, F),
        "mlp.fc_up": lin(C, F),
        "mlp.fc_out": lin(F, C),
        "final_ln": norm,
        "lm_head": f"tied: embed.tok^T ({C} x {V})" if cfg.tie_embeddings else f"{C} x {V}",
        # the encoder-decoder's own
        "src_embed.tok": f"{cfg.n_src_vocab} x {C}",
        "src_embed.pos": f"{cfg.max_len} x {C}",
        "ln_cross": norm,
        **{f"cross.{w}": lin(HD, C) if w == "w_o" else lin(C, HD) for w in ("w_q", "w_k", "w_v", "w_o")},
        "enc_ln": norm,
        "dec_ln": norm,
    }


def params_report(cfg: ModelConfig, context: int | None = None) -> dict[str, Any]:
    """Everything the `params` view shows, as plain data (JSON-serialisable).

    Keys: total, non_embedding (Kaplan's N: without embed.tok / embed.pos), components, groups,
    per_layer, per_head, flops_per_token, flop_terms, context, scaling, shapes, tied_lm_head, config.
    """
    context = _check_context(cfg, context)
    components = param_breakdown(cfg)
    total = sum(components.values())
    embedding = components["embed.tok"] + components.get("embed.pos", 0)
    report: dict[str, Any] = {
        "total": total,
        "non_embedding": total - embedding,
        "components": components,
        "groups": group_totals(components),
        "per_layer": 0,
        "per_head": {},
        "flops_per_token": flops_per_token(cfg, context),
        "flop_terms": _flop_terms(cfg, context),
        "context": context,
        "scaling": scaling_table(cfg),
        "shapes": _shapes(cfg),
        "tied_lm_head": cfg.tie_embeddings,
        "config": cfg.to_dict(),
    }
    if cfg.model == "transformer":
        C, D, b = cfg.emb_dim, cfg.head_dim, int(cfg.bias)
        report["per_layer"] = sum(block_components(cfg).values())
        # One head's slice of each projection (TransformerLens's W_Q[head] etc.); w_o's bias is shared,
        # and with grouped-query attention one key/value head serves n_heads / n_kv_heads query heads.
        one = C * D + b * D
        report["per_head"] = {"attn.w_q": one, "attn.w_k": one, "attn.w_v": one, "attn.w_o": D * C}
    return report


def params_report_for(target: str, model: str = "transformer", context: int | None = None) -> dict[str, Any]:
    """`params_report` of a preset (`target` names one; `model` says which of its models) or of a
    checkpoint (a run or checkpoint folder, read without building its model)."""
    from ..models import PRESETS, preset_config
    from ..training.checkpoint import check_checkpoint  # weights and their files: only for a checkpoint

    if target in PRESETS:
        cfg = preset_config(target, model=model)
    else:
        try:
            cfg = check_checkpoint(target)[1]
        except AttnlabError as e:
            raise AttnlabError(f"{target!r} is not a preset ({', '.join(PRESETS)}); as a checkpoint: {e}") from None
    return params_report(cfg, context)


def _human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M': a short magnitude next to the exact count."""
    for size, suffix in ((1e12, "T"), (1e9, "G" if unit else "B"), (1e6, "M"), (1e3, "K" if unit else "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}{unit}"
    return f"{n:g}{unit}"


def _bytes(n: int) -> str:
    for size, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= size:
            return f"{n / size:.1f} {suffix}"
    return f"{n} B"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_params_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table: identical blocks are shown once with a `x n_layers` count."""
    cfg = report["config"]
    total, comps, shapes = report["total"], report["components"], report["shapes"]
    n_layers = cfg["n_layers"] if cfg["model"] == "transformer" else 0
    sizes = f"V={cfg['n_vocab']} C={cfg['emb_dim']} F={cfg['n_hidden']}"
    if n_layers:
        sizes += f" H={cfg['n_heads']} D={cfg['head_dim']} layers={n_layers} max_len={cfg['max_len']}"
    if cfg["model"] == "seq2seq":
        sizes += f" H={cfg['n_heads']} D={cfg['head_dim']} encoder {cfg['n_enc_layers'] or cfg['n_layers']}"
        sizes += f" + decoder {cfg['n_layers']} blocks, max_len={cfg['max_len']}"
    out = [f"{cfg['model']} model: {sizes}", ""]

    def share(n: int) -> str:
        return f"{100 * n / total:.1f}%"

    rows = []
    stacks = {"blocks": n_layers}
    if cfg["model"] == "seq2seq":
        stacks = {"encoder": cfg["n_enc_layers"] or cfg["n_layers"], "decoder": cfg["n_layers"]}
    for name, n in comps.items():
        stack, _, rest = name.partition(".")
        if stack in stacks and not rest.startswith("0."):
            continue  # the same counts as block 0
        if stack in stacks:
            part = rest.removeprefix("0.")
            label, times, shape = f"{stack}.*.{part}", stacks[stack], shapes[part]
        else:
            label, times, shape = name, 1, shapes[name]
        rows.append([label, shape, f"{n:,}", f"x{times}", f"{n * times:,}", share(n * times)])
    rows.append(["total", "", "", "", f"{total:,}", "100.0%"])
    out += _table(["component", "shape (in x out + bias)", "params", "", "total", "share"], rows, {2, 3, 4, 5})
    tied = "; lm_head is tied to embed.tok and adds 0" if report["tied_lm_head"] else ""
    out.append(f"total: {total:,} parameters ({_human(total)}){tied}")
    out.append(f"non-embedding (Kaplan's N): {report['non_embedding']:,} ({_human(report['non_embedding'])})")
    groups = ", ".join(f"{g} {n:,} ({share(n)})" for g, n in report["groups"].items())
    out.append(f"groups: {groups}")
    if report["per_head"]:
        head = ", ".join(f"{k} {v:,}" for k, v in report["per_head"].items())
        out.append(f"per layer: {report['per_layer']:,}; per head: {head}")

    flops, terms, L = report["flops_per_token"], report["flop_terms"], report["context"]
    out += [
        "",
        f"FLOPs per token at context {L:,} (multiply-add = 2 FLOPs):",
        f"  forward {flops['forward']:,} ({_human(flops['forward'], 'FLOP')}) = matmuls {terms['matmul']:,}"
        f" + attention {terms['attention']:,} + lm_head {terms['lm_head']:,}",
        f"  train (3 x forward) {flops['train']:,} ({_human(flops['train'], 'FLOP')})",
    ]
    if n_layers:
        out += [
            "  attention = 2 x layers x context x H*D x 2 (QK^T and weights @ V over the full context:",
            "  an upper bound; causal masking halves the useful work on average)",
            "",
            "as the context doubles (* = past max_len; scores: H x L x L fp32, batch 1, one layer):",
        ]
        rows = [
            [
                f"{r['context']:,}" + ("*" if r["context"] > cfg["max_len"] else ""),
                f"{r['flops_per_token_forward']:,}",
                f"{100 * r['attention_share']:.1f}%",
                _bytes(r["attention_scores_bytes_per_layer"]),
            ]
            for r in report["scaling"]
        ]
        out += _table(["context", "forward FLOPs/token", "attention share", "scores/layer"], rows, {0, 1, 2, 3})
    return "\n".join(out)
