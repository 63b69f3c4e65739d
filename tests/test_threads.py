"""CPU threads: set before torch loads, matched to the CPUs the process may use, fixed by --threads,
and fewer while other processes keep CPUs busy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attnlab.runtime.threads import ThreadGovernor, available_cpus, configure

THREAD_VARS = ("OMP_NUM_THREADS", "ATTNLAB_THREADS", "ATTNLAB_SET_OMP_NUM_THREADS", "OMP_WAIT_POLICY")


def _info(*args: str, **env: str) -> dict:
    """`attnlab info --format json` through the console script, in a fresh process."""
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    exe = shutil.which("attnlab") or pytest.skip("the attnlab console script is not on PATH")
    proc = subprocess.run(
        [exe, "info", "--format", "json", *args], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["threads"]


def test_the_command_runs_one_thread_per_cpu_it_may_use_and_adapts() -> None:
    threads = _info()
    assert threads["torch"] == available_cpus() == int(threads["env"]["OMP_NUM_THREADS"])
    assert threads["adaptive"] == (available_cpus() > 1)


def test_threads_option_and_variables_fix_the_count() -> None:
    assert _info("--threads", "1") | {"env": None} == {
        "torch": 1,
        "available_cpus": available_cpus(),
        "adaptive": False,
        "env": None,
    }
    user = _info(OMP_NUM_THREADS="1")
    assert user["torch"] == 1 and not user["adaptive"] and user["env"]["OMP_NUM_THREADS"] == "1"
    assert _info(ATTNLAB_THREADS="1")["torch"] == 1
    untouched = _info(ATTNLAB_THREADS="torch")
    assert "OMP_NUM_THREADS" not in untouched["env"] and not untouched["adaptive"]


def test_threads_below_one_are_a_one_line_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "attnlab", "info", "--threads", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == "attnlab info: error: --threads 0: must be >= 1"


def test_configure_leaves_what_the_user_set_and_does_nothing_once_torch_is_loaded() -> None:
    assert configure({"OMP_NUM_THREADS": "3"}) == {}  # torch is loaded in this process: too late to set
    assert "torch" in sys.modules


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs of quota: 2 threads
        ({"cpu.max": "max 100000\n"}, None),  # no quota: the affinity mask decides
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ],
)
def test_a_cgroup_quota_caps_the_threads(files: dict[str, str], expected: int | None, tmp_path: Path) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == (min(affinity, expected) if expected else affinity)


def test_the_governor_runs_fewer_threads_while_another_process_is_busy(monkeypatch) -> None:
    n = str(torch.get_num_threads())  # as if attnlab had chosen this process's count
    monkeypatch.setenv("OMP_NUM_THREADS", n)
    monkeypatch.setenv("ATTNLAB_SET_OMP_NUM_THREADS", n)
    monkeypatch.delenv("ATTNLAB_THREADS", raising=False)
    governor = ThreadGovernor(every_s=0.5)
    if not governor.enabled or len(governor.cpus) > 8:
        pytest.skip("needs 2 to 8 CPUs, /proc/stat and a thread count attnlab chose")
    a = torch.randn(256, 256)

    def work(seconds: float) -> list[int]:
        seen, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            a @ a
            governor.adjust()
            seen.append(torch.get_num_threads())
        return seen

    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(len(governor.cpus) - 1)]
    try:
        loaded = work(3.0)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    quiet = work(3.0)
    governor.restore()
    assert min(loaded) == 1 and quiet[-1] == governor.max_threads, governor.changes
