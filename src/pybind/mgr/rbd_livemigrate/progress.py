"""
Progress events through the mgr ``progress`` module (``ceph progress``,
the dashboard's task bars).  One event per task covers execute and commit.
"""

import logging
import time
from typing import Any, Callable, Dict, Optional

from .task import Task

log = logging.getLogger(__name__)

UPDATE_INTERVAL_SECONDS = 1.0
# execute carries most of the bar, commit the rest
EXECUTE_SHARE = 0.95


def event_id(task: Task) -> str:
    return 'rbd_livemigrate-{}'.format(task.id)


def message(task: Task) -> str:
    if task.source == task.destination:
        return 'Live-migrating RBD image {} (layout change)'.format(task.source)
    return 'Live-migrating RBD image {} to {}'.format(task.source, task.destination)


class ProgressReporter:
    def __init__(self, remote: Callable[..., Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._remote = remote
        self._clock = clock
        self._last: Dict[str, float] = {}

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        try:
            self._remote('progress', method, *args, **kwargs)
        except ImportError:
            pass            # progress module off: nothing to draw
        except Exception:
            log.warning('progress %s failed', method, exc_info=True)

    def update(self, task: Task, force: bool = False) -> None:
        now = self._clock()
        last: Optional[float] = self._last.get(task.id)
        if not force and last is not None and now - last < UPDATE_INTERVAL_SECONDS:
            return
        self._last[task.id] = now
        self._call('update', event_id(task), message(task), float(task.progress),
                   refs={'origin': 'rbd_livemigrate', 'task_id': task.id,
                         'source': task.source, 'destination': task.destination},
                   add_to_ceph_s=True)

    def complete(self, task: Task) -> None:
        self.update(task, force=True)
        self._last.pop(task.id, None)
        self._call('complete', event_id(task))

    def fail(self, task: Task, why: str) -> None:
        self._last.pop(task.id, None)
        self._call('fail', event_id(task), why)

    def forget(self, task: Task) -> None:
        self._last.pop(task.id, None)
