"""The two norms of the blocks: LayerNorm (torch's) and RMSNorm."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


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
