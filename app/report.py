"""Report export: a run or a comparison group as one self-contained HTML file (interactive charts, no network
needed to open it) or as a Markdown summary (the same tables, no charts).

``write_report`` serves ``python -m engine report RUN|GROUP --out FILE``; ``report_text`` (a run or a group) and
``selection_text`` (runs picked on Compare) serve the pages' download buttons. What a report holds is
gathered in ``app.report_data``; the two formats are laid out by ``app.report_html`` and ``app.report_markdown``.
"""
from __future__ import annotations

import os
import re
import secrets
from contextlib import closing
from pathlib import Path
from typing import Literal, Sequence

from app import report_data
from app.report_data import Figure, Report
from app.report_html import render_html
from app.report_markdown import render_markdown
from engine import catalog
from engine.store import Store, WorkspaceError

Format = Literal["html", "markdown"]
SUFFIXES: dict[str, Format] = {".html": "html", ".htm": "html", ".md": "markdown"}
# Run ids ("20261202-045756-ab12") and group ids ("cmp-...", "abl-...", a sweep's name) use these characters only
# (the catalog's rule for group ids); anything else (a path such as ../../etc, spaces, quotes) is refused before
# the store is asked.
TARGET_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,80}")


class ReportError(WorkspaceError, ValueError):
    """A one-line message naming the id, file or suffix at fault. A WorkspaceError, so the CLI exits 2 with it;
    a ValueError, as a bad argument."""


def report_format(out: Path) -> Format:
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise ReportError(f"report {out}: unknown format {suffix or '(no suffix)'!r}; "
                          f"name the file .html, .htm or .md")
    return SUFFIXES[suffix]


def check_target_id(target_id: str) -> str:
    if not TARGET_ID.fullmatch(target_id):
        raise ReportError(f"{target_id!r} is not a run or group id: ids are letters, digits and - _ . : "
                          "(see python -m engine ls)")
    return target_id


def annotations(store: Store, kind: Literal["run", "group"], target_id: str) -> tuple[tuple[str, ...], str]:
    """The target's tags and Markdown note (``engine.catalog``)."""
    tags = catalog.group_tags if kind == "group" else catalog.run_tags
    return tags(store, target_id), catalog.note_of(store, kind, target_id)


def build_report(store: Store, target_id: str, extra_figures: Sequence[Figure] = ()) -> Report:
    """The run ``target_id``, or else the group of that id; ``extra_figures`` are drawn in a group report only."""
    check_target_id(target_id)
    run = store.get_run(target_id)
    if run is not None:
        return report_data.run_report(store, run, *annotations(store, "run", target_id))
    members = store.list_runs(group_id=target_id)
    if not members:
        raise ReportError(f"no run or group {target_id!r} in {store.home} (see python -m engine ls)")
    tags, note = annotations(store, "group", target_id)
    return report_data.group_report(store, target_id, members, tags, note, extra_figures)


def report_text(home: Path, target_id: str, fmt: Format, extra_figures: Sequence[Figure] = ()) -> str:
    """The report of run or group ``target_id`` in ``fmt``, as text (for a download button)."""
    with closing(Store(Path(home), readonly=True)) as store:
        report = build_report(store, target_id, extra_figures)
    return render(report, fmt)


def selection_text(home: Path, run_ids: Sequence[str], fmt: Format, extra_figures: Sequence[Figure] = ()) -> str:
    """The comparison report of runs picked one by one (Compare's selection), as text: a group report's tables
    and charts over exactly these runs, in this order."""
    if not run_ids:
        raise ReportError("no runs selected: pick the runs to compare first")
    with closing(Store(Path(home), readonly=True)) as store:
        rows = [store.get_run(check_target_id(run_id)) for run_id in run_ids]
        missing = [run_id for run_id, row in zip(run_ids, rows) if row is None]
        if missing:
            raise ReportError(f"no run {missing[0]!r} in {store.home} (deleted meanwhile?)")
        report = report_data.group_report(store, None, rows, extra_figures=extra_figures)
    return render(report, fmt)


def render(report: Report, fmt: Format) -> str:
    return render_html(report) if fmt == "html" else render_markdown(report)


def write_report(home: Path, target_id: str, out: Path, extra_figures: Sequence[Figure] = ()) -> Path:
    """Write the report of run or group ``target_id`` to ``out`` (HTML for .html/.htm, Markdown for .md);
    return the file's absolute path. Its folder is created if missing; the file appears whole or not at all."""
    out = Path(out).expanduser().resolve()
    text = report_text(home, target_id, report_format(out), extra_figures)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(out, text)
    except OSError as err:
        raise ReportError(f"report {out}: cannot write it ({err.strerror or err})") from None
    return out


def _write_atomically(out: Path, text: str) -> None:
    # A reader (a browser reloading the file) never sees half a report, and a failed write leaves no stub.
    # open(..., "x") creates the file with the user's umask (mkstemp would make it private).
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
    try:
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
