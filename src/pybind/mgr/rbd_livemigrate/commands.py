"""
What each command does.  ``module.py`` declares the commands and calls one
method here per command; results are ``(retval, stdout, stderr)``.

``Commands`` holds the commands on existing tasks (ls, status, cancel,
commit, cutover, retry, pause, rm) and hands the rest to the part that
does it: ``add`` to ``adding.Adder``, ``add-pool`` and a batch's commands
to ``batches.BatchCommands``, ``adopt`` and the orphan scan to
``orphans.Orphans``.  Each is given the task table and a scheduler handle
(``handles.SchedulerHandle``), never the whole ``Worker``; the replies are
built by ``views.Views`` and formatted by ``formatting``.
"""

import logging
from typing import Callable, Dict, List, Optional

from .access import Access, Allowed, caller_text, task_pools
from .adding import Adder
from .batch import Batch, BatchState
from .batches import BatchCommands
from .errors import (AlreadyExists, Busy, CommandResult, InvalidArgument, LiveMigrateError,
                     NotAuthorized, NotFound, WrongState)
from .formatting import batch_ls_line, batch_text, check_format, dump, status_text, task_rows
from .handles import SchedulerHandle
from .interface import RbdPort
from .orphans import Orphans
from .preflight import PoolInfo, watchers_reason
from .request import MAX_BANDWIDTH_BYTES, MAX_PRIORITY, AddRequest
from .spec import ImageSpec
from .table import TaskTable
from .task import State, Task
from .views import Views, orphan_command, queue_entry, removed_entry

log = logging.getLogger(__name__)

# the names other modules and tests import from here
__all__ = ['AddRequest', 'Allowed', 'CommandResult', 'Commands', 'MAX_BANDWIDTH_BYTES',
           'MAX_PRIORITY', 'NotAuthorized', 'caller_text', 'orphan_command', 'task_pools']

# a command waits this long for a change to show, then returns (see status)
CANCEL_WAIT_SECONDS = 1.0
COMMIT_WAIT_SECONDS = 1.0
# a cutover is one prepare: the command waits for it (an orchestrator
# scripts stop / cutover / start around it)
CUTOVER_WAIT_SECONDS = 30.0


