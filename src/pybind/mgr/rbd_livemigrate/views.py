"""
What the commands show, as data: one builder per kind of entry.

- a task (``Views.task``): its record with what the scheduler says of it
  (running, why it waits); every command that returns a task returns this;
- the task list of ``ls --format json`` (``Views.tasks_json``, cached);
- a batch (``Views.batch``): its record and its tasks counted by state;
- a migration with no task (``orphan_entry``) and the command that ends it;
- an ``add --dry-run`` report (``dry_run_report``), an image refused
  (``refusal_entry``), an ``import --dry-run`` report
  (``import_dry_run_report``), the replies of ``rm`` and of pausing the
  queue (``removed_entry``, ``queue_entry``).

``formatting.py`` turns these into the format asked for (plain text,
JSON, YAML); nothing else builds a reply.
"""

import errno
import json
from typing import Any, Dict, List, Optional, Set, Tuple

from .batch import Batch
from .errors import Blocked
from .formatting import check_format, dump, table
from .handles import SchedulerHandle
from .interface import ImageInfo, MigrationRef, OrphanKind
from .remote_spec import is_remote_spec, summary
from .source_spec import import_view
from .spec import ImageSpec, Layout
from .table import TaskTable
from .task import Task

# ls --format json: task id -> (record, what ls adds, its text)
_Cached = Tuple[Task, Tuple[bool, Optional[str], Optional[str]], str]


