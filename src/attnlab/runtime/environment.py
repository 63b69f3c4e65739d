"""What attnlab runs with: notices to the user, the cache folder, versions, devices and threads (`attnlab info`)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .devices import available_devices

CACHE_ENV = "ATTNLAB_CACHE"


def notice(msg: str) -> None:
    """A message for the user on stderr that does not break a progress bar."""
    tqdm.write(msg, file=sys.stderr)


def cache_dir() -> Path:
    """Where attnlab keeps what it can rebuild (token files, trained BPEs): `$ATTNLAB_CACHE` or ~/.cache/attnlab."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "attnlab"))


def environment() -> dict[str, Any]:
    """What attnlab runs with here: versions, devices, threads, folders (`attnlab info`)."""
    from .threads import thread_settings

    devices = available_devices()
    if "cuda" in devices:
        devices = ["cpu", *(f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count()))]
        devices += ["mps"] if "mps" in available_devices() else []
    try:
        version = importlib.metadata.version("attnlab")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree (PYTHONPATH=src), not installed
        from .._version import __version__ as version
    return {
        "attnlab": version,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "devices": devices,
        "threads": thread_settings(),
        "cache": str(cache_dir()),
        "tinystories": os.environ.get("ATTNLAB_TINYSTORIES"),
    }


def format_environment(info: dict[str, Any]) -> str:
    """`environment()` as lines for a person."""
    t = info["threads"]
    lines = [
        f"attnlab {info['attnlab']}, torch {info['torch']}, Python {info['python']}",
        f"devices: {', '.join(info['devices'])}",
        f"threads: {t['torch']} (CPUs this process may use: {t['available_cpus']}; "
        + ("adjusted while training to the CPUs other processes leave free)" if t["adaptive"] else "fixed)"),
        *(f"  {k}={v}" for k, v in t["env"].items()),
        f"cache: {info['cache']}",
        f"TinyStories folder (ATTNLAB_TINYSTORIES): {info['tinystories'] or 'not set'}",
    ]
    return "\n".join(lines)
