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


def _where(t: Task) -> str:
    """The pools a task touches, never its images: ``ceph health detail``
    is readable with ``mon 'allow r'``, by every tenant and monitoring
    system, while image names, paths, URLs and error texts are each
    tenant's own (``status`` shows them to callers whose caps allow)."""
    dest = t.destination.split('/')[0]
    if t.import_spec is not None:
        return 'import into pool {}'.format(dest)
    src = t.source.split('/')[0]
    return 'pool {}'.format(src) if src == dest else 'pool {} -> {}'.format(src, dest)


def build_checks(tasks: Iterable[Task], now: float, stall_warn_seconds: float,
                 blocked_warn_seconds: float, skipped_records: Optional[Dict[str, str]] = None,
                 queue_note: str = '') -> HealthChecks:
    failed: List[str] = []
    stalled: List[str] = []
    blocked: List[str] = []
    for t in tasks:
        if t.state == State.FAILED:
            failed.append('task {} ({}) failed: see ceph rbd livemigrate status {}'.format(
                t.id, _where(t), t.id))
        elif (t.state == State.EXECUTING and stall_warn_seconds > 0
              and t.last_progress_at is not None
              and now - t.last_progress_at > stall_warn_seconds and not t.paused
              and not t.blocked_reason):
            stalled.append('task {} ({}) made no progress for {:.0f}s at {:.0%}'.format(
                t.id, _where(t), now - t.last_progress_at, t.progress))
        if (t.blocked_reason and t.blocked_since is not None and not t.done
                and not deliberate(t) and blocked_warn_seconds > 0
                and now - t.blocked_since >= blocked_warn_seconds):
            blocked.append('task {} ({}) blocked for {:.0f}s ({}): see ceph rbd livemigrate '
                           'status {}'.format(t.id, _where(t), now - t.blocked_since,
                                              t.blocked_kind or 'waiting', t.id))
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


POOL_FULL = 'POOL_FULL'


def full_pools(osd_map: Dict[str, Any]) -> Dict[str, str]:
    """pool name -> why it is full, from the OSDMap's pool flags (what
    raises POOL_FULL): a quota reached, or no space."""
    out: Dict[str, str] = {}
    for p in (osd_map or {}).get('pools', []) or []:
        flags = set(str(p.get('flags_names', '')).split(','))
        if 'full_quota' in flags:
            out[str(p.get('pool_name'))] = 'pool {} is full (quota reached)'.format(
                p.get('pool_name'))
        elif 'full' in flags:
            out[str(p.get('pool_name'))] = 'pool {} is full (no space)'.format(
                p.get('pool_name'))
    return out


def pool_full_raised(health: Dict[str, Any], triggers: str) -> bool:
    """POOL_FULL is raised and among the checks that hold work: only then
    are the pools' flags worth reading (the OSD map is large)."""
    codes = {c.strip() for c in (triggers or '').split(',') if c.strip()}
    if POOL_FULL not in codes:
        return False
    try:
        data = json.loads(health['json']) if 'json' in health else health
    except (TypeError, ValueError, KeyError):
        return False
    return POOL_FULL in (data.get('checks', {}) or {})


def pool_holds(health: Dict[str, Any], triggers: str,
               full: Dict[str, str]) -> Dict[str, str]:
    """pool -> why work touching it holds: POOL_FULL holds only the tasks
    of the full pools (source, destination or data pool), not the others."""
    if not full or not pool_full_raised(health, triggers):
        return {}
    return {pool: 'cluster health POOL_FULL: {}'.format(why) for pool, why in full.items()}


def health_block(health: Dict[str, Any], triggers: str,
                 per_pool: bool = False) -> Optional[str]:
    """Why the cluster's health pauses the whole queue (None: it does not).

    ``health`` is the mgr's ``get('health')``; ``triggers`` a comma list of
    health check codes, plus ``HEALTH_ERR`` for the overall status.  Our own
    checks never pause the queue; with ``per_pool`` POOL_FULL does not either
    (``pool_holds`` holds the tasks of the full pools).
    """
    codes = {c.strip() for c in (triggers or '').split(',') if c.strip()}
    if per_pool:
        codes.discard(POOL_FULL)
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
        errors = [c for c in checks if checks[c].get('severity') == 'HEALTH_ERR'
                  and not (per_pool and c == POOL_FULL)]
        if not errors and per_pool and POOL_FULL in checks:
            return None
        if not errors or not all(c.startswith('RBD_LIVEMIGRATE') for c in errors):
            return 'cluster is HEALTH_ERR'
    return None
