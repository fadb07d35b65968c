"""Synthetic runs written straight into a store, for front-end tests (no training)."""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

from engine.spec import parse_spec, spec_to_yaml
from engine.store import Store, init_workspace

PATH_IDS = ["p-logits", "p-hint"]  # spec order; metric keys sort the other way round
STEPS = list(range(0, 50, 5))
EPOCHS = 2
RESULT = {"test_acc": 0.9, "val_acc": 0.88, "train_acc": 0.95, "seconds": 12.0}


def spec_yaml(name: str = "synthetic", aggregator: str = "equal") -> str:
    spec = parse_spec({
        "name": name,
        "dataset": {"name": "digits"},
        "teachers": [{"id": "t", "arch": "small_cnn", "source": {"kind": "train", "epochs": 2}}],
        "student": {"arch": "mlp"},
        "paths": [
            {"id": "p-logits", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
            {"id": "p-hint", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
        ],
        "aggregator": {"name": aggregator},
        "epochs": EPOCHS,
    })
    return spec_to_yaml(spec)


def path_loss(path_index: int, step: int) -> float:
    return round(2.0 / (1 + path_index) - 0.01 * step, 4)


def metric_rows() -> list[tuple[str, int, int, str, float]]:
    rows = []
    for step in STEPS:
        epoch = step * EPOCHS // (STEPS[-1] + 5)
        rows += [("main", step, epoch, "loss/total", 3.0 - 0.02 * step),
                 ("main", step, epoch, "loss/task", 1.0 - 0.01 * step),
                 ("main", step, epoch, "lr", 0.05)]
        for i, pid in enumerate(PATH_IDS):
            rows += [("main", step, epoch, f"loss/path:{pid}", path_loss(i, step)),
                     ("main", step, epoch, f"weight/path:{pid}", 1.0)]
        rows.append(("teacher:t", step, epoch, "loss/total", 2.5 - 0.03 * step))
    for epoch in range(EPOCHS):
        step = (epoch + 1) * 25
        for split, acc in (("train", 0.8), ("val", 0.7), ("test", 0.75)):
            rows.append(("main", step, epoch, f"acc/{split}", acc + 0.1 * epoch))
            rows.append(("teacher:t", step, epoch, f"acc/{split}", acc + 0.05))
        rows.append(("main", step, epoch, "loss/val", 0.9 - 0.1 * epoch))
    return rows


def add_finished_run(home: Path, name: str = "synthetic", aggregator: str = "equal") -> str:
    init_workspace(home)
    with closing(Store(home)) as store:
        run_id = store.create_run(spec_yaml(name, aggregator), name=name)
        store.add_metrics(run_id, metric_rows())
        store.add_event(run_id, "info", "run finished")
        store.finish_run(run_id, "done", result={"run_id": run_id, **RESULT})
    return run_id
