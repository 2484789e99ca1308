"""
What runs next (``decide``, a pure function) and the worker that applies it.

``decide`` looks only at (tasks, running set, options, clock, cluster
block) and is unit-tested rule by rule.  ``Worker`` owns the in-memory
task table, persists every change, starts one ``Runner`` thread per task
the decision lets start, and rebuilds the health checks each pass.
"""

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from .batch import Batch, BatchState
from .errors import NotFound
from .health import HealthChecks, build_checks
from .hold import Hold, HoldKind
from .preflight import MIN_BANDWIDTH_BYTES
from .progress import ProgressReporter
from .store import TaskStore
from .task import State, Task

log = logging.getLogger(__name__)

IDLE_TICK_SECONDS = 5.0
MIN_TICK_SECONDS = 0.05


@dataclass(frozen=True)
class Options:
    max_concurrent: int = 2
    max_concurrent_per_pool: int = 0
    max_history: int = 100
    stall_warn_seconds: float = 600
    blocked_warn_seconds: float = 300
    retry_max_attempts: int = 5
    retry_backoff_seconds: float = 10
    retry_backoff_max_seconds: float = 600
    blocked_recheck_seconds: float = 5
    bandwidth_limit_bytes: int = 0
    total_bandwidth_limit_bytes: int = 0
    maintenance_window: str = ''
    health_pause_checks: str = ''


@dataclass
class Chore:
    """A slow background job the scheduler pass runs every ``interval`` seconds."""
    interval: float
    fn: Callable[[], None]
    last: float


class Decision(NamedTuple):
    start: List[str]                 # task ids to start now, in order
    waiting: Dict[str, str]          # task id -> why it may not start now
    next_tick: float                 # seconds until the decision may change


def _pools(t: Task) -> Set[str]:
    return {t.source.split('/')[0], t.destination.split('/')[0]}


def decide(tasks: Iterable[Task], running: Set[str], opts: Options, now: float,
           cluster_block: Optional[str] = None) -> Decision:
    """Which tasks start now.  Rules:

    - a cancel always starts (it frees resources, never uses them);
    - paused, manual-commit-waiting, done and retry-waiting tasks wait;
    - while the cluster blocks new work, nothing else starts;
    - the rest start by priority (higher first), then age, while the global
      limit and the per-pool limit (source or destination pool) allow.
    """
    tasks = list(tasks)
    start: List[str] = []
    waiting: Dict[str, str] = {}
    next_tick = IDLE_TICK_SECONDS
    # a paused copy is held inside librbd doing no I/O: it frees its slot (a
    # caller scoped to one pool must not hold the queue by pausing its own)
    busy = [t for t in tasks if t.id in running and not t.paused]
    per_pool: Dict[str, int] = {}
    for t in busy:
        for p in _pools(t):
            per_pool[p] = per_pool.get(p, 0) + 1
    slots = max(0, opts.max_concurrent - len(busy))
    candidates: List[Task] = []
    for t in tasks:
        if t.id in running or not t.needs_worker:
            continue
        if t.cancel_requested:
            start.append(t.id)
            continue
        if t.paused:
            waiting[t.id] = 'paused'
            continue
        if t.next_retry is not None and t.next_retry > now:
            waiting[t.id] = t.blocked_reason or 'waiting to retry'
            next_tick = min(next_tick, t.next_retry - now)
            continue
        candidates.append(t)
    candidates.sort(key=lambda t: (-t.priority, t.created, t.id))
    for t in candidates:
        if cluster_block:
            waiting[t.id] = cluster_block
            continue
        if slots <= 0:
            waiting[t.id] = 'waiting for a free slot (max_concurrent={})'.format(
                opts.max_concurrent)
            continue
        pools = _pools(t)
        if opts.max_concurrent_per_pool > 0 and any(
                per_pool.get(p, 0) >= opts.max_concurrent_per_pool for p in pools):
            waiting[t.id] = 'waiting for a free slot (max_concurrent_per_pool={})'.format(
                opts.max_concurrent_per_pool)
            continue
        start.append(t.id)
        slots -= 1
        for p in pools:
            per_pool[p] = per_pool.get(p, 0) + 1
    return Decision(start, waiting, max(0.05, next_tick))


