"""A ``Report`` as one self-contained HTML page: opened from disk with no network, its charts interactive.

plotly.js is inlined once from the installed plotly package and every chart is drawn by an inline call, so
the page loads nothing: no CDN, no fonts, no stylesheets, no images. A Content-Security-Policy says the same
to the browser (no connections, scripts only with this page's nonce), so even text that slipped past the
escaping could neither run nor call out. Every string from the store (names, notes, the spec) is escaped.
"""
from __future__ import annotations

import html
import secrets
from functools import lru_cache

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from app.colors import VERDICT_COLORS
from app.report_data import Figure, Report, Table, timestamp

PLOT_CONFIG = '{"displaylogo": false, "responsive": true}'
# JSON placed inside <script> must not close it ("</script>") nor open a comment; these escapes keep the same
# value in JavaScript. U+2028/2029 are line breaks to older JavaScript parsers.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                              "\u2028": "\\u2028", "\u2029": "\\u2029"})
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1f1f1f; }
h1 { margin-bottom: 0.2rem; } .generated { color: #6b7280; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.92rem; }
th, td { border: 1px solid #d1d5db; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f4f6; } table.facts th { width: 12rem; }
.caption { color: #4b5563; font-size: 0.9rem; }
.tag { display: inline-block; background: #e0e7ff; border-radius: 0.8rem; padding: 0.05rem 0.6rem; margin: 0 0.2rem; }
.note { white-space: pre-wrap; background: #f9fafb; border-left: 4px solid #4E79A7; padding: 0.5rem 1rem; }
.verdict { font-weight: 600; } .chart { min-height: 340px; }
pre { background: #f3f4f6; padding: 1rem; overflow-x: auto; font-size: 0.85rem; }
"""


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """The installed plotly package's plotly.js (about 4.6 MB), read once per process."""
    return get_plotlyjs()


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def script_json(fig: go.Figure) -> str:
    return fig.to_json().translate(_SCRIPT_SAFE)


def as_figure(fig: go.Figure | dict) -> go.Figure:
    """A plotly Figure, also from a plain-dict one (as the sweep charts are). The line charts are SVG; a group
    report's parallel coordinates (plotly draws them with WebGL) are its one WebGL chart."""
    return go.Figure(fig) if isinstance(fig, dict) else fig


def cell(column: str, value: str) -> str:
    if column == "verdict" and value in VERDICT_COLORS:
        return f'<td class="verdict" style="color:{VERDICT_COLORS[value]}">{esc(value)}</td>'
    return f"<td>{esc(value)}</td>"


def table_html(table: Table) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(cell(c, v) for c, v in zip(table.columns, row)) + "</tr>" for row in table.rows)
    caption = f'<p class="caption">{esc(table.caption)}</p>' if table.caption else ""
    return f"<h2>{esc(table.title)}</h2>{caption}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def facts_html(report: Report) -> str:
    rows = "".join(f"<tr><th>{esc(label)}</th><td>{esc(value)}</td></tr>" for label, value in report.facts)
    if report.tags:
        rows += "<tr><th>tags</th><td>" + "".join(f'<span class="tag">{esc(t)}</span>' for t in report.tags)
        rows += "</td></tr>"
    return f'<table class="facts">{rows}</table>'


def figures_html(figures: tuple[Figure, ...], nonce: str) -> str:
    parts = []
    for index, (title, fig) in enumerate(figures):
        div = f"chart-{index}"
        parts.append(f'<h3>{esc(title)}</h3><div id="{div}" class="chart"></div>'
                     f'<script nonce="{nonce}">(function () {{ const f = {script_json(as_figure(fig))};'
                     f' Plotly.newPlot("{div}", f.data, f.layout, {PLOT_CONFIG}); }})();</script>')
    return ("<h2>Charts</h2>" + "".join(parts)) if parts else ""


def render_html(report: Report) -> str:
    nonce = secrets.token_urlsafe(16)
    # No default source at all: the page may run only its own (nonced) scripts, style itself inline and
    # show data: images (plotly draws heatmaps as one); it may connect nowhere.
    policy = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
              "img-src data: blob:; font-src data:")
    note = f'<h2>Note</h2><div class="note">{esc(report.note)}</div>' if report.note else ""
    spec = f"<h2>Spec</h2><pre>{esc(report.spec_yaml)}</pre>" if report.spec_yaml else ""
    return "".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(policy)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>PathScope · {esc(report.title)}</title><style>{STYLE}</style>",
        f'<script nonce="{nonce}">{plotly_js()}</script></head><body>',
        f"<h1>PathScope · {esc(report.title)}</h1>",
        f'<p class="generated">Report generated {esc(timestamp(report.generated_at))}</p>',
        facts_html(report), note, *(table_html(t) for t in report.tables),
        figures_html(report.figures, nonce), spec, "</body></html>\n",
    ])
