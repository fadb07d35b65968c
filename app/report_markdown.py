"""A ``Report`` as a GitHub Markdown summary: the same facts and tables as the HTML report, the spec in a fenced
yaml block, no charts. The note is the user's own Markdown and is kept as written."""
from __future__ import annotations

import re

from app.report_data import Report, Table, timestamp

# In a table cell: a pipe would end the cell, a line break the row; "<" would let a name pass as HTML.
_CELL = str.maketrans({"|": "\\|", "\n": " ", "\r": " ", "<": "&lt;", ">": "&gt;"})


def md_cell(text: str) -> str:
    return text.translate(_CELL)


def md_table(columns: tuple[str, ...], rows: tuple[tuple[str, ...], ...]) -> str:
    lines = ["| " + " | ".join(md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def table_section(table: Table) -> str:
    caption = f"{md_cell(table.caption)}\n\n" if table.caption else ""
    body = md_table(table.columns, table.rows) if table.rows else ""
    return f"## {md_cell(table.title)}\n\n{caption}{body}".rstrip()


def fenced(text: str, language: str) -> str:
    """A code block whose fence is longer than any run of backticks inside ``text``, so the text cannot end it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def render_markdown(report: Report) -> str:
    facts = list(report.facts) + ([("tags", ", ".join(report.tags))] if report.tags else [])
    sections = [f"# PathScope · {md_cell(report.title)}",
                f"Report generated {timestamp(report.generated_at)}",
                md_table(("field", "value"), tuple(facts))]
    if report.note:
        sections.append(f"## Note\n\n{report.note.strip()}")
    sections += [table_section(t) for t in report.tables]
    if report.spec_yaml:
        sections.append("## Spec\n\n" + fenced(report.spec_yaml, "yaml"))
    return "\n\n".join(sections) + "\n"
