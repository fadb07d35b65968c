"""Dashboard bench (issue #16): the server time of Compare and Live with a thousand runs in the workspace.

The workspace: 1,000 finished runs (datasets, students, weightings and distillers varied; groups of 25 runs;
tags on a third of them), each with its accuracy per epoch and a loss curve, and in the newest 8 paths x
5,000 logged steps (135,000 rows). Timed as medians, through Streamlit's AppTest (the script run included:
what a browser waits for), and for Live also as the page's own data and chart path called directly:

- Compare's first render (caches cold) and a filter change (the dataset filter, alternating);
- Live's first render of the big run (its series read for the first time) and a poll while it grows;
- bench/live_page.py's run of 8 paths x 50,000 logged steps (1.35 million rows), the issue's before/after.

Prints a Markdown table, then one JSON line.

    make dashboard-bench          # about 4 minutes on this 2-core machine
    QUICK=1 make dashboard-bench  # fewer repeats and no 50,000-step run: about a minute
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from app.run_series import RunSeries  # noqa: E402
from bench import live_page  # noqa: E402
from engine import catalog  # noqa: E402
from engine.spec import parse_spec, spec_to_yaml  # noqa: E402
from engine.store import Store, init_workspace  # noqa: E402

QUICK = os.environ.get("QUICK") == "1"
REPEATS = 3 if QUICK else 7
RUNS = 1_000
BIG_STEPS = 5_000
GROUP_SIZE = 25
EPOCHS = 10
STEPS_PER_EPOCH = 100
DATASETS = ("digits", "cifar10", "cifar100", "fashion_mnist")
STUDENTS = ("mlp", "resnet8", "small_cnn")
WEIGHTINGS = ("equal", "uncertainty", "dwa", "gradnorm", "pcgrad")
DISTILLERS = ("kd", "dkd", "hint")
TAGS = ("baseline", "seed-sweep", "paper", "ablation")
FILTER_KEY = "cmp_datasets"  # Compare's dataset filter (app/run_table.py: "<page prefix>_<field>")
TARGETS_MS = {"compare_first": 1000.0, "compare_filter": 1000.0, "live_poll": 100.0, "live_first": 500.0}
MAIN = ROOT / "app" / "main.py"


@dataclass
class Timing:
    name: str
    target: str
    median_ms: float | None
    note: str = ""

    def met(self) -> bool | None:
        return None if self.median_ms is None or self.name not in TARGETS_MS else \
            self.median_ms < TARGETS_MS[self.name]


def spec_for(index: int) -> str:
    """One of 180 configurations (dataset x student x weighting x distiller), as the store keeps it."""
    dataset = DATASETS[index % len(DATASETS)]
    student = STUDENTS[index // len(DATASETS) % len(STUDENTS)]
    weighting = WEIGHTINGS[index // 12 % len(WEIGHTINGS)]
    distiller = DISTILLERS[index // 60 % len(DISTILLERS)]
    spot = "fc" if distiller != "hint" else "pool"
    return spec_to_yaml(parse_spec({
        "name": f"{dataset} {student} {weighting} {distiller}", "dataset": {"name": dataset},
        "teachers": [{"id": "t", "arch": "small_cnn"}], "student": {"arch": student},
        "paths": [{"id": "p", "teacher": "t", "distiller": distiller, "teacher_spot": spot, "student_spot": spot}],
        "weighting": {"name": weighting}, "seed": index % 3,
    }))


def small_run_rows(rng: np.random.Generator) -> list[live_page.Row]:
    """A finished run's curves: the total loss every 10 steps and train/val/test accuracy per epoch."""
    top = 0.6 + 0.35 * rng.random()
    rows = [("main", step, step // STEPS_PER_EPOCH, "loss/total", 2.0 / (1 + step / 200) + 0.05 * rng.random())
            for step in range(0, EPOCHS * STEPS_PER_EPOCH, 10)]
    for epoch in range(EPOCHS):
        step = (epoch + 1) * STEPS_PER_EPOCH - 1
        rows += [("main", step, epoch, key, top * (1 - 0.5 ** (epoch + 1)) - shift)
                 for key, shift in (("acc/train", -0.02), ("acc/val", 0.0), ("acc/test", 0.01))]
    return rows


def build_workspace(home: Path) -> str:
    """RUNS finished runs, the newest with 8 paths x BIG_STEPS logged steps; returns the newest's id."""
    init_workspace(home)
    rng = np.random.default_rng(0)
    specs = [spec_for(i) for i in range(180)]
    with closing(Store(home)) as store:
        for i in range(RUNS - 1):
            run_id = store.create_run(specs[i % len(specs)], name=f"run {i:04d}",
                                      group_id=f"sweep-{i // GROUP_SIZE:02d}")
            store.add_metrics(run_id, small_run_rows(rng))
            store.finish_run(run_id, "done", result={"run_id": run_id, "test_acc": 0.8, "val_acc": 0.8,
                                                     "seconds": float(rng.integers(60, 3_600))})
            if i % 3 == 0:
                catalog.set_tags(store, run_id, add=[TAGS[i % len(TAGS)], TAGS[(i // 7) % len(TAGS)]])
        big = store.create_run(live_page.synthetic_spec(), name=f"big: {live_page.PATHS} paths x {BIG_STEPS:,} steps")
        for start in range(0, BIG_STEPS, 1_000):
            store.add_metrics(big, [r for step in range(start, start + 1_000) for r in live_page.step_rows(step, rng)])
        store.finish_run(big, "done", result={"run_id": big, "test_acc": 0.9, "val_acc": 0.9, "seconds": 1.0})
    return big


def timed_ms(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return 1000 * (time.perf_counter() - start)


def opened_app(home: Path, **state: object) -> AppTest:
    """An app session that has rendered Home once (imports and the process's first-use costs, untimed)."""
    os.environ.update(PATHSCOPE_HOME=str(home), PATHSCOPE_NO_AUTOWORKER="1")
    at = AppTest.from_file(str(MAIN), default_timeout=300)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    return at


def checked(at: AppTest, page: str) -> None:
    if at.exception:
        raise RuntimeError(f"{page} raised: {at.exception[0].value}")


def cold_caches() -> None:
    """What a session opened after the one-second read caches expired finds: nothing cached, no series read."""
    st.cache_data.clear()
    st.cache_resource.clear()  # app.cached's run series among them


def compare_timings(home: Path) -> tuple[list[float], list[float]]:
    """Compare's first render (a new session, cold caches) and a filter change in it, REPEATS times each."""
    first, change = [], []
    for i in range(REPEATS):
        at = opened_app(home)
        cold_caches()
        first.append(timed_ms(lambda: at.switch_page(str(ROOT / "pages" / "compare.py")).run()))
        checked(at, "Compare")
        at.multiselect(key=FILTER_KEY).set_value([DATASETS[i % 2]])
        change.append(timed_ms(at.run))
        checked(at, "Compare after a filter change")
    return first, change


def live_timings(home: Path, run_id: str, next_step: int) -> tuple[list[float], list[float], int]:
    """Live's first render of the big run (cold) and polls while it grows by one logged step each."""
    first, polls = [], []
    for _ in range(REPEATS):
        at = opened_app(home, selected_run=run_id)
        cold_caches()
        first.append(timed_ms(lambda: at.switch_page(str(ROOT / "pages" / "live.py")).run()))
        checked(at, "Live")
        live_page.grow(home, run_id, next_step)
        next_step += 1
        polls.append(timed_ms(at.run))
        checked(at, "Live (poll)")
    return first, polls, next_step


def live_direct(home: Path, run_id: str, next_step: int) -> tuple[list[float], list[float]]:
    """The Live page's data and chart path alone (bench/live_page.py's ``render_server_side``)."""
    first, polls = [], []
    for i in range(REPEATS):
        series = RunSeries()
        first.append(timed_ms(lambda: live_page.render_server_side(home, run_id, series)))
        live_page.grow(home, run_id, next_step + i)
        polls.append(timed_ms(lambda: live_page.render_server_side(home, run_id, series)))
    return first, polls


def measure(scratch: Path) -> list[Timing]:
    home = scratch / "dashboard"
    started = time.perf_counter()
    big = build_workspace(home)
    print(f"built {RUNS:,} runs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    with closing(Store(home, readonly=True)) as store:
        rows = store.con.execute("SELECT count(*) FROM metrics WHERE run_id = ?", (big,)).fetchone()[0]
    compare_first, compare_change = compare_timings(home)
    live_first, live_polls, next_step = live_timings(home, big, BIG_STEPS)
    direct_first, direct_polls = live_direct(home, big, next_step)
    big_name = f"{live_page.PATHS} paths x {BIG_STEPS:,} steps ({rows:,} rows)"
    timings = [
        Timing("compare_first", "< 1 s", median(compare_first), f"{RUNS:,} runs, new session, cold caches"),
        Timing("compare_filter", "< 1 s", median(compare_change), "dataset filter changed"),
        Timing("live_first", "< 0.5 s", median(live_first), f"{big_name}, series read for the first time"),
        Timing("live_poll", "< 100 ms", median(live_polls), f"{big_name}, one new logged step"),
        Timing("live_first_direct", "", median(direct_first), "data and charts only (no script run)"),
        Timing("live_poll_direct", "", median(direct_polls), "data and charts only (no script run)"),
    ]
    return timings + ([] if QUICK else old_live_timings(scratch))


def old_live_timings(scratch: Path) -> list[Timing]:
    """bench/live_page.py's run of 8 paths x 50,000 logged steps: the issue's 'today' figures, remeasured."""
    live = live_page.measure(scratch / "live50k", REPEATS)
    name = f"{live_page.PATHS} paths x {live_page.STEPS:,} steps ({live.rows:,} rows)"
    return [Timing("live_first_50k", "", live.apptest_first_ms, f"{name}, in the app {live.apptest_note}".strip()),
            Timing("live_poll_50k", "", live.apptest_polling_ms, f"{name}, in the app"),
            Timing("live_first_50k_direct", "", live.first_ms, f"{name}, data and charts only"),
            Timing("live_poll_50k_direct", "", live.polling_ms, f"{name}, data and charts only")]


def table(timings: list[Timing]) -> str:
    lines = [f"Dashboard bench: median of {REPEATS} (server time, ms)", "",
             "| measurement | median | target | met | what |", "| --- | ---: | --- | --- | --- |"]
    for t in timings:
        value = "n/a" if t.median_ms is None else f"{t.median_ms:,.0f}"
        met = {True: "yes", False: "NO", None: ""}[t.met()]
        lines.append(f"| {t.name} | {value} | {t.target} | {met} | {t.note} |")
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pathscope-dashboard-") as scratch:
        timings = measure(Path(scratch))
    print(table(timings))
    print(json.dumps({"bench": "dashboard", "runs": RUNS, "repeats": REPEATS, "quick": QUICK,
                      "ms": {t.name: None if t.median_ms is None else round(t.median_ms, 1) for t in timings},
                      "met": {t.name: t.met() for t in timings if t.name in TARGETS_MS}}))


if __name__ == "__main__":
    main()
