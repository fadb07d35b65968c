"""Where and how a run executes, in a neutral home: the device, and the exceptions that end a run.

Raised by the training loop and the reporters, caught by the worker; none of them needs the loop itself.
"""
from __future__ import annotations

import torch


class RunCancelled(Exception):
    """The user asked to stop; the run ends `cancelled` with its last checkpoint."""


class RunInterrupted(Exception):
    """The process is stopping on purpose (SIGTERM, Ctrl-C): a worker hands the run back to the queue, a foreground
    run ends `interrupted`; either resumes from the last checkpoint."""


class LostClaim(Exception):
    """Another attempt owns the run now (this one was paused past the grace and reclaimed): stop at once and write
    nothing more; the run's state is the new owner's to record."""


class NonFiniteLoss(Exception):
    def __init__(self, phase: str, step: int, term: str, value: float) -> None:
        self.phase, self.step, self.term = phase, step, term
        super().__init__(f"loss term '{term}' became {value} at step {step} ({phase})")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device: {name!r} was asked for but CUDA is not available on this machine")
    return torch.device(name)
