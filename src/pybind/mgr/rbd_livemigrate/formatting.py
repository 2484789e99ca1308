"""
Every reply as text: JSON, pretty JSON, YAML or plain.

``views.py`` builds each kind of reply as data; here each kind has its one
plain renderer: the replies of the commands that change something
(``reply``: a task, a batch, a dry run, a refusal, ``rm``, the queue's
pause), ``ls`` (``task_rows``, ``batch_ls_line``) and ``status``
(``status_text``, ``batch_text``).
"""

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import InvalidArgument

FORMATS = ('plain', 'json', 'json-pretty', 'yaml')


def check_format(fmt: Optional[str]) -> str:
    fmt = fmt or 'plain'
    if fmt not in FORMATS:
        raise InvalidArgument('unknown format {!r}: use one of {}'.format(fmt, ', '.join(FORMATS)))
    return fmt


def dump(data: Any, fmt: str) -> str:
    if fmt == 'json-pretty':
        return json.dumps(data, indent=4, sort_keys=True)
    if fmt == 'yaml':
        try:
            import yaml
        except ImportError:
            raise InvalidArgument('--format yaml needs python3-yaml on the mgr hosts: use json')
        return str(yaml.safe_dump(data, default_flow_style=False, sort_keys=True))
    return json.dumps(data, sort_keys=True)


# -- replies of the commands that change something ---------------------------

def _next_step(v: Dict[str, Any]) -> str:
    """What happens next to a task, and the command that moves it on."""
    tid = v.get('id')
    if v.get('action'):
        return str(v['action'])
    state = v.get('state')
    if state == 'committed':
        return 'done'
    if state == 'aborted':
        return 'aborted: {}'.format(v.get('error') or 'cancelled')
    if state == 'failed':
        return 'failed: {}; ceph rbd livemigrate retry {} or cancel {}'.format(
            v.get('error'), tid, tid)
    if v.get('paused'):
        return 'paused: ceph rbd livemigrate resume {}'.format(tid)
    why = v.get('blocked_reason') or v.get('waiting_reason')
    if why:
        return str(why)
    if v.get('running'):
        return 'running: ceph rbd livemigrate status {}'.format(tid)
    return 'see ceph rbd livemigrate status {}'.format(tid)


def _removed_text(data: Dict[str, Any]) -> str:
    """``rm`` (views.removed_entry)."""
    return 'removed {} task(s){}\n'.format(data['removed_tasks'], ' and batch {}'.format(
        data['removed_batch']) if data.get('removed_batch') else '')


def _queue_text(data: Dict[str, Any]) -> str:
    """``pause``/``resume`` of the queue (views.queue_entry)."""
    return 'queue {}\n'.format('paused' if data['queue_paused'] else 'resumed')


def _dry_run_text(data: Dict[str, Any]) -> str:
    """``add``/``import``/``add-pool --dry-run``, one image (views.dry_run_report)."""
    head = 'dry run {} -> {}'.format(data.get('source', 'import'), data.get('destination'))
    blockers = data.get('blockers') or []
    if not blockers:
        size = data.get('size_bytes')
        return '{}: ok{}\n'.format(head, ' ({})'.format(human_bytes(size))
                                   if size is not None else '')
    return '{}: {} blocker(s)\n'.format(head, len(blockers)) + ''.join(
        '  {}: {}{}\n'.format(b.get('error'), b.get('message'),
                              ' (the task would wait)' if b.get('can_wait') else '')
        for b in blockers)


def _refusal_text(data: Dict[str, Any]) -> str:
    """An image ``add-pool --dry-run`` refused (views.refusal_entry)."""
    return '{} -> {}: refused: {}\n'.format(data.get('source'), data.get('destination'),
                                            data['error'])


def _batch_line(data: Dict[str, Any]) -> str:
    """A batch a command returned (views.Views.batch_json)."""
    line = 'batch {}: {} {} -> {}: {} task(s), {} committed'.format(
        data['id'], data.get('state'), data.get('source'), data.get('destination'),
        data.get('tasks', 0), data.get('committed', 0))
    return '{}; {}\n'.format(line, data.get('action') or
                             'ceph rbd livemigrate status {}'.format(data['id']))


def _task_line(data: Dict[str, Any]) -> str:
    """A task a command returned (views.Views.task_json)."""
    return 'task {}: {} {} -> {}: {}\n'.format(
        data['id'], data['state'], data.get('source'), data.get('destination'),
        _next_step(data))


# each kind of reply of the commands that change something, known by its
# keys, and its one line of plain text; the first that matches renders it
_KINDS: List[Tuple[Callable[[Dict[str, Any]], bool], Callable[[Dict[str, Any]], str]]] = [
    (lambda d: 'removed_tasks' in d, _removed_text),
    (lambda d: 'queue_paused' in d, _queue_text),
    (lambda d: bool(d.get('dry_run')), _dry_run_text),
    (lambda d: 'errno' in d and 'error' in d, _refusal_text),
    (lambda d: str(d.get('id', '')).startswith('batch-'), _batch_line),
    (lambda d: 'id' in d and 'state' in d, _task_line),
]


def _plain(data: Any) -> str:
    if isinstance(data, list):
        return ''.join(_plain(d) for d in data)
    if not isinstance(data, dict):
        return '{}\n'.format(data)
    for matches, render in _KINDS:
        if matches(data):
            return render(data)
    return dump(data, 'json-pretty') + '\n'


