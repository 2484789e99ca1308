"""
One task's executor: observe, ask the planner, do the one action.

A ``Runner`` thread drives one task.  Every pass reads both ends of the
migration from librbd (``RbdPort.observe``, by image id), asks
``planner.plan`` for the one action that moves the task towards what the
operator asked for, and does it; so a runner started after a crash, a
failover, a retry or an operator's own cut ``rbd migration`` step simply
carries on from what the image headers say.  The copy runs on the runner's
own rados client; ``interrupt`` blocklists that client, the only way to
stop ``migration_execute`` on Pacific, after which the abort runs on a new
one.
"""

import errno
import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import Blocked, LiveMigrateError, Transient
from .hold import Hold, HoldKind
from .interface import Client, Intent, MigState, Observation, RbdPort
from .planner import Act, Action, Phase, import_dest_id, plan, plan_known
from .preflight import PoolInfo, find_blockers
from .progress import EXECUTE_SHARE
from .options import retry_delay
from .runctx import RunContext, RunnerHandle
from .spec import ImageSpec
from .task import State, Task, Verification, VerifyMode, VerifyResult
from .verify import explain_mismatch, plan_comparison, protect_name, rollback_safe

log = logging.getLogger(__name__)

MAX_PASSES = 20
ABORT_BUSY_RETRY_SECONDS = 90.0
PERSIST_PROGRESS_SECONDS = 5.0
RECORD_EVERY_SECONDS = 0.25
CUTOVER_LOOK_SECONDS = 0.005       # how often a cutover looks for the destination


class Abandoned(Exception):
    """This runner was abandoned by the worker; stop touching the task."""


# stable states to fall back to when a step is interrupted before librbd
# changed anything; a commit or abort under way stays what it is
_FALLBACK = {State.PREPARING: State.QUEUED, State.EXECUTING: State.PREPARED}

# what librbd shows right after the runner's own step succeeded, by the state
# that step leaves the record in (a commit: committing, until it is marked)
_KNOWN = {State.PREPARED: Phase.PREPARED, State.EXECUTED: Phase.EXECUTED,
          State.COMMITTING: Phase.COMMITTED}
# the actions done without reading librbd back (``Runner._straight_on``)
_STRAIGHT = (Act.EXECUTE, Act.VERIFY, Act.COMMIT, Act.DROP_SNAP, Act.MARK)


