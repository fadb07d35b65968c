"""Report export (app/report.py): a run's and a group's HTML and Markdown reports on synthetic runs.

The HTML is read back as a browser would: its tags and attributes through html.parser (script bodies stay
text), each chart's figure from the JSON its inline script draws.
"""
from __future__ import annotations

import base64
import json
import re
from contextlib import closing
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from app.colors import path_color
from app.report import ReportError, report_text, selection_text, write_report
from app.report_html import plotly_js
from engine import catalog
from engine.spec import spec_from_yaml, spec_to_yaml
from engine.store import Store, WorkspaceError
from tests.synthetic_runs import (
    PATH_IDS, RESULT, STEPS, add_diagnosed_run, add_finished_run, diag_details, legacy_spec_yaml, path_weight,
    spec_yaml,
)

HOSTILE = "<script>alert(1)</script>"
EXPLANATIONS = {"p-logits": "Its share lowered validation loss at every probe.",
                "p-hint": "Its share raised validation loss by 40% of a task step <b>consistently</b>."}
GROUP = "cmp-report"
GROUP_ACCS = {"equal": (0.80, 0.82), "uncertainty": (0.90,)}


class Page(HTMLParser):
    """Every start tag with its attributes, and every script's text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def charts_of(page_html: str) -> dict[str, dict]:
    """Chart title (the heading above it) -> its figure as plotly JSON, read from the inline scripts."""
    found = re.findall(r"<h3>(.*?)</h3><div id=\"(chart-\d+)\".*?const f = (\{.*?\}); Plotly\.newPlot\(\"\2\"",
                       page_html, flags=re.S)
    return {title: json.loads(figure) for title, _, figure in found}


def values(data: list | dict) -> list[float]:
    """A trace's x or y: plotly writes numpy arrays as {"dtype", "bdata"} (base64 of the raw array)."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def trace_colors(figure: dict) -> dict[str, str]:
    return {t["name"]: t.get("line", {}).get("color") for t in figure["data"] if "name" in t}


@pytest.fixture
def diagnosed(home: Path) -> str:
    details = {pid: {**d, "explanation": EXPLANATIONS[pid]} for pid, d in diag_details().items()}
    run_id = add_diagnosed_run(home, name="kd digits")
    with closing(Store(home)) as store:  # the synthetic details carry no sentence; a real run's do
        store.finish_run(run_id, "done", result={**store.get_run(run_id).result, "verdict_details": details})
    return run_id


@pytest.fixture
def group(home: Path) -> list[str]:
    return [add_finished_run(home, f"{weighting}-{seed}", weighting=weighting, group_id=GROUP,
                             result={**RESULT, "test_acc": acc})
            for weighting, accs in GROUP_ACCS.items() for seed, acc in enumerate(accs)]


# ---------------------------------------------------------------- a run
def test_run_html_has_the_header_tables_and_verdicts(home: Path, diagnosed: str) -> None:
    page = report_text(home, diagnosed, "html")
    for fact in ("kd digits", diagnosed, "done", "digits", "t: small_cnn → mlp", "equal", "12 s"):
        assert f"<td>{fact}</td>" in page, fact
    # train 0.8 -> 0.9, val 0.7 -> 0.8, test 0.75 -> 0.85 over two epochs, best at the last (epoch 1)
    for split, final in (("train", "90.00"), ("val", "80.00"), ("test", "85.00")):
        assert f"<td>{split}</td><td>{final}</td><td>{final}</td><td>1</td>" in page
    assert "<td>test (end of run)</td><td>90.00</td>" in page
    last = STEPS[-1]
    for i, pid in enumerate(PATH_IDS):
        verdict = diag_details()[pid]["verdict"]
        assert (f"<td>{pid}</td><td>t</td><td>kd</td><td>fc → fc</td><td>{path_weight(i, last):.4g}</td>"
                f'<td class="verdict" style="color:') in page
        assert f">{verdict}</td><td>{EXPLANATIONS[pid].replace('<', '&lt;').replace('>', '&gt;')}</td>" in page


