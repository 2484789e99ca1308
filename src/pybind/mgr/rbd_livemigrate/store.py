"""
Persistence: one key per task under ``task/`` in the module's store.

The store lives in the monitors' config-key store
(``mgr/rbd_livemigrate/task/<id>``).  A corrupt record, or one written by a
newer module, is logged and skipped: it never stops the module.
"""

import logging
from typing import Callable, Dict, List, Optional, Tuple

from .batch import Batch
from .task import CorruptRecord, Task

log = logging.getLogger(__name__)

TASK_PREFIX = 'task/'
BATCH_PREFIX = 'batch/'
FLAG_PREFIX = 'flag/'
MAX_VALUE_BYTES = 64 * 1024
MAX_REASON_CHARS = 200


def _one_line(text: str) -> str:
    """A reason for the health detail: one line, cut short."""
    text = ' '.join(text.splitlines())
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 3] + '...'


class TaskStore:
    def __init__(self, get_prefix: Callable[[str], Dict[str, str]],
                 set_key: Callable[[str, Optional[str]], None]) -> None:
        self._get_prefix = get_prefix
        self._set_key = set_key

    def load(self) -> Tuple[List[Task], Dict[str, str]]:
        """All readable tasks, and {key: why} for the records skipped."""
        tasks: List[Task] = []
        skipped: Dict[str, str] = {}
        for key, value in sorted(self._get_prefix(TASK_PREFIX).items()):
            try:
                if not isinstance(value, str):
                    raise CorruptRecord('task record is not text')
                task = Task.loads(value)
                if key != TASK_PREFIX + task.id:
                    raise CorruptRecord('key does not match task id {!r}'.format(task.id))
            except CorruptRecord as e:
                log.error('skipping stored task %s: %s', key, e)
                skipped[key] = _one_line(str(e))
                continue
            except Exception as e:  # last resort: one record never stops the module
                log.error('skipping stored task %s: unexpected error', key, exc_info=True)
                skipped[key] = _one_line('unexpected error loading it: {}: {}'.format(
                    type(e).__name__, e))
                continue
            tasks.append(task)
        return tasks, skipped

    def save(self, task: Task) -> None:
        value = task.dumps()
        if len(value) > MAX_VALUE_BYTES:   # never expected; refuse rather than bloat the mons
            raise ValueError('task {} record is {} bytes'.format(task.id, len(value)))
        self._set_key(TASK_PREFIX + task.id, value)

    def delete(self, task_id: str) -> None:
        self._set_key(TASK_PREFIX + task_id, None)

    def load_batches(self) -> Tuple[List[Batch], Dict[str, str]]:
        batches: List[Batch] = []
        skipped: Dict[str, str] = {}
        for key, value in sorted(self._get_prefix(BATCH_PREFIX).items()):
            try:
                if not isinstance(value, str):
                    raise CorruptRecord('batch record is not text')
                batch = Batch.loads(value)
                if key != BATCH_PREFIX + batch.id:
                    raise CorruptRecord('key does not match batch id {!r}'.format(batch.id))
            except Exception as e:  # one record never stops the module
                log.error('skipping stored batch %s: %s', key, e)
                skipped[key] = _one_line(str(e))
                continue
            batches.append(batch)
        return batches, skipped

    def save_batch(self, batch: Batch) -> None:
        self._set_key(BATCH_PREFIX + batch.id, batch.dumps())

    def delete_batch(self, batch_id: str) -> None:
        self._set_key(BATCH_PREFIX + batch_id, None)

    def load_flag(self, name: str) -> bool:
        return self._get_prefix(FLAG_PREFIX + name).get(FLAG_PREFIX + name) == 'true'

    def save_flag(self, name: str, value: bool) -> None:
        self._set_key(FLAG_PREFIX + name, 'true' if value else None)
