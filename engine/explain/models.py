"""The models of a run as plain eval-mode modules returning logits: the student at a saved checkpoint and
its teachers (from the workspace's teacher cache, a checkpoint file or another run, as the spec says).

Model ids: "student" and "teacher:<id>" (a teacher may be called "student" in a spec).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from engine.models import build_model
from engine.models.checkpoint import load_weights
from engine.models.spots import list_spots, spot_nodes, tracer_kwargs
from engine.models.weights import load_source, weights_file
from engine.runner import teacher_cache_path
from engine.spec import RunSpec, TeacherSpec, TrainSource
from engine.workspace import run_dir, run_final_checkpoint

STUDENT = "student"
TEACHER_PREFIX = "teacher:"
# Only these names are accepted, so a checkpoint name can never point outside the run's folder.
CHECKPOINT_NAME = re.compile(r"^(final|epoch_\d{3,})$")


def teacher_model_id(tid: str) -> str:
    return TEACHER_PREFIX + tid


def model_ids(spec: RunSpec) -> list[str]:
    return [STUDENT, *(teacher_model_id(t.id) for t in spec.teachers)]


def arch_of(spec: RunSpec, model_id: str) -> tuple[str, dict]:
    if model_id == STUDENT:
        return spec.student.arch, spec.student.arch_params
    tspec = _teacher_spec(spec, model_id)
    return tspec.arch, tspec.arch_params


def _teacher_spec(spec: RunSpec, model_id: str) -> TeacherSpec:
    tid = model_id.removeprefix(TEACHER_PREFIX)
    for tspec in spec.teachers:
        if tspec.id == tid and model_id.startswith(TEACHER_PREFIX):
            return tspec
    raise ValueError(f"model: {model_id!r} is neither the student nor a teacher of the run "
                     f"(models: {', '.join(model_ids(spec))})")


# ------------------------------------------------------------------ checkpoints
def checkpoint_dir(home: Path, run_id: str) -> Path:
    return run_dir(home, run_id) / "checkpoints"


def epoch_checkpoints(home: Path, run_id: str) -> list[str]:
    """The run's per-epoch checkpoint names (epoch_000, ...) in epoch order."""
    names = [p.stem for p in checkpoint_dir(home, run_id).glob("epoch_*.pt") if CHECKPOINT_NAME.match(p.stem)]
    return sorted(names, key=epoch_of)


def epoch_of(checkpoint: str) -> int:
    return int(checkpoint.removeprefix("epoch_"))


def checkpoint_path(home: Path, run_id: str, checkpoint: str) -> Path:
    """The file of a saved checkpoint; a bad or missing name raises listing the available ones."""
    path = checkpoint_dir(home, run_id) / f"{checkpoint}.pt"
    if not isinstance(checkpoint, str) or not CHECKPOINT_NAME.match(checkpoint) or not path.is_file():
        available = epoch_checkpoints(home, run_id)
        if (checkpoint_dir(home, run_id) / "final.pt").is_file():
            available.append("final")
        raise ValueError(f"checkpoint: run {run_id} has no checkpoint {checkpoint!r} "
                         f"(available: {', '.join(available) or 'none yet'})")
    return path


# ------------------------------------------------------------------ models
def load_model(home: Path, run_id: str, spec: RunSpec, model_id: str, checkpoint: str,
               shape: tuple[int, int, int], classes: int) -> nn.Module:
    """The student at `checkpoint`, or a teacher (teachers are frozen: the checkpoint does not matter)."""
    arch, params = arch_of(spec, model_id)
    # Building draws initial weights from the global RNG; they are overwritten, so keep the RNG untouched.
    with torch.random.fork_rng(devices=[]):
        model = build_model(arch, classes, shape[0], shape[1], params)
    if model_id == STUDENT:
        load_weights(model, checkpoint_path(home, run_id, checkpoint))
    else:
        tspec = _teacher_spec(spec, model_id)
        path = teacher_weights(home, spec, tspec)  # raises naming the teacher when its weights are gone
        if isinstance(tspec.source, TrainSource):
            load_weights(model, path)
        else:  # the run's own loader: same prefixes, head check and published-weight conversion
            load_source(model, arch, tspec.source, "teacher", lambda run_id: run_final_checkpoint(home, run_id))
    return _for_attribution(model)


def teacher_weights(home: Path, spec: RunSpec, tspec: TeacherSpec) -> Path:
    """Where the teacher's weights are; raises naming the teacher when they are gone."""
    source = tspec.source
    if isinstance(source, TrainSource):
        path = teacher_cache_path(tspec, spec, home)
        hint = "the workspace's teacher cache was cleared or the run trained on another device; rerun the spec"
    elif source.kind == "checkpoint":
        path, hint = Path(source.path), "the checkpoint file was moved or deleted"
    elif source.kind == "pretrained":
        path = weights_file(tspec.arch, source, lambda run_id: Path())  # raises naming the file when it is absent
        hint = "the weights file was moved or deleted"
    else:
        path = run_dir(home, source.run_id) / "checkpoints" / "final.pt"
        hint = f"run {source.run_id} has no final model"
    if not path.is_file():
        raise ValueError(f"teacher {tspec.id}: weights {path} not found ({hint})")
    return path


def _for_attribution(model: nn.Module) -> nn.Module:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)  # maps need input gradients only
    for module in model.modules():
        # Guided backprop and layer hooks replace ReLU gradients; an in-place ReLU would overwrite the
        # tensor those hooks hold.
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model


def spot_layer(model: nn.Module, arch: str, params: dict, spot: str, shape: tuple[int, int, int],
               classes: int, model_id: str) -> nn.Module:
    """The module whose output is feature-map `spot` (for layer methods); raises naming the model and spot."""
    infos = {s.name: s for s in list_spots(arch, shape, classes, params)}
    maps = [name for name, info in infos.items() if info.kind == "feature_map"]
    if spot not in maps:
        raise ValueError(f"spot: {model_id} ({arch}) has no feature-map spot {spot!r} "
                         f"(feature-map spots: {', '.join(maps) or 'none'})")
    node_name = spot_nodes(arch, model)[spot]
    try:  # spot nodes are usually the qualified name of the module that computes them
        return model.get_submodule(node_name)
    except AttributeError:
        pass
    # Otherwise the traced node may still be a module call (a leaf inside the model).
    graph = create_feature_extractor(model, return_nodes=[node_name], tracer_kwargs=tracer_kwargs(arch)).graph
    node = next(n for n in graph.nodes if n.op == "output").args[0][node_name]
    if node.op != "call_module":
        raise ValueError(f"spot: {model_id} ({arch}) spot {spot!r} is computed by a function, not a module; "
                         f"choose another of {', '.join(maps)}")
    return model.get_submodule(node.target)


def default_spot(arch: str, params: dict, shape: tuple[int, int, int], classes: int) -> str | None:
    """The last feature-map spot (the usual Grad-CAM layer), or None for models without one."""
    maps = [s.name for s in list_spots(arch, shape, classes, params) if s.kind == "feature_map"]
    return maps[-1] if maps else None
