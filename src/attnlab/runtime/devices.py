"""Devices and precision: which device to run on, autocast, and waiting for a device's work."""

from __future__ import annotations

import contextlib

import torch

from ..errors import AttnlabError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str = "auto") -> str:
    """`auto` picks cuda, then mps, then cpu; any other name must exist on this machine."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise AttnlabError(f"--device {device}: not available here ({str(e).splitlines()[0][:120]})") from None
    return device


def check_dtype(dtype: str, flag: str = "--dtype") -> None:
    if dtype not in DTYPES:
        raise AttnlabError(f"{flag} {dtype}: choose one of {', '.join(DTYPES)}")


def set_matmul_precision(device: str, tf32: bool) -> None:
    """On a CUDA device, let fp32 matmuls and convolutions use TF32 tensor cores (`tf32`, training's
    default: several times the fp32 rate of an A100 or H100, with a 10-bit mantissa for the products and
    fp32 sums) or not. Other devices have no TF32: nothing changes."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def matmul_note(device: str, dtype: str, tf32: bool) -> str | None:
    """What a run's notice says of `set_matmul_precision`, or None where it does not apply (other devices,
    or an autocast dtype, whose matmuls run in bf16 or fp16 anyway)."""
    if not device.startswith("cuda") or dtype != "fp32":
        return None
    return "fp32 matmuls in TF32; --tf32 off for full fp32" if tf32 else "full fp32 matmuls: --tf32 off"


def autocast_context(device: str, dtype: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: matmuls in bf16/fp16, reductions kept in fp32 by autocast."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=DTYPES[dtype])


def available_devices() -> list[str]:
    """The devices this machine has: cpu, then cuda and mps where present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def synchronize(device: str) -> None:
    """Wait for `device` to finish its queued work (a no-op on the CPU), so timings are honest."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)  # that GPU: with no argument, only the current one
    elif device == "mps":
        torch.mps.synchronize()
