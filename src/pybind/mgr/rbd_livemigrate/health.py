"""
Health checks, rebuilt whole on every pass (a pure function of the tasks).
"""

import json
from typing import Any, Dict, Iterable, List, Optional

from .hold import HoldKind
from .task import State, Task

MAX_DETAIL = 50

HealthChecks = Dict[str, Dict[str, Any]]


def deliberate(task: Task) -> bool:
    """A hold the operator asked for (pause, maintenance window): not a warning."""
    if task.blocked_kind is None:
        return False
    try:
        return HoldKind(task.blocked_kind).deliberate
    except ValueError:
        return False


def _check(summary: str, detail: List[str]) -> Dict[str, Any]:
    shown = detail[:MAX_DETAIL]
    if len(detail) > MAX_DETAIL:
        shown.append('... and {} more'.format(len(detail) - MAX_DETAIL))
    return {'severity': 'warning', 'summary': summary, 'count': len(detail), 'detail': shown}


def build_checks(tasks: Iterable[Task], now: float, stall_warn_seconds: float,
                 blocked_warn_seconds: float, skipped_records: Optional[Dict[str, str]] = None,
                 queue_note: str = '') -> HealthChecks:
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
                and not deliberate(t) and blocked_warn_seconds > 0
                and now - t.blocked_since >= blocked_warn_seconds):
            blocked.append('task {} ({} -> {}) blocked for {:.0f}s: {}'.format(
                t.id, t.source, t.destination, now - t.blocked_since, t.blocked_reason))
    checks: HealthChecks = {}
    if failed:
        checks['RBD_LIVEMIGRATE_FAILED'] = _check(
            '{} RBD live migration(s) failed'.format(len(failed)), failed)
    if stalled:
        checks['RBD_LIVEMIGRATE_STALLED'] = _check(
            '{} RBD live migration(s) stalled'.format(len(stalled)), stalled)
    if blocked or queue_note:
        summary = '{} RBD live migration(s) blocked'.format(len(blocked))
        if queue_note:
            summary = 'RBD live migration queue held' + (
                ' and {} migration(s) blocked'.format(len(blocked)) if blocked else '')
        checks['RBD_LIVEMIGRATE_BLOCKED'] = _check(
            summary, ([queue_note] if queue_note else []) + blocked)
    if skipped_records:
        checks['RBD_LIVEMIGRATE_BAD_RECORD'] = _check(
            '{} stored rbd_livemigrate task record(s) unreadable'.format(len(skipped_records)),
            ['mgr/rbd_livemigrate/{}: {}'.format(k, why)
             for k, why in sorted(skipped_records.items())])
    return checks


def health_block(health: Dict[str, Any], triggers: str) -> Optional[str]:
    """Why the cluster's health pauses the queue (None: it does not).

    ``health`` is the mgr's ``get('health')``; ``triggers`` a comma list of
    health check codes, plus ``HEALTH_ERR`` for the overall status.  Our own
    checks never pause the queue.
    """
    codes = {c.strip() for c in (triggers or '').split(',') if c.strip()}
    if not codes:
        return None
    try:
        data = json.loads(health['json']) if 'json' in health else health
    except (TypeError, ValueError, KeyError):
        return None
    checks = data.get('checks', {}) or {}
    for code in sorted(checks):
        if code in codes and not code.startswith('RBD_LIVEMIGRATE'):
            summary = checks[code].get('summary', {})
            text = summary.get('message', '') if isinstance(summary, dict) else str(summary)
            return 'cluster health {}: {}'.format(code, text)
    if 'HEALTH_ERR' in codes and data.get('status') == 'HEALTH_ERR':
        errors = [c for c in checks if checks[c].get('severity') == 'HEALTH_ERR']
        if not errors or not all(c.startswith('RBD_LIVEMIGRATE') for c in errors):
            return 'cluster is HEALTH_ERR'
    return None
