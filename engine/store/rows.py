"""What the Store hands out: a run's row, a stored array, a job's row, and the run ids it makes."""
from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

#: what new_run_id makes: the only run ids a path may be built from (engine.catalog checks ids it is given)
RUN_ID_PATTERN = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def is_run_id(text: str) -> bool:
    return isinstance(text, str) and RUN_ID_PATTERN.fullmatch(text) is not None


@dataclass(frozen=True)
class RunRow:
    id: str
    name: str
    group_id: str | None
    spec_yaml: str
    status: str
    phase: str
    progress: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    worker_id: str | None
    attempts: int
    cancel_requested: int
    error: str | None
    result_json: str | None
    attempt_token: str | None  # set by each claim; a worker's writes hold only while it matches
    placement_json: str | None = None  # see `placement`

    @property
    def result(self) -> dict[str, Any]:
        return json.loads(self.result_json) if self.result_json else {}

    @property
    def placement(self) -> dict[str, Any] | None:
        """Where the run executes: executor ("local" | "ray"), node, devices ("cpu", "cuda:0"), pid; for a Ray
        run also trial_id, ip and gpu_ids once its trial started, and address/storage from its launch. None:
        recorded by no executor (a run of before schema version 3, or one not started)."""
        return json.loads(self.placement_json) if self.placement_json else None

    @property
    def executor(self) -> str:
        return (self.placement or {}).get("executor", "local")


@dataclass(frozen=True)
class StoredArray:
    phase: str
    step: int
    epoch: int
    values: np.ndarray  # (B, ...)
    index: np.ndarray  # (B,) sample ids
    columns: list[str] | None  # names along the last axis, when recorded

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "StoredArray":
        values = np.frombuffer(row["data"], dtype=row["dtype"]).reshape(json.loads(row["shape"]))
        index = np.frombuffer(row["sample_index"], dtype=np.int64)
        columns = json.loads(row["columns"]) if row["columns"] else None
        return cls(row["phase"], row["step"], row["epoch"], values, index, columns)


@dataclass(frozen=True)
class JobRow:
    id: str
    run_id: str
    kind: str
    params_json: str
    status: str
    progress: float
    created_at: float
    finished_at: float | None
    worker_id: str | None
    error: str | None
    result_json: str | None

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    @property
    def result(self) -> dict[str, Any]:
        return json.loads(self.result_json) if self.result_json else {}
