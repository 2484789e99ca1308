"""
A task's way to prepare: the look at the source, its protective snapshot
(taken while the clients still hold it, off the cutover's path), the
prepare, and the cutover it measures.
"""

import errno
import logging
import threading
from typing import Any, Optional

from .errors import Blocked, LiveMigrateError
from .hold import HoldKind
from .interface import Intent
from .planner import prepare_hold
from .preflight import find_blockers
from .runner_base import CUTOVER_LOOK_SECONDS, RunnerBase
from .spec import ImageSpec
from .task import State, Task, VerifyMode
from .verify import protect_name

log = logging.getLogger(__name__)


class Cutover(RunnerBase):
    """The prepare and what comes before it."""

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
        held = prepare_hold(task, blockers, self.worker.options.blocked_recheck_seconds)
        if held is not None:
            if held.end_cutover:
                # the operator's cutover answers EBUSY with the clients;
                # the task waits for the next cutover
                self.worker.update(self.task_id, lambda t: t.evolve(
                    cutover_requested=False, blocked_reason=str(held.hold)), wait=False)
                if task.manual_cutover:
                    return False
            if held.hold.kind == HoldKind.WATCHERS:
                self._protect_early(task, source)
            self._set_hold(held.hold, self._now() + held.recheck_seconds)
            return False
        assert info is not None
        return self._prepare_now(self.worker.get(self.task_id), source, dest, info, reused,
                                 looked)

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
            return self._prepare_failed(e, source, dest, protect, taken, early, reused)
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

    def _prepare_failed(self, e: LiveMigrateError, source: ImageSpec, dest: ImageSpec,
                        protect: Optional[str], taken: bool, early: bool, reused: bool) -> bool:
        """A snapshot or prepare refused: undo the snapshot this attempt took
        (an early one too, unless the clients came back), and look again
        when the clients came back; else ``e`` is raised."""
        task = self.worker.get(self.task_id)
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
        raise e

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
        # A remote import's prepare copies the remote's snapshots into the
        # destination, OSDMap changes that wait for the monitors' next
        # proposal: a record stored just before held each up to a paxos
        # interval (1 s at Ceph's defaults; qa/bench/bench_remote.py, a pool
        # of 20: 29 s -> 22 s).  Not stored: a restart reads what the prepare
        # did from the destination's header (judge_import reads it alone).
        remote = self.remote is not None and self.remote.is_remote(task.import_spec)
        self._move(State.PREPARING, persist=not remote, dest_image_id=None,
                   blocked_reason=None, blocked_kind=None, blocked_since=None,
                   next_retry=None, error=None)
        self.adapter.prepare_import(self._client(), task.import_spec, dest, task.layout)
        self._move(State.PREPARED, persist=False)
        log.info('task %s: prepared the import into %s', task.id, dest)
        return True
