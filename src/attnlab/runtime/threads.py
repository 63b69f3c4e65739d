"""CPU threads that hold up when the machine is busy, set before PyTorch is loaded.

PyTorch's CPU kernels run on OpenMP threads (GNU libgomp in the pip wheels), which wait for each
other at the end of every parallel region by spinning. On a quiet machine the spin saves a few
microseconds per region; when another process wants the same cores, a spinning thread takes the
time a working thread needs, and training falls to a third of its speed. Waiting without spinning
(`OMP_WAIT_POLICY=PASSIVE`) or one thread avoid that, but cost 10-40% on a quiet machine. So attnlab
keeps the threads spinning and keeps their number at the CPUs that are really free:

- before torch is loaded (`import attnlab` and the `attnlab` command do this first thing), unless
  the user set it, `OMP_NUM_THREADS` = the CPUs this process may use: its affinity mask capped by
  a cgroup CPU quota (a container limited to 2 CPUs on a 64-core server gets 2 threads, not 64);
- while training, `ThreadGovernor` looks every few seconds at how much CPU other processes take,
  and runs one thread per CPU they leave free (see README, Benchmarks: a busy machine).

`ATTNLAB_THREADS=N` or `--threads N` fixes the count at N; `ATTNLAB_THREADS=torch` leaves everything
to PyTorch's defaults. This module imports nothing heavy.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

THREADS_ENV = "ATTNLAB_THREADS"


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (rounded up)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    return max(1, min(n, math.ceil(quota))) if quota else max(1, n)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup (v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), or None."""
    try:
        fields = (root / "cpu.max").read_text().split()
        return int(fields[0]) / int(fields[1]) if fields[0] != "max" else None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def configure(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the thread variables that the user left unset; returns what was set.

    Does nothing once torch is loaded (the OpenMP runtime has read its settings by then) or when
    `ATTNLAB_THREADS=torch`.
    """
    env = os.environ if environ is None else environ
    choice = env.get(THREADS_ENV, "").strip()
    if "torch" in sys.modules or choice == "torch":
        return {}
    wanted = {"OMP_NUM_THREADS": choice if choice.isdigit() and int(choice) > 0 else str(available_cpus())}
    added = {k: v for k, v in wanted.items() if k not in env}
    env.update(added)
    if "OMP_NUM_THREADS" in added:  # remembered, so the governor knows the count is ours to change
        env["ATTNLAB_SET_OMP_NUM_THREADS"] = added["OMP_NUM_THREADS"]
    return added


def use_threads(n: int) -> None:
    """Run this process's PyTorch work on `n` threads from now on (`--threads N`); the count stays fixed."""
    from ..errors import AttnlabError

    if n < 1:
        raise AttnlabError(f"--threads {n}: must be >= 1")
    if n > (most := 4 * (os.cpu_count() or 1)):  # each is an OS thread; past the CPUs they only wait on each other
        raise AttnlabError(f"--threads {n}: at most {most} here (4 x the {os.cpu_count()} CPUs)")
    import torch

    os.environ[THREADS_ENV] = str(n)  # fixed: no adjusting while training, and child processes inherit it
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)


def thread_settings() -> dict[str, object]:
    """What this process runs with: torch's thread count, the CPUs it may use, whether it adapts, the variables."""
    import torch

    names = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", THREADS_ENV)
    return {
        "torch": torch.get_num_threads(),
        "available_cpus": available_cpus(),
        "adaptive": _adaptive() and torch.get_num_threads() > 1,
        "env": {k: os.environ[k] for k in names if k in os.environ},
    }


def _busy_seconds(cpus: set[int]) -> float | None:
    """CPU seconds spent busy (user, nice, system, interrupts) on `cpus` since boot, from /proc/stat."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
            busy += user + nice + system + irq + softirq
    return busy / os.sysconf("SC_CLK_TCK")


class ThreadGovernor:
    """Keeps PyTorch's thread count at the CPUs that other processes leave free, while training runs.

    Every `every_s` seconds it compares the busy time of this process's CPUs (/proc/stat) with its
    own CPU time: the difference is what other processes used. A thread per free CPU, at least one,
    at most `max_threads`. Spinning OpenMP threads are fastest on a quiet machine and slowest beside
    a busy process, which one thread fewer avoids (README, Benchmarks: busy machine). Off when the
    thread count was fixed (`--threads`, `ATTNLAB_THREADS=N` or `=torch`, `OMP_NUM_THREADS`) or
    where /proc/stat does not exist.
    """

    def __init__(
        self,
        max_threads: int | None = None,
        every_s: float = 2.0,
        enabled: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        import torch

        self.log = log
        self.torch = torch
        self.max_threads = max_threads or torch.get_num_threads()
        self.every_s = every_s
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        self.enabled = enabled and _adaptive() and self.max_threads > 1 and _busy_seconds(self.cpus) is not None
        self.changes: list[tuple[float, int]] = []  # (seconds since start, threads): what it did
        self._start = time.monotonic()
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        return time.monotonic(), _busy_seconds(self.cpus) or 0.0, time.process_time()

    def others(self) -> float | None:
        """CPUs' worth of time that other processes used since the last look (None: too soon)."""
        if time.monotonic() - self._last[0] < self.every_s:
            return None
        now = self._sample()
        wall = now[0] - self._last[0]
        others = ((now[1] - self._last[1]) - (now[2] - self._last[2])) / wall
        self._last = now
        return max(0.0, others)

    def adjust(self) -> None:
        """Call between steps: changes the thread count when other processes took or freed CPUs."""
        if not self.enabled or (others := self.others()) is None:
            return
        threads = max(1, min(self.max_threads, round(len(self.cpus) - others)))
        if threads != self.torch.get_num_threads():
            self.torch.set_num_threads(threads)
            self.changes.append((round(time.monotonic() - self._start, 1), threads))
            why = "other processes use the CPUs" if threads < self.max_threads else "the CPUs are free again"
            self.log(f"notice: {why} ({others:.1f} busy): training on {threads} of {self.max_threads} threads")

    def restore(self) -> None:
        if self.enabled:
            self.torch.set_num_threads(self.max_threads)


def _adaptive() -> bool:
    """Whether the thread count is attnlab's to choose (nobody fixed it)."""
    if os.environ.get(THREADS_ENV, "").strip():
        return False
    return os.environ.get("OMP_NUM_THREADS") == os.environ.get("ATTNLAB_SET_OMP_NUM_THREADS")
