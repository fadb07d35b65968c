"""Synthetic runs written straight into a store, for front-end tests (no training).

Besides the metrics every run logs, the path methods' telemetry follows the engine's contract:
per-sample arrays (AMTML teacher weights, SAKD decisions) with a "labels" array of the same
step and sample ids, and one-row arrays (index [-1]) for theta norms, agent losses and DFA's alphas.
"""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np
import yaml

from engine.spec import parse_spec, spec_to_yaml
from engine.store import Store, init_workspace
from engine.telemetry import Recorded

PATH_IDS = ["p-logits", "p-hint"]  # spec order; metric keys sort the other way round
STEPS = list(range(0, 50, 5))
EPOCHS = 2
RESULT = {"test_acc": 0.9, "val_acc": 0.88, "train_acc": 0.95, "seconds": 12.0}
TELEMETRY_STEPS = [0, 10, 20, 30, 40]
BATCH = 16
DIGITS_SAMPLES = 1797  # sample ids must exist in the digits dataset for the gallery's pictures
SAKD_SPOTS = ["layer1", "layer2", "layer3", "fc"]
DFA_GROUPS = {"layer1": ["conv1", "layer1.0", "layer1.1"], "layer2": ["layer2.0", "layer2.1"]}
DFA_SEARCH_STEPS = [0, 4, 8, 12]

ArrayRow = tuple[str, int, int, str, Recorded]


