"""Execute a RunSpec: data -> teachers -> learner (student, paths, method, weighting) -> fit -> results.

``execute_run`` is the single entry used by the worker and the CLI; it depends only on
the spec, the run's folder and the workspace, never on the process that calls it, so a
run can be resumed by any worker (and later fanned out to other machines).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from engine.methods import METHODS
from engine.methods.base import PathMethod
from engine.data import load_dataset
from engine.data.bundle import DataBundle
from engine.data.stream import make_views
from engine.data.teacher_cache import cache_folder, load_or_build
from engine.diagnostics.planted import MODEL_DEFECTS, apply_model_defect, defective_train_split
from engine.diagnostics.probe import GradientProbe, auto_every
from engine.diagnostics.verdicts import rule_from
from engine.distributed.reducer import Reducer
from engine.models import build_model
from engine.models.weights import load_source
from engine.models.spots import TappedModel, list_spots
from engine.paths import DISTILLERS
from engine.paths.base import DataInfo, split_spot
from engine.spec import RunSpec, SpecError, TeacherSpec, TrainSource
from engine.step import PathRoute
from engine.terms import TermInfo
from engine.weightings import WEIGHTINGS
from engine.weightings.base import Weighting
from engine.workspace import cache_dir, run_dir, run_final_checkpoint, save_atomic, teacher_file
from engine.export import write_student
from engine.teacher_check import report_teacher_accuracy
from engine.validate import params_errors
from engine.vocabulary import teacher_phase
from engine.runtime import resolve_device
from engine.system_metrics import with_system_metrics
from engine.train import MAIN_PHASE, FitConfig, Learner, Reporter, TappedShapes, TeacherTaps, evaluate, fit

#: bump when inline teacher training changes, so cached teachers are retrained
TEACHER_RECIPE_VERSION = 1
CACHE_PHASE = "teacher cache"
#: the fixed augmented views are shared by every run of the same data, whatever its seed
VIEW_SEED = 0
GPU_DATA_LIMIT = 2 << 30  # bytes of images moved to the GPU once; larger data is pinned and copied per batch


def execute_run(spec: RunSpec, run_id: str, home: Path, reporter: Reporter, reducer: Reducer | None = None
                ) -> dict[str, Any] | None:
    """Train the run's teachers (if inline) and its model; return the final metrics.

    ``reducer``: this process's part of a DDP run (engine/distributed/): rank 0 prepares teachers and caches first
    and alone returns the result (the other ranks return None). None: one process.
    """
    started = time.time()
    reducer = reducer or Reducer()
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN to expose reads of uninitialised memory: a
    # debugging aid that cost 9% of a digits step (12,000 fills per epoch) and changes no result.
    torch.utils.deterministic.fill_uninitialized_memory = False
    device = reducer.device or resolve_device(spec.device)
    if reducer.writes:  # the writing rank's process and device stand for the run's system metrics
        reporter = with_system_metrics(reporter, device)
    # rank 0 first: a dataset that converts files on first use does it once
    bundle = reducer.writer_first(lambda: load_dataset(spec.dataset, cache_dir(home),
                                                       report=lambda note: reporter.event("info", note)))
    reporter.event("info", f"data: {spec.dataset.name}, {len(bundle.train.y)} train / {len(bundle.val.y)} val / "
                           f"{len(bundle.test.y)} test samples, device {device}{_processes(reducer, device)}")
    plan = _ProgressPlan(spec, home, reporter)

    def prepare() -> tuple[Learner, dict[str, float | None], torch.Tensor | None]:
        teachers, accuracy = {}, {}
        for tspec in spec.teachers:
            teachers[tspec.id], accuracy[tspec.id] = prepare_teacher(
                tspec, spec, bundle, home, device, reporter, plan.callback(teacher_phase(tspec.id)))
        learner = build_learner(spec, bundle, teachers, device, home, reporter)
        views = attach_teacher_cache(spec, learner, bundle, home, device, reporter, plan.callback(CACHE_PHASE))
        return learner, accuracy, _place_data(bundle, views, device, learner, teachers)

    learner, teacher_acc, views = reducer.writer_first(prepare)
    folder = run_dir(home, run_id)
    cfg = FitConfig(phase=MAIN_PHASE, epochs=spec.epochs, seed=spec.seed, optimizer=spec.optimizer,
                    schedule=spec.schedule, augment=spec.dataset.augment, batch_size=spec.dataset.batch_size,
                    log_every=spec.log_every, telemetry_every=spec.telemetry_every,
                    checkpoint_dir=folder / "checkpoints", progress=plan.callback(MAIN_PHASE),
                    views=views, autocast_dtype=autocast_dtype(spec.precision, device),
                    probe=make_probe(spec, bundle, reporter), reducer=reducer)
    torch.manual_seed(spec.seed)
    learner.method.prepare(learner, bundle, device, reporter)
    epochs_to_train = spec.epochs - _epochs_done(cfg.checkpoint_dir)
    fit_started = time.perf_counter()
    metrics = fit(learner, bundle, cfg, device, reporter)
    fit_seconds = time.perf_counter() - fit_started
    if not reducer.writes:
        return None
    save_atomic({"arch": spec.student.arch, "state_dict": learner.student.model.state_dict()},
                 folder / "checkpoints" / "final.pt")
    result = {"run_id": run_id, "test_acc": metrics["acc/test"], "val_acc": metrics["acc/val"],
              "train_acc": metrics.get("acc/train"), "teacher_test_acc": teacher_acc,
              "epochs": spec.epochs, "seconds": round(time.time() - started, 2), "device": str(device),
              "nproc": reducer.world_size,
              # training samples/s of this process's launch, evaluation between epochs included (0: resumed done)
              "samples_per_s": round(len(bundle.train.y) * epochs_to_train / fit_seconds, 1) if fit_seconds > 0 else 0.0}
    if cfg.probe is not None:
        result["verdicts"] = cfg.probe.verdicts()
        result["verdict_details"] = cfg.probe.details()
    # The student to take home: weights and a card a plain PyTorch script can use (engine/export.py).
    result["student_file"] = str(write_student(folder, spec, bundle, learner.student.model, result, run_id))
    return result


def _processes(reducer: Reducer, device: torch.device) -> str:
    """The data event's note on a DDP run's processes; nothing for one process."""
    if reducer.world_size == 1:
        return ""
    backend = "nccl, one GPU each" if device.type == "cuda" else "gloo on CPU"
    return f"; distributed: {reducer.world_size} processes ({backend}), each on its slice of every batch"


def _epochs_done(checkpoints: Path) -> int:
    """Epochs a resumed run starts past (0 from scratch): what its samples/s leaves out."""
    last = checkpoints / "last.pt"
    if not last.exists():
        return 0
    return torch.load(last, map_location="cpu", weights_only=True, mmap=True)["epoch"] + 1  # mmap: reads no weights


def make_probe(spec: RunSpec, bundle: DataBundle, reporter: Reporter) -> GradientProbe | None:
    settings = spec.diagnostics
    if not settings.enabled or not spec.active_paths:
        return None
    every = settings.every or auto_every(len(spec.active_paths))
    reporter.event("info", f"diagnostics: probing the {len(spec.active_paths)} paths every {every} steps")
    return GradientProbe([p.id for p in spec.active_paths], every, rule_from(settings), bundle.val,
                         settings.val_batch_size, spec.seed, settings.val_chunks)


def attach_teacher_cache(spec: RunSpec, learner: Learner, bundle: DataBundle, home: Path, device: torch.device,
                         reporter: Reporter, progress: Callable[[float], None]) -> torch.Tensor | None:
    """Serve the frozen teachers' taps from the workspace cache; return the fixed training views, or None (live)."""
    settings = spec.teacher_cache
    if not settings.enabled or not learner.teachers:
        progress(1.0)
        return None
    if learner.method.needs_live_teachers:
        reporter.event("info", f"teacher cache: off, {spec.method.name} runs the teachers live every step")
        progress(1.0)
        return None
    if bundle.streamed and spec.dataset.augment != "none":
        reporter.event("info", f"teacher cache: off, the dataset streams from disk and fixed augmented views would "
                               f"hold {settings.views} copies of its {len(bundle.train):,} training images in memory; "
                               f"the teachers run live every step (augment: none would cache them)")
        progress(1.0)
        return None
    # A streamed split gives a one-view stand-in read from disk; training then draws live batches (None below)
    # whose positions index the cache, which stays memory-mapped.
    views = make_views(bundle.train, spec.dataset.augment, settings.views, VIEW_SEED)
    for n, (tid, frozen) in enumerate(sorted(learner.teachers.items())):
        started = time.time()
        folder = cache_folder(home, frozen.model.model, spec.dataset, settings.views, VIEW_SEED, settings.fp16,
                              content=bundle.fingerprint)
        share = len(learner.teachers)
        cached, built = load_or_build(folder, sorted(frozen.model.spots), frozen, views, settings.fp16, device,
                                      lambda f, n=n: progress((n + f) / share), in_memory=not bundle.streamed)
        learner.cached[tid] = cached
        what = f"built {', '.join(built)}" if built else "reused"
        reporter.event("info", f"teacher cache: {tid} {what} for {views.shape[0]} view(s) x {views.shape[1]} samples "
                               f"in {time.time() - started:.1f} s ({folder.name})")
    progress(1.0)
    return None if bundle.streamed else views


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where asked, or by default on a CUDA GPU that supports it; None means full precision."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _place_data(bundle: DataBundle, views: torch.Tensor | None, device: torch.device, learner: Learner,
                teachers: dict[str, torch.nn.Module]) -> torch.Tensor | None:
    """On a GPU: data that fits goes to the device once (else pinned for async copies), models go channels_last."""
    if device.type != "cuda":
        return views
    splits = [s for s in (bundle.train, bundle.val, bundle.test) if not s.streamed]  # streamed: stay on disk
    size = sum(s.x.nbytes for s in splits) + (views.nbytes if views is not None else 0)
    move = (lambda t: t.to(device)) if size <= GPU_DATA_LIMIT else (lambda t: t.pin_memory())
    for split in splits:
        split.x, split.y = move(split.x), move(split.y)
    for model in (learner, *teachers.values()):
        model.to(memory_format=torch.channels_last)
    return move(views) if views is not None else None


