"""Inside the sandbox: run a student's notebook, then relay the grader's calls to its kernel.

`python -m attnlab.exercises.runner` speaks the wire format (exercises/wire.py) on its standard input
and output, and nothing else goes there (the kernel's own output is discarded):

1. in: {"type": "notebook", "name", "cell_seconds"} with the notebook's bytes as the tensor "notebook";
2. it runs every code cell in a fresh kernel (the grader's agent installed first), a cell that fails or
   runs past `cell_seconds` becoming one line of `errors`;
   out: {"type": "executed", "errors": [...]};
3. then each request (the exercise functions the notebook defined, or a call of one) goes to the
   agent in the kernel, and its answer comes back as the agent wrote it, or {"error": "..."} when
   the kernel hung or died; until {"type": "done"} or the end of the input.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import wire
from .agent import NAME

AGENT_DIR = Path("/tmp/attnlab-agent")
INSTALL = f"import attnlab.exercises.agent\n{NAME} = attnlab.exercises.agent.install()"


def error_line(index: int, cell: Any) -> str | None:
    """ "cell 7: NameError: name 'x' is not defined" for a cell whose outputs hold an error."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = str(out.get("evalue", "")).strip().splitlines()
            return f"cell {index}: {out.get('ename', 'Error')}: {value[0] if value else ''}".rstrip(": ")
    return None


class Kernel:
    """The notebook's kernel, with a way to run the agent's code in it under a time limit."""

    def __init__(self, client: Any, seconds: float) -> None:
        from nbclient.util import run_sync

        self.client, self.seconds, self.run_sync = client, seconds, run_sync
        self.dead = False

    def run(self, code: str) -> str | None:
        """Run `code`; None when it finished, else why not (an error, a hang, a dead kernel). Only the
        reply is read (the outputs are not needed), so no output stream can hold it up."""
        if self.dead:
            return "the kernel died"
        kc = self.client.kc
        msg_id = kc.execute(code, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + self.seconds
        while True:
            try:  # replies to earlier requests (a cell stopped for its time) are passed over
                reply = self.run_sync(kc.get_shell_msg)(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                if not self.run_sync(self.client.km.is_alive)():
                    self.dead = True
                    return "the kernel died"
                self.interrupt()
                return f"still running after {self.seconds:g} s; stopped"
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                break
        content = reply.get("content", {})
        if content.get("status") != "ok":
            return f"{content.get('ename', 'Error')}: {str(content.get('evalue', ''))[:200]}"
        return None

    def interrupt(self) -> None:
        from nbclient.util import ensure_async

        async def stop() -> None:
            await ensure_async(self.client.km.interrupt_kernel())

        self.run_sync(stop)()


def execute(nb: Any, client: Any, kernel: Kernel, cell_seconds: float) -> list[str]:
    """Run every code cell in order; the errors as one line each (the notebook goes on after most)."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    errors: list[str] = []
    if (why := kernel.run(INSTALL)) is not None:
        return [f"the grader could not start in the kernel: {why}"]
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        try:
            client.execute_cell(cell, index)
        except CellTimeoutError:
            errors.append(f"cell {index}: still running after {cell_seconds:g} s; stopped")
            kernel.interrupt()
            continue
        except DeadKernelError:
            kernel.dead = True
            errors.append(f"cell {index}: the kernel died; the cells after it did not run")
            break
        if (line := error_line(index, cell)) is not None:
            errors.append(line)
    return errors


def serve(kernel: Kernel, inp: Any, out: Any) -> None:
    """Relay the grader's requests to the agent until it says it is done."""
    AGENT_DIR.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            header, tensors = wire.receive(inp)
        except wire.WireError:
            return
        if header.get("type") == "done":
            return
        for name in ("request.bin", "response.bin"):
            (AGENT_DIR / name).unlink(missing_ok=True)
        with open(AGENT_DIR / "request.bin", "wb") as f:
            wire.send(f, header, tensors)
        why = kernel.run(f"{NAME}.serve({str(AGENT_DIR)!r})")
        answer = AGENT_DIR / "response.bin"
        if why is not None or not answer.is_file():
            wire.send(out, {"error": why or "the agent wrote no answer"})
            continue
        out.write(answer.read_bytes())  # as the agent wrote it: the grader reads it as untrusted data
        out.flush()


def main() -> int:
    import nbformat
    from nbclient import NotebookClient

    inp, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # a stray print (ours or a library's) must not break the messages
    header, tensors = wire.receive(inp)
    cell_seconds = float(header["cell_seconds"])
    nb = nbformat.reads(tensors["notebook"].numpy().tobytes().decode("utf-8"), as_version=4)
    client = NotebookClient(
        nb,
        timeout=int(cell_seconds),
        kernel_name="python3",  # this environment's kernel, whatever the notebook names
        allow_errors=True,
        interrupt_on_timeout=False,
        resources={"metadata": {"path": os.getcwd()}},
    )
    with client.setup_kernel(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        kernel = Kernel(client, cell_seconds)
        errors = execute(nb, client, kernel, cell_seconds)
        wire.send(out, {"type": "executed", "errors": errors, "alive": not kernel.dead})
        if not kernel.dead:
            serve(kernel, inp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
