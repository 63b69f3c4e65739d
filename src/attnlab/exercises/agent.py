"""The grader's agent inside a student's kernel (`attnlab check`): it keeps each exercise's function as
the notebook defines it, and calls it on the inputs the grader sends.

It runs in the student's process, so the grader trusts nothing it says except, as data, the values
returned for inputs the student never saw; the comparison with the reference and the named mistakes
happen in the grader (exercises/grade.py). While it calls a function it watches, with a profile hook,
for calls into the package's own solution of that exercise, and says so.

Files: the runner puts a request (wire format) in `request.bin` of the folder it names, then runs
`_attnlab_agent.serve(folder)` in the kernel, which writes `response.bin` there.
"""

from __future__ import annotations

import ast
import random
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import CodeType
from typing import Any

import torch

from . import reference, wire
from .catalogue import EVERY_CHECK

NAME = "_attnlab_agent"  # the agent's name in the kernel's namespace
MAX_DRAWS = 100_000


def _reference_code(name: str) -> set[CodeType]:
    """The code objects whose call means "this uses the package's own solution of `name`": the reference
    function, for the module exercises the module's own forward, and for the circuits exercises the
    library function that does the same."""
    from ..inspect import ablations, attribution, circuits, patching
    from ..models.attention import CausalSelfAttention
    from ..models.layers import Block
    from ..models.transformer import TransformerLM

    codes = {getattr(reference, name).__code__}
    forward: dict[str, type[torch.nn.Module]] = {
        "multi_head_attention": CausalSelfAttention,
        "transformer_layer": Block,
        "transformer_lm": TransformerLM,
    }
    if name in forward:
        codes.add(forward[name].forward.__code__)
    library: dict[str, list[Callable[..., Any]]] = {
        "logit_difference": [circuits.logit_diff],
        "patch_residual": [patching.patch_cells, patching.patch_sweep],
        "logit_attribution": [attribution.direct_logit_attribution, attribution.residual_parts],
        "mean_ablate": [ablations.ablation_table],
    }
    # The decorated ones (torch.no_grad) are watched through their own code, not the decorator's, which
    # every decorated function shares.
    codes.update(getattr(fn, "__wrapped__", fn).__code__ for fn in library.get(name, []))
    return codes


def defined_names(source: str) -> set[str]:
    """The names a cell defines as functions: `def`, `import ... as`, and `name = lambda ...`; not other
    assignments (a check cell's `attention = result.function` hands on the reference, it is not the
    student's function)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


class Agent:
    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.functions: dict[str, Callable[..., Any]] = {}
        self.modules: dict[str, torch.nn.Module] = {}
        self.codes = {name: _reference_code(name) for name in EVERY_CHECK}

    def after_cell(self, source: str) -> None:
        """Keep the exercise functions this cell defined (the last definition wins)."""
        for name in defined_names(source) & set(EVERY_CHECK):
            if callable(fn := self.namespace.get(name)):
                self.functions[name] = fn

    def serve(self, folder: str) -> None:
        """Answer the request in `folder`/request.bin with `folder`/response.bin."""
        with open(Path(folder) / "request.bin", "rb") as f:
            header, tensors = wire.receive(f)
        if header.get("type") == "functions":
            answer: tuple[dict[str, Any], dict[str, torch.Tensor]] = ({"functions": sorted(self.functions)}, {})
        else:
            answer = self._call(header, tensors)
        with open(Path(folder) / "response.bin", "wb") as f:
            wire.send(f, *answer)

    def _call(self, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict]:
        name = header["name"]
        fn = self.functions[name]
        args = wire.decode(header["args"], tensors, self.modules)
        repeat = min(int(header.get("repeat") or 0), MAX_DRAWS)
        hits: list[bool] = []
        watched = self.codes[name]

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code in watched:
                hits.append(True)

        previous = sys.getprofile()
        sys.setprofile(profile)
        threading.setprofile(profile)
        try:
            answer = self._draws(fn, args, repeat, header.get("seed", 0)) if repeat else self._once(fn, args)
        finally:
            sys.setprofile(previous)
            threading.setprofile(None)
        answer[0]["reference"] = bool(hits)
        return answer

    @staticmethod
    def _once(fn: Callable[..., Any], args: list[Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        try:
            out = fn(*args)
        except Exception as e:  # the student's error is the answer
            return {"raised": type(e).__name__, "message": str(e)[:500]}, {}
        if isinstance(out, torch.Tensor):
            return {"returned": "tensor"}, {"out": out.detach().cpu()}
        if isinstance(out, bool | int | float) or out is None:
            return {"returned": "value", "value": out}, {}
        return {"returned": "other", "type": type(out).__name__}, {}

    @staticmethod
    def _draws(fn: Callable[..., Any], args: list[Any], n: int, seed: int) -> tuple[dict[str, Any], dict]:
        """`n` calls after seeding every generator a sampler might use; their token ids, or the first answer
        that is not one (the check then says what came back)."""
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            import numpy as np

            np.random.seed(seed % 2**32)
        except ImportError:
            pass
        values = []
        for _ in range(n):
            answer = Agent._once(fn, args)
            head, tensors = answer
            out, value = tensors.get("out"), head.get("value")
            if out is not None and out.numel() == 1 and not out.is_floating_point() and out.dtype != torch.bool:
                values.append(int(out.item()))
            elif head.get("returned") == "value" and type(value) is int:
                values.append(value)
            else:
                return answer
        return {"returned": "draws", "values": values}, {}


def install() -> Agent:
    """Start keeping the exercise functions of the kernel this runs in (before any cell of the notebook)."""
    from IPython import get_ipython

    ip = get_ipython()
    agent = Agent(ip.user_ns)
    # Magics (%matplotlib ...) become Python first, so the cell parses.
    ip.events.register("post_run_cell", lambda result: agent.after_cell(ip.transform_cell(result.info.raw_cell or "")))
    return agent