def build_learner(spec: RunSpec, bundle: DataBundle, teachers: dict[str, torch.nn.Module], device: torch.device,
                  home: Path | None = None, reporter: Reporter | None = None) -> Learner:
    """Student and teachers tapped at the spots the paths and the path method read, one distiller per path."""
    bad_params = params_errors(spec)  # a spec that skipped validation fails as validation would name it
    if bad_params:
        raise SpecError(bad_params)
    torch.manual_seed(spec.seed)  # the student's initial weights depend on the seed only
    arch_of = {t.id: t for t in spec.teachers}
    shape, classes = bundle.input_shape, bundle.num_classes
    all_spots = {"student": _shapes(spec.student.arch, spec.student.arch_params, shape, classes)}
    all_spots.update({t.id: _shapes(t.arch, t.arch_params, shape, classes) for t in spec.teachers})
    model = build_model(spec.student.arch, classes, shape[0], shape[1], spec.student.arch_params)
    init_student(model, spec, home, reporter)
    paths = spec.active_paths
    info = DataInfo(num_classes=classes, num_samples=bundle_sample_count(bundle))
    distillers, path_spots, path_weights = {}, {}, {}
    for p in paths:
        cls = DISTILLERS.get(p.distiller)
        distillers[p.id] = cls(tap_shape(all_spots["student"], p.student_spot),
                               tap_shape(all_spots[p.teacher], p.teacher_spot), info, **p.params)
        path_spots[p.id] = PathRoute(p.teacher, p.teacher_spot, p.student_spot)
        path_weights[p.id] = p.weight if p.weight is not None else distillers[p.id].conventional_weight()
    method_class = METHODS.get(spec.method.name) if spec.method else PathMethod
    method = method_class(list(path_spots), path_weights, {p.id: p.distiller for p in paths},
                          **(spec.method.params if spec.method else {}))
    extra_student, extra_teacher = method.wanted_spots([t.id for t in spec.teachers], path_spots)
    student_spots = _spot_names(p.student_spot for p in paths) | set(extra_student)
    teacher_spots = {tid: _spot_names(p.teacher_spot for p in paths if p.teacher == tid) | set(extra_teacher.get(tid, ()))
                     for tid in {p.teacher for p in paths} | set(extra_teacher)}
    student = TappedModel(model, spec.student.arch, student_spots)
    frozen = {tid: TeacherTaps(_tap_teacher(teachers[tid], arch_of[tid].arch, spots))
              for tid, spots in sorted(teacher_spots.items())}
    shapes = TappedShapes(student={s: all_spots["student"][s] for s in student.spots},
                          teachers={tid: {s: all_spots[tid][s] for s in f.model.spots} for tid, f in frozen.items()})
    return Learner(student, distillers, path_spots, method, weighting_factory(spec), frozen, shapes).to(device)


