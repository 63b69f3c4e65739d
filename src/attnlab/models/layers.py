"""The Transformer's parts: norms, positions, attention, the MLP, and the block around them.

Every variant lives here once, chosen by the config (no copy of the model per variant):
LayerNorm or RMSNorm, pre- or post-norm, learned / sinusoidal / rotary / no positions,
ReLU / GELU / SwiGLU MLPs, multi-head or grouped-query attention, biases on or off.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .hooks import NO_HOOK, Hook
from .kv_cache import LayerCache


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019): LayerNorm without centring or bias."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        x32_BLC = x_BLC.float()
        rms_BL1 = torch.rsqrt(x32_BLC.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32_BLC * rms_BL1).to(x_BLC.dtype) * self.weight


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rms":
        return RMSNorm(cfg.emb_dim, cfg.norm_eps)
    return nn.LayerNorm(cfg.emb_dim, eps=cfg.norm_eps, bias=cfg.norm_bias)


def sinusoidal_positions_LC(L: int, C: int) -> torch.Tensor:
    """Vaswani et al. 2017: PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(p / 10000^(2i/C))."""
    pos_L1 = torch.arange(L, dtype=torch.float64)[:, None]
    freq_C2 = torch.pow(10000.0, -torch.arange(0, C, 2, dtype=torch.float64) / C)
    pe_LC = torch.zeros(L, C, dtype=torch.float64)
    pe_LC[:, 0::2] = torch.sin(pos_L1 * freq_C2)
    pe_LC[:, 1::2] = torch.cos(pos_L1 * freq_C2)
    return pe_LC.float()


class RotaryEmbedding(nn.Module):
    """Rotary positions (Su et al. 2021): rotate pairs of q and k channels by position-dependent angles.

    Channel i is paired with channel i + D/2 (the "rotate half" layout of GPT-NeoX and Llama), and
    the pair rotates by angle position * theta^(-2i/D). Scores q.k then depend only on the offset
    between the two positions.
    """

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        inv_freq_D2 = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles_LD2 = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq_D2
        angles_LD = torch.cat([angles_LD2, angles_LD2], dim=-1)
        self.register_buffer("cos_LD", angles_LD.cos().float(), persistent=False)
        self.register_buffer("sin_LD", angles_LD.sin().float(), persistent=False)

    def forward(self, x_BHLD: torch.Tensor, offset: int = 0) -> torch.Tensor:
        L, half = x_BHLD.shape[-2], x_BHLD.shape[-1] // 2
        cos_LD, sin_LD = self.cos_LD[offset : offset + L], self.sin_LD[offset : offset + L]
        rotated_BHLD = torch.cat([-x_BHLD[..., half:], x_BHLD[..., :half]], dim=-1)
        return x_BHLD * cos_LD.to(x_BHLD.dtype) + rotated_BHLD * sin_LD.to(x_BHLD.dtype)


def causal_mask_LK(L: int, K: int, device: torch.device | str | None = None) -> torch.Tensor:
    """True where query i may attend to key j: j <= i (keys aligned to the end of the queries)."""
    return torch.ones(L, K, dtype=torch.bool, device=device).tril(diagonal=K - L)


def attention(
    q_BHLD: torch.Tensor,
    k_BHKD: torch.Tensor,
    v_BHKD: torch.Tensor,
    mask_LK: torch.Tensor | None = None,
    hook: Hook = NO_HOOK,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention, written out: softmax(q k^T / sqrt(D) + mask) v.

    `mask_LK` is boolean (True = may attend) or additive (0 or -inf, added to the scores); None
    means the causal mask.
    """
    L, K = q_BHLD.shape[-2], k_BHKD.shape[-2]
    if mask_LK is None:
        mask_LK = causal_mask_LK(L, K, q_BHLD.device)
    scores_BHLK = hook("scores_BHLK", q_BHLD @ k_BHKD.transpose(-2, -1) / math.sqrt(q_BHLD.shape[-1]))
    if mask_LK.dtype == torch.bool:
        masked_BHLK = scores_BHLK.masked_fill(~mask_LK, float("-inf"))
    else:
        masked_BHLK = scores_BHLK + mask_LK
    weights_BHLK = hook("weights_BHLK", hook("masked_BHLK", masked_BHLK).softmax(dim=-1))
    return F.dropout(weights_BHLK, dropout_p) @ v_BHKD