def reply(result: Tuple[int, str, str], fmt: Optional[str]) -> Tuple[int, str, str]:
    """A command's result in the format asked for: one renderer for every
    reply of the commands that change something.  The commands give their
    record as JSON; plain is a short human line per task or batch."""
    r, out, err = result
    fmt = check_format(fmt)
    if not out or fmt == 'json':
        return r, out, err
    try:
        data = json.loads(out)
    except ValueError:
        return r, out, err
    return r, (_plain(data) if fmt == 'plain' else dump(data, fmt)), err


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [['-' if c is None else str(c) for c in r]
                                           for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return '\n'.join(lines) + '\n'


def human_bytes(n: Optional[float]) -> str:
    if n is None:
        return '-'
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(n) < 1024 or unit == 'TiB':
            return '{:.0f} {}'.format(n, unit) if unit == 'B' else '{:.1f} {}'.format(n, unit)
        n /= 1024.0
    return '{:.1f} PiB'.format(n)


def human_duration(seconds: float) -> str:
    """'1h02m03s', '4m05s', '12s'."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return '{}h{:02d}m{:02d}s'.format(h, m, sec)
    if m:
        return '{}m{:02d}s'.format(m, sec)
    return '{}s'.format(sec)


def task_rows(views: List[Dict[str, Any]]) -> str:
    rows = []
    for v in views:
        note = v.get('error') or v.get('blocked_reason') or v.get('waiting_reason') or ''
        if v.get('paused') and not note.startswith('paused'):
            note = 'paused' + ('; ' + note if note else '')
        if v.get('cancel_requested') and v['state'] not in ('aborted', 'failed'):
            note = 'cancelling: aborting the migration'
        rows.append([v.get('id') or '(orphan)', v['state'], '{:.0%}'.format(v['progress']),
                     v['source'], v['destination'], note[:80]])
    return table(['ID', 'STATE', 'PROGRESS', 'SOURCE', 'DESTINATION', 'NOTE'], rows)


def batch_ls_line(v: Dict[str, Any]) -> str:
    """A batch not yet finished, under ``ls``'s task table."""
    return 'batch {}: {} -> {}: {} task(s), {} committed, {} refused{} (status {})\n'.format(
        v['id'], v['source'], v['destination'], v['tasks'], v['committed'],
        v['refused_count'], ', listing' if v['state'] == 'expanding' else '', v['id'])


def status_text(v: Dict[str, Any]) -> str:
    keys = ['id', 'state', 'source', 'source_image_id', 'destination', 'dest_image_id',
            'cancel_requested', 'progress', 'bytes_copied', 'size_bytes',
            'rate_bytes_per_sec', 'eta_seconds', 'priority', 'manual_commit', 'paused',
            'blocked_reason', 'waiting_reason', 'error', 'attempts', 'next_retry', 'created',
            'started', 'finished', 'added_by', 'layout', 'manual_cutover', 'cutover_ms', 'verify',
            'verification']
    lines = []
    for k in keys:
        if k not in v:
            continue
        val = v[k]
        if k == 'progress':
            val = '{:.1%}'.format(val)
        elif k in ('bytes_copied', 'size_bytes'):
            val = human_bytes(val)
        elif k == 'rate_bytes_per_sec':
            val = human_bytes(val) + '/s' if val else '-'
        elif k == 'eta_seconds' and val is not None:
            val = human_duration(val)
        elif k == 'layout':
            val = ', '.join('{}={}'.format(a, b) for a, b in sorted(val.items())) or 'unchanged'
        elif k == 'verification' and val:
            val = verification_text(val)
        lines.append('{:<20} {}'.format(k + ':', '-' if val is None else val))
    return '\n'.join(lines) + '\n'


def verification_text(v: Dict[str, Any]) -> str:
    """One line: result, what was compared, how much, how long, and why not more."""
    done = human_bytes(v.get('bytes_compared'))
    total = human_bytes(v.get('bytes_total'))
    text = '{} ({}): {} of {} in {:.1f}s; compared {}'.format(
        v.get('result'), v.get('mode'), done, total, v.get('seconds') or 0.0,
        ', '.join(v.get('compared') or []) or 'nothing')
    if v.get('mismatch'):
        text += '; first difference: {}'.format(v['mismatch'])
    if v.get('note'):
        text += '; {}'.format(v['note'])
    return text


def batch_text(v: Dict[str, Any]) -> str:
    """``status <batch>`` as text."""
    pattern = ' ({})'.format(v['pattern']) if v['pattern'] else ''
    lines = ['batch {}: {} -> {}{}'.format(v['id'], v['source'], v['destination'], pattern),
             'state: {}{}{}'.format(v['state'], ', paused' if v['paused'] else '',
                                    ', finished' if v['finished'] else ''),
             'images: {} listed, {} task(s), {} refused'.format(
                 v['images'], v['tasks'], v['refused_count']),
             'progress: {:.0%} ({})'.format(v['progress'], ', '.join(
                 '{} {}'.format(n, s) for s, n in sorted(v['by_state'].items())) or 'none')]
    for r in v['refused'][:20]:
        lines.append('  refused {}: {}'.format(r['source'], r['message']))
    if v['refused_count'] > 20:
        lines.append('  ... {} more: see --format json'.format(v['refused_count'] - 20))
    return '\n'.join(lines) + '\n'
