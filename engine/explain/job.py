"""The explain jobs, run by workers (never in the dashboard's script thread):

- "explain": attribution maps of chosen samples for the student (at a checkpoint) and every teacher;
- "agreement": per saved epoch, how closely the student's maps match each teacher's on a fixed probe set,
  stored as metrics (phase "explain", keys "agree/spearman:<teacher>" and "agree/topk:<teacher>", step = epoch);
- "sample_index": per test sample, label, predictions and teacher disagreement, for choosing samples to explain.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from engine.data import iterate_batches
from engine.explain import agreement, methods
from engine.explain.cache import explain_dir, load_entry, relative_name, save_entry
from engine.explain.maps import Entry, MapRequest, RunModels, explain_samples
from engine.explain.models import (STUDENT, arch_of, checkpoint_path, default_spot, epoch_checkpoints, epoch_of,
                                   model_ids, teacher_model_id)
from engine.job_registry import JOBS
from engine.spec import spec_from_yaml
from engine.store import JobRow, Store
from engine.vocabulary import EXPLAIN_PHASE, agree_key

PHASE = EXPLAIN_PHASE
TARGETS = ("label", "predicted")
PROBE_SEED = 0  # the probe set is the same for every agreement job of a dataset
DEFAULT_PROBE_SIZE = 32
EVAL_BATCH = 256

Progress = Callable[[float], None]


# ------------------------------------------------------------------ parameters
def _run_models(store: Store, job: JobRow) -> RunModels:
    run = store.get_run(job.run_id)
    if run is None:
        raise ValueError(f"run: no run {job.run_id!r} in {store.home}")
    return RunModels(store.home, run.id, spec_from_yaml(run.spec_yaml))


def map_request(models: RunModels, params: dict[str, Any], default_method: str | None = None) -> MapRequest:
    """The validated map request of a job's params; every problem names its field."""
    method = params.get("method", default_method)
    if method is None:
        raise ValueError(f"method: required (one of {', '.join(methods.METHODS.names())})")
    resolved = methods.resolve_params(method, params.get("params"), models.shape)
    target = params.get("target", "label")
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {', '.join(TARGETS)}, got {target!r}")
    return MapRequest(method, resolved, methods.resolve_smoothgrad(params.get("smoothgrad")), target,
                      _spots(models, method, params.get("spot")))


def _spots(models: RunModels, method: str, spot: Any) -> dict[str, str]:
    """Model id -> spot for layer methods: one name for all models, a mapping per model id, or each model's
    last feature map."""
    ids = model_ids(models.spec)
    if not methods.METHODS.get(method).layer:
        if spot is not None:
            raise ValueError(f"spot: {method} attributes the input, not a spot (only layer_gradcam takes one)")
        return {}
    if spot is not None and not isinstance(spot, (str, dict)):
        raise ValueError(f"spot: expected a spot name or a mapping of model id to spot, got {spot!r}")
    if isinstance(spot, dict) and set(spot) - set(ids):
        raise ValueError(f"spot: unknown model id(s) {sorted(set(spot) - set(ids))} (models: {', '.join(ids)})")
    chosen = {}
    for model_id in ids:
        name = spot.get(model_id) if isinstance(spot, dict) else spot
        arch, arch_params = arch_of(models.spec, model_id)
        name = name or default_spot(arch, arch_params, models.shape, models.classes)
        if name is None:
            raise ValueError(f"spot: {model_id} ({arch}) has no feature-map spot for {method}")
        chosen[model_id] = name
    return chosen


def _sample_ids(value: Any) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"samples: expected a non-empty list of sample ids, got {value!r}")
    for sample in value:
        if type(sample) is not int or sample < 0:
            raise ValueError(f"samples: {sample!r} is not a sample id (a non-negative integer)")
    return list(dict.fromkeys(value))


def _number(params: dict[str, Any], name: str, default: float, kind: type, low: float, high: float) -> Any:
    value = params.get(name, default)
    if type(value) not in (kind, int) or not low <= value <= high:
        raise ValueError(f"{name}: expected a {kind.__name__} in [{low}, {high}], got {value!r}")
    return kind(value)