class Commands:
    def __init__(self, *, table: TaskTable, scheduler: SchedulerHandle, adapter: RbdPort,
                 pools: Callable[[], Dict[str, PoolInfo]],
                 authorized: Callable[[str, str], bool],
                 clock: Callable[[], float],
                 unscoped: Callable[[], bool] = lambda: True) -> None:
        """``authorized(pool, namespace)`` and ``unscoped()`` answer for the
        caller of the command being run (``access.Access``)."""
        self.table = table
        self.scheduler = scheduler
        self.adapter = adapter
        self.clock = clock
        self.access = Access(authorized, unscoped, pools)
        self.views = Views(table, scheduler)
        self.adder = Adder(table=table, scheduler=scheduler, adapter=adapter,
                           access=self.access, views=self.views, pools=pools, clock=clock)
        self.batches = BatchCommands(table=table, scheduler=scheduler, adapter=adapter,
                                     access=self.access, adder=self.adder, views=self.views,
                                     pools=pools, clock=clock)
        self.orphans = Orphans(table=table, scheduler=scheduler, adapter=adapter,
                               access=self.access, adder=self.adder, views=self.views,
                               pools=pools, clock=clock)
        self.listings = 0               # ls calls answered (heap.HeapKeeper's activity)

    # -- handed on -------------------------------------------------------

    def add(self, source_spec: str, dest_spec: Optional[str], req: AddRequest) -> CommandResult:
        return self.adder.add(source_spec, dest_spec, req)

    def add_pool(self, source_pool: str, dest_pool: str, pattern: Optional[str],
                 req: AddRequest) -> CommandResult:
        return self.batches.add_pool(source_pool, dest_pool, pattern, req)

    def adopt(self, image_spec: str) -> CommandResult:
        return self.orphans.adopt(image_spec)

    # -- helpers -------------------------------------------------------

    def _find_task(self, text: str) -> Task:
        task = self.table.find(text)
        if task is not None:
            return task
        if '/' in text:
            spec = str(ImageSpec.parse(text))
            matches = self.table.naming(spec)
            matches = [t for t in matches if self.access.may(t)] or matches
            if matches:
                live = [t for t in matches if not t.done]
                return (live or matches)[-1]
            raise NotFound("no task for image '{}': see ceph rbd livemigrate ls".format(spec))
        raise NotFound('no task {!r}: see ceph rbd livemigrate ls'.format(text))

    def _task(self, text: str) -> Task:
        """The task the caller names, once loaded and within its caps."""
        self.table.check_loaded()
        task = self._find_task(text)
        self.access.authorize_task(task)
        return task

    # -- reads ---------------------------------------------------------

    def ls(self, fmt: Optional[str]) -> CommandResult:
        fmt = check_format(fmt)
        self.table.check_loaded()
        self.listings += 1
        tasks, running, waiting = self.scheduler.snapshot()
        every = self.access.unscoped()      # no pool limit: no check per task
        tasks = [t for t in tasks if every or self.access.may(t)]
        if fmt == 'json':
            return 0, self.views.tasks_json(tasks, running, waiting,
                                            self.orphans.entries()), ''
        views = [self.views.task(t, running, waiting) for t in tasks]
        views += self.orphans.entries()
        if fmt != 'plain':
            return 0, dump(views, fmt), ''
        text = task_rows(views)
        for b in self.table.all_batches():
            try:
                v = self.views.batch(self.batches.get(b.id))
            except LiveMigrateError:
                continue
            if not v['finished']:
                text += batch_ls_line(v)
        return 0, text, ''

    def status(self, target: str, fmt: Optional[str]) -> CommandResult:
        fmt = check_format(fmt)
        self.table.check_loaded()
        if Batch.is_id(target):
            v = self.views.batch(self.batches.get(target))
            return 0, batch_text(v) if fmt == 'plain' else dump(v, fmt), ''
        task = self._find_task(target)
        self.access.authorize_task(task)
        v = self.views.task(task)
        return 0, status_text(v) if fmt == 'plain' else dump(v, fmt), ''

    # -- changes -------------------------------------------------------

    def cancel(self, task_id: str) -> CommandResult:
        self.table.check_loaded()
        if Batch.is_id(task_id):
            return self.batches.cancel(task_id)
        task = self._find_task(task_id)
        self.access.authorize_task(task)
        before = task.state

        def request_cancel(t: Task) -> Task:
            # under the table lock: the runner's move to committing checks the
            # same flag, so an accepted cancel is never followed by a commit
            if t.state == State.COMMITTING:
                raise Busy('task {} is committing: a commit cannot be cancelled; wait for '
                           'it'.format(t.id))
            if t.terminal:
                raise WrongState('task {} is already {}: nothing to cancel'.format(
                    t.id, t.state))
            return t.evolve(cancel_requested=True, paused=False, next_retry=None)
        self.table.update(task.id, request_cancel)
        self.scheduler.interrupt(task.id)
        self.scheduler.kick()
        # the runner clears the flag when the cancel ends (aborted or failed)
        self.table.wait_for(lambda: not self.table.get(task.id).cancel_requested,
                            CANCEL_WAIT_SECONDS)
        task = self.table.get(task.id)
        if task.state == State.ABORTED:
            action = ('removed from the queue' if before in (State.QUEUED, State.FAILED)
                      and task.error == 'cancelled before prepare'
                      else 'import aborted; {} removed'.format(task.destination)
                      if task.import_spec is not None
                      else 'migration aborted; {} restored'.format(task.source))
        elif task.state == State.COMMITTED:
            action = 'too late: the migration was committed'
        else:
            action = 'cancel in progress (state {}); see status'.format(task.state)
        return 0, self.views.task_json(task, action), ''

    def commit(self, task_id: str) -> CommandResult:
        task = self._task(task_id)
        if task.terminal or task.state == State.COMMITTING:
            raise WrongState('task {} is already {}: nothing to commit'.format(
                task.id, task.state))
        if not task.manual_commit:
            raise WrongState('task {} commits by itself (it was not added with '
                             '--manual-commit)'.format(task.id))

        def request_commit(t: Task) -> Task:
            if t.cancel_requested:
                raise Busy('task {} is being cancelled: it will not be committed; see '
                           'status'.format(t.id))
            if t.state != State.EXECUTED:
                raise WrongState('task {} is {}: commit needs it executed; see status'.format(
                    t.id, t.state))
            return t.evolve(commit_requested=True)
        self.table.update(task.id, request_commit)
        self.scheduler.kick()
        self.table.wait_for(lambda: self.table.get(task.id).state != State.EXECUTED,
                            COMMIT_WAIT_SECONDS)
        return 0, self.views.task_json(self.table.get(task.id)), ''

    def cutover(self, task_id: str) -> CommandResult:
        """Prepare now (the one moment of downtime), and return the task
        with ``cutover_ms``; EBUSY naming the clients that still have the
        source open.  Any queued task may be cut over: it takes no slot."""
        task = self._task(task_id)
        if task.import_spec is not None:
            raise WrongState('task {} is an import: no client holds its source, it prepares '
                             'by itself'.format(task.id))
        if task.state not in (State.QUEUED, State.PREPARING):
            if task.cutover_ms is not None and not task.done:
                return 0, self.views.task_json(task, 'already cut over'), ''
            raise WrongState('task {} is {}: a cutover needs a queued task; see '
                             'status'.format(task.id, task.state))
        if task.paused:
            raise Busy('task {} is paused: resume it first'.format(task.id))
        if task.cancel_requested:
            raise Busy('task {} is being cancelled'.format(task.id))
        dest = ImageSpec.parse(task.destination)
        if task.state == State.QUEUED and dest != ImageSpec.parse(task.source) and \
                self.adapter.image_exists(dest):
            raise AlreadyExists("destination '{}' exists: remove or rename it, then cut over "
                                'again'.format(dest))
        clients = self.adapter.watchers(ImageSpec.parse(task.source))
        if clients:
            raise Busy(watchers_reason(task.source, clients, 'then cut over again'))
        seen = self.clock()

        def request(t: Task) -> Task:
            if t.state not in (State.QUEUED, State.PREPARING) or t.cancel_requested:
                raise Busy('task {} changed meanwhile ({}); see status'.format(t.id, t.state))
            return t.evolve(cutover_requested=True, clients_gone_at=seen, cutover_ms=None,
                            next_retry=None, blocked_reason=None, blocked_kind=None,
                            blocked_since=None)
        self.table.update(task.id, request, wait=False)
        self.scheduler.kick()

        def settled() -> bool:
            # prepared (cutover_ms is set earlier, once the destination's
            # name resolves: clients should wait for the end of prepare)
            t = self.table.get(task.id)
            return not t.cutover_requested or t.state not in (State.QUEUED, State.PREPARING)
        self.table.wait_for(settled, CUTOVER_WAIT_SECONDS)
        task = self.table.get(task.id)
        if task.cutover_ms is not None:
            return 0, self.views.task_json(
                task, 'cut over in {:.0f} ms'.format(task.cutover_ms)), ''
        if task.state == State.FAILED:
            raise LiveMigrateError('task {} failed at cutover: {}'.format(task.id, task.error))
        if not task.cutover_requested:
            why = (task.blocked_reason or 'the source could not be prepared').replace(
                '; the task waits until they close', '')
            raise Busy('task {} was not cut over: {}; then cut over again'.format(task.id, why))
        return 0, self.views.task_json(
            task, 'cutover still under way after {:.0f}s; see status'.format(
                CUTOVER_WAIT_SECONDS)), ''

    def retry(self, task_id: str) -> CommandResult:
        task = self._task(task_id)
        if task.state != State.FAILED:
            raise WrongState('task {} is {}: only failed tasks can be retried'.format(
                task.id, task.state))
        for t in self.table.all():
            if (t.id != task.id and not t.done and task.source_image_id is not None
                    and t.source_image_id == task.source_image_id):
                raise Busy('task {} now runs the migration of {}: see its status'.format(
                    t.id if self.access.may(t) else 'outside the caller\'s caps', task.source))
        now = self.clock()
        task = self.table.update(task.id, lambda t: t.moved_to(
            State.QUEUED, now, attempts=0, error=None, next_retry=None, cancel_requested=False,
            blocked_reason=None, blocked_since=None))
        self.scheduler.kick()
        return 0, self.views.task_json(task), ''

    def pause(self, task_id: Optional[str], paused: bool) -> CommandResult:
        self.table.check_loaded()
        if task_id is None:
            if not self.access.unscoped():
                raise NotAuthorized(
                    'pausing or resuming the whole queue needs mgr caps on every pool '
                    "(not limited with pool=...): give a task id to {} one of yours".format(
                        'pause' if paused else 'resume'))
            self.table.set_queue_paused(paused)
            return 0, dump(queue_entry(paused), 'json'), ''
        if Batch.is_id(task_id):
            return self.batches.pause(task_id, paused)
        task = self._find_task(task_id)
        self.access.authorize_task(task)
        if task.done:
            raise WrongState('task {} is {}: nothing to {}'.format(
                task.id, task.state, 'pause' if paused else 'resume'))
        if not paused and not task.paused:
            raise WrongState('task {} is not paused: nothing to resume{}'.format(
                task.id, ' (the whole queue is paused: ceph rbd livemigrate resume)'
                if self.table.queue_paused else ''))
        # a paused copy moves no bytes: its rate and time left are no longer true
        task = self.table.update(task.id, lambda t: t.evolve(
            paused=paused, next_retry=None if not paused else t.next_retry,
            rate_bytes_per_sec=None if paused else t.rate_bytes_per_sec))
        self.scheduler.kick()
        return 0, self.views.task_json(task), ''

    def forget(self, target: Optional[str], finished: bool) -> CommandResult:
        """``rm``: take finished tasks out of the history (``ls``, ``status``)
        before ``max_history`` would: one task, a finished batch with its
        tasks, or with ``--finished`` every finished task the caller may see.
        A failed task still owns its migration: it is cancelled or retried,
        never forgotten."""
        self.table.check_loaded()
        if (target is None) == (not finished):
            raise InvalidArgument('give a task or batch id, or --finished for every committed '
                                  'or aborted task')
        if target is None:
            every = self.access.unscoped()
            drop = [t for t in self.table.all()
                    if t.terminal and (every or self.access.may(t))]
        elif Batch.is_id(target):
            batch = self.batches.get(target)
            tasks = self.table.batch_tasks(batch.id)
            for t in tasks:
                self.access.authorize_task(t)
            live = [t for t in tasks if not t.terminal]
            if live or batch.state == BatchState.EXPANDING:
                raise Busy('batch {} is not finished ({} task(s) not committed or aborted): '
                           'wait, or cancel it first'.format(batch.id, len(live)))
            self._drop(tasks)
            self.table.remove_batch(batch.id)
            return 0, dump(removed_entry(len(tasks), batch.id), 'json'), ''
        else:
            task = self._find_task(target)
            self.access.authorize_task(task)
            if not task.terminal:
                raise Busy('task {} is {}: only committed or aborted tasks leave the history; '
                           '{}'.format(task.id, task.state,
                                       'retry or cancel it first' if task.state == State.FAILED
                                       else 'wait, or cancel it first'))
            drop = [task]
        self._drop(drop)
        return 0, dump(removed_entry(len(drop)), 'json'), ''

    def _drop(self, tasks: List[Task]) -> None:
        """Forget finished tasks; their batches keep counting them."""
        gone: Dict[str, List[str]] = {}
        for t in tasks:
            if t.batch_id and self.table.batches.get(t.batch_id) is not None:
                gone.setdefault(t.batch_id, []).append(t.state.value)
            self.scheduler.progress.forget(t)
        for batch_id, states in gone.items():
            self.table.update_batch(batch_id, _pruned(states))
        self.table.remove([t.id for t in tasks])


def _pruned(states: List[str]) -> Callable[[Batch], Batch]:
    return lambda b: b.with_pruned(states)
