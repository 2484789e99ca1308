"""Output of the read commands: JSON, pretty JSON or a plain table."""

import json
from typing import Any, Dict, List, Optional, Sequence

from .errors import InvalidArgument

FORMATS = ('plain', 'json', 'json-pretty')


def check_format(fmt: Optional[str]) -> str:
    fmt = fmt or 'plain'
    if fmt not in FORMATS:
        raise InvalidArgument('unknown format {!r}: use one of {}'.format(fmt, ', '.join(FORMATS)))
    return fmt


def dump(data: Any, fmt: str) -> str:
    if fmt == 'json-pretty':
        return json.dumps(data, indent=4, sort_keys=True)
    return json.dumps(data, sort_keys=True)


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