# ------------------------------------------------------------------ explain
def explain_job(store: Store, job: JobRow, progress: Progress) -> dict[str, Any]:
    models = _run_models(store, job)
    params = job.params
    checkpoint = params.get("checkpoint", "final")
    checkpoint_path(store.home, models.run_id, checkpoint)  # fail early, naming what exists
    request = map_request(models, params)
    samples = _sample_ids(params.get("samples"))
    ids = model_ids(models.spec)
    items = []
    for n, model_id in enumerate(ids):
        items += [_item(model_id, entry) for entry in explain_samples(models, model_id, checkpoint, request, samples)]
        progress((n + 1) / len(ids))
    return {"run_id": models.run_id, "checkpoint": checkpoint, "method": request.method, "params": request.params,
            "smoothgrad": request.smoothgrad, "target": request.target, "spots": request.spots, "models": ids,
            "samples": samples, "cached": all(item["cached"] for item in items), "items": items}


def _item(model_id: str, entry: Entry) -> dict[str, Any]:
    arrays = entry.arrays
    return {"model": model_id, "sample": entry.sample, "file": entry.file, "label": int(arrays["label"]),
            "target": int(arrays["target"]), "predicted": int(arrays["predicted"]),
            "confidence": round(float(arrays["confidence"]), 4), "cached": entry.cached}


# ------------------------------------------------------------------ agreement
def probe_ids(models: RunModels, size: int) -> list[int]:
    """A fixed, seeded subset of the test split (the same for every job on this dataset)."""
    test = models.bundle.test
    if size > len(test):
        raise ValueError(f"probe_size: {size} is more than the {len(test)} test samples")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(PROBE_SEED))[:size]
    return sorted(int(i) for i in test.index[order])


def agreement_job(store: Store, job: JobRow, progress: Progress) -> dict[str, Any]:
    models = _run_models(store, job)
    params = job.params
    # Occlusion is the default: of the methods measured on the planted demo it alone separates a harmful
    # teacher from a good one at every epoch (see tests/test_explain.py).
    request = map_request(models, params, default_method="occlusion")
    k = _number(params, "k", agreement.DEFAULT_K, float, 1e-9, 1.0)
    epochs = epoch_checkpoints(store.home, models.run_id)
    teachers = [t.id for t in models.spec.teachers]
    if not epochs:
        raise ValueError(f"run {models.run_id} has no epoch checkpoints yet")
    if not teachers:
        raise ValueError(f"run {models.run_id} has no teachers to compare the student with")
    probe = probe_ids(models, _number(params, "probe_size", DEFAULT_PROBE_SIZE, int, 1, 1_000_000))
    steps = len(teachers) + len(epochs)
    teacher_maps = {}
    for n, tid in enumerate(teachers):
        teacher_maps[tid] = _maps(explain_samples(models, teacher_model_id(tid), epochs[-1], request, probe))
        progress((n + 1) / steps)
    curves: dict[str, dict[str, list[float]]] = {tid: {"spearman": [], "topk": []} for tid in teachers}
    for n, checkpoint in enumerate(epochs):
        student = _maps(explain_samples(models, STUDENT, checkpoint, request, probe))
        for tid in teachers:
            rho, overlap = agreement.mean_agreement(student, teacher_maps[tid], k)
            curves[tid]["spearman"].append(rho)
            curves[tid]["topk"].append(overlap)
        progress((len(teachers) + n + 1) / steps)
    numbers = [epoch_of(name) for name in epochs]
    _store_curves(store, models.run_id, numbers, curves)
    return {"run_id": models.run_id, "method": request.method, "params": request.params,
            "smoothgrad": request.smoothgrad, "target": request.target, "spots": request.spots, "k": k,
            "probe": probe, "epochs": numbers,
            "teachers": {tid: {name: [_finite(v) for v in values] for name, values in curve.items()}
                         for tid, curve in curves.items()}}


def _maps(entries: list[Entry]) -> list[np.ndarray]:
    return [entry.arrays["map"] for entry in entries]


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)  # JSON has no NaN


