"""
What runs next (``decide``, a pure function) and the worker that applies it.

``decide`` looks only at (tasks, running set, options, clock, cluster
block) and is unit-tested rule by rule.  ``Worker`` owns the in-memory
task table, persists every change, starts one ``Runner`` thread per task
the decision lets start, and rebuilds the health checks each pass.
"""

import heapq
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from .batch import BatchState
from .health import HealthChecks, build_checks
from .hold import Hold, HoldKind
from .planner import cutover_hold
from .preflight import MIN_BANDWIDTH_BYTES, watchers_reason
from .options import Options, retry_delay  # noqa: F401 (re-exported)
from .progress import ProgressReporter, waiting_note
from .runctx import RunnerHandle  # re-exported for the tests and benchmarks
from .store import TaskStore
from .table import TaskTable, order_key
from .task import State, Task

log = logging.getLogger(__name__)

IDLE_TICK_SECONDS = 5.0
# sources with clients looked at per scheduler pass (the rest wait their turn)
RECHECK_PER_PASS = 32
MIN_TICK_SECONDS = 0.05
# the first few sources with clients, in queue order, are looked at this
# often: the last client leaving starts the prepare within about 100 ms
FAST_WATCH_TASKS = 4
FAST_RECHECK_SECONDS = 0.05
CUTOVER_STATES = (State.QUEUED, State.PREPARING)


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
    # queued tasks waiting for clients to close their source, due for a
    # cheap look at the watchers (no slot, no runner), longest unchecked first
    recheck: List[str] = []


def _pools(t: Task) -> Set[str]:
    return {t.source.split('/')[0], t.destination.split('/')[0]}


def task_pool_names(t: Task) -> List[str]:
    """The pools a task reads or writes: its ends and its data pool."""
    out = [t.source.split('/')[0], t.destination.split('/')[0]]
    if t.layout.data_pool:
        out.append(t.layout.data_pool)
    return out


def why_waiting(t: Task, now: float, opts: Options, cluster_block: Optional[str],
                free_slots: bool = False) -> str:
    """Why a task that needs the worker has no runner now (``free_slots``:
    the last pass left slots free, so a task it has not seen starts next)."""
    if t.paused:
        return 'paused'
    if t.awaiting_cutover:
        return str(cutover_hold(t))
    if t.next_retry is not None and t.next_retry > now:
        return t.blocked_reason or 'waiting to retry'
    if t.state == State.QUEUED and t.blocked_kind == HoldKind.WATCHERS.value:
        return t.blocked_reason or 'waiting for clients to close the source'
    if cluster_block:
        return cluster_block
    if free_slots:
        return 'starting'
    return 'waiting for a free slot (max_concurrent={})'.format(opts.max_concurrent)


def decide(tasks: Iterable[Task], running: Set[str], opts: Options, now: float,
           cluster_block: Optional[str] = None) -> Decision:
    """Which tasks start now.  Rules:

    - a cancel always starts (it frees resources, never uses them);
    - paused, manual-commit-waiting, done and retry-waiting tasks wait;
    - a queued task whose source has clients waits for a cheap recheck;
    - while the cluster blocks new work, nothing else starts; a full pool
      (``pool_blocks``) holds only the tasks that touch it;
    - the rest start by priority (higher first), then age, while the global
      limit and the per-pool limit (source or destination pool) allow.
    """
    tasks = list(tasks)
    return decide_ordered(sorted((t for t in tasks if t.needs_worker), key=order_key),
                          [t for t in tasks if t.id in running], running, opts, now,
                          cluster_block)


