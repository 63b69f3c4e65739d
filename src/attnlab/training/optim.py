"""Optimizers: AdamW for everything, or Muon for the hidden weight matrices and AdamW for the rest.

Muon (Jordan et al. 2024, the optimizer of the nanoGPT speedrun records) replaces each update of a
weight matrix by the nearest semi-orthogonal matrix to its momentum (five Newton-Schulz steps), so
every direction of the matrix learns at the same rate. It suits the matrices inside the blocks;
embeddings, the (tied) LM head, norms and biases stay with AdamW, as in those records.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, overload

import torch
from torch import nn

from ..errors import AttnlabError

OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd", "noam")  # learning-rate schedules after warm-up (train.scheduled_lr)


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(hidden matrices, embeddings and LM head, vectors such as norm weights and biases)."""
    hidden, io, vectors = [], [], []
    for name, p in model.named_parameters():
        if p.dim() < 2:
            vectors.append(p)
        elif name.startswith(("embed.", "lm_head.", "src_embed.", "tgt_embed.")):
            io.append(p)
        else:
            hidden.append(p)
    return hidden, io, vectors


def newton_schulz(g_MN: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """An approximately semi-orthogonal matrix near g (U V^T of its SVD, singular values ~0.5-1.5).

    The quintic iteration X <- a X + (b A + c A^2) X with A = X X^T and Jordan's coefficients, as in
    torch.optim.Muon, but in float32: that one runs in bfloat16, which CPUs without bf16 units
    multiply about 100x slower than float32.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x_MN = g_MN.float()
    tall = x_MN.shape[0] > x_MN.shape[1]
    if tall:
        x_MN = x_MN.T
    x_MN = x_MN / x_MN.norm().clamp(min=eps)
    for _ in range(steps):
        gram_MM = x_MN @ x_MN.T
        x_MN = torch.addmm(x_MN, torch.addmm(gram_MM, gram_MM, gram_MM, beta=b, alpha=c), x_MN, beta=a)
    return (x_MN.T if tall else x_MN).to(g_MN.dtype)


class Float32Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update (Nesterov momentum, Newton-Schulz, decoupled weight decay,
    "match_rms_adamw" scaling) with the Newton-Schulz iteration in float32, for CPUs."""

    def __init__(self, params: list[nn.Parameter], lr: float, weight_decay: float, momentum: float = 0.95) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update; a `closure` (torch's optimizer protocol) recomputes the loss first, as torch.optim.Muon's."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mu)
                update = newton_schulz(p.grad.lerp(buf, mu))
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * 0.2 * math.sqrt(max(p.shape[0], p.shape[1])))
        return loss


class MuonWithAdamW:
    """Muon on the hidden matrices and AdamW on the rest, stepped together like one optimizer.

    Muon uses Moonshot's learning-rate adjustment ("match_rms_adamw": the update's RMS matches
    AdamW's), so both halves share the schedule's learning rate and weight decay. `state_dict`
    numbers the parameters across both halves, so checkpoints store it like any optimizer's.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.parts = (muon, adamw)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for part in self.parts for group in part.param_groups]

    @property
    def state(self) -> dict[Any, Any]:
        return {k: v for part in self.parts for k, v in part.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict[str, Any]:
        state, groups, offset = {}, [], 0
        for part in self.parts:
            sd = part.state_dict()
            state.update({idx + offset: s for idx, s in sd["state"].items()})
            groups += [{**g, "params": [i + offset for i in g["params"]]} for g in sd["param_groups"]]
            offset += sum(len(g["params"]) for g in sd["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        groups, offset = list(sd["param_groups"]), 0
        for part in self.parts:
            mine = groups[: len(part.param_groups)]
            groups = groups[len(part.param_groups) :]
            n = sum(len(g["params"]) for g in mine)
            # Saved values win, but keys only this implementation has stay: a checkpoint from Float32Muon
            # (CPU) resumes with torch.optim.Muon (CUDA), which also reads nesterov, ns_steps, ...
            merged = [
                {**now, **g, "params": [i - offset for i in g["params"]]}
                for now, g in zip(part.param_groups, mine, strict=False)  # a count mismatch: torch says so below
            ]
            part.load_state_dict(
                {
                    "state": {int(i) - offset: s for i, s in sd["state"].items() if offset <= int(i) < offset + n},
                    "param_groups": merged,
                }
            )
            offset += n


def make_optimizer(
    model: nn.Module,
    kind: str,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    device: str,
    embed_lr_ratio: float = 1.0,
) -> torch.optim.Optimizer | MuonWithAdamW:
    """AdamW (weight decay on matrices only), or Muon + AdamW; fused AdamW kernels on CPU and CUDA.

    The embeddings (and an untied LM head) learn at `embed_lr_ratio` x lr: their group carries
    "lr_ratio", which the schedule multiplies in. With AdamW they get a group of their own only then,
    so the optimizer states saved before this option existed keep loading.
    """
    # One fused kernel for the whole update instead of a dozen ops per tensor (CPU and CUDA kernels exist).
    fused = {"fused": True} if device.split(":")[0] in ("cpu", "cuda") else {}
    hidden, io, vectors = split_params(model)
    io_group = {"params": io, "weight_decay": weight_decay, "lr_ratio": embed_lr_ratio}
    if kind == "adamw":
        if embed_lr_ratio == 1.0:  # the matrices in the model's order, as saved optimizer states number them
            groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": weight_decay}]
        else:
            groups = [{"params": hidden, "weight_decay": weight_decay}, io_group]
        groups.append({"params": vectors, "weight_decay": 0.0})
        return torch.optim.AdamW(_with_lr(groups, lr), lr=lr, betas=betas, **fused)
    if kind != "muon":
        raise AttnlabError(f"--optimizer {kind}: choose one of {', '.join(OPTIMIZERS)}")
    if device.startswith("cuda") and hasattr(torch.optim, "Muon"):  # bf16 Newton-Schulz: fast on GPUs
        muon: torch.optim.Optimizer = torch.optim.Muon(
            hidden, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw"
        )
    else:
        muon = Float32Muon(hidden, lr=lr, weight_decay=weight_decay)
    groups = [io_group, {"params": vectors, "weight_decay": 0.0}]
    return MuonWithAdamW(muon, torch.optim.AdamW(_with_lr(groups, lr), lr=lr, betas=betas, **fused))


def _with_lr(groups: list[dict[str, Any]], lr: float) -> list[dict[str, Any]]:
    """Each group's starting learning rate: lr, times its ratio (the schedule sets it every step)."""
    return [{**g, "lr": lr * g["lr_ratio"]} if "lr_ratio" in g else g for g in groups]
