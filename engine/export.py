"""The distilled student as a file to take home: ``runs/<id>/student.pt``, and TorchScript / ONNX exports of it.

student.pt is written at the end of every run (next to checkpoints/final.pt) and holds only plain data, so
``torch.load(path, weights_only=True)`` reads it without PathScope:

    {"format": "pathscope-student", "version": 1,
     "state_dict": {name: tensor},
     "card": {"arch", "arch_params", "num_classes", "class_names" (in label order), "input_size" [C, H, W],
              "preprocess": {"color", "pixel_max", "resize", "mean", "std", "formula"},
              "normalize" (the spec's setting), "dataset" (the spec's dataset section),
              "metrics": {"test_acc", "val_acc", "train_acc", "teacher_test_acc", "test_samples", "epochs"},
              "spec_yaml", "run_id", "created_at", "torch_version"}}

``export_student(home, run_id, out, fmt)`` writes the same student as pt (a copy), TorchScript (traced in eval
mode) or ONNX (torch.onnx's exporter, dynamic batch axis, checked with onnx.checker), and verifies that the
exported model's logits equal the PyTorch model's.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from engine.data.bundle import DataBundle
from engine.spec import RunSpec, spec_from_yaml, spec_to_yaml
from engine.store import JobRow, RunRow, Store, run_dir
from engine.workspace import cache_dir, save_atomic

STUDENT_FILE = "student.pt"
STUDENT_FORMAT = "pathscope-student"
STUDENT_VERSION = 1
FORMATS = ("pt", "torchscript", "onnx")
EXTENSIONS = {"pt": ".pt", "torchscript": ".torchscript.pt", "onnx": ".onnx"}
ONNX_OPSET = 18
#: exported logits may differ from PyTorch's by float rounding only
EXPORT_TOLERANCE = 1e-4
METRIC_KEYS = ("test_acc", "val_acc", "train_acc", "teacher_test_acc", "epochs")


class ExportError(ValueError):
    """A student that cannot be exported; the message says which run, file or format and why."""


def student_path(home: Path, run_id: str) -> Path:
    """Where a finished run's student file lies (the dashboard serves these bytes)."""
    return run_dir(Path(home), run_id) / STUDENT_FILE


# ------------------------------------------------------------------ the card
def _preprocess(bundle: DataBundle, dataset_name: str) -> dict[str, Any]:
    """How a raw image becomes the model's input, in words and numbers a plain script can follow."""
    channels, height, width = bundle.input_shape
    described = getattr(bundle, "preprocess", None)  # a loader may describe its own steps precisely
    pixel_max = float(getattr(bundle, "pixel_max", 16.0 if dataset_name == "digits" else 255.0))
    if dataset_name == "image_folder":
        resize = {"size": [height, width], "method": "PIL: image.convert('RGB'); the shorter side resized to the size "
                  "with Image.BILINEAR, then centre-cropped (torchvision Resize(size) + CenterCrop(size)); "
                  "nothing when the image already has the size"}
    else:
        resize = {"size": [height, width], "method": "none at the dataset's own size; otherwise the whole image "
                  "resized with torch.nn.functional.interpolate(mode='bilinear', antialias=True, "
                  "align_corners=False) after scaling to [0, 1]"}
    found = {"color": "RGB" if channels == 3 else ("L" if channels == 1 else f"{channels} channels"),
             "pixel_max": pixel_max, "resize": resize}
    if isinstance(described, dict):
        found.update(described)
    found.update(mean=[float(v) for v in bundle.mean], std=[float(v) for v in bundle.std],
                 formula="x = (resize(pixels) / pixel_max - mean) / std, per channel; input (N, C, H, W) float32")
    return found


