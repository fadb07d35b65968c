"""python -m engine report RUN|GROUP --out FILE: a self-contained HTML report (or a Markdown summary) of a run or
a comparison group, the same one the dashboard's download buttons give."""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.common import Command
from engine.store import workspace_home


def register(command: Command) -> None:
    p = command("report", cmd_report, "write a report of a run or a group: HTML (--out F.html, charts interactive, "
                                      "opens offline) or Markdown (--out F.md, the tables)")
    p.add_argument("target", metavar="RUN|GROUP")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write; .html, .htm or .md")


def cmd_report(args: argparse.Namespace) -> int:
    # Imported here, not at load: a report is drawn by the dashboard's own chart builders (app/), so that its
    # charts and colours are the pages'; no other command needs the app layer.
    from app.report import write_report

    print(write_report(workspace_home(), args.target, Path(args.out)))
    return 0
