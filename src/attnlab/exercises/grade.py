"""`attnlab check`: grade students' notebooks where their code cannot reach the grades.

Each notebook runs whole, in a sandbox (exercises/sandbox.py), as the student ran it: its cells,
prints and in-line checks. Then, for each exercise, the grader takes the function the notebook
defined and checks it from its own process: the inputs are drawn for this grading run (not the
notebook's), they cross into the sandbox, the student's function runs there, and only the values it
returned come back, as data (exercises/wire.py). The comparison with the reference, the named
mistakes and the grade are computed here, by the same checks the notebook calls. Nothing a notebook
prints, logs, redefines or monkeypatches reaches this process.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error
from typing import IO, Any

import torch
from tqdm import tqdm

from ..errors import AttnlabError
from . import sandbox, wire
from .catalogue import EVERY_CHECK, NOTEBOOK_CHECKS, check_kind, notebook_kind
from .grades import NOT_CHECKED, NOT_WRITTEN, PASSED, REFERENCE, WRONG, NotebookReport
from .result import CheckResult

# The notebook trains its models for this many seconds each when it reads it (the lab notebook does):
# the checks do not depend on how well they learned, and a class of notebooks should grade in minutes.
QUICK_SECONDS = "5"
MAX_NOTEBOOK_BYTES = 64 << 20


class NotANotebook(AttnlabError):
    """The file is not a Jupyter notebook (one line, naming it)."""


def read_notebook(path: Path) -> tuple[bytes, Any]:
    """The notebook's bytes and its parsed form, checked to be a notebook (never run here)."""
    import nbformat

    if not path.is_file():
        raise NotANotebook(f"{path}: no such notebook; give the path of a .ipynb file")
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise NotANotebook(f"{path} is over {MAX_NOTEBOOK_BYTES >> 20} MB; clear its outputs and try again")
    data = path.read_bytes()
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # nbformat raises several kinds; all mean "not a notebook"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NotANotebook(f"{path} is not a Jupyter notebook ({first[:120]}); give a .ipynb file") from None
    return data, nb


def exercise_sources(nb: Any, names: Iterable[str]) -> dict[str, str]:
    """Each exercise of `names`: its last top-level `def` in the notebook's code, as written (parsed, never run)."""
    names = list(names)
    found: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in names:
                found[node.name] = ast.get_source_segment(cell.source, node) or ""
    return {name: found.get(name, "") for name in names}


# ---- the grader's side of a sandbox -----------------------------------------------------------


class ProtocolError(Exception):
    """The sandbox answered something that is not an answer."""


class StillRunning(Exception):
    """The student's function ran past the time limit."""


class KernelDied(Exception):
    """The notebook's kernel died (memory, a crash) while running the student's function."""