def test_run_charts_are_the_pages_charts_in_the_paths_colours(home: Path, diagnosed: str) -> None:
    figures = charts_of(report_text(home, diagnosed, "html"))
    assert list(figures) == ["Accuracy per epoch", "Training loss per term", "Weight of each term",
                             "What each term adds to the total loss", "Negative-transfer verdicts over training"]
    weights = trace_colors(figures["Weight of each term"])
    assert weights == {pid: path_color(pid, PATH_IDS) for pid in PATH_IDS}
    weight_trace = next(t for t in figures["Weight of each term"]["data"] if t["name"] == PATH_IDS[1])
    assert values(weight_trace["y"])[-1] == pytest.approx(path_weight(1, STEPS[-1]))
    assert set(trace_colors(figures["Training loss per term"])) == {"total", "task (CE)", *PATH_IDS}
    stacked = trace_colors(figures["What each term adds to the total loss"])
    assert stacked == {**{pid: path_color(pid, PATH_IDS) for pid in PATH_IDS}, "total loss (logged)": "#1F1F1F"}
    history = {t["name"] for t in figures["Negative-transfer verdicts over training"]["data"]}
    assert {"helps", "hurts", "first flagged"} <= history
    # SVG traces only: a page with many WebGL charts would run out of contexts
    assert {t.get("type", "scatter") for f in figures.values() for t in f["data"]} <= {"scatter"}


