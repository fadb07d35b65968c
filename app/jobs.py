"""Jobs from the pages: short work a worker does on request (attribution maps, teacher checks).

Submitting a job is a write (``app.writes.submit_job``, ``submit_teacher_check``); this module is
the read side: it opens the store read-only, and ``job_progress`` polls a job in a fragment and
reruns the page when it ends.
"""
from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import streamlit as st

from engine.store import JobRow, Store

ACTIVE = ("queued", "running")


def _reader(home: str) -> closing[Store]:
    return closing(Store(Path(home), readonly=True))


def latest_job(home: str, run_id: str, kind: str, **params: Any) -> JobRow | None:
    """The newest job of a kind whose params include ``params``."""
    with _reader(home) as store:
        for job in store.list_jobs(run_id, kind):
            if all(job.params.get(name) == value for name, value in params.items()):
                return job
    return None


def get_job(home: str, job_id: str) -> JobRow | None:
    with _reader(home) as store:
        return store.get_job(job_id)


def job_progress(home: str, job_id: str, what: str) -> None:
    """Progress of a queued or running job, polled every two seconds; reruns the page when it ends."""

    @st.fragment(run_every=2)
    def poll() -> None:
        job = get_job(home, job_id)
        if job is None or job.status not in ACTIVE:
            st.rerun(scope="app")
            return
        label = (f"{what}: waiting for a worker…" if job.status == "queued"
                 else f"{what}: {job.progress:.0%}")
        st.progress(min(max(float(job.progress), 0.0), 1.0), text=label)

    poll()


def job_failed(job: JobRow, what: str) -> None:
    st.error(f"{what} failed: {job.error or job.status}", icon=":material/error:")
