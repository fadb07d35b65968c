"""JOBS, the job-kind registry, in a leaf module.

A job kind is one handler ``handler(store, job, progress) -> result dict``. Modules that define job
kinds (engine/explain/job.py, ...) register them here; engine/jobs.py loads them and runs claimed
jobs. Job modules import this module, never engine/jobs.py, so no module imports one that imports it back.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from engine.registry import Registry

if TYPE_CHECKING:
    from engine.store import JobRow, Store

JobHandler = Callable[["Store", "JobRow", Callable[[float], None]], dict[str, Any]]
JOBS: Registry = Registry("job kind")