def attend_one_query(q_BH1D: torch.Tensor, k_BHKD: torch.Tensor, v_BHKD: torch.Tensor) -> torch.Tensor:
    """Attention of one new query over all keys (no mask needed), as multiply-and-sum reductions.

    This is what a compiled decoding step runs instead of SDPA: inductor fuses these reductions into
    its own kernels, where SDPA stays an external call whose fixed cost outweighs its arithmetic at
    one query (measured: the compiled step is ~1.2x faster).
    """
    scores_BHK = (q_BH1D * k_BHKD).sum(-1) / math.sqrt(q_BH1D.shape[-1])
    return (scores_BHK.softmax(dim=-1)[..., None] * v_BHKD).sum(-2, keepdim=True)


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) self-attention with explicit Q, K, V and output projections.

    `head_dim` (D) is independent of `emb_dim` (C): the projections map C -> H*D and back. With
    `n_kv_heads` < `n_heads`, each key/value head serves n_heads / n_kv_heads query heads.
    Two paths give the same output: `F.scaled_dot_product_attention` (fast, the default) and the
    written-out `attention`, taken whenever hooks are active so scores and weights can be read or edited.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim, self.impl = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.attn_impl
        self.w_q = nn.Linear(cfg.emb_dim, cfg.n_heads * cfg.head_dim, bias=cfg.bias)
        self.w_k = nn.Linear(cfg.emb_dim, cfg.kv_heads * cfg.head_dim, bias=cfg.bias)
        self.w_v = nn.Linear(cfg.emb_dim, cfg.kv_heads * cfg.head_dim, bias=cfg.bias)
        self.w_o = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.emb_dim, bias=cfg.bias)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.max_len, cfg.rope_theta) if cfg.positions == "rope" else None
        self.dropout = cfg.dropout

    def qkv_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """W_q, W_k and W_v stacked into one (H D + 2 G D) x C matrix (and bias).

        The three projections then cost one matmul, forward and backward: the same arithmetic in
        fewer, larger calls, which is faster at these sizes.
        """
        weight = torch.cat([self.w_q.weight, self.w_k.weight, self.w_v.weight])
        bias = torch.cat([self.w_q.bias, self.w_k.bias, self.w_v.bias]) if self.w_q.bias is not None else None
        return weight, bias

    def forward(self, x_BLC: torch.Tensor, hook: Hook = NO_HOOK, kv: LayerCache | None = None) -> torch.Tensor:
        B, L, _ = x_BLC.shape
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        offset = kv.offset if kv is not None else 0  # position of x's first token
        weight, bias = kv.cached("qkv", self.qkv_weights) if kv is not None else self.qkv_weights()
        qkv_BLX = F.linear(x_BLC, weight, bias)
        qk_BNLD = qkv_BLX[..., : (H + G) * D].view(B, L, H + G, D).transpose(1, 2)  # N = H + G heads
        if self.rope is not None:  # the query and key heads rotate together, in one pass
            qk_BNLD = self.rope(qk_BNLD, offset)
        q_BHLD, k_BGKD = qk_BNLD.split([H, G], dim=1)
        v_BGKD = qkv_BLX[..., (H + G) * D :].view(B, L, G, D).transpose(1, 2)
        if kv is not None:  # generation: earlier positions' keys and values come from the cache
            k_BGKD, v_BGKD = kv.append(k_BGKD, v_BGKD)
        if G != H:  # grouped-query: each key/value head is shared by H / G consecutive query heads
            k_BGKD, v_BGKD = k_BGKD.repeat_interleave(H // G, dim=1), v_BGKD.repeat_interleave(H // G, dim=1)
        q_BHLD, k_BHKD, v_BHKD = hook("q_BHLD", q_BHLD), hook("k_BHKD", k_BGKD), hook("v_BHKD", v_BGKD)
        p_drop = self.dropout if self.training else 0.0
        K = k_BHKD.shape[2]
        if self.impl == "sdpa" and not hook.enabled:
            if kv is not None and L == 1 and p_drop == 0.0 and torch.compiler.is_compiling():  # compiled decoding
                z_BHLD = attend_one_query(q_BHLD, k_BHKD, v_BHKD)
            elif K == L or L == 1:  # one new query may attend to every cached key: no mask at all
                z_BHLD = F.scaled_dot_product_attention(q_BHLD, k_BHKD, v_BHKD, dropout_p=p_drop, is_causal=L > 1)
            else:  # new queries after cached keys: the mask's diagonal moves right by K - L
                mask_LK = causal_mask_LK(L, K, x_BLC.device)
                z_BHLD = F.scaled_dot_product_attention(q_BHLD, k_BHKD, v_BHKD, attn_mask=mask_LK, dropout_p=p_drop)
        else:
            z_BHLD = attention(q_BHLD, k_BHKD, v_BHKD, causal_mask_LK(L, K, x_BLC.device), hook, p_drop)
        z_BHLD = hook("z_BHLD", z_BHLD)
        return hook("out_BLC", self.w_o(z_BHLD.transpose(1, 2).reshape(B, L, H * D)))


class MLP(nn.Module):
    """The feed-forward block: W2(act(W1 x)) with ReLU (the lab) or GELU (GPT-2), or SwiGLU W2(SiLU(W1 x) * W3 x)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp
        self.fc_in = nn.Linear(cfg.emb_dim, cfg.n_hidden, bias=cfg.bias)  # W1
        self.fc_up = nn.Linear(cfg.emb_dim, cfg.n_hidden, bias=cfg.bias) if cfg.mlp == "swiglu" else None  # W3
        self.fc_out = nn.Linear(cfg.n_hidden, cfg.emb_dim, bias=cfg.bias)  # W2

    def forward(self, x_BLC: torch.Tensor, hook: Hook = NO_HOOK) -> torch.Tensor:
        pre_BLF = hook("pre_BLF", self.fc_in(x_BLC))
        if self.fc_up is not None:
            hidden_BLF = F.silu(pre_BLF) * hook("up_BLF", self.fc_up(x_BLC))
        elif self.kind == "gelu":
            hidden_BLF = F.gelu(pre_BLF, approximate="tanh")
        else:
            hidden_BLF = F.relu(pre_BLF)
        return hook("out_BLC", self.fc_out(hook("hidden_BLF", hidden_BLF)))


class Block(nn.Module):
    """Pre-norm: x + attn(ln1(x)), then + mlp(ln2(.)).

    Post-norm (Vaswani et al. 2017): ln1(x + attn(x)), then ln2(. + mlp(.)).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.post_norm = cfg.norm_placement == "post"
        self.ln1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x_BLC: torch.Tensor, hook: Hook = NO_HOOK, kv: LayerCache | None = None) -> torch.Tensor:
        attn, mlp = hook.scope("attn."), hook.scope("mlp.")
        if self.post_norm:
            resid_mid_BLC = hook("resid_mid_BLC", x_BLC + self.drop(self.attn(x_BLC, attn, kv)))
            ln1_BLC = hook("ln1_BLC", self.ln1(resid_mid_BLC))
            resid_post_BLC = hook("resid_post_BLC", ln1_BLC + self.drop(self.mlp(ln1_BLC, mlp)))
            return hook("ln2_BLC", self.ln2(resid_post_BLC))
        ln1_BLC = hook("ln1_BLC", self.ln1(x_BLC))
        resid_mid_BLC = hook("resid_mid_BLC", x_BLC + self.drop(self.attn(ln1_BLC, attn, kv)))
        ln2_BLC = hook("ln2_BLC", self.ln2(resid_mid_BLC))
        return hook("resid_post_BLC", resid_mid_BLC + self.drop(self.mlp(ln2_BLC, mlp)))