def weighting_factory(spec: RunSpec) -> Callable[[list[TermInfo]], Weighting]:
    """The spec's weighting, to be built once the method's terms are known."""
    cls = WEIGHTINGS.get(spec.weighting.name)
    return lambda terms: cls(terms, **spec.weighting.params)


def _shapes(arch: str, params: dict, shape: tuple[int, int, int], classes: int) -> dict[str, tuple[int, ...]]:
    return {s.name: s.shape for s in list_spots(arch, shape, classes, params)}


def _spot_names(spots) -> set[str]:
    return {name for spot in spots for name in split_spot(spot)}


def tap_shape(shapes: dict[str, tuple[int, ...]], spot: str) -> tuple:
    """The shape of a spot, or a tuple of shapes for a compound spot ('layer1+layer2')."""
    names = split_spot(spot)
    return shapes[spot] if len(names) == 1 else tuple(shapes[name] for name in names)


def bundle_sample_count(bundle: DataBundle) -> int:
    return int(max(split.index.max() for split in (bundle.train, bundle.val, bundle.test) if len(split))) + 1


def _tap_teacher(model: torch.nn.Module, arch: str, spots: set[str]) -> TappedModel:
    tapped = TappedModel(model, arch, spots)
    tapped.eval()
    for param in tapped.parameters():
        param.requires_grad_(False)
    return tapped