class Views:
    def __init__(self, table: TaskTable, scheduler: SchedulerHandle) -> None:
        self.table = table
        self.scheduler = scheduler
        self._ls_cache: Dict[str, _Cached] = {}

    def task(self, task: Task, running: Optional[Set[str]] = None,
             waiting: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        """A task as ls/status show it; ``running``/``waiting`` from one snapshot."""
        if running is None or waiting is None:
            running, waiting = self.scheduler.run_state()
        v = task.view()
        if task.import_spec is not None:
            import_view(v)
            remote = _remote_spec(task.import_spec)
            if remote is not None:        # holds no secret (remote_spec.check_no_secret)
                v['source'] = summary(remote)
        v['orphan'] = False
        v['running'] = task.id in running
        reason = None if v['running'] else self.scheduler.why(task, running, waiting)
        v['waiting_reason'] = reason
        block = self.scheduler.current_block
        if not v['blocked_reason'] and reason and block is not None and reason == str(block):
            v['blocked_reason'] = reason
        return v

    def task_json(self, task: Task, action: Optional[str] = None) -> str:
        """The reply of a command that returns one task, with what the
        command did to it (``action``: what ``formatting`` shows as its next step)."""
        v = self.task(task)
        if action is not None:
            v['action'] = action
        return dump(v, 'json')

    def tasks_json(self, tasks: List[Task], running: Set[str], waiting: Dict[str, str],
                   orphans: List[Dict[str, Any]]) -> str:
        """``ls --format json``, each task's text kept until its record or
        what ls adds to it changes: at 10,000 tasks, polled every second by
        a dashboard or a script, the module would otherwise spend most of a
        core re-encoding records that did not change."""
        block = self.scheduler.current_block
        shown = str(block) if block is not None else None
        cache: Dict[str, _Cached] = {}
        parts = []
        for t in tasks:
            run = t.id in running
            key = (run, None if run else self.scheduler.why(t, running, waiting), shown)
            hit = self._ls_cache.get(t.id)
            if hit is not None and hit[0] is t and hit[1] == key:
                text = hit[2]
            else:
                text = dump(self.task(t, running, waiting), 'json')
            cache[t.id] = (t, key, text)
            parts.append(text)
        parts += [dump(v, 'json') for v in orphans]
        self._ls_cache = cache
        if not parts:
            return '[]'
        # one allocation of the whole text (megabytes at 10,000 tasks)
        parts[0] = '[' + parts[0]
        parts[-1] = parts[-1] + ']'
        return ', '.join(parts)

    def batch(self, batch: Batch) -> Dict[str, Any]:
        """A batch as status shows it (its tasks counted by state in the table)."""
        return batch.summary_of(self.table.batch_state_counts(batch.id))

    def batch_json(self, batch: Batch, action: Optional[str] = None) -> str:
        """The reply of a command that returns a batch (``action`` as for a task)."""
        v = self.batch(batch)
        if action is not None:
            v['action'] = action
        return dump(v, 'json')


_ORPHAN_TEXT = {
    OrphanKind.MIGRATION: 'a migration without a task: adopt it to run it to commit',
    OrphanKind.HALF_PREPARED: 'a prepare cut short: adopt it to undo it (restores the source)',
    OrphanKind.HALF_COMMITTED: 'a commit cut short (the source is left in the trash): adopt it '
                               'to finish the commit',
    OrphanKind.HALF_ABORTED: 'an abort cut short: adopt it to finish the abort (restores the '
                             'source)',
}


def orphan_command(ref: MigrationRef) -> str:
    """The one command that finishes an orphan."""
    if ref.destination:
        return 'ceph rbd livemigrate adopt {}'.format(ref.destination)
    if ref.kind == OrphanKind.HALF_PREPARED:
        return 'ceph rbd livemigrate adopt {}'.format(ref.source)
    # a commit cut after the source's header went: only the trash entry is left
    pool, ns, _ = ImageSpec.parse(ref.source)
    return 'rbd trash rm {}'.format('/'.join(x for x in (pool, ns, ref.source_image_id) if x))


def orphan_entry(ref: MigrationRef) -> Dict[str, Any]:
    """A migration with no task, as an ``ls`` entry."""
    return {'id': None, 'orphan': True, 'orphan_kind': ref.kind.value,
            'source': ref.source, 'destination': ref.destination or None,
            'source_image_id': ref.source_image_id,
            'dest_image_id': ref.dest_image_id or None,
            'state': 'orphan', 'progress': 0.0, 'error': None, 'created': None,
            'started': None, 'finished': None,
            'blocked_reason': _ORPHAN_TEXT[ref.kind],
            'next_command': orphan_command(ref)}


def queue_entry(paused: bool) -> Dict[str, Any]:
    """``pause``/``resume`` of the whole queue."""
    return {'queue_paused': paused}


def removed_entry(tasks: int, batch_id: Optional[str] = None) -> Dict[str, Any]:
    """``rm``: how many tasks left the history (and the batch, if one did)."""
    d: Dict[str, Any] = {'removed_tasks': tasks}
    if batch_id is not None:
        d['removed_batch'] = batch_id
    return d


def blockers_json(blockers: List[Blocked]) -> List[Dict[str, Any]]:
    return [{'errno': -b.errno, 'error': errno.errorcode.get(b.errno, str(b.errno)),
             'message': str(b), 'can_wait': b.wait} for b in blockers]


def refusal_entry(source: ImageSpec, dest: ImageSpec, r: int, err: str) -> Dict[str, Any]:
    """An image ``add-pool --dry-run`` refused before its checks."""
    return {'source': str(source), 'destination': str(dest), 'errno': r, 'error': err}


def dry_run_report(source: ImageSpec, dest: ImageSpec, layout: Layout,
                   blockers: List[Blocked], info: Optional[ImageInfo]) -> Dict[str, Any]:
    """``add --dry-run``: what would block the task, and the source's size."""
    report: Dict[str, Any] = {
        'dry_run': True, 'source': str(source), 'destination': str(dest),
        'layout': layout.to_json(), 'blockers': blockers_json(blockers), 'ok': not blockers}
    if info is not None:
        report['size_bytes'] = info.size
        report['used_bytes'] = info.used_bytes
    return report


def import_dry_run_report(dest: ImageSpec, redacted: Dict[str, Any], layout: Layout,
                          sizes: Dict[str, int]) -> Dict[str, Any]:
    """``import --dry-run``: the source-spec as stored (no credentials) and
    the size of each stream (``head``: the image's)."""
    return {'dry_run': True, 'destination': str(dest), 'ok': True, 'import': redacted,
            'layout': layout.to_json(), 'size_bytes': sizes['head'], 'stream_sizes': sizes}


def remotes_reply(data: Any, fmt: Optional[str]) -> Tuple[int, str, str]:
    """``remote add`` (one remote) and ``remote ls`` (a list): no key in
    either (``remotes.Remote.view``)."""
    fmt = check_format(fmt)
    if fmt != 'plain':
        return 0, dump(data, fmt), ''
    if isinstance(data, dict):
        return 0, 'remote {} {}: {} as {} (fsid {}); conf {}\n'.format(
            data['name'], 'added' if data.get('added') else 'already registered',
            data['mon_host'], data['client_name'], data['fsid'], data.get('conf_path', '-')), ''
    return 0, table(['NAME', 'MON_HOST', 'CLIENT', 'FSID', 'TASKS', 'CONF'],
                    [[r['name'], r['mon_host'], r['client_name'], r['fsid'], r.get('tasks', 0),
                      r.get('conf_path', '-')] for r in data]), ''


def _remote_spec(text: str) -> Optional[Dict[str, Any]]:
    try:
        spec = json.loads(text)
    except ValueError:
        return None
    return spec if is_remote_spec(spec) else None