class Sandbox:
    """One notebook running in its sandbox, and the calls the checks make into it."""

    def __init__(self, data: bytes, limits: sandbox.Limits, confine: bool, slot: int, threads: int) -> None:
        env = {"ATTNLAB_LAB_SECONDS": QUICK_SECONDS, "ATTNLAB_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
        # glibc reserves 64 MB of address space per thread's malloc arena; under RLIMIT_AS that is memory
        # the notebook cannot use (a kernel with torch maps 1.4 GB with the default, 0.84 GB with two).
        env["MALLOC_ARENA_MAX"] = "2"
        argv = [sys.executable, "-m", "attnlab.exercises.runner"]
        cmd, preexec = sandbox.confined(argv, limits, slot, confine, env)
        child_env = None if confine else {**_plain_env(), **env}
        self.scratch = None if confine else tempfile.TemporaryDirectory(prefix="attnlab-check-")
        self.stderr = tempfile.TemporaryFile()  # the sandbox's own complaints (bwrap, a runner that failed)
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            preexec_fn=preexec,  # the limits must be set in the child before it runs
            start_new_session=True,  # its own process group, killed whole
            env=child_env,
            cwd=self.scratch.name if self.scratch else None,
        )
        # The notebook's messages go in on its stdin and come back on its stdout: both PIPEs, so both exist.
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.to_box: IO[bytes] = self.proc.stdin
        self.from_box: IO[bytes] = self.proc.stdout
        self.timer = threading.Timer(limits.notebook_seconds, self.kill)
        self.timer.daemon = True
        self.timer.start()
        self.killed_for_time = False
        self.notebook_seconds = limits.notebook_seconds
        notebook = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
        self.send({"type": "notebook", "cell_seconds": limits.cell_seconds}, {"notebook": notebook})

    def send(self, header: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
        try:
            wire.send(self.to_box, header, tensors)
        except (BrokenPipeError, OSError) as e:
            raise ProtocolError(self._gone()) from e

    def receive(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        try:
            return wire.receive(self.from_box)
        except (wire.WireError, OSError, struct_error) as e:
            raise ProtocolError(self._gone() if self.proc.poll() is not None or self.killed_for_time else str(e)) from e

    def _gone(self) -> str:
        if self.killed_for_time:
            return f"the notebook ran past its {self.notebook_seconds:g} s and was stopped"
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - 4096))
        lines = [line.strip() for line in self.stderr.read().decode("utf-8", "replace").splitlines() if line.strip()]
        said = f": {lines[-1][:200]}" if lines else ""
        return f"the sandbox stopped (exit status {self.proc.returncode}){said}"

    def executed(self) -> tuple[list[str], bool]:
        header, _ = self.receive()
        errors = header.get("errors")
        if header.get("type") != "executed" or not isinstance(errors, list) or any(type(e) is not str for e in errors):
            raise ProtocolError("the sandbox did not say how the notebook ran")
        return [e[:300] for e in errors], header.get("alive") is True

    def functions(self) -> set[str]:
        self.send({"type": "functions"})
        header, _ = self.receive()
        names = header.get("functions")
        if not isinstance(names, list):
            raise ProtocolError(str(header.get("error") or "the sandbox did not list the notebook's functions"))
        return {n for n in names if isinstance(n, str) and n in EVERY_CHECK}

    def call(self, name: str, args: tuple[Any, ...], **extra: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        tensors: dict[str, torch.Tensor] = {}
        spec = [wire.encode(a, f"a{i}", tensors) for i, a in enumerate(args)]
        self.send({"type": "call", "name": name, "args": spec, **extra}, tensors)
        return self.receive()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.killed_for_time = True
            _kill_group(self.proc)

    def close(self) -> None:
        self.timer.cancel()
        if self.proc.poll() is None:
            try:
                wire.send(self.to_box, {"type": "done"})
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                pass
        _kill_group(self.proc)
        for stream in (self.to_box, self.from_box):
            try:
                stream.close()
            except OSError:
                pass
        if self.scratch is not None:
            self.scratch.cleanup()
        self.stderr.close()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def _plain_env() -> dict[str, str]:
    """Without a sandbox the notebook still gets none of the grader's own settings."""
    keep = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR")
    return {k: v for k, v in os.environ.items() if k in keep}


# ---- the student's function, as the checks see it ---------------------------------------------

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,60}$")


def _named(kind: str, base: type) -> type:
    """A stand-in type with the name the student's code reported (checks print `type(x).__name__`)."""
    return type(kind if _NAME.match(kind) else "object", (base,), {})


