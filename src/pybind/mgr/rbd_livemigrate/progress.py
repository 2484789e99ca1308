"""
Progress events through the mgr ``progress`` module (``ceph progress``,
the dashboard's task bars).  One event per task covers execute and commit.
"""

import logging
import time
from typing import Any, Callable, Dict, Optional, Set

from .batch import Batch, BatchState
from .source_spec import summary
from .task import State, Task

log = logging.getLogger(__name__)

UPDATE_INTERVAL_SECONDS = 1.0
# execute carries most of the bar, commit the rest
EXECUTE_SHARE = 0.95
# a task of a batch gets its own bar only once it has run this long
BATCH_TASK_BAR_AFTER_SECONDS = 5.0


def event_id(task: Task) -> str:
    return 'rbd_livemigrate-{}'.format(task.id)


def verify_event_id(task: Task) -> str:
    return 'rbd_livemigrate-{}-verify'.format(task.id)


def waiting_note(task: Task) -> Optional[str]:
    """What a task that is not moving waits for, with what moves it on
    (None: it is moving, or done)."""
    if task.done:
        return None
    if task.paused:
        return 'paused: ceph rbd livemigrate resume {}'.format(task.id)
    if task.cancel_requested:
        return 'cancelling'
    if (task.state == State.EXECUTED and task.manual_commit and not task.commit_requested):
        return 'waiting for ceph rbd livemigrate commit {}'.format(task.id)
    if task.awaiting_cutover:
        return 'waiting for ceph rbd livemigrate cutover {}'.format(task.id)
    if task.blocked_kind is not None:
        return 'waiting: {}'.format(task.blocked_kind)
    return None


def message(task: Task) -> str:
    if task.import_spec is not None:
        text = 'Importing RBD image {} from {}'.format(
            task.destination, summary(task.import_spec))
    elif task.source == task.destination:
        text = 'Live-migrating RBD image {} (layout change)'.format(task.source)
    else:
        text = 'Live-migrating RBD image {} to {}'.format(task.source, task.destination)
    note = waiting_note(task)
    return text if note is None else '{} ({})'.format(text, note)


class ProgressReporter:
    def __init__(self, remote: Callable[..., Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._remote = remote
        self._clock = clock
        self._last: Dict[str, float] = {}
        self._finished: Set[str] = set()      # batch events already ended

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        try:
            self._remote('progress', method, *args, **kwargs)
        except ImportError:
            pass            # progress module off: nothing to draw
        except Exception:
            log.warning('progress %s failed', method, exc_info=True)

    def _quiet(self, task: Task) -> bool:
        """A batch's task has no bar of its own (the batch's bar counts it)
        unless it runs long enough for one to tell something."""
        return (task.batch_id is not None and task.id not in self._last
                and (task.started is None
                     or time.time() - task.started < BATCH_TASK_BAR_AFTER_SECONDS))

    def _due(self, key: str, force: bool) -> bool:
        """Event ``key`` may be updated now (about once a second, or
        ``force``); if so, it counts as updated now."""
        now = self._clock()
        last: Optional[float] = self._last.get(key)
        if not force and last is not None and now - last < UPDATE_INTERVAL_SECONDS:
            return False
        self._last[key] = now
        return True

    def update(self, task: Task, force: bool = False) -> None:
        if self._quiet(task) or not self._due(task.id, force):
            return
        self._call('update', event_id(task), message(task), float(task.progress),
                   refs={'origin': 'rbd_livemigrate', 'task_id': task.id,
                         'source': task.source, 'destination': task.destination},
                   add_to_ceph_s=True)

    def complete(self, task: Task) -> None:
        if task.batch_id is not None and task.id not in self._last:
            return
        self.update(task, force=True)
        self._last.pop(task.id, None)
        self._call('complete', event_id(task))

    def fail(self, task: Task, why: str) -> None:
        if task.batch_id is not None and task.id not in self._last:
            return
        self._last.pop(task.id, None)
        self._call('fail', event_id(task), why)

    def forget(self, task: Task) -> None:
        self._last.pop(task.id, None)

    # -- the verification's own bar -----------------------------------

    def verify(self, task: Task, force: bool = False) -> None:
        """The comparison before commit: "Verifying RBD image b/x against its
        source a/x" with the share of bytes compared."""
        v = task.verification
        if v is None or self._quiet(task):
            return
        key = verify_event_id(task)
        if not self._due(key, force):
            return
        frac = v.bytes_compared / v.bytes_total if v.bytes_total else 0.0
        self._call('update', key, 'Verifying RBD image {} against its source {}'.format(
            task.destination, task.source), float(min(1.0, frac)),
            refs={'origin': 'rbd_livemigrate', 'task_id': task.id, 'verify': True},
            add_to_ceph_s=True)

    def verified(self, task: Task) -> None:
        v = task.verification
        key = verify_event_id(task)
        if v is None or key not in self._last:
            return
        self._last.pop(key, None)
        if v.mismatch:
            self._call('fail', key, 'mismatch: {}'.format(v.mismatch))
        else:
            self._call('complete', key)

    def batch(self, batch: Batch, counts: Dict[str, int]) -> None:
        """The batch's bar: "Migrating pool a to b: 341/10000 images"; it
        completes when every task is done, fails if the batch is cancelled.
        ``counts``: the batch's tasks by state."""
        key = batch.id
        if key in self._finished:
            return
        s = batch.summary_of(counts)
        ev = 'rbd_livemigrate-{}'.format(batch.id)
        if not self._due(key, bool(s['finished'])):
            return
        total = s['tasks'] if batch.state != BatchState.EXPANDING else max(
            s['tasks'], batch.images)
        by_state = s['by_state']
        committed = by_state.get('committed', 0)
        # cancelled and failed images are not migrated: counted apart, never as done
        others = ', '.join('{} {}'.format(n, word) for n, word in (
            (by_state.get('aborted', 0), 'cancelled'), (by_state.get('failed', 0), 'failed'))
            if n)
        msg = 'Migrating pool {} to {}: {}/{} images migrated{}{}'.format(
            batch.source, batch.destination, committed, total,
            ' ({})'.format(others) if others else '',
            ' (listing)' if batch.state == BatchState.EXPANDING else '')
        self._call('update', ev, msg, float(s['progress']),
                   refs={'origin': 'rbd_livemigrate', 'batch_id': batch.id},
                   add_to_ceph_s=True)
        if s['finished']:
            self._finished.add(key)
            self._last.pop(key, None)
            if batch.state == BatchState.CANCELLED:
                self._call('fail', ev, 'cancelled: {}/{} images migrated{}'.format(
                    committed, total, ' ({})'.format(others) if others else ''))
            elif by_state.get('failed', 0) or (total and not committed):
                self._call('fail', ev, '{}/{} images migrated{}: see ceph rbd livemigrate '
                           'status {}'.format(committed, total,
                                              ' ({})'.format(others) if others else '',
                                              batch.id))
            else:
                self._call('complete', ev)
