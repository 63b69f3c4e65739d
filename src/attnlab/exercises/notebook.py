"""`attnlab check`: run a student's notebook and report every exercise, passed or the mistake made.

The notebook runs in a temporary copy (nbclient, a fresh `python3` kernel from this environment),
cell by cell with a time limit each; a cell that fails or hangs becomes one line of the report and
the next cell runs. The checks the notebook calls write their results to a log named in the kernel's
environment (`result.LOG_ENV`), so the report holds exactly what the student saw.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AttnlabError
from ..runtime import read_json_lines
from .checks import CHECKS
from .result import LOG_ENV

# The notebook trains its models for this many seconds each when it reads it (the lab notebook does):
# the checks do not depend on how well they learned, and a class of notebooks should check in minutes.
QUICK_SECONDS = "5"


@dataclass
class NotebookReport:
    """Every exercise of the lab in order (`passed`, `mistake`, `message`), and the cells that failed."""

    path: str
    exercises: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)

    @property
    def all_passed(self) -> bool:
        return all(e["passed"] for e in self.exercises) and not self.errors

    def to_json(self) -> str:
        return json.dumps({"notebook": self.path, "exercises": self.exercises, "errors": self.errors}, indent=2)

    def to_text(self) -> str:
        passed = sum(e["passed"] for e in self.exercises)
        lines = [f"{self.path}: {passed} of {len(self.exercises)} exercises passed"]
        lines += [e["message"] for e in self.exercises]
        lines += [f"! {e}" for e in self.errors]
        return "\n".join(lines)


def _read_notebook(path: Path) -> Any:
    import nbformat

    if not path.is_file():
        raise AttnlabError(f"{path}: no such notebook; give the path of a .ipynb file")
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # noqa: BLE001 - nbformat raises several kinds; all mean "not a notebook"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AttnlabError(f"{path} is not a Jupyter notebook ({first}); give a .ipynb file") from None
    return nb


def _error_line(index: int, cell: Any) -> str | None:
    """ "cell 7: NameError: name 'x' is not defined" for a cell whose outputs hold an error."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = str(out.get("evalue", "")).strip().splitlines()
            return f"cell {index}: {out.get('ename', 'Error')}: {value[0] if value else ''}".rstrip(": ")
    return None


def check_notebook(path: str | Path, timeout: float = 300.0) -> NotebookReport:
    """Execute the notebook at `path` (a temporary copy) and collect every exercise check it ran."""
    try:
        from nbclient import NotebookClient
        from nbclient.exceptions import CellTimeoutError, DeadKernelError
        from nbclient.util import run_sync
    except ImportError:
        raise AttnlabError("attnlab check needs nbclient and ipykernel: pip install 'attnlab[notebook]'") from None
    if not (timeout > 0 and timeout < float("inf")):
        raise AttnlabError(f"--timeout must be a positive number of seconds, got {timeout}")
    path = Path(path)
    nb = _read_notebook(path)
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="attnlab-check-") as tmp:
        shutil.copy(path, Path(tmp) / path.name)
        log = Path(tmp) / "checks.jsonl"
        saved = {k: os.environ.get(k) for k in (LOG_ENV, "ATTNLAB_LAB_SECONDS")}
        os.environ[LOG_ENV] = str(log)
        os.environ.setdefault("ATTNLAB_LAB_SECONDS", QUICK_SECONDS)
        try:
            client = NotebookClient(
                nb,
                timeout=int(timeout),
                kernel_name="python3",  # this environment's kernel, whatever the student's notebook names
                allow_errors=True,
                interrupt_on_timeout=False,
                resources={"metadata": {"path": tmp}},
            )
            # The kernel process's own stderr is its log (a warning about TCP, ...), not the student's output.
            with client.setup_kernel(stderr=subprocess.DEVNULL):
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code":
                        continue
                    try:
                        client.execute_cell(cell, index)
                    except CellTimeoutError:
                        errors.append(f"cell {index}: still running after {timeout:g} s; stopped")
                        run_sync(_interrupt)(client)
                        continue
                    except DeadKernelError:
                        errors.append(f"cell {index}: the kernel died (out of memory?); the cells after it did not run")
                        break
                    if (line := _error_line(index, cell)) is not None:
                        errors.append(line)
        except AttnlabError:
            raise
        except Exception as e:  # noqa: BLE001 - a kernel that cannot start is one line, not a traceback
            errors.append(f"the notebook could not run: {type(e).__name__}: {e}")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        results = _read_log(log)
    exercises = [
        results.get(
            name,
            {
                "name": name,
                "passed": False,
                "mistake": None,
                "message": f"✗ {name}: not checked (the notebook never ran {CHECKS[name].__name__})",
            },
        )
        for name in CHECKS
    ]
    return NotebookReport(str(path), exercises, errors)


async def _interrupt(client: Any) -> None:
    """Stop the cell that ran past its time (the kernel manager's calls are coroutines)."""
    from nbclient.util import ensure_async

    await ensure_async(client.km.interrupt_kernel())


def _read_log(log: Path) -> dict[str, dict[str, Any]]:
    """The last result of each exercise (a student may run a check several times)."""
    return {row["name"]: row for row in read_json_lines(log) if row.get("name") in CHECKS}
