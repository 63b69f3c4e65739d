"""Confining a student's notebook: bubblewrap namespaces, a user of its own, and resource limits.

Inside the sandbox a notebook sees a read-only view of the system and of this Python environment, a
private writable working directory (`/sandbox`, a size-capped tmpfs, also its home) and a private
`/tmp`; nothing of the other submissions or of the grader's files; no network (a network namespace
of its own, with only its own loopback). Each process may map at most `memory` bytes (RLIMIT_AS),
the notebook's user may run at most `processes` tasks (RLIMIT_NPROC, threads included), and the
grader kills the whole sandbox when its time is up.

When the grader runs as root, each sandbox runs as an unprivileged user id of its own (RLIMIT_NPROC
counts per user, and root is exempt); otherwise as the grader's user inside a user namespace, where
the process limit counts the user's other processes too. Without bubblewrap (macOS, a container
without namespaces) only the resource limits apply, and only when asked for with `--no-sandbox`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import AttnlabError

PROCESSES = 256  # tasks (processes and threads) a notebook may run: a kernel and torch need ~30
WORKDIR = "/sandbox"  # the notebook's working directory and home inside the sandbox
WORKDIR_BYTES = 1 << 30  # what the notebook may write there (a tmpfs, so it lives in memory)
TMP_BYTES = 512 << 20
UID_BASE = 1_900_000_000  # user ids no account has: one per sandbox when the grader is root
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'4G', '512M', '1.5G' or a number of bytes -> bytes (K, M, G, T are powers of 1024)."""
    match = SIZE.match(text)
    if not match:
        raise AttnlabError(f"--memory {text!r}: give a size such as 4G or 512M")
    value = float(match.group(1)) * 1024 ** " KMGT".index((match.group(2) or " ").upper())
    if not 64 << 20 <= value <= 1 << 50:
        raise AttnlabError(f"--memory {text!r}: give at least 64M (a kernel and torch need more than that)")
    return int(value)


def machine_memory() -> int:
    """Bytes of memory this machine has."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_memory(jobs: int) -> int:
    """Each notebook's share: three quarters of the machine split over the notebooks run at once,
    capped at 8 GiB (the lab needs about 1 GiB)."""
    return int(min(8 << 30, max(1 << 30, 0.75 * machine_memory() / max(jobs, 1))))


def format_size(n: int) -> str:
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20)):
        if n >= size:
            return f"{n / size:g}{unit}"
    return f"{n}B"


@functools.cache
def problem() -> str | None:
    """Why bubblewrap cannot confine a notebook here, in a few words; None when it can."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux and this is {sys.platform}"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    probe = _bwrap_args(Path(sys.executable).resolve().parent) + ["--", "/bin/true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap could not start ({e})"
    if done.returncode != 0:
        return f"bubblewrap cannot create namespaces here ({(done.stderr.strip() or 'no reason given')[:120]})"
    return None


@functools.cache
def _python_path() -> list[str]:
    """sys.path of a fresh interpreter of this environment (this process's may hold a project folder
    or a test runner's additions, which a notebook must not see)."""
    code = "import json, sys; print(json.dumps(sys.path))"
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    return [p for p in json.loads(done.stdout) if p] if done.returncode == 0 else []


def _read_only_paths() -> list[Path]:
    """The system and this Python environment: what a notebook may read (and nothing else)."""
    paths = [Path(p) for p in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")]
    paths += [Path(sys.base_prefix).resolve(), Path(sys.prefix), Path(sys.executable).resolve().parent]
    paths += [Path(p) for p in _python_path() if Path(p).is_dir()]  # site-packages, an editable install's src
    out: list[Path] = []
    for p in paths:
        if p.exists() and not any(p == q or q in p.parents for q in out):
            out = [q for q in out if p not in q.parents] + [p]
    return out


def _bwrap_args(python_dir: Path, root: bool | None = None) -> list[str]:
    """bwrap's options: namespaces, the read-only system, private /sandbox and /tmp, a clean environment."""
    root = os.geteuid() == 0 if root is None else root
    args = ["bwrap", "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid", "--unshare-net"]
    args += ["--unshare-uts", "--unshare-cgroup-try"] + ([] if root else ["--unshare-user"])
    # The private folders first: an environment that lives under /tmp is bound on top of them, not hidden.
    args += ["--perms", "1777", "--size", str(WORKDIR_BYTES), "--tmpfs", WORKDIR]
    args += ["--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    made: set[Path] = {Path("/"), Path("/tmp"), Path(WORKDIR)}
    for path in _read_only_paths():
        for parent in reversed(path.parents):  # bwrap would make them 0700, closed to the notebook's user
            if parent not in made:
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        if path.is_symlink() and path.parent == Path("/"):  # /lib -> usr/lib on merged-/usr systems
            args += ["--symlink", os.readlink(path), str(path)]
        else:
            args += ["--ro-bind", str(path), str(path)]
        made.add(path)
    args += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/", "--chdir", WORKDIR, "--clearenv"]
    env = {
        "PATH": f"{python_dir}:/usr/bin:/bin",
        "HOME": WORKDIR,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "IPYTHONDIR": "/tmp/ipython",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter",
        "ATTNLAB_CACHE": "/tmp/attnlab-cache",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args


@dataclass(frozen=True)
class Limits:
    """What one notebook may use: bytes of address space per process, tasks, seconds per cell and in all."""

    memory: int
    processes: int = PROCESSES
    cell_seconds: float = 300.0
    notebook_seconds: float = 900.0


def _user_tasks(uid: int) -> int:
    """Tasks (threads included) the user `uid` runs now: what RLIMIT_NPROC counts."""
    n = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if (m := re.search(r"^Uid:\s+(\d+)", text, re.M)) and int(m.group(1)) == uid:
            threads = re.search(r"^Threads:\s+(\d+)", text, re.M)
            n += int(threads.group(1)) if threads else 1
    return n


def confined(
    argv: list[str], limits: Limits, slot: int, sandbox: bool, extra_env: dict[str, str]
) -> tuple[list[str], Callable[[], None]]:
    """The command that runs `argv` under `limits` (in bubblewrap when `sandbox`), and the function that
    sets the limits in the child before it runs (subprocess's preexec_fn). `slot` tells concurrent
    sandboxes apart (their user ids when the grader is root)."""
    root = os.geteuid() == 0
    uid = UID_BASE + (os.getpid() % 100_000) * 100 + slot if root else os.getuid()
    processes = limits.processes + (0 if root and sandbox else _user_tasks(os.getuid()))

    def set_limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory, limits.memory))
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    if not sandbox:
        return argv, set_limits
    args = _bwrap_args(Path(sys.executable).parent)
    for key, value in extra_env.items():
        args += ["--setenv", key, value]
    if root:  # root is exempt from RLIMIT_NPROC: the notebook runs as a user id of its own, with no capabilities
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]
        argv = [*drop, "--bounding-set=-all", "--no-new-privs", "--", *argv]
    return [*args, "--", *argv], set_limits