class RemoteFunction:
    """The student's exercise function, called in the sandbox: each call sends the inputs and returns
    what came back (a tensor, a number, a stand-in for anything else) or raises what it raised."""

    def __init__(self, box: Sandbox, name: str) -> None:
        self.box, self.name, self.__name__ = box, name, name
        self.used_reference = self.not_written = False

    def __call__(self, *args: Any) -> Any:
        return self._answer(*self.box.call(self.name, args))

    def draws(self, args: tuple[Any, ...], n: int, seed: int) -> list[int] | Any:
        """`n` calls in the sandbox after seeding its generators: the token ids, or the first other answer."""
        header, tensors = self.box.call(self.name, args, repeat=n, seed=seed)
        if header.get("returned") == "draws":
            values = header.get("values")
            if header.get("reference") is True:
                self.used_reference = True
            if not isinstance(values, list) or len(values) != n or not all(type(v) is int for v in values):
                raise ProtocolError("the sandbox's draws are not token ids")
            return values
        return self._answer(header, tensors)

    def _answer(self, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Any:
        if header.get("reference") is True:
            self.used_reference = True
        if "error" in header:
            why = str(header["error"])[:200]
            raise (StillRunning if why.startswith("still running") else KernelDied)(why)
        if "raised" in header:
            kind, message = str(header["raised"]), str(header.get("message", ""))[:500]
            if kind == "NotImplementedError":
                self.not_written = True
                raise NotImplementedError(message)
            raise _named(kind, Exception)(message)
        returned = header.get("returned")
        if returned == "tensor" and isinstance(tensors.get("out"), torch.Tensor):
            return tensors["out"]
        if returned == "value":
            value = header.get("value")
            if value is None or isinstance(value, bool | int | float):
                return value
        if returned == "other":
            return _named(str(header.get("type", "object")), object)()
        raise ProtocolError("the sandbox's answer is not a value")


# ---- grading ----------------------------------------------------------------------------------


def _grade_of(result: CheckResult, fn: RemoteFunction) -> tuple[str, dict[str, Any]]:
    """The grade word and the exercise's entry (`name`, `passed`, `mistake`, `message`)."""
    entry = result.to_dict()
    if fn.used_reference:
        message = (
            f"✗ {fn.name}: graded `reference`: it is, or calls, attnlab's own solution "
            f"(attnlab.exercises.reference.{fn.name}); write it yourself"
        )
        return REFERENCE, {**entry, "passed": False, "mistake": None, "message": message}
    if result.passed:
        return PASSED, entry
    if fn.not_written:
        return NOT_WRITTEN, entry
    return (result.mistake or WRONG), entry


def _not_checked(name: str, why: str) -> tuple[str, dict[str, Any]]:
    return NOT_CHECKED, {"name": name, "passed": False, "mistake": None, "message": f"✗ {name}: not checked ({why})"}


def _explain(line: str, limits: sandbox.Limits) -> str:
    """An error line with the limit that caused it, when one did."""
    memory = f"the memory limit is {sandbox.format_size(limits.memory)} per process"
    lowered = line.lower()
    if any(w in lowered for w in ("memoryerror", "can't allocate memory", "cannot allocate memory", "out of memory")):
        return f"{line} ({memory})"
    if "failed to map segment" in lowered:  # a library cannot even be loaded within the limit
        return f"{line} ({memory}: too little to load PyTorch; give more with --memory)"
    if "BlockingIOError" in line:  # fork() refused: the process limit
        return f"{line} (the process limit is {limits.processes} tasks)"
    if "resource temporarily unavailable" in lowered:  # a thread refused: its stack or the task count
        return f"{line} (the process limit is {limits.processes} tasks and {memory})"
    if "the kernel died" in line:
        return f"{line} (out of memory? the limit is {sandbox.format_size(limits.memory)} per process)"
    return line


def grade_notebook(
    path: str | Path,
    limits: sandbox.Limits,
    confine: bool = True,
    seed: int | None = None,
    slot: int = 0,
    threads: int = 1,
    notebook: str | None = None,
) -> NotebookReport:
    """Run the notebook at `path` confined, then check each exercise function it defined from here, on
    inputs drawn from `seed` (a fresh one when None): the exercises of `notebook` ("lab", "circuits"),
    or of the notebook its metadata names."""
    path = Path(path)
    data, nb = read_notebook(path)
    try:
        checks = NOTEBOOK_CHECKS[check_kind(notebook) if notebook is not None else notebook_kind(nb)]
    except AttnlabError as e:
        raise NotANotebook(f"{path}: {e}") from None
    seed = secrets.randbits(48) if seed is None else seed
    grades: dict[str, str] = {}
    entries: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    box = Sandbox(data, limits, confine, slot, threads)
    try:
        try:
            ran, alive = box.executed()
            errors += [_explain(e, limits) for e in ran]
            defined = box.functions() if alive else set()
            why = "the notebook never defined it" if alive else "the kernel died before the exercises could be checked"
        except ProtocolError as e:
            errors.append(_explain(str(e), limits))
            defined, why = set(), str(e)
        for name, check in checks.items():
            if name not in defined:
                grades[name], entries[name] = _not_checked(name, why.replace("it", name, 1) if "never" in why else why)
                continue
            fn = RemoteFunction(box, name)
            try:
                result = check(fn, seed=seed)
            except ProtocolError as e:
                errors.append(_explain(f"while checking {name}: {e}", limits))
                grades[name], entries[name] = _not_checked(name, str(e))
                defined, why = set(), str(e)
                continue
            grades[name], entries[name] = _grade_of(result, fn)
    finally:
        box.close()
    return NotebookReport(str(path), [entries[n] for n in checks], errors, grades, exercise_sources(nb, checks))


# ---- a class ----------------------------------------------------------------------------------


def notebook_paths(paths: Iterable[str]) -> list[Path]:
    """The notebooks named: files as given, folders as every *.ipynb under them (sorted, no checkpoints)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        elif p.exists():
            out.append(p)
        else:
            raise AttnlabError(f"{p}: no such file or folder; give notebooks or folders of them")
    seen: set[Path] = set()
    unique: list[Path] = []
    for p in out:  # one path per file: the first that names it
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    if not unique:
        raise AttnlabError(f"no notebooks (*.ipynb) under {', '.join(map(str, paths))}")
    return unique


def parse_shard(text: str) -> tuple[int, int]:
    """'2/5' -> (2, 5): the second of five shares (1-based)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)) <= 100_000:
        raise AttnlabError(f"--shard {text!r}: give I/N with 1 <= I <= N, such as 1/4")
    return int(m.group(1)), int(m.group(2))