def spec_yaml(name: str = "synthetic", weighting: str = "equal", teacher_ids: tuple[str, ...] = ("t",),
              dataset: dict | None = None, method: str | None = None) -> str:
    spec = parse_spec({
        "name": name,
        "dataset": dataset or {"name": "digits"},
        "teachers": [{"id": tid, "arch": "small_cnn", "source": {"kind": "train", "epochs": 2}} for tid in teacher_ids],
        "student": {"arch": "mlp"},
        "paths": [
            {"id": "p-logits", "teacher": teacher_ids[0], "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
            {"id": "p-hint", "teacher": teacher_ids[0], "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
        ],
        "weighting": {"name": weighting},
        "method": {"name": method} if method else None,
        "epochs": EPOCHS,
    })
    return spec_to_yaml(spec)


def path_loss(path_index: int, step: int) -> float:
    return round(2.0 / (1 + path_index) - 0.01 * step, 4)


def path_weight(path_index: int, step: int) -> float:
    """Weights that differ by path and step, so weight x loss is not the loss itself."""
    return round(1.5 - 0.5 * path_index + 0.01 * step, 4)


def epoch_of(step: int) -> int:
    return step * EPOCHS // (STEPS[-1] + 5)


def metric_rows() -> list[tuple[str, int, int, str, float]]:
    rows = []
    for step in STEPS:
        epoch = epoch_of(step)
        rows += [("main", step, epoch, "loss/total", 3.0 - 0.02 * step),
                 ("main", step, epoch, "loss/task", 1.0 - 0.01 * step),
                 ("main", step, epoch, "lr", 0.05)]
        for i, pid in enumerate(PATH_IDS):
            rows += [("main", step, epoch, f"loss/path:{pid}", path_loss(i, step)),
                     ("main", step, epoch, f"weight/path:{pid}", path_weight(i, step))]
        rows.append(("teacher:t", step, epoch, "loss/total", 2.5 - 0.03 * step))
    for epoch in range(EPOCHS):
        step = (epoch + 1) * 25
        for split, acc in (("train", 0.8), ("val", 0.7), ("test", 0.75)):
            rows.append(("main", step, epoch, f"acc/{split}", acc + 0.1 * epoch))
            rows.append(("teacher:t", step, epoch, f"acc/{split}", acc + 0.05))
        rows.append(("main", step, epoch, "loss/val", 0.9 - 0.1 * epoch))
    return rows


def add_finished_run(home: Path, name: str = "synthetic", weighting: str = "equal",
                     teacher_ids: tuple[str, ...] = ("t",), arrays: list[ArrayRow] | None = None,
                     extra_metrics: list[tuple[str, int, int, str, float]] | None = None,
                     group_id: str | None = None, result: dict | None = None, dataset: dict | None = None,
                     method: str | None = None, metrics: list[tuple[str, int, int, str, float]] | None = None,
                     stored_spec: str | None = None) -> str:
    """``metrics``: instead of ``metric_rows()``; ``stored_spec``: the spec YAML as stored (an old version)."""
    init_workspace(home)
    with closing(Store(home)) as store:
        spec = stored_spec or spec_yaml(name, weighting, teacher_ids, dataset, method)
        run_id = store.create_run(spec, name=name, group_id=group_id)
        store.add_metrics(run_id, (metric_rows() if metrics is None else metrics) + (extra_metrics or []))
        store.add_arrays(run_id, arrays or [])
        store.add_event(run_id, "info", "run finished")
        store.finish_run(run_id, "done", result={"run_id": run_id, **(RESULT if result is None else result)})
    return run_id


# ---------------------------------------------------------------- named terms of a path method and a weighting
#: a run of method amtml weighted by uncertainty: its terms (the engine's names) and their base values
TERMS = {"task": 1.0, "amtml/fused_kd": 0.8, "amtml/hint:p-hint": 0.4, "uncertainty/reg": -0.3}


def term_loss(name: str, step: int) -> float:
    return round(TERMS[name] - 0.005 * step, 4)


def term_weight(name: str, step: int) -> float:
    """The task and the regulariser keep weight 1 (never re-weighed); the method's terms vary with the step."""
    return 1.0 if name in ("task", "uncertainty/reg") else round(0.7 + 0.01 * step, 4)


def term_metric_rows() -> list[tuple[str, int, int, str, float]]:
    """Every term's loss and weight as the engine logs them, the total their weighted sum; plus accuracies."""
    rows = []
    for step in STEPS:
        epoch = epoch_of(step)
        rows += [("main", step, epoch, f"{kind}/{name}", value(name, step))
                 for name in TERMS for kind, value in (("loss", term_loss), ("weight", term_weight))]
        total = sum(term_weight(n, step) * term_loss(n, step) for n in TERMS)
        rows.append(("main", step, epoch, "loss/total", total))
    rows += [r for r in metric_rows() if r[3].startswith("acc/") and r[0] == "main"]
    return rows


def legacy_spec_yaml(name: str, aggregator: str) -> str:
    """A version-1 spec as PathScope stored it before the weighting/method split (``aggregator``)."""
    data = yaml.safe_load(spec_yaml(name))
    data.pop("weighting"), data.pop("method")
    return yaml.safe_dump({**data, "version": 1, "aggregator": {"name": aggregator, "params": {}}}, sort_keys=False)


# ---------------------------------------------------------------- path methods' telemetry
def _batch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample ids of one batch and their true digits labels (so the gallery's pictures match)."""
    from sklearn.datasets import load_digits

    ids = np.sort(rng.choice(DIGITS_SAMPLES, size=BATCH, replace=False))
    return ids, load_digits().target[ids].astype(np.float32)


def _labels_row(step: int, ids: np.ndarray, labels: np.ndarray) -> ArrayRow:
    return ("main", step, epoch_of(step), "labels", Recorded(labels, ids, None))


def amtml_arrays(teacher_ids: tuple[str, ...], seed: int = 0) -> list[ArrayRow]:
    """Softmax weights that drift with the step and depend on the class, plus growing ||theta_m||."""
    rng = np.random.default_rng(seed)
    rows: list[ArrayRow] = []
    teachers = len(teacher_ids)
    class_bias = rng.normal(0.0, 1.0, size=(10, teachers))
    for step in TELEMETRY_STEPS:
        ids, labels = _batch(rng)
        logits = class_bias[labels.astype(int)] * (step + 10) / 30 + rng.normal(0.0, 0.5, (BATCH, teachers))
        weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        rows.append(("main", step, epoch_of(step), "amtml/teacher_weights",
                     Recorded(weights.astype(np.float32), ids, list(teacher_ids))))
        norms = np.array([[1.0 + 0.02 * step * (m + 1) for m in range(teachers)]], dtype=np.float32)
        rows.append(("main", step, epoch_of(step), "amtml/theta_norm", Recorded(norms, np.array([-1]), list(teacher_ids))))
        rows.append(_labels_row(step, ids, labels))
    return rows


def sakd_arrays(seed: int = 0) -> list[ArrayRow]:
    """0/1 decisions whose rate falls with depth and with training; the two agent losses."""
    rng = np.random.default_rng(seed)
    rows: list[ArrayRow] = []
    for step in TELEMETRY_STEPS:
        ids, labels = _batch(rng)
        rate = np.linspace(0.9, 0.3, len(SAKD_SPOTS)) * (1 - step / 100)
        decisions = (rng.random((BATCH, len(SAKD_SPOTS))) < rate).astype(np.float32)
        rows.append(("main", step, epoch_of(step), "sakd/decisions", Recorded(decisions, ids, list(SAKD_SPOTS))))
        losses = np.array([[1.2 - 0.01 * step, 1.5 - 0.02 * step]], dtype=np.float32)
        rows.append(("main", step, epoch_of(step), "sakd/agent_losses",
                     Recorded(losses, np.array([-1]), ["l_route", "l_student"])))
        rows.append(_labels_row(step, ids, labels))
    return rows


def dfa_arrays(seed: int = 0) -> list[ArrayRow]:
    """Per-group alphas of a search that slowly prefers the deepest block."""
    rng = np.random.default_rng(seed)
    rows: list[ArrayRow] = []
    for epoch, step in enumerate(DFA_SEARCH_STEPS):
        for group, blocks in DFA_GROUPS.items():
            logits = np.linspace(0.0, 0.3 * epoch, len(blocks)) + rng.normal(0.0, 0.05, len(blocks))
            alpha = (np.exp(logits) / np.exp(logits).sum())[None, :].astype(np.float32)
            rows.append(("search", step, epoch, f"dfa/alpha:{group}", Recorded(alpha, np.array([-1]), list(blocks))))
    return rows


def dfa_search_metrics() -> list[tuple[str, int, int, str, float]]:
    rows = []
    for epoch, step in enumerate(DFA_SEARCH_STEPS):
        rows += [("search", step, epoch, "dfa/loss_ts", 2.0 - 0.1 * epoch),
                 ("search", step, epoch, "dfa/loss_st", 0.5 / (1 + epoch))]
        rows += [("search", step, epoch, f"dfa/entropy:{group}", (1.0 + 0.1 * g) * (1 - 0.1 * epoch))
                 for g, group in enumerate(DFA_GROUPS)]
    return rows


# ---------------------------------------------------------------- negative-transfer probe
DIAG_STEPS = STEPS  # one probe per logged step
DIAG_VERDICTS = {"p-logits": "helps", "p-hint": "hurts"}
DIAG_FIRST_FLAG = {"p-logits": None, "p-hint": 20}


def diag_value(measure: str, path_index: int, step: int) -> float:
    """p-logits agrees with the task, p-hint opposes it more and more; lookahead has the opposite sign."""
    sign = 1.0 if path_index == 0 else -1.0
    base = {"cos_task": 0.4, "cos_val": 0.2, "lookahead": -2e-3, "norm": 1.5}[measure]
    if measure == "norm":
        return round(base + 0.01 * step, 4)
    return round(sign * base * (1 + step / 50), 6)


def diag_metrics() -> list[tuple[str, int, int, str, float]]:
    """The probe's metrics as the engine logs them (see engine/diagnostics/probe.py)."""
    rows = []
    for step in DIAG_STEPS:
        epoch = epoch_of(step)
        rows += [("main", step, epoch, "diag/norm:task", 2.0), ("main", step, epoch, "diag/norm:val", 1.8)]
        for i, pid in enumerate(PATH_IDS):
            values = {m: diag_value(m, i, step) for m in ("cos_task", "cos_val", "lookahead", "norm")}
            flagged = DIAG_FIRST_FLAG[pid] is not None and step >= DIAG_FIRST_FLAG[pid]
            code = -1.0 if flagged else (1.0 if i == 0 and step >= 15 else 0.0)
            values.update(score=(values["cos_val"] + values["cos_task"]) / 2, verdict=code,
                          confidence=round(0.5 + step / 100, 3))
            rows += [("main", step, epoch, f"diag/{m}:{pid}", v) for m, v in values.items()]
    return rows


def diag_details() -> dict[str, dict]:
    """The result's "verdict_details", summarised over the last 8 probes like the engine does."""
    recent = DIAG_STEPS[-8:]

    def mean(measure: str, path_index: int) -> float:
        return sum(diag_value(measure, path_index, s) for s in recent) / len(recent)

    details = {}
    for i, pid in enumerate(PATH_IDS):
        details[pid] = {"verdict": DIAG_VERDICTS[pid], "confidence": 0.95, "first_flagged_step": DIAG_FIRST_FLAG[pid],
                        "probes": len(DIAG_STEPS), "mean_score": (mean("cos_val", i) + mean("cos_task", i)) / 2,
                        "mean_cos_val": mean("cos_val", i), "mean_cos_task": mean("cos_task", i),
                        "mean_lookahead": mean("lookahead", i)}
    return details


def add_diagnosed_run(home: Path, name: str = "diagnosed", test_acc: float = 0.9) -> str:
    """A finished run with probe metrics, a flag event and verdicts in its result."""
    run_id = add_finished_run(home, name, extra_metrics=diag_metrics(),
                              result={**RESULT, "test_acc": test_acc, "verdicts": DIAG_VERDICTS,
                                      "verdict_details": diag_details()})
    with closing(Store(home)) as store:
        store.add_event(run_id, "warning", "path p-hint flagged as hurting at step 20",
                        {"path": "p-hint", **diag_details()["p-hint"]})
    return run_id