def _plain(value: Any) -> Any:
    """Only what torch.load(weights_only=True) reads: dicts, lists, str, int, float, bool, None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    for kind in (int, float, str):  # subclasses (torch's version string, numpy floats) become the plain type
        if isinstance(value, kind):
            return kind(value)
    if hasattr(value, "item"):  # numpy and torch scalars
        return _plain(value.item())
    return str(value)


def student_card(spec: RunSpec, bundle: DataBundle, result: dict[str, Any], run_id: str) -> dict[str, Any]:
    metrics = {key: result.get(key) for key in METRIC_KEYS}
    metrics["test_samples"] = len(bundle.test)
    card = {
        "arch": spec.student.arch, "arch_params": spec.student.arch_params,
        "num_classes": bundle.num_classes, "class_names": list(bundle.class_names),
        "input_size": list(bundle.input_shape),
        "preprocess": _preprocess(bundle, spec.dataset.name),
        "normalize": spec.dataset.model_dump(mode="json")["normalize"],
        "dataset": spec.dataset.model_dump(mode="json"),
        "metrics": metrics, "spec_yaml": spec_to_yaml(spec), "run_id": run_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch_version": torch.__version__,
    }
    return _plain(card)


def write_student(folder: Path, spec: RunSpec, bundle: DataBundle, model: nn.Module, result: dict[str, Any],
                  run_id: str) -> Path:
    """Write ``folder/student.pt`` (atomically): the student's weights and its card."""
    state = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
    payload = {"format": STUDENT_FORMAT, "version": STUDENT_VERSION, "state_dict": state,
               "card": student_card(spec, bundle, result, run_id)}
    path = Path(folder) / STUDENT_FILE
    save_atomic(payload, path)
    return path


def read_student(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for foreign files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"{path} is not a student file that loads safely ({reason})") from err
    if not isinstance(payload, dict) or payload.get("format") != STUDENT_FORMAT:
        raise ExportError(f"{path} is not a PathScope student file (format {STUDENT_FORMAT!r})")
    return payload