def init_student(model: torch.nn.Module, spec: RunSpec, home: Path | None, reporter: Reporter | None) -> None:
    """The student's initial weights: seeded random init (scratch), or a checkpoint, a run, published weights;
    a classifier of another class count is replaced by the seeded fresh one, and an event says so."""
    source = spec.student.source
    note, change = load_source(model, spec.student.arch, source, "student",
                               lambda run_id: run_final_checkpoint(home, run_id))
    if reporter is not None and note is not None:
        reporter.event("info", f"student: {note}")
    if reporter is not None and change is not None:
        reporter.event("info", f"student: {change.describe()}")


# ------------------------------------------------------------------ teachers
def prepare_teacher(tspec: TeacherSpec, spec: RunSpec, bundle: DataBundle, home: Path, device: torch.device,
                    reporter: Reporter, progress: Callable[[float], None]) -> tuple[torch.nn.Module, float | None]:
    """A frozen teacher model on `device` and its test accuracy (when known)."""
    shape = bundle.input_shape
    source = tspec.source
    # An inline teacher's initial weights depend on its own seed only (loaded ones are overwritten).
    torch.manual_seed(source.seed if isinstance(source, TrainSource) else 0)
    model = build_model(tspec.arch, bundle.num_classes, shape[0], shape[1], tspec.arch_params)
    accuracy = None
    if isinstance(source, TrainSource):
        accuracy = _inline_teacher(model, tspec, spec, bundle, home, device, reporter, progress)
    else:  # checkpoint, run or pretrained: the loader shared with validation and the attribution models
        note, _ = load_source(model, tspec.arch, source, "teacher", lambda run_id: run_final_checkpoint(home, run_id))
        reporter.event("info", f"teacher {tspec.id}: {note}")
    model.to(device).eval()
    accuracy = report_teacher_accuracy(tspec, spec, model, bundle, home, device, reporter, known=accuracy)
    progress(1.0)
    return model, accuracy


#: dataset fields that change how images are read, not which: streamed and in-memory runs train alike
READING_FIELDS = {"download", "stream", "memory_limit_mb", "loader_workers"}


