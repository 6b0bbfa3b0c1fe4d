"""Worker liveness from the age of its last state report. Pure; the clock is passed in.

ready      reported within READY_S and said isReady
not ready  last report older than READY_S (or isReady false): keeps its session, gets no new slots
removed    last report older than REMOVE_S, or no first report within FIRST_REPORT_S of registering
"""
from __future__ import annotations

import enum

READY_S = 2.0
REMOVE_S = 60.0
FIRST_REPORT_S = 10.0


class Liveness(enum.Enum):
    READY = "ready"
    NOT_READY = "not_ready"
    REMOVED = "removed"


def classify(now: float, registered_at: float, last_report: float | None, is_ready: bool,
             ready_s: float = READY_S, remove_s: float = REMOVE_S,
             first_report_s: float = FIRST_REPORT_S) -> Liveness:
    if last_report is None:
        return Liveness.REMOVED if now - registered_at > first_report_s else Liveness.NOT_READY
    age = now - last_report
    if age > remove_s:
        return Liveness.REMOVED
    if age > ready_s or not is_ready:
        return Liveness.NOT_READY
    return Liveness.READY