def student_model(payload: dict[str, Any]) -> nn.Module:
    """The student of a student file as an eval-mode PyTorch module (built by PathScope's model zoo)."""
    from engine.models import build_model

    card = payload["card"]
    channels, height, _ = card["input_size"]
    model = build_model(card["arch"], card["num_classes"], channels, height, card["arch_params"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


# ------------------------------------------------------------------ runs
def _finished_run(store: Store, run_id: str) -> RunRow:
    run = store.get_run(run_id)
    if run is None:
        raise ExportError(f"no run {run_id!r} in {store.home} (see python -m engine ls)")
    if run.status != "done":
        raise ExportError(f"run {run_id} is {run.status}, not done: only a finished run has a final student")
    return run


def ensure_student_file(home: Path, run: RunRow) -> Path:
    """The run's student.pt, built from checkpoints/final.pt for a run that finished before it existed."""
    path = student_path(home, run.id)
    if path.is_file():
        return path
    final = run_dir(home, run.id) / "checkpoints" / "final.pt"
    if not final.is_file():
        raise ExportError(f"run {run.id} has no {final.name} (looked in {final.parent})")
    from engine.data import load_dataset
    from engine.models import build_model

    spec = spec_from_yaml(run.spec_yaml)
    saved = torch.load(final, map_location="cpu", weights_only=True)
    try:
        bundle = load_dataset(spec.dataset, cache_dir(Path(home)))
        channels, height, _ = bundle.input_shape
        model = build_model(spec.student.arch, bundle.num_classes, channels, height, spec.student.arch_params)
        model.load_state_dict(saved["state_dict"])
    except (ValueError, OSError, RuntimeError) as err:
        raise ExportError(f"run {run.id} finished before runs wrote student files, and its card cannot be made "
                          f"now: {err}") from err
    return write_student(path.parent, spec, bundle, model, run.result, run.id)


def _example_input(card: dict[str, Any], batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *card["input_size"], generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def _quiet_exporters():
    """TorchScript's deprecation notices and the ONNX exporter's INFO logs say nothing to someone exporting."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _write_torchscript(model: nn.Module, example: torch.Tensor, tmp: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=True)
    torch.jit.save(traced, str(tmp))


def _write_onnx(model: nn.Module, example: torch.Tensor, tmp: Path) -> str:
    """Export with torch.onnx (dynamo exporter); a batch axis that will not export dynamically is fixed."""
    options = dict(input_names=["input"], output_names=["logits"], opset_version=ONNX_OPSET, dynamo=True,
                   external_data=False, verbose=False)
    with contextlib.redirect_stdout(sys.stderr):  # the exporter narrates its steps; stdout is for results
        try:
            torch.onnx.export(model, (example,), str(tmp), dynamic_shapes=({0: torch.export.Dim("batch")},),
                              **options)
            batch = "dynamic"
        except Exception:  # noqa: BLE001 - some models will not trace with a symbolic batch
            torch.onnx.export(model, (example,), str(tmp), **options)
            batch = f"fixed at {example.shape[0]}"
    import onnx

    onnx.checker.check_model(str(tmp), full_check=True)
    return batch


def _run_exported(fmt: str, path: Path, x: torch.Tensor) -> torch.Tensor | None:
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path), map_location="cpu")(x)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def export_student(home: Path, run_id: str, out: Path | str, fmt: str, store: Store | None = None) -> dict[str, Any]:
    """Write run ``run_id``'s student to ``out`` as pt, torchscript or onnx; returns what was written."""
    if fmt not in FORMATS:
        raise ExportError(f"format: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    own = store is None
    store = store or Store(home, readonly=True)
    try:
        run = _finished_run(store, run_id)
    finally:
        if own:
            store.close()
    out = Path(out).expanduser()
    if out.is_dir():
        raise ExportError(f"output: {out} is a folder; give a file name such as {out / ('student' + EXTENSIONS[fmt])}")
    if not out.parent.is_dir():
        raise ExportError(f"output: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise ExportError(f"output: folder {out.parent} is not writable")
    source = ensure_student_file(home, run)
    summary: dict[str, Any] = {"run_id": run_id, "format": fmt, "file": str(out)}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        if fmt == "pt":
            shutil.copyfile(source, tmp)
        else:
            payload = read_student(source)
            model = student_model(payload)
            example = _example_input(payload["card"])
            with _quiet_exporters():
                try:
                    if fmt == "torchscript":
                        _write_torchscript(model, example, tmp)
                    else:
                        summary["batch"] = _write_onnx(model, example, tmp)
                except OSError:
                    raise
                except Exception as err:  # noqa: BLE001 - tracing/exporting raises many types
                    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    raise ExportError(f"{fmt}: {payload['card']['arch']} could not be exported ({first})") from err
                summary.update(_verify(fmt, tmp, model, payload["card"], summary.get("batch", "dynamic")))
        os.replace(tmp, out)
    except OSError as err:
        raise ExportError(f"output: cannot write {out} ({err.strerror or err})") from None
    finally:
        tmp.unlink(missing_ok=True)
    summary["bytes"] = out.stat().st_size
    return summary


def _verify(fmt: str, path: Path, model: nn.Module, card: dict[str, Any], batch: str) -> dict[str, Any]:
    """The exported model's logits against PyTorch's on a seeded batch; raises when they differ."""
    x = _example_input(card, batch=3 if batch == "dynamic" else 2)
    with torch.no_grad():
        expected = model(x)
    got = _run_exported(fmt, path, x)
    if got is None:
        return {"verified": False}
    diff = float((got - expected).abs().max())
    if not diff <= EXPORT_TOLERANCE:
        raise ExportError(f"{fmt}: the exported model's logits differ from PyTorch's by {diff:.2e} "
                          f"(more than {EXPORT_TOLERANCE:g})")
    return {"verified": True, "max_abs_diff": diff}


# ------------------------------------------------------------------ the job (dashboard downloads)
def exports_dir(home: Path, run_id: str) -> Path:
    return run_dir(Path(home), run_id) / "exports"


def export_job(store: Store, job: JobRow, progress: Callable[[float], None]) -> dict[str, Any]:
    """Job handler: params {"format"} -> the run's student in that format under runs/<id>/exports/."""
    fmt = job.params.get("format", "pt")
    if fmt not in FORMATS:
        raise ExportError(f"format: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    run = _finished_run(store, job.run_id)
    if fmt == "pt":
        path = ensure_student_file(store.home, run)
        return {"run_id": run.id, "format": fmt, "file": str(path), "bytes": path.stat().st_size}
    folder = exports_dir(store.home, job.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    progress(0.1)
    return export_student(store.home, job.run_id, folder / f"student{EXTENSIONS[fmt]}", fmt, store=store)
