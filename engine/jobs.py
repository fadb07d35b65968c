"""Jobs: short work on an existing run (attribution maps, ...), queued in the store and run by workers.

A job kind is one handler registered in JOBS (engine/job_registry.py): ``handler(store, job, progress) -> result dict``.
Handlers must be idempotent (a job whose worker died is simply run again) and cache what
they compute as artifacts of the run.
"""
from __future__ import annotations

import logging
import traceback
from typing import Any

from engine.job_registry import JOBS, JobHandler
from engine.store import JobRow, Store

log = logging.getLogger("pathscope.jobs")


def execute_job(store: Store, job: JobRow) -> dict[str, Any] | None:
    """Run a claimed job and record how it ended; returns its result when done."""
    handler: JobHandler = JOBS.get(job.kind)
    try:
        result = handler(store, job, lambda fraction: store.update_job_progress(job.id, fraction))
    except Exception as err:  # noqa: BLE001 - a worker must survive any job
        message = str(err) if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: {err}"
        log.error("job %s failed: %s\n%s", job.id, message, traceback.format_exc())
        store.finish_job(job.id, "failed", error=message)
        return None
    store.finish_job(job.id, "done", result=result)
    return result


from engine.explain import job as explain_jobs  # noqa: E402,F401  (registers the explain jobs)
from engine import export as _export, teacher_check as _teacher_check  # noqa: E402

JOBS.register(_teacher_check.JOB_KIND, "test accuracy of each teacher of a spec, before launch (run_id '')")(
    _teacher_check.teacher_check_job)
JOBS.register("export", "a finished run's student as pt, torchscript or onnx under runs/<id>/exports/")(
    _export.export_job)
