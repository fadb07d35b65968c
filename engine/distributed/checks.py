"""What a DDP run needs of the machine and of the spec, checked before any process starts (and again per rank).

Light on purpose (torch and the spec only): the launching process checks without loading the training engine.
"""
from __future__ import annotations

import os

import torch

from engine.spec import RunSpec, SpecError

#: weightings and methods whose state DDP would let drift apart, refused with the reason
UNSUPPORTED_WEIGHTINGS = {
    "gradnorm": "its own learner steps on this process's gradient norms, which would differ between processes",
}
UNSUPPORTED_METHODS = {
    "sakd": "its agent trains on an optimizer of its own, outside DDP's gradient averaging",
}


def uses_gpus(spec: RunSpec) -> bool:
    """Whether the ranks take one GPU each (NCCL) rather than CPU processes (gloo)."""
    return torch.cuda.is_available() and spec.device != "cpu"


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def devices_present(gpus: bool | None = None) -> tuple[int, str]:
    """(how many processes this machine can host, what they are): GPUs when CUDA is present (or ``gpus``), else
    CPU cores."""
    if torch.cuda.is_available() if gpus is None else gpus:
        return torch.cuda.device_count(), "GPU(s)"
    return cpu_cores(), "CPU core(s)" + ("" if torch.cuda.is_available() else ", no GPU")


def check_distributed(spec: RunSpec, nproc: int) -> None:
    """SpecError naming distributed.nproc when it exceeds the devices present, or the parts DDP would get wrong."""
    count, kind = devices_present(uses_gpus(spec))
    errors = []
    if nproc > count:
        errors.append(f"distributed.nproc: {nproc} processes asked for, but this machine has {count} {kind}; "
                      f"set distributed.nproc to at most {count}")
    errors += distributed_errors(spec)
    if errors:
        raise SpecError(errors)


def distributed_errors(spec: RunSpec) -> list[str]:
    """One 'field: problem' line for each part of the spec a DDP run would get wrong."""
    errors = []
    if spec.weighting.name in UNSUPPORTED_WEIGHTINGS:
        errors.append(f"weighting.name: {spec.weighting.name} cannot run with distributed.nproc > 1: "
                      f"{UNSUPPORTED_WEIGHTINGS[spec.weighting.name]}")
    if spec.weighting.name == "mgda" and spec.weighting.params.get("space") == "logits":
        errors.append("weighting.params.space: mgda's 'logits' space cannot run with distributed.nproc > 1: its "
                      "gradients are per sample of each process's slice (use space 'params')")
    if spec.method is not None and spec.method.name in UNSUPPORTED_METHODS:
        errors.append(f"method.name: {spec.method.name} cannot run with distributed.nproc > 1: "
                      f"{UNSUPPORTED_METHODS[spec.method.name]}")
    return errors
