"""
Health checks, rebuilt whole on every pass (a pure function of the tasks).
"""

from typing import Any, Dict, Iterable, List

from .task import State, Task

MAX_DETAIL = 50

HealthChecks = Dict[str, Dict[str, Any]]


def _check(summary: str, detail: List[str]) -> Dict[str, Any]:
    shown = detail[:MAX_DETAIL]
    if len(detail) > MAX_DETAIL:
        shown.append('... and {} more'.format(len(detail) - MAX_DETAIL))
    return {'severity': 'warning', 'summary': summary, 'count': len(detail), 'detail': shown}


def build_checks(tasks: Iterable[Task], now: float, stall_warn_seconds: float,
                 blocked_warn_seconds: float, skipped_records: int = 0,
                 queue_blocked_reason: str = '') -> HealthChecks:
    failed: List[str] = []
    stalled: List[str] = []
    blocked: List[str] = []
    for t in tasks:
        if t.state == State.FAILED:
            failed.append('task {} ({} -> {}) failed: {}'.format(
                t.id, t.source, t.destination, t.error))
        elif (t.state == State.EXECUTING and stall_warn_seconds > 0
              and t.last_progress_at is not None
              and now - t.last_progress_at > stall_warn_seconds and not t.paused
              and not t.blocked_reason):
            stalled.append('task {} ({} -> {}) made no progress for {:.0f}s at {:.0%}'.format(
                t.id, t.source, t.destination, now - t.last_progress_at, t.progress))
        if (t.blocked_reason and t.blocked_since is not None and not t.done
                and blocked_warn_seconds >= 0 and now - t.blocked_since >= blocked_warn_seconds):
            blocked.append('task {} ({} -> {}) blocked for {:.0f}s: {}'.format(
                t.id, t.source, t.destination, now - t.blocked_since, t.blocked_reason))
    checks: HealthChecks = {}
    if failed:
        checks['RBD_LIVEMIGRATE_FAILED'] = _check(
            '{} RBD live migration(s) failed'.format(len(failed)), failed)
    if stalled:
        checks['RBD_LIVEMIGRATE_STALLED'] = _check(
            '{} RBD live migration(s) stalled'.format(len(stalled)), stalled)
    if blocked:
        checks['RBD_LIVEMIGRATE_BLOCKED'] = _check(
            '{} RBD live migration(s) blocked'.format(len(blocked)), blocked)
    if skipped_records:
        checks['RBD_LIVEMIGRATE_BAD_RECORD'] = _check(
            '{} stored rbd_livemigrate task record(s) unreadable'.format(skipped_records),
            ['see the mgr log; inspect with ceph config-key ls | grep rbd_livemigrate'])
    return checks