def teacher_cache_path(tspec: TeacherSpec, spec: RunSpec, home: Path) -> Path:
    """Inline teachers are cached by everything that determines their weights."""
    recipe = {"version": TEACHER_RECIPE_VERSION, "arch": tspec.arch, "arch_params": tspec.arch_params,
              # exclude_none: an unset defect strength leaves the recipes (and cached teachers) of before
              "source": tspec.source.model_dump(mode="json", exclude_none=True),
              "dataset": spec.dataset.model_dump(mode="json", exclude=READING_FIELDS),
              "device": resolve_device(spec.device).type}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return teacher_file(home, tspec.arch, digest)


def _inline_teacher(model, tspec: TeacherSpec, spec: RunSpec, bundle: DataBundle, home: Path, device: torch.device,
                    reporter: Reporter, progress: Callable[[float], None]) -> float:
    cache = teacher_cache_path(tspec, spec, home)
    if cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["state_dict"])
        reporter.event("info", f"teacher {tspec.id}: reused cached {cache.name} (test acc {saved['test_acc']:.3f})")
        return saved["test_acc"]
    source: TrainSource = tspec.source
    model.to(device)
    if source.defect == "random_init":
        reporter.event("info", f"teacher {tspec.id}: planted defect random_init, left untrained")
        accuracy, _ = evaluate(model, bundle.test, device)
    else:
        accuracy = _train_teacher(model, tspec, spec, bundle, device, reporter, progress)
        if source.defect in MODEL_DEFECTS:  # planted in the trained weights, so measured again after
            apply_model_defect(model, source.defect, source.strength, source.seed)
            accuracy, _ = evaluate(model, bundle.test, device)
    save_atomic({"arch": tspec.arch, "state_dict": model.state_dict(), "test_acc": accuracy}, cache)
    return accuracy


def _train_teacher(model, tspec: TeacherSpec, spec: RunSpec, bundle: DataBundle, device: torch.device,
                   reporter: Reporter, progress: Callable[[float], None]) -> float:
    """Cross-entropy training of an inline teacher (on defective data when a defect is planted)."""
    source: TrainSource = tspec.source
    epochs = 1 if source.defect == "under_trained" else source.epochs
    defect = f" with planted defect {source.defect}" if source.defect != "none" else ""
    reporter.event("info", f"teacher {tspec.id}: training {tspec.arch} for {epochs} epoch(s){defect}")
    if source.defect != "none":  # accuracy is still measured on the true val/test labels
        bundle = dataclasses.replace(bundle, train=defective_train_split(bundle, source.defect, source.noise,
                                                                          source.seed, source.strength))
    learner = Learner(TappedModel(model, tspec.arch, ()), {}, {}, PathMethod([], {}, {}), WEIGHTINGS.get("equal"),
                      {}).to(device)
    cfg = FitConfig(phase=teacher_phase(tspec.id), epochs=epochs, seed=source.seed,
                    optimizer=source.optimizer, schedule=source.schedule, augment=spec.dataset.augment,
                    batch_size=spec.dataset.batch_size, log_every=spec.log_every,
                    telemetry_every=spec.telemetry_every, checkpoint_dir=None, progress=progress)
    return fit(learner, bundle, cfg, device, reporter)["acc/test"]


class _ProgressPlan:
    """Maps each phase's own 0..1 progress onto the run's overall progress bar."""

    def __init__(self, spec: RunSpec, home: Path, reporter: Reporter) -> None:
        self.reporter = reporter
        self.spans: dict[str, float] = {}
        for t in spec.teachers:
            trains = isinstance(t.source, TrainSource) and not teacher_cache_path(t, spec, home).exists()
            self.spans[teacher_phase(t.id)] = float(t.source.epochs) if trains else 0.0
        # Caching is about one forward pass per view through each teacher: a fraction of an epoch.
        caching = spec.teacher_cache.enabled and spec.active_paths
        views = spec.teacher_cache.views if spec.dataset.augment != "none" else 1
        self.spans[CACHE_PHASE] = 0.3 * views * len(spec.teachers) if caching else 0.0
        self.spans[MAIN_PHASE] = float(spec.epochs)
        self.total = sum(self.spans.values())

    def callback(self, phase: str) -> Callable[[float], None]:
        before = 0.0
        for name, span in self.spans.items():
            if name == phase:
                break
            before += span
        span = self.spans[phase]

        def report(fraction: float) -> None:
            self.reporter.progress((before + span * fraction) / self.total, phase)

        return report