def shard(paths: list[Path], i: int, n: int) -> list[Path]:
    """The I-th of N fixed shares of `paths` (every N-th, by sorted path), the same on every machine."""
    ordered = sorted(paths, key=lambda p: str(p))
    return ordered[i - 1 :: n]


@dataclass
class ClassRun:
    """How a class is graded: the limits, the sandbox, the jobs and the seed of this run, and the notebook
    every path is graded as (None: the one each notebook's metadata names)."""

    limits: sandbox.Limits
    confine: bool
    jobs: int
    seed: int
    notebook: str | None = None

    def grade(
        self, paths: list[Path], progress: Callable[[NotebookReport], None] | None = None
    ) -> list[NotebookReport]:
        """Grade every notebook, `jobs` at a time; whatever one does, it becomes its own report."""
        from concurrent.futures import ThreadPoolExecutor

        slots = list(range(self.jobs))
        lock = threading.Lock()
        threads = max(1, (os.cpu_count() or 1) // self.jobs)

        def one(path: Path) -> NotebookReport:
            with lock:
                slot = slots.pop()
            try:
                report = grade_notebook(path, self.limits, self.confine, self.seed, slot, threads, self.notebook)
            except NotANotebook as e:
                report = _unreadable(path, str(e), self.notebook)
            except Exception as e:  # one notebook's failure must not stop the class
                report = _unreadable(path, f"{path}: could not be graded ({type(e).__name__}: {e})", self.notebook)
            finally:
                with lock:
                    slots.append(slot)
            if progress is not None:
                progress(report)
            return report

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            return list(pool.map(one, paths))


def _unreadable(path: Path, why: str, notebook: str | None) -> NotebookReport:
    """The report of a notebook that could not be graded: every exercise of the class's notebook (the
    lab's when the class did not name one) not checked."""
    names = list(NOTEBOOK_CHECKS[notebook or "lab"])
    entries = [_not_checked(name, "the notebook could not be read")[1] for name in names]
    return NotebookReport(str(path), entries, [why], {n: NOT_CHECKED for n in names}, {n: "" for n in names})


def default_jobs() -> int:
    """The cores not busy now (at least one)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, (os.cpu_count() or 1) - int(math.floor(load + 0.5)))


def grade_class(
    paths: Sequence[str],
    *,
    jobs: int | None = None,
    share: str | None = None,
    timeout: float = 300.0,
    memory: str | None = None,
    confine: bool = True,
    progress: bool = False,
    notebook: str | None = None,
) -> list[NotebookReport]:
    """`attnlab check`: grade the notebooks of `paths` (files, or folders of them), `jobs` at a time
    (default: the free cores), only the `share` 'I/N' of them if given, each cell allowed `timeout`
    seconds and each notebook `memory` ('4G'; default: a share of this machine's), in the sandbox unless
    `confine` is False (the limits still apply), each on the exercises of `notebook` ("lab",
    "circuits"; default: the notebook its metadata names). `progress` draws a bar on stderr."""
    # Before anything runs: the notebooks are executed by a Jupyter kernel.
    if importlib.util.find_spec("ipykernel") is None or importlib.util.find_spec("nbclient") is None:
        raise AttnlabError("attnlab check needs nbclient and ipykernel: pip install 'attnlab[notebook]'")
    if not 0 < timeout <= 86_400:
        raise AttnlabError(f"--timeout {timeout:g}: give the seconds a cell may run, from 1 to 86400")
    if notebook is not None:
        check_kind(notebook)
    part = parse_shard(share) if share is not None else None
    jobs = jobs or default_jobs()
    limit = sandbox.parse_size(memory) if memory is not None else sandbox.default_memory(jobs)
    notebooks = notebook_paths(paths)
    if len(paths) == 1 and len(notebooks) == 1 and Path(paths[0]).is_file():
        _, nb = read_notebook(notebooks[0])  # one file that is not a notebook: say so, as a bad input
        try:
            notebook_kind(nb) if notebook is None else None
        except AttnlabError as e:
            raise AttnlabError(f"{notebooks[0]}: {e}") from None
    if part is not None:
        notebooks = shard(notebooks, *part)
    if confine and (why := sandbox.problem()) is not None:
        raise AttnlabError(
            f"the notebooks cannot be confined here: {why}; grade them unconfined only if you trust their code: "
            "--no-sandbox"
        )
    limits = sandbox.Limits(limit, cell_seconds=timeout, notebook_seconds=3 * timeout + 60)
    grading = ClassRun(limits, confine, jobs, seed=secrets.randbits(48), notebook=notebook)
    with tqdm(
        total=len(notebooks), desc="check", unit="notebook", file=sys.stderr, disable=None if progress else True
    ) as bar:
        return grading.grade(notebooks, progress=lambda report: bar.update(1))