def decide_ordered(ordered: Iterable[Task], busy_tasks: List[Task], running: Set[str],
                   opts: Options, now: float, cluster_block: Optional[str] = None,
                   cancels: Iterable[Task] = (), watching: Iterable[Task] = (),
                   detail: Optional[int] = None,
                   pool_blocks: Optional[Dict[str, str]] = None) -> Decision:
    """``decide`` over tasks already in queue order (``order_key``).

    With ``detail`` the scan stops that many tasks after the last slot is
    filled (or at once while the cluster blocks): a pass then costs what
    runs, not the length of the queue.  ``cancels`` and ``watching`` (tasks
    the scan may not reach) are then given apart; ``ls`` words the reason
    of the tasks not scanned with ``why_waiting``.
    """
    start: List[str] = []
    waiting: Dict[str, str] = {}
    next_tick = IDLE_TICK_SECONDS
    # a paused copy is held inside librbd doing no I/O: it frees its slot (a
    # caller scoped to one pool must not hold the queue by pausing its own)
    busy = [t for t in busy_tasks if not t.paused]
    per_pool: Dict[str, int] = {}
    for t in busy:
        for p in _pools(t):
            per_pool[p] = per_pool.get(p, 0) + 1
    slots = max(0, opts.max_concurrent - len(busy))
    recheck: Dict[str, Task] = {t.id: t for t in watching if t.id not in running}
    started: Set[str] = set()
    cancelled: List[str] = []         # cancels start first, whatever their place
    for t in cancels:
        if t.id not in running and t.needs_worker:
            cancelled.append(t.id)
            started.add(t.id)
    left = detail
    for t in ordered:
        if t.id in running or t.id in started or not t.needs_worker:
            continue
        if t.cancel_requested or (t.cutover_requested and t.state in CUTOVER_STATES):
            # a cutover is an operator waiting with its clients stopped: it
            # takes no slot (its copy then counts like any other)
            cancelled.append(t.id)
            started.add(t.id)
            continue
        if detail is not None and (slots <= 0 or cluster_block):
            if left is not None and left <= 0:
                break
            left = (left or 0) - 1
        held = _held(t, now, cluster_block, pool_blocks)
        if held is not None:
            waiting[t.id], kind = held
            if kind == _RETRY:
                next_tick = min(next_tick, (t.next_retry or now) - now)
            elif kind == _CLIENTS:
                recheck[t.id] = t
            continue
        if slots <= 0:
            waiting[t.id] = why_waiting(t, now, opts, None)
            continue
        pools = _pools(t)
        if opts.max_concurrent_per_pool > 0 and any(
                per_pool.get(p, 0) >= opts.max_concurrent_per_pool for p in pools):
            waiting[t.id] = 'waiting for a free slot (max_concurrent_per_pool={})'.format(
                opts.max_concurrent_per_pool)
            continue
        start.append(t.id)
        started.add(t.id)
        slots -= 1
        for p in pools:
            per_pool[p] = per_pool.get(p, 0) + 1
    due = sorted((t for t in recheck.values() if t.next_retry is None or t.next_retry <= now),
                 key=lambda t: (t.next_retry or 0.0, -t.priority, t.created, t.id))
    for t in recheck.values():
        waiting.setdefault(t.id, t.blocked_reason or 'waiting for clients to close the source')
    return Decision(cancelled + start, waiting, max(0.05, next_tick), [t.id for t in due])


_RETRY, _CLIENTS, _OTHER = 'retry', 'clients', 'other'


def _held(t: Task, now: float, cluster_block: Optional[str],
          pool_blocks: Optional[Dict[str, str]]) -> Optional[Tuple[str, str]]:
    """Why ``t`` waits whatever the free slots, and of which kind (a retry's
    time sets the next pass; a task waiting for its source's clients is
    looked at again); None: it may start."""
    if t.paused:
        return 'paused', _OTHER
    if t.awaiting_cutover:
        return str(cutover_hold(t)), _OTHER
    if t.next_retry is not None and t.next_retry > now:
        return t.blocked_reason or 'waiting to retry', _RETRY
    if t.state == State.QUEUED and t.blocked_kind == HoldKind.WATCHERS.value:
        return t.blocked_reason or 'waiting for clients to close the source', _CLIENTS
    if cluster_block:
        return cluster_block, _OTHER
    held = next((pool_blocks[p] for p in task_pool_names(t) if p in pool_blocks), None) \
        if pool_blocks else None
    return (held, _OTHER) if held is not None else None


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
IDLE_BLOCKLIST_SECONDS = 10.0
BUSY_BLOCKLIST_SECONDS = 1.0
HOUSEKEEPING_SECONDS = 1.0
# ... and sooner after a task changed state, hold or error, but not more often
HOUSEKEEPING_MIN_SECONDS = 0.2
# tasks a pass looks at past the last free slot, for their waiting reason
WAITING_DETAIL = 64
# a batch whose tasks all left the history is kept this long after listing
EMPTY_BATCH_KEPT_SECONDS = 86400.0


