"""(g) The Live page's server-side render time on a synthetic run of 8 paths x 50,000 logged steps.

Two measurements of the same workspace:
- the page's own data and chart path, called directly: the store read (downsampled on first sight of
  the run, then only new rows), the display frame, the figures (plain dicts) and their JSON, as
  st.plotly_chart copies and sends them;
- the page itself through Streamlit's AppTest (script run included), which is what a browser waits for.
Renders are timed while the run grows by one logged step between them, as a polled live run does,
and the first render (the run's first read, once per process) is reported on its own.
"""
from __future__ import annotations

import os
import statistics
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.io

from app import charts, queries
from app.run_series import RunSeries
from engine.spec import parse_spec, spec_to_yaml
from engine.store import Store, init_workspace
from engine.vocabulary import TIME_SECTIONS

ROOT = Path(__file__).resolve().parents[1]
PATHS = 8
STEPS = 50_000
STEPS_PER_EPOCH = 500
# Milliseconds per step section, in TIME_SECTIONS' order (data ... diagnostics), so the keys follow the loop's.
TIME_MS = dict(zip(TIME_SECTIONS, (2.0, 0.5, 30.0, 4.0, 1.0, 24.0, 0.0), strict=True))
Row = tuple[str, int, int, str, float]


@dataclass
class LiveTimings:
    first_ms: float  # first render: the run read from the store for the first time (downsampled)
    polling_ms: float  # median render while one new logged step arrives between renders
    apptest_first_ms: float | None
    apptest_polling_ms: float | None
    apptest_note: str
    rows: int


def synthetic_spec() -> str:
    path_ids = [f"p{i}" for i in range(PATHS)]
    return spec_to_yaml(parse_spec({
        "name": f"synthetic {PATHS} paths x {STEPS:,} steps",
        "teachers": [{"id": "t", "arch": "small_cnn"}],
        "student": {"arch": "mlp"},
        "paths": [{"id": pid, "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}
                  for pid in path_ids],
    }))


def step_rows(step: int, rng: np.random.Generator) -> list[Row]:
    """Everything a 8-path run logs at one step: losses, weights, lr, step timings and throughput."""
    epoch = step // STEPS_PER_EPOCH
    decay = 1.0 / (1.0 + step / 5_000)
    rows = [("main", step, epoch, "loss/total", 3.0 * decay + 0.05 * rng.random()),
            ("main", step, epoch, "loss/task", 1.5 * decay + 0.05 * rng.random()),
            ("main", step, epoch, "lr", 0.05)]
    for i in range(PATHS):
        rows += [("main", step, epoch, f"loss/path:p{i}", (1 + i / 4) * decay + 0.1 * rng.random()),
                 ("main", step, epoch, f"weight/path:p{i}", 1.0 + 0.1 * np.sin(step / 2_000 + i))]
    rows += [("main", step, epoch, f"time/{name}", ms * (0.9 + 0.2 * rng.random())) for name, ms in TIME_MS.items()]
    rows.append(("main", step, epoch, "throughput/samples_per_s", 1_000 + 50 * rng.random()))
    if (step + 1) % STEPS_PER_EPOCH == 0:
        rows += [("main", step, epoch, key, 0.5 + 0.4 * step / STEPS) for key in ("acc/train", "acc/val", "acc/test")]
    return rows


def build_workspace(home: Path) -> str:
    """A finished run with STEPS logged steps; returns its id."""
    init_workspace(home)
    rng = np.random.default_rng(0)
    with closing(Store(home)) as store:
        run_id = store.create_run(synthetic_spec(), name="synthetic")
        for start in range(0, STEPS, 5_000):  # in chunks: one 1.3-million-row list would double the memory
            store.add_metrics(run_id, [r for step in range(start, start + 5_000) for r in step_rows(step, rng)])
        store.finish_run(run_id, "done", result={"run_id": run_id, "test_acc": 0.9, "val_acc": 0.9, "seconds": 1.0})
    return run_id


def render_server_side(home: Path, run_id: str, series: RunSeries) -> None:
    """What one Live render does besides Streamlit's own work: read, cut down, build figures, serialise them."""
    with closing(Store(home, readonly=True)) as store:
        run = store.get_run(run_id)
        series.refresh(store, run_id, run.attempts)
    path_ids = queries.spec_summary(run.spec_yaml)["path_ids"]
    for phase in series.phases():
        for spec in charts.live_figures(series.display_frame(phase), path_ids).values():
            sent(spec)


def sent(spec: dict) -> str:
    """What st.plotly_chart does with a Live chart: copy the unvalidated figure to a dict, write its JSON."""
    return plotly.io.to_json(charts.unvalidated(spec).to_dict(), validate=False)


def grow(home: Path, run_id: str, step: int) -> None:
    with closing(Store(home)) as store:
        store.add_metrics(run_id, step_rows(step, np.random.default_rng(step)))


def timed_ms(action) -> float:
    start = time.perf_counter()
    action()
    return 1000 * (time.perf_counter() - start)


def measure_direct(home: Path, run_id: str, repeats: int, next_step: int) -> tuple[float, float, int]:
    series = RunSeries()
    first = timed_ms(lambda: render_server_side(home, run_id, series))
    polling = []
    for i in range(repeats):
        grow(home, run_id, next_step + i)
        polling.append(timed_ms(lambda: render_server_side(home, run_id, series)))
    return first, statistics.median(polling), next_step + repeats


def measure_apptest(home: Path, run_id: str, repeats: int, next_step: int) -> tuple[float, float]:
    from streamlit.testing.v1 import AppTest

    os.environ.update(PATHSCOPE_HOME=str(home), PATHSCOPE_NO_AUTOWORKER="1")
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
    at.session_state["selected_run"] = run_id
    at.run()  # Home: imports torch and the app once, outside the timings
    at.switch_page(str(ROOT / "pages" / "live.py"))
    first = timed_ms(at.run)
    polling = []
    for i in range(repeats):
        grow(home, run_id, next_step + i)
        polling.append(timed_ms(at.run))
    if at.exception:
        raise RuntimeError(f"the Live page raised: {at.exception[0].value}")
    return first, statistics.median(polling)


def measure(home: Path, repeats: int) -> LiveTimings:
    run_id = build_workspace(home)
    with closing(Store(home, readonly=True)) as store:
        rows = store.con.execute("SELECT count(*) FROM metrics WHERE run_id = ?", (run_id,)).fetchone()[0]
    first, polling, next_step = measure_direct(home, run_id, repeats, STEPS)
    try:
        app_first, app_polling = measure_apptest(home, run_id, repeats, next_step)
        note = ""
    except Exception as err:  # noqa: BLE001 - reported in the table instead of losing the other rows
        app_first = app_polling = None
        note = f"AppTest failed: {err}"
    return LiveTimings(first, polling, app_first, app_polling, note, rows)