class Runner(RunnerHandle):
    def __init__(self, worker: RunContext, task_id: str, adapter: RbdPort,
                 pools: Callable[[], Dict[str, PoolInfo]],
                 import_gate: Optional[Callable[[str, ImageSpec, str], None]] = None) -> None:
        self.worker = worker
        # judges an import's stored source-spec again just before librbd
        # opens its streams (import_guard.ImportGuard.check_text)
        self.import_gate = import_gate
        self.task_id = task_id
        self.adapter = adapter
        self.pools = pools
        self.client: Optional[Client] = None
        self.executing = False
        self.interrupted = False
        self.abandoned = False
        # this runner ran the prepare, or removed the protective snapshot the
        # record named: it knows what became of that snapshot
        self.protect_known = False
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._main, daemon=True,
                                       name='rbd_livemigrate.{}'.format(task_id))

    # -- RunnerHandle --------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def client_addr(self) -> Optional[str]:
        with self._lock:
            return self.client.addr if self.client is not None else None

    def abandon(self) -> None:
        """Called by the worker when our copy hangs on a blocklisted client.

        From now on this thread changes nothing: the worker starts a new
        runner, which reads librbd's state and carries on with a new client.
        """
        with self._lock:
            self.abandoned = True
            self.interrupted = True
            self.client = None        # leaked on purpose: librbd may still use it
        self.worker.update(self.task_id, lambda t: t.evolve(
            attempts=t.attempts + 1, next_retry=None,
            error='the copy client was blocklisted; the copy was restarted'), wait=False)
        self.worker.kick()

    def interrupt(self) -> None:
        with self._lock:
            self.interrupted = True
            client = self.client if self.executing else None
        if client is not None:
            log.info('task %s: blocklisting copy client %s to stop it', self.task_id,
                     client.addr)
            try:
                self.adapter.blocklist(client)
            except LiveMigrateError as e:
                log.warning('task %s: cannot stop the copy: %s', self.task_id, e)
        self.worker.kick()

    # -- helpers -------------------------------------------------------

    def _client(self) -> Client:
        with self._lock:
            if self.client is None or self.client.closed:
                self.client = self.adapter.factory.take()
            return self.client

    def _drop_client(self) -> None:
        """Close our client: it may be blocklisted or otherwise broken."""
        with self._lock:
            client, self.client = self.client, None
        if client is not None:
            client.close()

    def _release_client(self) -> None:
        """Hand a healthy client back for the next task."""
        with self._lock:
            client, self.client = self.client, None
            healthy = not self.interrupted and not self.abandoned
        if client is not None:
            if healthy:
                self.adapter.factory.release(client)
            else:
                client.close()

    def _now(self) -> float:
        return self.worker.clock()

    def _check(self) -> None:
        if self.abandoned:
            raise Abandoned()

    def _move(self, state: State, persist: bool = True, wait: bool = False,
              **changes: object) -> Task:
        self._check()
        now = self._now()
        return self.worker.update(self.task_id, lambda t: t.moved_to(state, now, **changes),
                                  persist=persist, wait=wait)

    def _fail(self, why: str) -> None:
        log.error('task %s failed: %s', self.task_id, why)
        task = self._move(State.FAILED, error=why, blocked_reason=None, blocked_since=None,
                          cancel_requested=False)
        self.worker.progress.fail(task, why)

    # -- main loop -----------------------------------------------------

    def _main(self) -> None:
        try:
            self._run()
        except Abandoned:
            log.warning('task %s: an abandoned runner stopped', self.task_id)
        except Exception as e:
            if self.abandoned:
                return
            log.exception('task %s: unexpected error', self.task_id)
            try:
                self._fail('internal error: {}: {}'.format(type(e).__name__, e))
            except Exception:
                log.exception('task %s: cannot record the failure', self.task_id)
        finally:
            self._release_client()
            self.worker.runner_done(self)

    def _run(self) -> None:
        for _ in range(MAX_PASSES):
            if self.worker.stopping:
                return
            task = self.worker.get(self.task_id)
            if not task.needs_worker:
                return
            if not task.cancel_requested and (task.paused or self.interrupted):
                return
            source = ImageSpec.parse(task.source)
            dest = ImageSpec.parse(task.destination)
            try:
                if task.import_spec is not None:
                    obs = self.adapter.observe_import(dest, task.dest_image_id)
                else:
                    obs = self.adapter.observe(source, dest, task.source_image_id,
                                               task.dest_image_id)
                task = self._learn_ids(task, obs)
                action = plan(task, obs, self.worker.hold_reason(task))
                log.debug('task %s (%s): %s', task.id, task.state, action)
                if not self._do(task, action, source, dest, obs):
                    return
            except Transient as e:
                self._drop_client()
                if self.worker.get(self.task_id).cancel_requested and self.interrupted:
                    self.interrupted = False         # the copy was stopped for a cancel
                    continue
                if self.worker.stopping:
                    self._fallback()
                    return
                self._retry_later(str(e))
                return
            except LiveMigrateError as e:
                if self.worker.get(self.task_id).cancel_requested:
                    self._fail('cancel failed: {}'.format(e))
                else:
                    self._fail(str(e))
                return
        self._retry_later('no progress after {} passes'.format(MAX_PASSES))

    def _learn_ids(self, task: Task, obs: Observation) -> Task:
        """Record the ids librbd shows for this migration (the destination's
        is known once prepare wrote the source's header)."""
        changes: Dict[str, object] = {}
        if task.import_spec is not None:
            dest_id = import_dest_id(task, obs)
            if dest_id is None:
                return task
            return self.worker.update(self.task_id, lambda t: t.evolve(dest_image_id=dest_id),
                                      wait=False)
        if task.source_image_id is None and obs.source.image_id is not None:
            changes['source_image_id'] = obs.source.image_id
        header = obs.source.header
        intent = obs.dest.intent
        if task.dest_image_id is None and obs.dest.image_id is not None and (
                (header is not None and obs.dest.image_id == header.image_id)
                or (intent is not None and intent.names_source(
                    task.source_image_id or obs.source.image_id))):
            changes['dest_image_id'] = obs.dest.image_id
        if not changes:
            return task
        # the destination's id stays readable in the source's header until the
        # commit, whose record write carries it: no store write of its own
        return self.worker.update(self.task_id, lambda t: t.evolve(**changes),
                                  persist='source_image_id' in changes, wait=False)

    def _fallback(self) -> None:
        task = self.worker.get(self.task_id)
        if task.state in _FALLBACK:
            self._move(_FALLBACK[task.state])

    def _retry_later(self, why: str) -> None:
        opts = self.worker.options
        task = self.worker.get(self.task_id)
        attempts = task.attempts + 1
        if attempts >= opts.retry_max_attempts:
            self._fail('{} (gave up after {} attempts)'.format(why, attempts))
            return
        delay = retry_delay(attempts, opts)
        log.warning('task %s: %s; retry %d in %.0fs', self.task_id, why, attempts, delay)
        state = _FALLBACK.get(task.state, task.state)
        self._move(state, attempts=attempts, error=why, next_retry=self._now() + delay)

    # -- actions -------------------------------------------------------

    def _do(self, task: Task, action: Action, source: ImageSpec, dest: ImageSpec,
            obs: Observation) -> bool:
        """Do ``action``; True to observe again, False when done for now."""
        act = action.act
        if act == Act.WAIT:
            self._wait(task, action, source)
            return False
        if act == Act.FAIL:
            if task.state != State.FAILED or task.error != action.detail:
                self._fail(action.detail)
            return False
        if act in (Act.MARK, Act.FLATTEN):
            if act == Act.FLATTEN and self.adapter.flatten(self._client(), dest):
                log.info('task %s: flattened %s', task.id, dest)
            self._finish(action)
            return False
        if act in (Act.PREPARE, Act.EXECUTE) and task.import_spec is not None \
                and self.import_gate is not None:
            self.import_gate(task.import_spec, dest, task.id)
        if act == Act.PREPARE and task.import_spec is not None:
            return self._prepare_import(task, dest) and self._straight_on(dest, dest)
        if act == Act.PREPARE:
            return self._prepare(task, source, dest) and self._straight_on(source, dest)
        if act == Act.EXECUTE:
            if task.state not in (State.PREPARED, State.EXECUTING):
                task = self._move(State.PREPARED, error=None)
            self._execute(task, dest)
            return self._straight_on(source, dest)
        if act == Act.VERIFY:
            if task.state != State.EXECUTED:
                task = self._move(State.EXECUTED, error=None)
            return self._verify(task, source, dest)
        if act == Act.DROP_SNAP:
            assert task.protect_snap is not None
            target = source if action.by_source else dest
            if self.adapter.unprotect(self._client(), target, task.protect_snap,
                                      action.rollback):
                log.info('task %s: %sremoved protective snapshot %s of %s', task.id,
                         'rolled back to and ' if action.rollback else '', task.protect_snap,
                         target)
            self.worker.update(self.task_id, lambda t: t.evolve(
                protect_snap=None, rollback_source=False))
            self.protect_known = True
            return True
        if act == Act.COMMIT:
            if not self._clones_allowed(task, dest):
                return False
            self._commit(task, dest)
            return True
        if act == Act.FINISH_COMMIT:
            task = self._move(State.COMMITTING)
            self.worker.progress.update(task, force=True)
            assert task.source_image_id is not None
            log.warning('task %s: finishing an interrupted commit: removing source %s (id %s)',
                        task.id, source, task.source_image_id)
            sid = task.source_image_id
            self._wait_busy(lambda c: self.adapter.finish_commit(c, source, sid, dest,
                                                                 obs.source.header))
            return True
        if act == Act.FINISH_ABORT:
            if action.state is not None and task.state != action.state:
                task = self._move(action.state)
            assert task.source_image_id is not None
            sid = task.source_image_id
            self._wait_busy(lambda c: self.adapter.finish_abort(c, source, sid,
                                                                obs.source.header))
            return True
        if act == Act.RESTORE_SOURCE:
            assert action.state is not None and task.source_image_id is not None
            if task.state != action.state:
                self._move(action.state, error=action.detail)
            self.adapter.restore_source(self._client(), source, task.source_image_id)
            return True
        if act == Act.DISCARD_DEST:
            assert action.state is not None and obs.dest.image_id is not None
            if task.state != action.state:
                self._move(action.state, error=action.detail)
            did = obs.dest.image_id
            self._wait_busy(lambda c: self.adapter.discard_dest(c, dest, did))
            return True
        assert act == Act.ABORT, action
        if action.state is not None and task.state != action.state:
            self._move(action.state, error=action.detail or task.error)
        target = source if action.by_source else dest
        if (task.cancel_requested and task.protect_snap is not None and not action.by_source
                and obs.dest.exists and obs.dest.header is not None
                and obs.dest.header.state != MigState.ABORTING):
            # (an abort cut short left the destination read-only, EROFS to
            # open: the look before that abort decided, and is in the record)
            # the way back: once the abort removed the destination, what
            # clients wrote to it can no longer be told (see verify.py)
            writes = self.adapter.client_writes(dest, task.protect_snap)
            safe = rollback_safe(writes)
            log.info('task %s: clients wrote %s object(s) of %s since prepare: %s', task.id,
                     'an unknown number of' if writes is None else writes, dest,
                     'the source is rolled back to the protective snapshot after the abort'
                     if safe else 'the abort keeps their writes')
            if safe != task.rollback_source:
                self.worker.update(self.task_id, lambda t: t.evolve(rollback_source=safe))
        if task.cancel_requested and self._unsnapshotted_mismatch(task, action, obs):
            self._restore_head(task, source, dest)
        log.info('task %s: aborting through %s%s', task.id, target,
                 ' ({})'.format(action.detail) if action.detail else '')
        if task.source_image_id is not None and obs.source.exists:
            self._mark(source, task.source_image_id, Intent(
                task.id, 'abort', task.source_image_id, obs.dest.image_id or ''))
        self._abort(target)
        if action.retry:
            raise Transient(action.detail)
        return True

    @staticmethod
    def _unsnapshotted_mismatch(task: Task, action: Action, obs: Observation) -> bool:
        """A batch's task without a protective snapshot whose comparison found
        a difference, its destination still whole (not under abort)."""
        v = task.verification
        return (task.protect_snap is None and task.batch_id is not None
                and task.source_image_id is not None and not action.by_source
                and v is not None and v.result == VerifyResult.MISMATCH
                and obs.dest.exists and obs.dest.header is not None
                and obs.dest.header.state != MigState.ABORTING)

    def _restore_head(self, task: Task, source: ImageSpec, dest: ImageSpec) -> None:
        """librbd's abort copies the destination's head back into the source
        from the source's last snapshot on (all of it without one), damage
        included (its ``revert_data``).  Without a protective snapshot, first
        write the source's bytes over every extent of the destination's head
        that differs, so that the abort copies back exactly the source.  Only
        while no client has the destination open (a batch is for images no
        client uses; with one, the abort keeps its writes)."""
        assert task.source_image_id is not None
        clients = self.adapter.watchers(dest)
        if clients:
            log.warning('task %s: %s has clients (%s): the abort copies its head back into '
                        'the source as it is', task.id, dest, ', '.join(clients[:3]))
            return
        written = self.adapter.restore_head(self._client(), source, task.source_image_id, dest)
        log.warning('task %s: wrote %d byte(s) of the source over the destination %s where '
                    'its head differed, before the abort copies it back', task.id, written,
                    dest)

    def _wait(self, task: Task, action: Action, source: ImageSpec) -> None:
        if action.state is not None and task.state != action.state:
            task = self._move(action.state)
        hold = action.hold
        if hold is None:
            return
        if hold.kind == HoldKind.MANUAL_COMMIT:
            self.worker.progress.update(task, force=True)
            return
        if hold.kind == HoldKind.MANUAL_CUTOVER:
            # ls words it; nothing to warn about.  The snapshot is taken now,
            # off the path from the operator's cutover to the destination
            self._protect_early(task, source)
            return
        self._set_hold(hold)

    def _set_hold(self, hold: Hold, recheck: Optional[float] = None) -> None:
        now = self._now()
        self.worker.update(self.task_id, lambda t: t.evolve(
            blocked_reason=str(hold), blocked_kind=hold.kind.value,
            blocked_since=t.blocked_since or now,
            next_retry=recheck if recheck is not None else t.next_retry), wait=False)

    def _finish(self, action: Action, **more: Any) -> None:
        state = action.state
        assert state in (State.COMMITTED, State.ABORTED), action
        changes: Dict[str, Any] = dict(more, cancel_requested=False)
        if action.detail or state == State.COMMITTED:
            changes['error'] = action.detail or None
        self._sweep_protect(self.worker.get(self.task_id), state, action.detail)
        task = self._move(state, **changes)
        if state == State.COMMITTED:
            self.worker.progress.complete(task)
            log.info('task %s: %s -> %s committed', task.id, task.source, task.destination)
        elif action.detail == 'cancelled before prepare':
            self.worker.progress.forget(task)
        else:
            self.worker.progress.fail(task, 'cancelled')
            log.info('task %s: aborted; %s restored', task.id, task.source)

    def _sweep_protect(self, task: Task, state: State, detail: str) -> None:
        """A protective snapshot the record does not name: the record was
        written behind and a kill -9 came between the snapshot and its write.
        Its name is the task's (``protect_name``): removed, without a
        rollback, from the image that stays.  Only by a runner that neither
        ran the prepare nor removed the snapshot itself (one image open,
        after a restart)."""
        if (self.protect_known or task.protect_snap is not None or task.import_spec is not None
                or task.verify == VerifyMode.OFF or detail == 'cancelled before prepare'):
            return
        spec = ImageSpec.parse(task.destination if state == State.COMMITTED else task.source)
        try:
            if self.adapter.unprotect(self._client(), spec, protect_name(task.id), False):
                log.info('task %s: removed protective snapshot %s of %s, which the record '
                         'had not kept', task.id, protect_name(task.id), spec)
        except LiveMigrateError as e:
            log.warning('task %s: cannot look for protective snapshot %s of %s: %s', task.id,
                        protect_name(task.id), spec, e)

    def _prepare(self, task: Task, source: ImageSpec, dest: ImageSpec) -> bool:
        looked = self._now()
        # the add's look at the source, while its header is unchanged (no
        # image opened: one stat); it lists no clients, prepare refuses them
        seen = self.worker.take_seen(task.id)
        blockers, info = find_blockers(self.adapter, self.pools(), source, dest, task.layout,
                                       task.allow_descendants, seen=seen)
        reused = seen is not None and info is seen
        if task.source_image_id and info is not None and info.id != task.source_image_id:
            blockers.append(Blocked("'{}' is now another image (id {} instead of {})".format(
                source, info.id, task.source_image_id), 2))
        if blockers:
            # space can come back (and a mgr that just started reports no
            # free space until the OSDs' stats arrive): wait, as for watchers
            hard = [b for b in blockers if not b.wait and b.errno != errno.ENOSPC]
            if hard:
                raise hard[0]
            kind = HoldKind.NO_SPACE if blockers[0].errno == errno.ENOSPC else HoldKind.WATCHERS
            if task.cutover_requested:
                # the operator's cutover answers EBUSY with the clients;
                # the task waits for the next cutover
                self.worker.update(self.task_id, lambda t: t.evolve(
                    cutover_requested=False, blocked_reason=str(blockers[0])), wait=False)
                if task.manual_cutover:
                    return False
            # sources with clients are looked at again by the scheduler
            # (watchers only: quickly for the first few in queue order)
            recheck = (self.worker.options.blocked_recheck_seconds
                       if kind == HoldKind.NO_SPACE else 0.0)
            if kind == HoldKind.WATCHERS:
                self._protect_early(task, source)
            self._set_hold(Hold(kind, str(blockers[0])), self._now() + recheck)
            return False
        assert info is not None
        return self._prepare_now(self.worker.get(self.task_id), source, dest, info, reused,
                                 looked)

    def protect_ahead(self) -> None:
        """The scheduler saw the source's clients (``Worker._protect_ahead``):
        take the protective snapshot now, on this thread, the runner not
        started."""
        try:
            task = self.worker.find(self.task_id)
            if task is None or task.state != State.QUEUED or task.protect_snap is not None:
                return
            self._protect_early(task, ImageSpec.parse(task.source))
        finally:
            self._release_client()

    def _protect_early(self, task: Task, source: ImageSpec) -> None:
        """Take the protective snapshot while the source's clients still hold
        it, so that the cutover (their close to the destination's existence)
        waits on no monitor commit: a snapshot needs a new snapshot id, an
        OSDMap change, which the monitors batch once a paxos interval (1 s
        by default).  What clients write between this snapshot and their
        close is part of the copied head, and counts as their writes (see
        verify.py)."""
        name = protect_name(task.id)
        if task.verify == VerifyMode.OFF or task.protect_snap == name:
            return
        try:
            taken = self.adapter.protect_source(self._client(), source, name, clients=True)
        except LiveMigrateError as e:
            # the cutover takes it then, as for a source without clients
            log.info('task %s: no protective snapshot of %s ahead of the cutover: %s',
                     task.id, source, e)
            return
        if taken:
            self.protect_known = True
            self.worker.update(self.task_id, lambda t: t.evolve(protect_snap=name), wait=False)
            log.info('task %s: took protective snapshot %s of %s while its clients hold it',
                     task.id, name, source)

    def _prepare_now(self, task: Task, source: ImageSpec, dest: ImageSpec, info: Any,
                     reused: bool, looked: float) -> bool:
        # a new prepare makes a new destination: forget one an undone
        # prepare may have recorded (the next pass learns the new id)
        # written behind like the runner's other changes: after a crash the
        # next runner reads the headers before it does anything
        protect = protect_name(task.id) if task.verify != VerifyMode.OFF else None
        # taken while the clients held the source (``_protect_early``)
        early = protect is not None and task.protect_snap == protect
        if protect is not None and task.batch_id is not None and not early:
            # a batch's source that no client held: no snapshot, which would
            # be an OSDMap change on the task's path (its creation, its copy
            # at prepare, its removals); the head is compared instead, and a
            # cancel after a mismatch restores the source (see verify.py)
            protect = None
        # Waited for only when no record of the task was ever written (a
        # batch's, written behind at add, and prepared at once): a source
        # prepared for a task that no stored record knows would be found by
        # no one after a crash.  Otherwise written behind, and not at all on
        # the cutover's path: a write there is a monitor commit, which delays
        # the destination's snapshots (an OSDMap change each) by up to a
        # paxos interval.  After a crash the next runner reads librbd's
        # headers and the intent key (``_mark``), and finds a protective
        # snapshot the record does not name by its name (``_sweep_protect``)
        unstored = not self.worker.stored(task.id)
        self._move(State.PREPARING, persist=unstored, wait=unstored,
                   source_image_id=info.id,
                   size_bytes=info.size, dest_image_id=None, blocked_reason=None,
                   blocked_kind=None, blocked_since=None, next_retry=None, error=None,
                   protect_snap=protect, rollback_source=False, verification=None,
                   cutover_ms=None)
        # the durable intent, before the trash move: prepare copies it to the
        # destination it creates, where it names this task and source whatever
        # the record (written behind) and the headers (gone after a commit) say
        self._mark(source, info.id, Intent(task.id, 'prepare', info.id))
        self.protect_known = True
        taken = False
        # the cutover: from the moment the module saw the source without
        # clients (the scheduler's last look, else this preflight's) to the
        # destination's name resolving, which clients see first (prepare
        # goes on after it: the destination's snapshots, its header)
        gone = task.clients_gone_at if task.clients_gone_at is not None else looked
        appeared = self._watch_for(dest, gone) if task.clients_gone_at is not None else None
        try:
            if protect is not None and not early:
                taken = self.adapter.protect_source(self._client(), source, protect)
                if not taken:
                    self.worker.update(self.task_id, lambda t: t.evolve(protect_snap=None),
                                       persist=False)
            self.adapter.prepare(self._client(), source, dest, task.layout, info)
        except LiveMigrateError as e:
            if appeared is not None:
                appeared.set()
            busy = reused and e.errno == errno.EBUSY
            if protect is not None and (taken or (early and not busy)):
                # nothing was prepared (or the next pass finds what was): the
                # next prepare takes the snapshot again
                try:
                    self.adapter.unprotect(self._client(), source, protect, False)
                except LiveMigrateError as e2:
                    log.warning('task %s: cannot remove snapshot %s: %s', task.id, protect, e2)
            if busy:
                # "image has watchers" (prepare, or the snapshot before it):
                # refused before anything changed; the full look names the
                # clients and the task waits for them (an early snapshot stays)
                log.info('task %s: prepare found %s busy (%s); looking again', task.id,
                         source, e)
                self._move(State.QUEUED, persist=False,
                           protect_snap=protect if early else None)
                return self._prepare(self.worker.get(self.task_id), source, dest)
            if early and not taken:
                self.worker.update(self.task_id, lambda t: t.evolve(protect_snap=None),
                                   persist=False)
            raise
        if appeared is not None:
            appeared.set()
        cutover_ms = self.worker.get(self.task_id).cutover_ms
        if appeared is None or cutover_ms is None:
            cutover_ms = round((self._now() - gone) * 1000.0, 1)
        # kept with the next stored change
        self._move(State.PREPARED, persist=False, cutover_ms=cutover_ms,
                   cutover_requested=False)
        log.info('task %s: prepared %s -> %s (cutover %.0f ms)', task.id, source, dest,
                 cutover_ms)
        return True

    def _watch_for(self, dest: ImageSpec, gone: float) -> threading.Event:
        """Look up ``dest``'s name every few milliseconds (one directory read)
        until it resolves, then record the cutover in the task (not stored);
        set the returned event to stop looking."""
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                try:
                    if self.adapter.image_id(dest) is not None:
                        ms = round((self._now() - gone) * 1000.0, 1)
                        self.worker.update(self.task_id, lambda t: t.evolve(cutover_ms=ms)
                                           if t.state == State.PREPARING else t, persist=False)
                        return
                except LiveMigrateError:
                    pass
                stop.wait(CUTOVER_LOOK_SECONDS)
        threading.Thread(target=watch, daemon=True,
                         name='lm-cutover-{}'.format(self.task_id)).start()
        return stop

    def _prepare_import(self, task: Task, dest: ImageSpec) -> bool:
        """``migration_prepare_import`` of the stored source-spec (its
        credentials are ``config://`` references librbd resolves)."""
        assert task.import_spec is not None
        self._move(State.PREPARING, dest_image_id=None, blocked_reason=None, blocked_kind=None,
                   blocked_since=None, next_retry=None, error=None)
        self.adapter.prepare_import(self._client(), task.import_spec, dest, task.layout)
        self._move(State.PREPARED, persist=False)
        log.info('task %s: prepared the import into %s', task.id, dest)
        return True

    def _hold(self) -> bool:
        """Block inside the copy while the task may not run (stalls librbd)."""
        held = False
        while not self.interrupted and not self.worker.stopping:
            task = self.worker.get(self.task_id)
            if task.cancel_requested:
                return held
            hold = self.worker.hold_reason(task)
            if hold is None:
                break
            if not held or task.blocked_reason != str(hold):
                self._set_hold(hold)
                held = True
            self.worker.wait_for(lambda: self.interrupted or self.worker.stopping, 1.0)
        if held:
            self.worker.update(self.task_id, lambda t: t.evolve(
                blocked_reason=None, blocked_kind=None, blocked_since=None,
                last_progress_at=self._now()), wait=False)
        return held

    def _throttle(self, limit: int, base: List[float], copied: int) -> None:
        """Token bucket: sleeping in librbd's progress callback stalls the copy.

        ``base`` is (time, bytes, limit) where the bucket was last reset: at
        the start, after every hold and whenever the effective limit changes
        (a share of the total limit, an option change), so a copy neither
        bursts to catch up nor pays back, at a new rate, the time it ran
        unthrottled or faster.
        """
        if limit != base[2]:
            base[:] = [self._now(), float(copied), float(limit)]
        if limit <= 0:
            return
        due = base[0] + (copied - base[1]) / float(limit)
        delay = due - self._now()
        if delay > 0:
            # keep throttling after an interrupt: the blocklist stops the copy
            # within seconds, and it must not burst at full speed meanwhile
            self.worker.wait_for(lambda: self.abandoned or self.worker.stopping
                                 or self._now() >= due, delay)

    def _execute(self, task: Task, dest: ImageSpec) -> None:
        started = self._now()
        # not written: after a crash the headers say how far the copy got, and
        # progress is written every PERSIST_PROGRESS_SECONDS of a long copy
        task = self._move(State.EXECUTING, persist=False, progress=0.0, bytes_copied=0,
                          rate_bytes_per_sec=None, last_progress_at=started, next_retry=None,
                          blocked_reason=None, blocked_kind=None, blocked_since=None)
        self.worker.progress.update(task, force=True)
        size = task.size_bytes or 0
        last_persist: List[float] = [started]
        base: List[float] = [started, 0.0, float(self.worker.bandwidth_limit(task))]

        # librbd calls back once per object: the record, the progress bar,
        # holds and the limit are looked at every RECORD_EVERY_SECONDS; only
        # the token bucket's arithmetic runs on every call
        last_record: List[float] = [0.0]
        limit: List[int] = [int(base[2])]

        def on_progress(offset: int, total: int) -> None:
            if self.abandoned:
                return
            now = self._now()
            frac = min(1.0, offset / total) if total else 1.0
            copied = int(size * frac)
            if now - last_record[0] >= RECORD_EVERY_SECONDS or frac >= 1.0:
                last_record[0] = now
                elapsed = now - started
                rate = copied / elapsed if elapsed > 0.5 else None
                persist = now - last_persist[0] >= PERSIST_PROGRESS_SECONDS
                if persist:
                    last_persist[0] = now
                t = self.worker.update(self.task_id, lambda t: t.evolve(
                    progress=frac * EXECUTE_SHARE, bytes_copied=copied,
                    rate_bytes_per_sec=rate, last_progress_at=now), persist=persist,
                    wait=False)
                self.worker.progress.update(t)
                if self._hold():
                    base[:2] = [self._now(), float(copied)]
                limit[0] = self.worker.bandwidth_limit(t)
            self._throttle(limit[0], base, copied)

        client = self._client()
        with self._lock:
            if self.interrupted:
                return
            self.executing = True
        try:
            self.adapter.execute(client, dest, on_progress)
        finally:
            with self._lock:
                self.executing = False
        self._check()
        task = self._move(State.EXECUTED, persist=task.manual_commit, progress=EXECUTE_SHARE,
                          bytes_copied=size, execute_seconds=round(self._now() - started, 3))
        log.info('task %s: executed in %.1fs', task.id, self._now() - started)

    def _straight_on(self, source: ImageSpec, dest: ImageSpec) -> bool:
        """After a step of its own that succeeded (a prepare, an execute),
        librbd's state is known without reading it back: ask the planner
        what is next in that state (``planner.plan_known``) and do it at once
        while it is the copy's next step (execute, verify, commit, then the
        protective snapshot and the record).  Anything else (a cancel, a
        hold, an interrupt, a manual commit's wait, a flatten) goes back to
        observing and planning.  True: observe again; False: done."""
        while True:
            task = self.worker.get(self.task_id)
            if self._detour(task):
                return True
            phase = _KNOWN.get(task.state)
            if phase is None:
                return True
            action = plan_known(task, phase, self.worker.hold_reason(task))
            if action is None or action.act not in _STRAIGHT or (
                    action.act == Act.COMMIT and task.layout.flatten):
                return True
            if action.act == Act.EXECUTE:
                if task.dest_image_id is None:
                    # the id prepare gave the destination: one directory lookup
                    dest_id = self.adapter.image_id(dest)
                    task = self.worker.update(self.task_id, lambda t: t.evolve(
                        dest_image_id=dest_id), persist=False)
                self._execute(task, dest)
            elif action.act == Act.VERIFY:
                if not self._verify(task, source, dest):
                    return False
            elif action.act == Act.COMMIT:
                if not self._clones_allowed(task, dest):
                    return False
                self._commit(task, dest)
            elif action.act == Act.DROP_SNAP:
                assert task.protect_snap is not None
                self.adapter.unprotect(self._client(), dest, task.protect_snap, False)
                # stored with the record's end, next
                self.worker.update(self.task_id, lambda t: t.evolve(
                    protect_snap=None, rollback_source=False), persist=False)
                self.protect_known = True
            else:
                self._finish(action)
                return False

    def _verify(self, task: Task, source: ImageSpec, dest: ImageSpec) -> bool:
        """Compare the destination with its source before commit (see
        verify.py).  True: it matches; False: the task failed with the first
        difference.  A cancel or shutdown stops it (``Interrupted``)."""
        started = self._now()
        source_id = task.source_image_id
        assert source_id is not None
        protect = task.protect_snap
        # one look at both sides: their snapshots and what clients wrote
        inputs = self.adapter.verify_inputs(source, source_id, dest, protect)
        writes = inputs.client_writes
        unused = (protect is None and task.batch_id is not None and task.verify == VerifyMode.AUTO
                  and not self.adapter.watchers(dest))
        cmp = plan_comparison(task.verify, inputs.src_snaps, inputs.dst_snaps, protect, writes,
                              unused)
        first = Verification(task.verify, VerifyResult.RUNNING, task.dest_image_id,
                             [p.label for p in cmp.pairs], cmp.note, started=started,
                             client_writes=writes)
        task = self.worker.update(self.task_id, lambda t: t.evolve(verification=first),
                                  persist=False)
        self.worker.progress.verify(task, force=True)
        last = [started]

        def on_progress(done: int, total: int) -> bool:
            if (self.interrupted or self.abandoned or self.worker.stopping
                    or self.worker.get(self.task_id).cancel_requested):
                return False
            now = self._now()
            if now - last[0] >= RECORD_EVERY_SECONDS or done >= total:
                last[0] = now

                def counted(t: Task) -> Task:
                    if t.verification is None:
                        return t
                    return t.evolve(verification=replace(
                        t.verification, bytes_compared=done, bytes_total=total,
                        seconds=now - started))
                t = self.worker.update(self.task_id, counted, persist=False)
                self.worker.progress.verify(t)
            return True
        if cmp.mismatch is not None:
            found: Optional[Tuple[str, int, str]] = ('', 0, cmp.mismatch)
        else:
            found = self.adapter.compare(self._client(), source, source_id, dest, cmp.pairs,
                                         on_progress)
        seconds = self._now() - started
        result = VerifyResult.PASSED if found is None else VerifyResult.MISMATCH
        self._check()
        task = self.worker.update(self.task_id, lambda t: t.evolve(verification=replace(
            t.verification or first, result=result, seconds=seconds,
            mismatch=found[2] if found is not None else None)),
            persist=task.manual_commit, wait=False)
        self.worker.progress.verified(task)
        if found is None:
            log.info('task %s: verified %s against %s in %.1fs (%s)', task.id, dest, source,
                     seconds, ', '.join(first.compared) or 'nothing to compare')
            return True
        self._fail('verification failed: {}; nothing was committed: cancel aborts the '
                   'migration and gives the source back (see status)'.format(
                       explain_mismatch(task.verify, found[0], found[2], writes)))
        return False

    def _detour(self, task: Task) -> bool:
        """Something the planner must look at before the next step."""
        return (task.cancel_requested or self.interrupted or self.abandoned
                or self.worker.stopping or self.worker.hold_reason(task) is not None)

    def _clones_allowed(self, task: Task, dest: ImageSpec) -> bool:
        """Check the clones again just before commit: a clone made since add
        (of the destination, which clients use meanwhile) may be open
        read-only, and would not see its parent move.  A task added without
        --allow-descendants waits until none is left; an error listing them
        is retried like any other."""
        if task.allow_descendants:
            return True
        clones = self.adapter.descendants(dest)
        if not clones:
            return True
        # name only the clones in the destination's own pool and namespace:
        # status shows this to callers scoped to the task's pools
        mine = [c for c in clones if ImageSpec.parse(c).pool_spec == dest.pool_spec]
        others = len(clones) - len(mine)
        named = ', '.join(mine[:3]) + (' and ' if mine and others else '') + (
            '{} in other pools'.format(others) if others else '')
        self._set_hold(Hold(HoldKind.DESCENDANTS, (
            "'{}' has {} clone(s) made during the migration ({}): commit waits until they "
            'are flattened or removed, or cancel the task'
        ).format(dest, len(clones), named)),
            self._now() + self.worker.options.blocked_recheck_seconds)
        return False

    def _mark(self, spec: ImageSpec, image_id: str, intent: Intent) -> None:
        """Make the step about to be taken durable in the image (one OSD
        write; see ``interface.Intent``).  A failure stops the step."""
        self._check()
        self.adapter.mark_intent(self._client(), spec, image_id, intent)

    def _commit(self, task: Task, dest: ImageSpec) -> None:
        """Commit, unless a cancel was accepted first (checked under the table lock:
        a cancel accepted after this point answers EBUSY instead)."""
        now = self._now()
        dest_id = task.dest_image_id or self.adapter.image_id(dest)

        def to_committing(t: Task) -> Task:
            if t.cancel_requested:
                raise _CancelWins()
            return t.moved_to(State.COMMITTING, now, blocked_reason=None, blocked_kind=None,
                              blocked_since=None)
        self._check()
        try:
            # not stored on its own (a commit takes a fraction of a second;
            # the record written once it is done says committed): after a
            # crash in between, the next runner reads librbd's phase (half
            # committed: finished) like after any other cut step
            task = self.worker.update(self.task_id, to_committing, persist=False)
        except _CancelWins:
            return
        if dest_id is not None and (task.source_image_id or task.import_spec is not None):
            # an import's destination: known by the task id once its header is gone
            self._mark(dest, dest_id, Intent(task.id, 'commit', task.source_image_id or '',
                                             dest_id))
        self.worker.progress.update(task, force=True)

        def on_progress(offset: int, total: int) -> None:
            frac = min(1.0, offset / total) if total else 1.0
            t = self.worker.update(self.task_id, lambda t: t.evolve(
                progress=EXECUTE_SHARE + frac * (1 - EXECUTE_SHARE)), persist=False)
            self.worker.progress.update(t)
        self.adapter.commit(self._client(), dest, on_progress)

    def _abort(self, target: ImageSpec) -> None:
        """Abort, waiting out EBUSY from a dead client's lock."""
        deadline = self._now() + ABORT_BUSY_RETRY_SECONDS
        delay = 0.5
        while True:
            self._check()
            try:
                self.adapter.abort(self._client(), target)
                return
            except Transient as e:
                self._drop_client()
                if self._now() >= deadline or self.worker.stopping:
                    raise
                log.info('task %s: abort not possible yet (%s); retrying', self.task_id, e)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _wait_busy(self, step: Callable[[Client], None]) -> None:
        """A finishing step, waiting out EBUSY like ``_abort``: the prepare or
        commit it finishes ran on a client killed with its mgr, whose watch
        on the image stays until the OSDs time it out (measured under load:
        up to a minute).  Any other error goes to the caller (the next pass
        observes again)."""
        deadline = self._now() + ABORT_BUSY_RETRY_SECONDS
        delay = 0.5
        while True:
            self._check()
            try:
                step(self._client())
                return
            except Transient as e:
                if e.errno != errno.EBUSY or self._now() >= deadline or self.worker.stopping:
                    raise
                self._drop_client()
                log.info('task %s: %s; retrying', self.task_id, e)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


class _CancelWins(Exception):
    """A cancel was accepted before the commit started."""
