"""`attnlab notebook`, `check`: the lab and circuits notebooks, and grading students' copies of them
(`attnlab.exercises`)."""

from __future__ import annotations

import argparse
import sys

from ..notebooks import NOTEBOOKS
from .options import Verbs, command, finite, positive


def cmd_notebook(args: argparse.Namespace) -> int:
    from ..notebooks import copy_notebook, how_to_open

    path = copy_notebook(args.out, solutions=args.solutions, name=args.name)
    print(f"wrote {path}; {how_to_open(path)}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ..exercises import gradebook
    from ..exercises.grade import grade_class

    options = {"jobs": args.jobs, "share": args.shard, "timeout": args.timeout, "memory": args.memory}
    reports = grade_class(args.paths, **options, confine=not args.no_sandbox, progress=True, notebook=args.notebook)
    print(gradebook.format_reports(reports, args.format), end="")
    if args.report is not None:
        print(f"class report: {gradebook.write_class_report(reports, args.report)}", file=sys.stderr)
    return 0 if reports and all(r.all_passed for r in reports) else 1


def add_notebook(verbs: Verbs) -> None:
    p = verbs.add_parser("notebook", help="copy a notebook (the lab, or circuits) with its exercises into a folder")
    p.add_argument(
        "name", nargs="?", choices=NOTEBOOKS, default="lab", help="lab (default) | circuits (patching, attribution)"
    )
    p.add_argument("--solutions", action="store_true", help="the notebook with every exercise solved")
    p.add_argument("--out", default=".", metavar="DIR", help="the folder to copy it into (default: here)")
    command(p, cmd_notebook)


def add_check(verbs: Verbs) -> None:
    p = verbs.add_parser("check", help="grade students' notebooks, confined: each exercise passed, or the mistake made")
    p.add_argument("paths", nargs="+", metavar="PATH", help="notebooks, or folders of them (every *.ipynb under)")
    p.add_argument("--jobs", type=positive, default=None, metavar="N", help="notebooks at once (default: free cores)")
    p.add_argument("--shard", default=None, metavar="I/N", help="grade only the I-th of N fixed shares of the paths")
    p.add_argument("--timeout", type=finite, default=300.0, metavar="S", help="seconds each cell may run (300)")
    p.add_argument(
        "--memory", default=None, metavar="SIZE", help="memory per notebook process, such as 4G (default: a share)"
    )
    p.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run the notebooks unconfined: only code you trust (the limits still apply)",
    )
    p.add_argument(
        "--notebook",
        choices=NOTEBOOKS,
        default=None,
        help="grade every path as this notebook's exercises (default: the one each notebook's metadata names)",
    )
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("--report", default=None, metavar="FILE.html", help="also write the class report here")
    command(p, cmd_check)
