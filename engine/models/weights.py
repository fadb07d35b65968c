"""Initial weights of a teacher or a student from its spec source: one loader for the runner, validation and
the attribution models, so each loads the same weights the same way.

- checkpoint: a file (see engine.models.checkpoint for the formats);
- run: the final model of a finished run of the workspace (the caller says where that file is);
- pretrained: the published weights of a torchvision:/timm: model, from the library's download cache or a
  local copy (``source.path``); RGB input convolutions are adapted to the dataset's channels;
- scratch (students) and train (teachers): nothing to load here.

A teacher must predict the dataset's classes, so a classifier of another size is refused naming both class
counts; a student's is replaced by a freshly initialised one, and the returned note says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

from torch import nn

from engine.models.checkpoint import HeadChange, load_state, read_state_dict
from engine.models.published_weights import filter_pretrained, pretrained_file

Role = Literal["teacher", "student"]


def weights_file(arch: str, source, run_file: Callable[[str], Path]) -> Path | None:
    """The file a source loads from (None for scratch and train sources); raises ValueError when it cannot be had
    (a pretrained file absent while offline names the file and where to put it)."""
    kind = getattr(source, "kind", None)
    if kind == "checkpoint":
        return Path(source.path)
    if kind == "run":
        return run_file(source.run_id)
    if kind == "pretrained":
        return Path(source.path) if source.path else pretrained_file(arch)
    return None


def load_source(model: nn.Module, arch: str, source, role: Role, run_file: Callable[[str], Path]
                ) -> tuple[str | None, HeadChange | None]:
    """Load the weights ``source`` names into ``model``: (what was loaded, for an event; the head change, if any).

    Raises ValueError (CheckpointError, FamilyError) with a message naming the file and what does not fit.
    """
    path = weights_file(arch, source, run_file)
    if path is None:
        return None, None
    pretrained = source.kind == "pretrained"
    state = read_state_dict(path)
    if pretrained:
        state = filter_pretrained(arch, model, state)
    what = {"checkpoint": f"checkpoint {path}", "run": f"the final model of run {getattr(source, 'run_id', '')} "
                                                          f"({path})",
            "pretrained": f"the published weights of {arch} ({path})"}[source.kind]
    change = load_state(model, state, what, arch=arch, head="replace" if role == "student" else "keep",
                        adapt_input=pretrained)
    return f"loaded {what}", change