def retry_delay(attempts: int, opts: Options) -> float:
    """Capped exponential backoff: base, 2*base, 4*base ... max."""
    return float(min(opts.retry_backoff_max_seconds,
                     opts.retry_backoff_seconds * (2 ** max(0, attempts - 1))))


def history_to_drop(tasks: Iterable[Task], max_history: int) -> List[str]:
    """Ids of the oldest finished tasks beyond ``max_history``."""
    finished = sorted((t for t in tasks if t.terminal),
                      key=lambda t: (t.finished or 0, t.created))
    excess = len(finished) - max(0, max_history)
    return [t.id for t in finished[:excess]] if excess > 0 else []


RunnerFactory = Callable[['Worker', str], 'RunnerHandle']


# a copy whose client is blocklisted gets this long to return by itself
# before it is abandoned (Pacific's migration_execute can hang forever then)
ABANDON_AFTER_BLOCKLIST_SECONDS = 10.0


class RunnerHandle:
    """What the worker needs of a running task (see pipeline.Runner)."""
    task_id: str

    def client_addr(self) -> Optional[str]:
        """The address of the rados client this runner copies with, if any."""
        return None

    def abandon(self) -> None:
        """Detach from a copy stuck in librbd: the thread may never return."""

    def start(self) -> None:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Make a running copy stop now (cancel, shutdown)."""
        raise NotImplementedError

    def join(self, timeout: float) -> None:
        raise NotImplementedError


class Worker:
    def __init__(self, store: TaskStore, progress: ProgressReporter,
                 runner_factory: RunnerFactory,
                 set_health: Callable[[HealthChecks], None],
                 cluster_block: Callable[[], Optional[Hold]],
                 clock: Callable[[], float] = time.time,
                 blocklisted: Callable[[], Set[str]] = set,
                 on_blocklist: Callable[[Set[str]], None] = lambda addrs: None) -> None:
        self.store = store
        self.progress = progress
        self.runner_factory = runner_factory
        self.set_health = set_health
        self.cluster_block = cluster_block
        self.clock = clock
        self.blocklisted = blocklisted
        self.on_blocklist = on_blocklist
        self.blocklisted_since: Dict[str, float] = {}
        self.options = Options()
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.tasks: Dict[str, Task] = {}
        # image spec -> ids of the tasks naming it (source or destination),
        # batch id -> ids of its tasks: lookups without scanning every task
        self.by_spec: Dict[str, Set[str]] = {}
        self.by_batch: Dict[str, Set[str]] = {}
        self.batches: Dict[str, Batch] = {}
        self.runners: Dict[str, RunnerHandle] = {}
        self.waiting: Dict[str, str] = {}
        self.skipped: Dict[str, str] = {}
        self.stopping = False
        self.loaded = False
        self.queue_paused = False
        self.wake = threading.Event()
        # why new work may not start now (window, health, queue paused); the
        # running copies hold while it is set
        self.current_block: Optional[Hold] = None
        self.health_block_since: Optional[float] = None
        self.chores: List[Chore] = []

    # -- table ---------------------------------------------------------

    def load(self) -> None:
        tasks, skipped = self.store.load()
        batches, skipped_batches = self.store.load_batches()
        with self.lock:
            self.tasks = {t.id: t for t in tasks}
            self.by_spec, self.by_batch = {}, {}
            for t in tasks:
                self._index(t)
            self.batches = {b.id: b for b in batches}
            self.skipped = dict(skipped, **skipped_batches)
            self.queue_paused = self.store.load_flag('queue_paused')
            self.loaded = True
            self.cond.notify_all()
        log.info('loaded %d task(s), skipped %d unreadable record(s)', len(tasks), len(skipped))

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

    def _index(self, task: Task) -> None:
        for spec in (task.source, task.destination):
            self.by_spec.setdefault(spec, set()).add(task.id)
        if task.batch_id:
            self.by_batch.setdefault(task.batch_id, set()).add(task.id)

    def _unindex(self, task: Task) -> None:
        for spec in (task.source, task.destination):
            ids = self.by_spec.get(spec)
            if ids is not None:
                ids.discard(task.id)
                if not ids:
                    del self.by_spec[spec]
        if task.batch_id and task.batch_id in self.by_batch:
            self.by_batch[task.batch_id].discard(task.id)

    def naming(self, *specs: str) -> List[Task]:
        """The tasks whose source or destination is one of ``specs``."""
        with self.lock:
            ids = set().union(*(self.by_spec.get(s, set()) for s in specs))
            tasks = [self.tasks[i] for i in ids if i in self.tasks]
        return sorted(tasks, key=lambda t: (t.created, t.id))

    def put(self, task: Task) -> Task:
        with self.lock:
            self.store.save(task)
            self.tasks[task.id] = task
            self._index(task)
            self.cond.notify_all()
        return task

    # -- batches -------------------------------------------------------

    def put_batch(self, batch: Batch) -> Batch:
        with self.lock:
            self.store.save_batch(batch)
            self.batches[batch.id] = batch
        return batch

    def update_batch(self, batch_id: str, fn: Callable[[Batch], Batch],
                     persist: bool = True) -> Batch:
        with self.lock:
            old = self.get_batch(batch_id)
            new = fn(old)
            if new is not old:
                if persist:
                    self.store.save_batch(new)
                self.batches[batch_id] = new
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

    def all_batches(self) -> List[Batch]:
        with self.lock:
            return sorted(self.batches.values(), key=lambda b: (b.created, b.id))

    def update(self, task_id: str, fn: Callable[[Task], Task], persist: bool = True) -> Task:
        """Apply ``fn`` to the current record (never a stale copy) and save it."""
        with self.lock:
            old = self.get(task_id)
            new = fn(old)
            if new is not old:
                if persist:
                    self.store.save(new)
                self.tasks[task_id] = new
                self.cond.notify_all()
            return new

    def remove(self, task_id: str) -> None:
        with self.lock:
            self.store.delete(task_id)
            task = self.tasks.pop(task_id, None)
            if task is not None:
                self._unindex(task)

    def set_queue_paused(self, paused: bool) -> None:
        with self.lock:
            self.store.save_flag('queue_paused', paused)
            self.queue_paused = paused
            self.cond.notify_all()

    def kick(self) -> None:
        """Make the scheduler pass run now."""
        self.wake.set()
        with self.lock:
            self.cond.notify_all()

    def interrupt(self, task_id: str) -> None:
        with self.lock:
            runner = self.runners.get(task_id)
        if runner is not None:
            runner.interrupt()

    def runner_done(self, runner: RunnerHandle) -> None:
        with self.lock:
            if self.runners.get(runner.task_id) is runner:
                del self.runners[runner.task_id]
        self.kick()

    def wait_for(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = self.clock() + timeout
        with self.lock:
            while not pred():
                left = deadline - self.clock()
                if left <= 0 or self.stopping:
                    return pred()
                self.cond.wait(min(left, 1.0))
            return True

    # -- loop ----------------------------------------------------------

    def reap_blocklisted(self, now: float) -> None:
        """Interrupt, then abandon, runners whose client the OSD map blocklists."""
        with self.lock:
            runners = list(self.runners.values())
        blocklist = self.blocklisted()
        self.on_blocklist(blocklist)
        if not runners:
            return
        for r in runners:
            addr = r.client_addr()
            if addr is None or addr not in blocklist:
                self.blocklisted_since.pop(r.task_id, None)
                continue
            since = self.blocklisted_since.setdefault(r.task_id, now)
            if now - since < ABANDON_AFTER_BLOCKLIST_SECONDS:
                continue
            log.warning('task %s: copy client %s is blocklisted and the copy has not '
                        'returned for %.0fs; abandoning it and starting over', r.task_id,
                        addr, now - since)
            r.abandon()
            with self.lock:
                if self.runners.get(r.task_id) is r:
                    del self.runners[r.task_id]
            self.blocklisted_since.pop(r.task_id, None)

    def add_chore(self, interval: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` from the scheduler pass about every ``interval`` seconds."""
        self.chores.append(Chore(interval, fn, self.clock()))

    def run_chores(self, now: float) -> None:
        for chore in self.chores:
            if now - chore.last >= chore.interval:
                chore.last = now
                try:
                    chore.fn()
                except Exception:
                    log.exception('background chore failed')

    def tick(self) -> float:
        """One pass: start what the decision allows, rebuild health; next delay."""
        now = self.clock()
        self.run_chores(now)
        self.reap_blocklisted(now)
        block = None if self.stopping else self.cluster_block()
        with self.lock:
            if self.queue_paused and not block:
                block = Hold(HoldKind.QUEUE_PAUSED, 'queue paused')
            self.current_block = block
            tasks = list(self.tasks.values())
            decision = decide(tasks, set(self.runners), self.options, now,
                              str(block) if block else None)
            self.waiting = dict(decision.waiting)
            to_start = [] if self.stopping else decision.start
            for task_id in to_start:
                runner = self.runner_factory(self, task_id)
                self.runners[task_id] = runner
                runner.start()
            for task_id in history_to_drop(tasks, self.options.max_history):
                self.remove(task_id)
            batches = [(b, self.batch_tasks(b.id)) for b in self.batches.values()]
            for b, members in batches:
                if b.state != BatchState.EXPANDING and not members:
                    # its tasks left the history: so does the batch
                    self.store.delete_batch(b.id)
                    del self.batches[b.id]
                    self.by_batch.pop(b.id, None)
        for b, members in batches:
            self.progress.batch(b, members)
        if block is None or block.kind.deliberate:
            self.health_block_since = None
        elif self.health_block_since is None:
            self.health_block_since = now
        held = 0 if self.health_block_since is None else now - self.health_block_since
        queue_note = ''
        if block and self.health_block_since is not None and (
                block.kind.warn_at_once or held >= self.options.blocked_warn_seconds):
            waiting = sum(1 for t in tasks if t.needs_worker and not t.cancel_requested)
            queue_note = 'queue held for {:.0f}s: {}; {} task(s) waiting or paused'.format(
                held, block, waiting)
        self.set_health(build_checks(
            tasks, now, self.options.stall_warn_seconds, self.options.blocked_warn_seconds,
            self.skipped, queue_note))
        return decision.next_tick

    def serve(self) -> None:
        while True:
            with self.lock:
                if self.stopping:
                    break
            try:
                delay = self.tick()
            except Exception:
                log.exception('scheduler pass failed')
                delay = IDLE_TICK_SECONDS
            if not self.stopping:
                self.wake.wait(max(MIN_TICK_SECONDS, delay))
                self.wake.clear()

    def shutdown(self, timeout: float = 10.0) -> None:
        with self.lock:
            self.stopping = True
            runners = list(self.runners.values())
            self.cond.notify_all()
        self.wake.set()
        for r in runners:
            r.interrupt()
        for r in runners:
            r.join(timeout)

    def bandwidth_limit(self, task: Task) -> int:
        """Bytes per second this task may copy at; 0: unlimited.

        The per-task limit (``add --bandwidth-limit``, else the option), and
        an equal share of the total limit among the copies running now.
        """
        limit = (task.bandwidth_limit_bytes if task.bandwidth_limit_bytes is not None
                 else self.options.bandwidth_limit_bytes)
        total = self.options.total_bandwidth_limit_bytes
        # options below the floor ``add`` enforces count as the floor
        if 0 < limit < MIN_BANDWIDTH_BYTES:
            limit = MIN_BANDWIDTH_BYTES
        if 0 < total < MIN_BANDWIDTH_BYTES:
            total = MIN_BANDWIDTH_BYTES
        if total > 0:
            with self.lock:
                copying = sum(1 for t in self.tasks.values()
                              if t.state == State.EXECUTING and t.id in self.runners) or 1
            share = max(1, total // copying)
            limit = share if limit <= 0 else min(limit, share)
        return limit

    def hold_reason(self, task: Task) -> Optional[Hold]:
        """Why new work or a running copy of ``task`` must hold now (None: go on)."""
        if task.paused:
            return Hold(HoldKind.PAUSED, 'paused')
        with self.lock:
            return self.current_block

    def run_state(self) -> Tuple[Set[str], Dict[str, str]]:
        """Ids with a runner, and why each waiting task waits (last pass)."""
        with self.lock:
            return set(self.runners), dict(self.waiting)

    def snapshot(self) -> Tuple[List[Task], Set[str], Dict[str, str]]:
        with self.lock:
            running, waiting = self.run_state()
            return (sorted(self.tasks.values(), key=lambda t: (t.created, t.id)),
                    running, waiting)
