"""
The task table: every task and batch in memory, their store, and the
notifications others wait on.

One lock guards the records and their indexes (by image spec, by batch);
it is never held across a store write, which is a monitor round trip.
Writes go through a second lock, in the order the records changed: a
write saves the record as it is *then*, so whichever write runs last
saves the newest record, and a removed task is never written back.
"""

import bisect
import logging
import threading
import time
from typing import Callable, Dict, List, Optional, Set, Tuple

from .batch import Batch, BatchState
from .errors import NotFound, TryAgain
from .store import TaskStore
from .hold import HoldKind
from .interface import ImageInfo
from .task import State, Task

OrderKey = Tuple[int, float, str]


def order_key(t: Task) -> OrderKey:
    """Queue order: higher priority first, then older."""
    return (-t.priority, t.created, t.id)


log = logging.getLogger(__name__)


class TaskTable:
    def __init__(self, store: TaskStore, clock: Callable[[], float] = time.time,
                 write_behind: bool = False) -> None:
        self.store = store
        self.clock = clock
        # write-behind: records are written by one writer thread, the latest
        # of each task at the time it writes (changes made meanwhile coalesce);
        # a caller that must know its change is stored waits for it (add, the
        # commands); the runners do not
        self.write_behind = write_behind
        self._wcond = threading.Condition(threading.Lock())
        self._pending: Dict[str, None] = {}
        self._queued_seq = 0
        self._written_seq = 0
        self._writer: Optional[threading.Thread] = None
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.store_lock = threading.Lock()
        self.tasks: Dict[str, Task] = {}
        # image spec -> ids of the tasks naming it (source or destination),
        # batch id -> ids of its tasks: lookups without scanning every task
        self.by_spec: Dict[str, Tuple[str, ...]] = {}    # tuples: mostly one id each
        self.by_batch: Dict[str, Set[str]] = {}
        self.batches: Dict[str, Batch] = {}
        # ids of the tasks the worker has something to do for (a scheduler
        # pass looks at these, not at the whole history)
        self.live: Set[str] = set()
        # the live tasks in queue order, and those a pass must see wherever
        # they are in it: cancels, and sources waiting for their clients
        self.order: List[OrderKey] = []
        self._keys: Dict[str, OrderKey] = {}
        self.cancels: Set[str] = set()
        self.watching: Set[str] = set()
        # what housekeeping looks at, kept up to date on every change (a
        # pass must not walk 10,000 records several times a second):
        # finished tasks (history), tasks health may warn about (failed,
        # copying, held), and each batch's tasks counted by state
        self.terminal: Set[str] = set()
        self.notable: Set[str] = set()
        self.batch_counts: Dict[str, Dict[str, int]] = {}
        # what the add's preflight saw of a queued task's source, for its
        # prepare to reuse while the source's header is unchanged (memory
        # only: after a restart the prepare looks in full)
        self.seen: Dict[str, ImageInfo] = {}
        self.skipped: Dict[str, str] = {}
        self.loaded = False
        self.queue_paused = False
        self.stopping = False
        self.writes = 0                 # store writes made (the benchmark reads it)
        self.unstored: Set[str] = set()     # tasks added whose record was never written
        # a task changed state, hold or error: health and history are due
        self.dirty = False

    def load(self) -> None:
        tasks, skipped = self.store.load()
        batches, skipped_batches = self.store.load_batches()
        with self.lock:
            self.tasks = {t.id: t for t in tasks}
            self.by_spec, self.by_batch = {}, {}
            self.live, self.order, self._keys = set(), [], {}
            self.cancels, self.watching = set(), set()
            self.terminal, self.notable = set(), set()
            self.batch_counts = {}
            self.seen = {}
            for t in tasks:
                self._index(t)
            self.batches = {b.id: b for b in batches}
            carried = self._carry_batches(batches)
            self.skipped = dict(skipped, **skipped_batches)
            self.queue_paused = self.store.load_flag('queue_paused')
            self.loaded = True
            self.cond.notify_all()
        for task_id in carried:
            self._save(task_id, wait=False)
        log.info('loaded %d task(s), skipped %d unreadable record(s)', len(tasks), len(skipped))

    def _carry_batches(self, batches: List[Batch]) -> List[str]:
        """A batch cancelled or paused just before a crash: its tasks' records
        may not say so yet (they are written behind); the batch's does."""
        carried = []
        for b in batches:
            for task_id in sorted(self.by_batch.get(b.id, ())):
                t = self.tasks[task_id]
                if t.done or t.state == State.COMMITTING:
                    continue
                if b.state == BatchState.CANCELLED:
                    new = t if t.cancel_requested else t.evolve(
                        cancel_requested=True, paused=False, next_retry=None)
                else:
                    new = t if t.paused == b.paused else t.evolve(paused=b.paused)
                if new is not t:
                    self.tasks[task_id] = new
                    self._track(new, t)
                    carried.append(task_id)
        return carried

    def check_loaded(self) -> None:
        """Refuse a command until the records are loaded (EAGAIN)."""
        if not self.loaded:
            raise TryAgain('rbd_livemigrate is still loading its tasks; try again in a moment')

    def get(self, task_id: str) -> Task:
        with self.lock:
            task = self.tasks.get(task_id)
        if task is None:
            raise NotFound("no task '{}': see ceph rbd livemigrate ls".format(task_id))
        return task

    def find(self, task_id: str) -> Optional[Task]:
        with self.lock:
            return self.tasks.get(task_id)

    def all(self) -> List[Task]:
        with self.lock:
            tasks = list(self.tasks.values())
        return sorted(tasks, key=lambda t: (t.created, t.id))

    def _index(self, task: Task, old: Optional[Task] = None) -> None:
        self._track(task, old)
        for spec in (task.source, task.destination):
            ids = self.by_spec.get(spec, ())
            if task.id not in ids:
                self.by_spec[spec] = ids + (task.id,)
        if task.batch_id:
            self.by_batch.setdefault(task.batch_id, set()).add(task.id)

    def _track(self, task: Task, before: Optional[Task] = None) -> None:
        """Keep the indexes right for ``task``, which replaces ``before``."""
        live = task.needs_worker
        if task.state != State.QUEUED:
            self.seen.pop(task.id, None)
        key = order_key(task) if live else None
        old = self._keys.get(task.id)
        if old != key:
            if old is not None:
                self._drop_key(task.id, old)
            if key is not None:
                bisect.insort(self.order, key)
                self._keys[task.id] = key
        for ids, member in ((self.live, live),
                            (self.cancels, live and task.cancel_requested),
                            (self.watching, live and task.state == State.QUEUED
                             and task.blocked_kind == HoldKind.WATCHERS.value),
                            (self.terminal, task.terminal),
                            (self.notable, task.state in (State.FAILED, State.EXECUTING)
                             or (bool(task.blocked_reason) and not task.done)
                             or (task.state == State.EXECUTED and task.manual_commit))):
            if member:
                ids.add(task.id)
            else:
                ids.discard(task.id)
        if before is None or (before.batch_id, before.state) != (task.batch_id, task.state):
            if before is not None:
                self._uncount(before)
            if task.batch_id:
                counts = self.batch_counts.setdefault(task.batch_id, {})
                counts[task.state.value] = counts.get(task.state.value, 0) + 1

    def _uncount(self, task: Task) -> None:
        """Take ``task`` out of its batch's counts."""
        counts = self.batch_counts.get(task.batch_id) if task.batch_id else None
        state = task.state.value
        if counts is not None and counts.get(state, 0) > 0:
            counts[state] -= 1
            if not counts[state]:
                del counts[state]

    def _drop_key(self, task_id: str, key: OrderKey) -> None:
        i = bisect.bisect_left(self.order, key)
        if i < len(self.order) and self.order[i] == key:
            del self.order[i]
        self._keys.pop(task_id, None)

    def _unindex(self, task: Task) -> None:
        self.seen.pop(task.id, None)
        for tracked in (self.live, self.cancels, self.watching, self.terminal, self.notable):
            tracked.discard(task.id)
        self._uncount(task)
        old = self._keys.get(task.id)
        if old is not None:
            self._drop_key(task.id, old)
        for spec in (task.source, task.destination):
            rest = tuple(i for i in self.by_spec.get(spec, ()) if i != task.id)
            if rest:
                self.by_spec[spec] = rest
            else:
                self.by_spec.pop(spec, None)
        if task.batch_id and task.batch_id in self.by_batch:
            self.by_batch[task.batch_id].discard(task.id)

    def take_seen(self, task_id: str) -> Optional[ImageInfo]:
        """What ``put`` was given as ``seen`` for this task, once."""
        with self.lock:
            return self.seen.pop(task_id, None)

    def naming(self, *specs: str) -> List[Task]:
        """The tasks whose source or destination is one of ``specs``."""
        with self.lock:
            ids = set().union(*(self.by_spec.get(s, ()) for s in specs))
            tasks = [self.tasks[i] for i in ids if i in self.tasks]
        return sorted(tasks, key=lambda t: (t.created, t.id))

    def put(self, task: Task, wait: bool = True, seen: Optional[ImageInfo] = None) -> Task:
        """Add or replace a task; ``seen``: what its preflight saw of the
        source, if the prepare may reuse it (``preflight.reusable``)."""
        with self.lock:
            old = self.tasks.get(task.id)
            self.tasks[task.id] = task
            self._index(task, old)
            if old is None:
                self.unstored.add(task.id)
            if seen is not None and task.state == State.QUEUED:
                self.seen[task.id] = seen
            self.dirty = True
            self.cond.notify_all()
        self._save(task.id, wait)
        return task

    def _save(self, task_id: str, wait: bool = True) -> None:
        """Write the task's record as it is now (outside the table lock);
        with write-behind, queue it, and wait until written if ``wait``."""
        if not self.write_behind:
            self._write(task_id)
            return
        with self._wcond:
            self._pending[task_id] = None
            self._queued_seq += 1
            mine = self._queued_seq
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                                name='rbd_livemigrate.writer')
                self._writer.start()
            self._wcond.notify_all()
            while wait and self._written_seq < mine:
                self._wcond.wait(1.0)

    def _write(self, task_id: str) -> None:
        with self.store_lock:
            with self.lock:
                task = self.tasks.get(task_id)
            if task is not None:             # a removed task is never written back
                self.store.save(task)
                self.writes += 1
                with self.lock:
                    self.unstored.discard(task_id)

    def _write_loop(self) -> None:
        while True:
            with self._wcond:
                while not self._pending:
                    if self.stopping:
                        return
                    self._wcond.wait(1.0)
                ids, seq = list(self._pending), self._queued_seq
                self._pending = {}
            for task_id in ids:
                try:
                    self._write(task_id)
                except Exception:
                    log.exception('cannot store task %s; it is written again on its next '
                                  'change', task_id)
            with self._wcond:
                self._written_seq = seq
                self._wcond.notify_all()

    def stored(self, task_id: str) -> bool:
        """Has a record of the task been written (a loaded one: yes)?"""
        with self.lock:
            return task_id not in self.unstored

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued record is written (shutdown)."""
        if not self.write_behind:
            return
        deadline = time.monotonic() + timeout
        with self._wcond:
            target = self._queued_seq
            while self._written_seq < target and time.monotonic() < deadline:
                self._wcond.wait(0.5)

    # -- batches -------------------------------------------------------

    def put_batch(self, batch: Batch) -> Batch:
        with self.lock:
            self.batches[batch.id] = batch
        self._save_batch(batch.id)
        return batch

    def _save_batch(self, batch_id: str) -> None:
        with self.store_lock:
            with self.lock:
                batch = self.batches.get(batch_id)
            if batch is not None:
                self.store.save_batch(batch)
                self.writes += 1

    def update_batch(self, batch_id: str, fn: Callable[[Batch], Batch],
                     persist: bool = True) -> Batch:
        with self.lock:
            old = self.get_batch(batch_id)
            new = fn(old)
            if new is old:
                return new
            self.batches[batch_id] = new
        if persist:
            self._save_batch(batch_id)
        return new

    def get_batch(self, batch_id: str) -> Batch:
        with self.lock:
            batch = self.batches.get(batch_id)
        if batch is None:
            raise NotFound('no batch {!r}: see ceph rbd livemigrate ls'.format(batch_id))
        return batch

    def batch_tasks(self, batch_id: str) -> List[Task]:
        with self.lock:
            return [self.tasks[i] for i in sorted(self.by_batch.get(batch_id, ()))
                    if i in self.tasks]

    def batch_state_counts(self, batch_id: str) -> Dict[str, int]:
        """The batch's tasks in the table, counted by state."""
        with self.lock:
            return dict(self.batch_counts.get(batch_id, {}))

    def all_batches(self) -> List[Batch]:
        with self.lock:
            return sorted(self.batches.values(), key=lambda b: (b.created, b.id))

    def update(self, task_id: str, fn: Callable[[Task], Task], persist: bool = True,
               wait: bool = True) -> Task:
        """Apply ``fn`` to the current record (never a stale copy) and save it."""
        with self.lock:
            old = self.get(task_id)
            new = fn(old)
            if new is old:
                return new
            self.tasks[task_id] = new
            self._track(new, old)
            if (new.state != old.state or new.blocked_kind != old.blocked_kind
                    or new.error != old.error or new.paused != old.paused):
                self.dirty = True
            self.cond.notify_all()
        if persist:
            self._save(task_id, wait)
        return new

    def remove(self, task_ids: List[str]) -> None:
        """Forget tasks (history beyond max_history), then delete their keys."""
        with self.lock:
            for task_id in task_ids:
                task = self.tasks.pop(task_id, None)
                if task is not None:
                    self._unindex(task)
        with self.store_lock:
            for task_id in task_ids:
                self.store.delete(task_id)
                self.writes += 1

    def remove_batch(self, batch_id: str) -> None:
        with self.lock:
            self.batches.pop(batch_id, None)
            self.by_batch.pop(batch_id, None)
            self.batch_counts.pop(batch_id, None)
        with self.store_lock:
            self.store.delete_batch(batch_id)
            self.writes += 1

    def set_queue_paused(self, paused: bool) -> None:
        with self.store_lock:
            self.store.save_flag('queue_paused', paused)
        with self.lock:
            self.queue_paused = paused
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = self.clock() + timeout
        with self.lock:
            while not pred():
                left = deadline - self.clock()
                if left <= 0 or self.stopping:
                    return pred()
                self.cond.wait(min(left, 1.0))
            return True