def test_plotly_js_is_inlined_once_and_nothing_is_fetched(home: Path, diagnosed: str) -> None:
    text = report_text(home, diagnosed, "html")
    page = Page(text)
    bundles = [s for s in page.scripts if plotly_js() in s]
    assert len(bundles) == 1 and text.count(plotly_js()[:2000]) == 1
    assert len(page.scripts) == 1 + len(charts_of(text))
    fetched = [(tag, name, value) for tag, attrs in page.tags for name, value in attrs.items()
               if name in ("src", "href", "action", "srcset", "poster", "data") and value]
    assert fetched == [] and not any(tag in ("link", "img", "iframe", "object") for tag, _ in page.tags)
    policy = next(attrs["content"] for tag, attrs in page.tags if attrs.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in policy and "connect-src" not in policy  # connections fall back to none


def test_names_and_spec_from_the_store_are_escaped(home: Path) -> None:
    run_id = add_finished_run(home, name=HOSTILE)
    text = report_text(home, run_id, "html")
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    page = Page(text)
    assert all("alert(1)" not in script for script in page.scripts)  # neither as a script nor inside the charts'
    spec = re.search(r"<h2>Spec</h2><pre>(.*?)</pre>", text, flags=re.S).group(1)
    assert "name: &lt;script&gt;alert(1)&lt;/script&gt;" in spec


def test_run_markdown_has_the_same_tables_and_the_spec_as_yaml(home: Path, diagnosed: str) -> None:
    text = report_text(home, diagnosed, "markdown")
    assert "| teachers → student | t: small_cnn → mlp |" in text
    assert "| test | 85.00 | 85.00 | 1 |" in text
    assert (f"| {PATH_IDS[1]} | t | kd | fc → fc | {path_weight(1, STEPS[-1]):.4g} | hurts | "
            "Its share raised validation loss by 40% of a task step &lt;b&gt;consistently&lt;/b&gt;. |") in text
    block = re.search(r"^```yaml\n(.*?)\n```$", text, flags=re.S | re.M).group(1)
    with closing(Store(home)) as store:
        stored = spec_from_yaml(store.get_run(diagnosed).spec_yaml)
    assert spec_from_yaml(block) == stored
    assert "Plotly" not in text and "<div" not in text


def test_markdown_cells_keep_the_table_whole(home: Path) -> None:
    run_id = add_finished_run(home, name="a | b\nc")
    text = report_text(home, run_id, "markdown")
    assert "| name | a \\| b c |" in text


def test_a_queued_run_and_an_old_spec_are_reported(home: Path) -> None:
    with closing(Store(home)) as store:
        queued = store.create_run(legacy_spec_yaml("old", "uncertainty"), name="old")
    text = report_text(home, queued, "markdown")
    assert "| status | queued |" in text and "| weighting / method | uncertainty |" in text
    assert "No accuracy was recorded yet." in text
    assert "| p-logits | t | kd | fc → fc | conventional | — |  |" in text  # no weight logged, none in the spec


# ---------------------------------------------------------------- a group
def test_group_report_has_runs_summary_and_overlays(home: Path, group: list[str]) -> None:
    # A plain-dict figure, as Compare's sweep charts are (app/sweep_charts.py).
    extra = {"data": [{"type": "scatter", "x": [1, 2], "y": [3, 4], "name": "importance"}], "layout": {}}
    text = report_text(home, GROUP, "html", extra_figures=[("Parameter importance", extra)])
    for run_id in group:
        assert f"<td>{run_id}</td>" in text
    assert "<td>equal</td><td>2</td><td>0</td><td>81.00 ± 1.41</td><td>80.00</td><td>82.00</td>" in text
    assert "<td>uncertainty</td><td>1</td><td>0</td><td>90.00 (one run)</td>" in text
    figures = charts_of(text)
    assert list(figures) == ["Validation accuracy per epoch, every run", "Test accuracy per epoch, every run",
                             "Final test accuracy by combination", "Parameter importance"]
    overlay = figures["Validation accuracy per epoch, every run"]["data"]
    assert sorted(t["name"].split(" · ")[1] for t in overlay) == sorted(group)
    assert values(figures["Parameter importance"]["data"][0]["y"]) == [3, 4]


def test_group_markdown_counts_a_queued_run_as_pending(home: Path, group: list[str]) -> None:
    with closing(Store(home)) as store:
        queued = store.create_run(spec_yaml("queued", "uncertainty"), name="queued", group_id=GROUP)
    text = report_text(home, GROUP, "markdown")
    assert "| runs | 4 |" in text and "| statuses | 3 done, 1 queued |" in text
    assert "| equal | 2 | 0 | 81.00 ± 1.41 | 80.00 | 82.00 |" in text
    assert "| uncertainty | 1 | 1 | 90.00 (one run) | 90.00 | 90.00 |" in text
    assert f"| queued | {queued} | queued | uncertainty | digits | mlp | — | — | — |" in text
    assert sum(f"| {run_id} |" in text for run_id in group) == 3 and "```" not in text


# ---------------------------------------------------------------- writing the file, bad input
@pytest.mark.parametrize("suffix, marker", [(".html", "<!DOCTYPE html>"), (".HTM", "<!DOCTYPE html>"),
                                            (".md", "# PathScope · Run")])
def test_write_report_picks_the_format_from_the_suffix(home: Path, tmp_path: Path, suffix: str, marker: str) -> None:
    run_id = add_finished_run(home)
    out = write_report(home, run_id, tmp_path / "new" / "folder" / f"report{suffix}")
    assert out.is_absolute() and out.read_text(encoding="utf-8").startswith(marker)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left behind


@pytest.mark.parametrize("name, named", [("report.pdf", "'.pdf'"), ("report", "'(no suffix)'")])
def test_an_unknown_suffix_is_refused_by_name(home: Path, tmp_path: Path, name: str, named: str) -> None:
    run_id = add_finished_run(home)
    with pytest.raises(ValueError, match=re.escape(named)) as err:
        write_report(home, run_id, tmp_path / name)
    assert isinstance(err.value, WorkspaceError) and ".html, .htm or .md" in str(err.value)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("target, message", [
    ("20990101-000000-ffff", "no run or group '20990101-000000-ffff' in"),
    ("../../etc", "'../../etc' is not a run or group id"),
    ("a b", "'a b' is not a run or group id"),
    ("", "'' is not a run or group id"),
    ("x" * 81, f"'{'x' * 81}' is not a run or group id"),
])
def test_unknown_or_malformed_ids_are_named(home: Path, tmp_path: Path, target: str, message: str) -> None:
    add_finished_run(home)
    with pytest.raises(ReportError, match=re.escape(message)):
        write_report(home, target, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_a_missing_workspace_is_a_workspace_error(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="no workspace at"):
        write_report(tmp_path / "nowhere", "20990101-000000-ffff", tmp_path / "r.md")


def test_tags_and_notes_from_the_catalog_are_shown_escaped(home: Path) -> None:
    run_id = add_finished_run(home, group_id=GROUP)
    with closing(Store(home)) as store:
        catalog.set_tags(store, run_id, add=["baseline", "seed-0"])
        catalog.set_note(store, "run", run_id, f"Reproduces **table 2**. {HOSTILE}")
        catalog.set_group_tags(store, GROUP, add=["sweep"])
        catalog.set_note(store, "group", GROUP, "Weightings x seeds")
        catalog.archive(store, run_id)  # an archived run keeps its tags in its report
    text = report_text(home, run_id, "html")
    assert '<tr><th>tags</th><td><span class="tag">baseline</span><span class="tag">seed-0</span>' in text
    assert '<div class="note">Reproduces **table 2**. &lt;script&gt;alert(1)&lt;/script&gt;</div>' in text
    markdown = report_text(home, run_id, "markdown")
    assert "| tags | baseline, seed-0 |" in markdown and f"## Note\n\nReproduces **table 2**. {HOSTILE}" in markdown
    group = report_text(home, GROUP, "markdown")
    assert "| tags | sweep |" in group and "## Note\n\nWeightings x seeds" in group


def test_spec_text_is_the_stored_spec_in_version_2(home: Path) -> None:
    run_id = add_finished_run(home, stored_spec=legacy_spec_yaml("legacy", "amtml"))
    text = report_text(home, run_id, "markdown")
    block = yaml.safe_load(re.search(r"```yaml\n(.*?)\n```", text, flags=re.S).group(1))
    assert block["version"] == 2 and block["method"]["name"] == "amtml" and "aggregator" not in block
    assert spec_to_yaml(spec_from_yaml(legacy_spec_yaml("legacy", "amtml"))).strip() in text


def test_a_selection_of_runs_is_reported_like_a_group(home: Path, group: list[str]) -> None:
    other = add_finished_run(home, "outside", weighting="dwa", result={**RESULT, "test_acc": 0.7})
    text = selection_text(home, [group[0], other], "markdown")
    assert text.startswith("# PathScope · Comparison of 2 runs") and "| group | — |" in text
    assert "| equal | 1 | 0 | 80.00 (one run) |" in text and "| dwa | 1 | 0 | 70.00 (one run) |" in text
    assert group[1] not in text


def test_a_comparison_names_the_paths_each_run_flagged(home: Path, diagnosed: str) -> None:
    plain = add_finished_run(home, "no diagnostics")
    silent = add_diagnosed_run(home, name="nothing flagged")
    with closing(Store(home)) as store:  # a run whose detector flagged no path
        details = {pid: {**d, "first_flagged_step": None} for pid, d in diag_details().items()}
        store.finish_run(silent, "done", result={**store.get_run(silent).result, "verdict_details": details})
    text = selection_text(home, [diagnosed, plain, silent], "markdown")
    assert "flagged as hurting" in text
    row = {run_id: next(line for line in text.splitlines() if f"| {run_id} |" in line)
           for run_id in (diagnosed, plain, silent)}
    assert row[diagnosed].endswith("| p-hint |")  # hurts since step 20 (DIAG_FIRST_FLAG)
    assert row[plain].endswith("| — |") and row[silent].endswith("| none |")


@pytest.mark.parametrize("run_ids, message", [([], "no runs selected"),
                                              (["20990101-000000-ffff"], "no run '20990101-000000-ffff' in"),
                                              (["../x"], "'../x' is not a run or group id")])
def test_a_bad_selection_is_named(home: Path, run_ids: list[str], message: str) -> None:
    add_finished_run(home)
    with pytest.raises(ReportError, match=re.escape(message)):
        selection_text(home, run_ids, "html")