class Worker(TaskTable):
    """The scheduling loop over the task table: each pass decides what may
    start (``decide``), starts runners, prunes history and rebuilds health."""

    def __init__(self, store: TaskStore, progress: ProgressReporter,
                 runner_factory: RunnerFactory,
                 set_health: Callable[[HealthChecks], None],
                 cluster_block: Callable[[], Optional[Hold]],
                 clock: Callable[[], float] = time.time,
                 blocklisted: Callable[[], Set[str]] = set,
                 on_blocklist: Callable[[Set[str]], None] = lambda addrs: None,
                 watchers: Callable[[str], List[str]] = lambda spec: [],
                 write_behind: bool = False,
                 pool_holds: Callable[[], Dict[str, Hold]] = dict) -> None:
        super().__init__(store, clock, write_behind)
        self.progress = progress
        self.runner_factory = runner_factory
        self.set_health = set_health
        self.cluster_block = cluster_block
        self.pool_holds = pool_holds
        self.blocklisted = blocklisted
        self.watchers = watchers
        self.on_blocklist = on_blocklist
        self.blocklisted_since: Dict[str, float] = {}
        self.blocklist_read_at = 0.0
        self.housekept = float('-inf')
        self.options = Options()
        self.runners: Dict[str, RunnerHandle] = {}
        self.waiting: Dict[str, str] = {}
        self.wake = threading.Event()
        # why new work may not start now (window, health, queue paused); the
        # running copies hold while it is set
        self.current_block: Optional[Hold] = None
        # pools whose tasks hold (a full pool), the others going on
        self.pool_blocks: Dict[str, Hold] = {}
        self.health_block_since: Optional[float] = None
        self.chores: List[Chore] = []
        self.drawn: Set[str] = set()         # waiting tasks whose bar this mgr drew
        self.protect_tried: Set[str] = set()  # sources with clients snapshotted ahead
        self.clients_seen: Dict[str, float] = {}  # the last look that saw a source's clients

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

    # -- loop ----------------------------------------------------------

    def reap_blocklisted(self, now: float) -> None:
        """Interrupt, then abandon, runners whose client the OSD map blocklists."""
        with self.lock:
            runners = list(self.runners.values())
        # the OSD map dump: once a second while copies run (a pass may come
        # every 50 ms), rarely when idle (only idle clients to drop)
        if now - self.blocklist_read_at < (BUSY_BLOCKLIST_SECONDS if runners
                                           else IDLE_BLOCKLIST_SECONDS):
            return
        self.blocklist_read_at = now
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
        held_pools = {} if self.stopping or block else self.pool_holds()
        with self.lock:
            self.pool_blocks = held_pools
            if self.queue_paused and not block:
                block = Hold(HoldKind.QUEUE_PAUSED, 'queue paused')
            self.current_block = block
            tasks = self.tasks
            decision = decide_ordered(
                (tasks[k[2]] for k in self.order), [tasks[i] for i in self.runners
                                                    if i in tasks],
                set(self.runners), self.options, now, str(block) if block else None,
                cancels=[tasks[i] for i in self.cancels],
                watching=[tasks[i] for i in self.watching], detail=WAITING_DETAIL,
                pool_blocks={p: str(h) for p, h in held_pools.items()})
            waiting_count = len(self.live) - len(self.cancels)
            self.waiting = dict(decision.waiting)
            to_start = [] if self.stopping else decision.start
            for task_id in to_start:
                runner = self.runner_factory(self, task_id)
                self.runners[task_id] = runner
                runner.start()
        soon = self.recheck_watchers(decision.recheck[:RECHECK_PER_PASS], now)
        if soon is not None:
            decision = decision._replace(next_tick=max(MIN_TICK_SECONDS, min(
                decision.next_tick, soon - self.clock())))
        since = now - self.housekept
        if 0 <= since < HOUSEKEEPING_SECONDS and not (self.dirty and
                                                      since >= HOUSEKEEPING_MIN_SECONDS):
            due = (HOUSEKEEPING_MIN_SECONDS if self.dirty else HOUSEKEEPING_SECONDS) - since
            return min(decision.next_tick, max(MIN_TICK_SECONDS, due))
        self.housekept = now
        self.dirty = False
        self.housekeeping(now, block, waiting_count)
        return decision.next_tick

    def housekeeping(self, now: float, block: Optional[Hold], waiting: int) -> None:
        """What looks at every task (history, batches, health): once a second
        at most, however often passes run."""
        with self.lock:
            # the finished ones only once there are more than the history keeps
            drop = history_to_drop((self.tasks[i] for i in self.terminal),
                                   self.options.max_history) \
                if len(self.terminal) > max(0, self.options.max_history) else []
            gone: Dict[str, List[str]] = {}
            for task_id in drop:
                t = self.tasks[task_id]
                if t.batch_id and t.batch_id in self.batches:
                    gone.setdefault(t.batch_id, []).append(t.state.value)
        # store writes outside the table lock, in one go; a batch keeps
        # counting the tasks that leave the history
        for batch_id, states in gone.items():
            self.update_batch(batch_id, lambda b: b.with_pruned(states))
        if drop:
            self.remove(drop)
        with self.lock:
            batches = [(b, dict(self.batch_counts.get(b.id, {})))
                       for b in self.batches.values()]
            # in a stable order: the health detail must not reshuffle each pass
            notable = sorted((self.tasks[i] for i in self.notable),
                             key=lambda t: (t.created, t.id))
            # a task waiting for the operator has no runner to draw its bar:
            # drawn once per mgr (after a failover too), saying what it waits for
            waiting_bars = [t for t in notable if t.id not in self.runners
                            and t.id not in self.drawn and waiting_note(t) is not None]
        for t in waiting_bars:
            self.progress.update(t, force=True)
            self.drawn.add(t.id)
        for b, counts in batches:
            if b.state != BatchState.EXPANDING and not any(counts.values()) and (
                    now - (b.expanded or b.created) > EMPTY_BATCH_KEPT_SECONDS):
                # its tasks left the history (or it never had any): so does it
                self.remove_batch(b.id)
            else:
                self.progress.batch(b, counts)
        if block is None or block.kind.deliberate:
            self.health_block_since = None
        elif self.health_block_since is None:
            self.health_block_since = now
        held = 0 if self.health_block_since is None else now - self.health_block_since
        queue_note = ''
        if block and self.health_block_since is not None and (
                block.kind.warn_at_once or held >= self.options.blocked_warn_seconds):
            queue_note = 'queue held for {:.0f}s: {}; {} task(s) waiting or paused'.format(
                held, block, waiting)
        self.set_health(build_checks(
            notable, now, self.options.stall_warn_seconds, self.options.blocked_warn_seconds,
            self.skipped, queue_note))

    def fast_watched(self) -> Set[str]:
        """The first ``FAST_WATCH_TASKS`` sources with clients in queue
        order: the ones whose cutover is next, looked at every
        ``FAST_RECHECK_SECONDS``."""
        with self.lock:
            if not self.watching:
                return set()
            first = heapq.nsmallest(FAST_WATCH_TASKS, (self.tasks[i] for i in self.watching
                                                       if not self.tasks[i].paused),
                                    key=order_key)
            return {t.id for t in first}

    def recheck_watchers(self, task_ids: List[str], now: float) -> Optional[float]:
        """Look at the watchers of sources that had clients (one cheap call
        each, outside the lock): gone, the task competes for a slot at once;
        still there, it looks again after ``blocked_recheck_seconds``, or
        ``FAST_RECHECK_SECONDS`` for the first few in queue order.  No store
        write while the clients stay.  Returns when the next fast look is due."""
        fast = self.fast_watched()
        soon: Optional[float] = None
        for task_id in fast:
            t = self.find(task_id)
            if t is not None and t.id not in task_ids and t.next_retry is not None:
                soon = t.next_retry if soon is None else min(soon, t.next_retry)
        for task_id in task_ids:
            task = self.find(task_id)
            if task is None or task.blocked_kind != HoldKind.WATCHERS.value:
                continue
            try:
                addrs = self.watchers(task.source)
            except Exception as e:      # gone, or unreadable: the runner finds out
                log.info('task %s: cannot list the watchers of %s: %s', task_id,
                         task.source, e)
                addrs = []
            seen = self.clock()
            if addrs:
                self.clients_seen[task_id] = seen
                self._protect_ahead(task)
                # a remote source's (an import): the runner's words name it
                reason = (task.blocked_reason if task.import_spec is not None
                          and task.blocked_reason else watchers_reason(task.source, addrs))
                due = seen + (FAST_RECHECK_SECONDS if task_id in fast
                              else self.options.blocked_recheck_seconds)
                if task_id in fast:
                    soon = due if soon is None else min(soon, due)
                self.update(task_id, lambda t: t.evolve(
                    next_retry=due, blocked_reason=reason, clients_gone_at=None),
                    persist=False)
            else:
                # they closed between the last look that saw them and this
                # one (FAST_RECHECK_SECONDS apart for the first few): the
                # middle is the cutover's start within half of that.  Not
                # written: a store write is a monitor commit, which would
                # hold the prepare's snapshot copies (OSDMap changes) for up
                # to a paxos interval; the runner's next stored change has it
                last = self.clients_seen.pop(task_id, seen)
                gone = (last + seen) / 2 if seen - last <= 2 * FAST_RECHECK_SECONDS else seen
                self.update(task_id, lambda t: t.evolve(
                    blocked_kind=None, blocked_reason=None, blocked_since=None,
                    next_retry=None, clients_gone_at=gone)
                    if t.blocked_kind == HoldKind.WATCHERS.value else t, persist=False)
                log.info('task %s: the clients of %s are gone', task_id, task.source)
                self.kick()
        return soon

    def _protect_ahead(self, task: Task) -> None:
        """The protective snapshot of a source whose clients hold it is taken
        now, on a thread of its own (a monitor round trip), so that the
        cutover waits on no monitor commit when they close (pipeline.Runner.
        protect_ahead).  Once per task and mgr."""
        if (task.verify.value == 'off' or task.protect_snap is not None
                or task.import_spec is not None or task.id in self.protect_tried):
            return
        self.protect_tried.add(task.id)
        runner = self.runner_factory(self, task.id)
        threading.Thread(target=runner.protect_ahead, daemon=True,
                         name='lm-protect-{}'.format(task.id)).start()

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
        self.flush()

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
                copying = sum(1 for i in self.runners
                              if i in self.tasks and self.tasks[i].state == State.EXECUTING) or 1
            share = max(1, total // copying)
            limit = share if limit <= 0 else min(limit, share)
        return limit

    def hold_reason(self, task: Task) -> Optional[Hold]:
        """Why new work or a running copy of ``task`` must hold now (None: go on)."""
        if task.paused:
            return Hold(HoldKind.PAUSED, 'paused')
        with self.lock:
            if self.current_block is not None or not self.pool_blocks:
                return self.current_block
            return next((self.pool_blocks[p] for p in task_pool_names(task)
                         if p in self.pool_blocks), None)

    def why(self, task: Task, running: Set[str], waiting: Dict[str, str]) -> Optional[str]:
        """Why ``task`` has no runner (None: it has one, or nothing to do):
        from the last pass, else worded now (the pass stops looking a little
        past the last free slot)."""
        if (task.state == State.EXECUTED and task.manual_commit and not task.commit_requested
                and not task.cancel_requested):
            return 'executed: waiting for ceph rbd livemigrate commit {}'.format(task.id)
        if task.id in running or not task.needs_worker:
            return None
        reason = waiting.get(task.id)
        if reason is None:
            block = self.current_block
            if block is None and self.queue_paused:
                block = Hold(HoldKind.QUEUE_PAUSED, 'queue paused')
            busy = sum(1 for i in running if i in self.tasks and not self.tasks[i].paused)
            reason = why_waiting(task, self.clock(), self.options,
                                 str(block) if block else None,
                                 free_slots=busy < self.options.max_concurrent)
        return reason

    def run_state(self) -> Tuple[Set[str], Dict[str, str]]:
        """Ids with a runner, and why each waiting task waits (last pass)."""
        with self.lock:
            return set(self.runners), dict(self.waiting)

    def snapshot(self) -> Tuple[List[Task], Set[str], Dict[str, str]]:
        with self.lock:
            running, waiting = self.run_state()
            return (sorted(self.tasks.values(), key=lambda t: (t.created, t.id)),
                    running, waiting)
