"""What every executor shares: the error of a launch that cannot start, and what a launch returns."""
from __future__ import annotations

from dataclasses import dataclass, field


class ExecutorError(RuntimeError):
    """A launch that cannot start (an unreachable cluster, resources no node has, storage a node cannot write);
    one line naming what is at fault."""


@dataclass
class Launch:
    """A launched group: its runs, and for a foreground Ray sweep how each ended (run id -> status)."""

    group_id: str
    run_ids: list[str]
    executor: str
    statuses: dict[str, str] = field(default_factory=dict)
    driver_pid: int | None = None  # a Ray driver started in the background (launch with wait=False)