def _store_curves(store: Store, run_id: str, epochs: list[int], curves: dict[str, dict[str, list[float]]]) -> None:
    """Replace the run's agreement metrics, so a rerun (or another method) leaves one value per epoch."""
    rows = [(PHASE, epoch, epoch, agree_key(name, tid), value)
            for tid, curve in curves.items() for name, values in curve.items()
            for epoch, value in zip(epochs, values)]
    store.delete_metrics_after(run_id, PHASE, -1)
    store.add_metrics(run_id, rows)


# ------------------------------------------------------------------ sample index
def sample_index_job(store: Store, job: JobRow, progress: Progress) -> dict[str, Any]:
    models = _run_models(store, job)
    checkpoint = job.params.get("checkpoint", "final")
    checkpoint_path(store.home, models.run_id, checkpoint)
    name = f"sample_index-{checkpoint}.npz"
    path = explain_dir(store.home, models.run_id) / name
    cached = path.is_file()
    if not cached:
        save_entry(path, _sample_index(models, checkpoint, progress))
    arrays = load_entry(path)
    teachers = arrays["teacher_ids"].tolist()
    return {"run_id": models.run_id, "checkpoint": checkpoint, "file": relative_name(name), "cached": cached,
            "samples": len(arrays["sample"]), "teachers": teachers,
            "student_acc": round(float((arrays["student_pred"] == arrays["label"]).mean()), 4),
            "teacher_acc": {tid: round(float((arrays["teacher_pred"][:, n] == arrays["label"]).mean()), 4)
                            for n, tid in enumerate(teachers)}}


def _sample_index(models: RunModels, checkpoint: str, progress: Progress) -> dict[str, np.ndarray]:
    """Arrays over the test split: sample, label, student_pred/conf (N,), teacher_ids (T,), teacher_pred/conf
    (N, T), disagreement (N,): the largest Jensen-Shannon divergence (nats) between two teachers' softmax."""
    test = models.bundle.test
    teachers = [t.id for t in models.spec.teachers]
    student = _test_probs(models, STUDENT, checkpoint)
    progress(1 / (len(teachers) + 1))
    teacher_probs = []
    for n, tid in enumerate(teachers):
        teacher_probs.append(_test_probs(models, teacher_model_id(tid), checkpoint))
        progress((n + 2) / (len(teachers) + 1))
    stacked = torch.stack(teacher_probs, dim=1) if teachers else torch.zeros(len(test), 0, models.classes)
    conf, pred = stacked.max(dim=2)
    return {"sample": test.index.numpy(), "label": test.y.numpy(),
            "student_pred": student.argmax(1).numpy(), "student_conf": student.max(1).values.numpy(),
            "teacher_ids": np.array(teachers, dtype=str), "teacher_pred": pred.numpy(), "teacher_conf": conf.numpy(),
            "disagreement": _max_pairwise_js(stacked).numpy()}


@torch.no_grad()
def _test_probs(models: RunModels, model_id: str, checkpoint: str) -> torch.Tensor:
    model = models.model(model_id, checkpoint)
    chunks = [torch.softmax(model(x.to(models.device)), dim=1).cpu()
              for x, _, _ in iterate_batches(models.bundle.test, EVAL_BATCH, shuffle=False, generator=None)]
    return torch.cat(chunks)


def _max_pairwise_js(probs: torch.Tensor) -> torch.Tensor:
    """(N, T, K) softmax outputs -> (N,) largest JS divergence over teacher pairs (0 with fewer than two)."""
    largest = torch.zeros(probs.shape[0])
    for a in range(probs.shape[1]):
        for b in range(a + 1, probs.shape[1]):
            largest = torch.maximum(largest, js_divergence(probs[:, a], probs[:, b]))
    return largest


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Row-wise Jensen-Shannon divergence in nats (0 for equal rows, at most ln 2)."""
    m = (p + q) / 2
    # xlogy gives 0 * log 0 = 0, so classes with zero probability add nothing.
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim=1)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim=1)
    return (kl_pm + kl_qm) / 2


JOBS.register("explain", "attribution maps of chosen samples for the student and every teacher")(explain_job)
JOBS.register("agreement", "per epoch, how closely the student's maps match each teacher's")(agreement_job)
JOBS.register("sample_index", "per test sample: label, predictions, confidence and teacher disagreement")(
    sample_index_job)
