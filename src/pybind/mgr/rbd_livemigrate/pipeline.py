"""
One task's pipeline: prepare -> execute -> commit, or abort on cancel.

A ``Runner`` thread drives one task.  Every pass first reads where librbd
says the migration is (``Adapter.observe``) and then does only the step
that is missing, so a runner started after a crash, a failover or a retry
simply carries on.  The copy runs on the runner's own rados client;
``interrupt`` blocklists that client, the only way to stop
``migration_execute`` on Pacific, after which the abort runs on a new one.
"""

import logging
import threading
import time
from typing import Callable, Dict, List, Optional

from .errors import Blocked, LiveMigrateError, Transient
from .preflight import PoolInfo, find_blockers
from .progress import EXECUTE_SHARE
from .rbd_adapter import Adapter, Client, Observed, Step
from .scheduler import RunnerHandle, Worker, retry_delay
from .spec import ImageSpec
from .task import State, Task

log = logging.getLogger(__name__)

MAX_PASSES = 20
ABORT_BUSY_RETRY_SECONDS = 90.0
PERSIST_PROGRESS_SECONDS = 5.0


class Abandoned(Exception):
    """This runner was abandoned by the worker; stop touching the task."""


# stable states to fall back to when a step is interrupted
_FALLBACK = {State.PREPARING: State.QUEUED, State.EXECUTING: State.PREPARED,
             State.COMMITTING: State.EXECUTED}


class Runner(RunnerHandle):
    def __init__(self, worker: Worker, task_id: str, adapter: Adapter,
                 pools: Callable[[], Dict[str, PoolInfo]]) -> None:
        self.worker = worker
        self.task_id = task_id
        self.adapter = adapter
        self.pools = pools
        self.client: Optional[Client] = None
        self.executing = False
        self.interrupted = False
        self.abandoned = False
        self.next_step: Optional[Observed] = None
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
            error='the copy client was blocklisted; the copy was restarted'))
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

    def _move(self, state: State, persist: bool = True, **changes: object) -> Task:
        self._check()
        now = self._now()
        return self.worker.update(self.task_id, lambda t: t.moved_to(state, now, **changes),
                                  persist=persist)

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
            log.warning('task %s: an abandoned copy returned at last', self.task_id)
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
        # after a step succeeds we know where librbd is: skip re-reading it
        known: Optional[Observed] = None
        for _ in range(MAX_PASSES):
            if self.worker.stopping:
                return
            task = self.worker.get(self.task_id)
            if not task.needs_worker:
                return
            source = ImageSpec.parse(task.source)
            dest = ImageSpec.parse(task.destination)
            try:
                observed = known or self.adapter.observe(source, dest, task.source_image_id)
                known = None
                if task.cancel_requested:
                    self._cancel(task, dest, observed)
                    return
                if task.paused or self.interrupted:
                    return
                if not self._step(task, source, dest, observed):
                    return
                known, self.next_step = self.next_step, None
            except Transient as e:
                self._drop_client()
                if self.worker.get(self.task_id).cancel_requested:
                    continue                     # the copy was stopped for a cancel
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

    # -- steps ---------------------------------------------------------

    def _step(self, task: Task, source: ImageSpec, dest: ImageSpec,
              observed: Observed) -> bool:
        """Do the one missing step; True to look again, False when done for now."""
        step = observed.step
        if step == Step.NOT_PREPARED:
            if task.state not in (State.QUEUED, State.PREPARING):
                self._fail('the migration was aborted outside this module (source is intact); '
                           'use retry to start it again')
                return False
            if self._gated(task):
                return False
            return self._prepare(task, source, dest)
        if step in (Step.PREPARING, Step.ERROR, Step.ABORTING):
            # a prepare cut short, or a failed copy: undo it, then start over
            log.warning('task %s: librbd reports %s (%s); aborting to start over',
                        task.id, step.value, observed.detail)
            self._abort(dest)
            if task.state != State.QUEUED:
                self._move(State.QUEUED)
            if step == Step.ERROR:
                raise Transient('migration in error state: {}'.format(observed.detail))
            return True
        if step in (Step.PREPARED, Step.EXECUTING):
            if task.state not in (State.PREPARED, State.EXECUTING):
                # prepared before a crash or a failure: catch the record up
                task = self._move(State.PREPARED, error=None)
            if self._gated(task):
                if task.state == State.EXECUTING:
                    self._move(State.PREPARED)
                return False
            self._execute(task, dest)
            return True
        if step == Step.EXECUTED:
            if task.state != State.EXECUTED:
                task = self._move(State.EXECUTED, progress=EXECUTE_SHARE,
                                  bytes_copied=task.size_bytes or task.bytes_copied)
            if task.manual_commit and not task.commit_requested:
                self.worker.progress.update(task, force=True)
                return False
            self._commit(task, dest)
            return True
        if step == Step.COMMITTED:
            if task.layout.flatten and task.state != State.COMMITTED:
                # librbd's Pacific binding cannot flatten in prepare: do it now
                if self.adapter.flatten(self._client(), dest):
                    log.info('task %s: flattened %s', task.id, dest)
            if task.state != State.COMMITTED:
                task = self._move(State.COMMITTED, dest_image_id=observed.dest_image_id)
            self.worker.progress.complete(task)
            log.info('task %s: %s -> %s committed', task.id, task.source, task.destination)
            return False
        # SOURCE_MISSING, CONFLICT
        self._fail(observed.detail)
        return False

    def _gated(self, task: Task) -> bool:
        """No new prepare/execute while the window, health or a pause says so."""
        reason = self.worker.hold_reason(task)
        if reason is None:
            return False
        now = self._now()
        self.worker.update(self.task_id, lambda t: t.evolve(
            blocked_reason=reason, blocked_since=t.blocked_since or now))
        return True

    def _prepare(self, task: Task, source: ImageSpec, dest: ImageSpec) -> bool:
        blockers, info = find_blockers(self.adapter, self.pools(), source, dest, task.layout,
                                       task.allow_descendants)
        if task.source_image_id and info is not None and info.id != task.source_image_id:
            blockers.append(Blocked("'{}' is now another image (id {} instead of {})".format(
                source, info.id, task.source_image_id), 2))
        if blockers:
            if all(b.wait for b in blockers):
                now = self._now()
                reason = str(blockers[0])
                recheck = now + self.worker.options.blocked_recheck_seconds
                self.worker.update(self.task_id, lambda t: t.evolve(
                    blocked_reason=reason, blocked_since=t.blocked_since or now,
                    next_retry=recheck))
                return False
            raise blockers[0]
        assert info is not None
        self._move(State.PREPARING, source_image_id=info.id, size_bytes=info.size,
                   blocked_reason=None, blocked_since=None, next_retry=None, error=None)
        self.adapter.prepare(self._client(), source, dest, task.layout, info)
        # not persisted: execute's record follows at once, and after a crash
        # the next runner reads 'prepared' from librbd anyway
        self._move(State.PREPARED, persist=False)
        self.next_step = Observed(Step.PREPARED)
        log.info('task %s: prepared %s -> %s', task.id, source, dest)
        return True

    def _hold(self) -> bool:
        """Block inside the copy while the task may not run (stalls librbd)."""
        held = False
        while not self.interrupted and not self.worker.stopping:
            task = self.worker.get(self.task_id)
            if task.cancel_requested:
                return held
            reason = self.worker.hold_reason(task)
            if reason is None:
                break
            if not held or task.blocked_reason != reason:
                now = self._now()
                self.worker.update(self.task_id, lambda t: t.evolve(
                    blocked_reason=reason, blocked_since=t.blocked_since or now))
                held = True
            self.worker.wait_for(lambda: self.interrupted or self.worker.stopping, 1.0)
        if held:
            self.worker.update(self.task_id, lambda t: t.evolve(
                blocked_reason=None, blocked_since=None, last_progress_at=self._now()))
        return held

    def _throttle(self, task: Task, base: List[float], copied: int) -> None:
        """Token bucket: sleeping in librbd's progress callback stalls the copy.

        ``base`` is (time, bytes) where the bucket was last reset: at the start
        and after every hold, so a resumed copy does not burst to catch up.
        """
        limit = self.worker.bandwidth_limit(task)
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
        task = self._move(State.EXECUTING, progress=0.0, bytes_copied=0,
                          rate_bytes_per_sec=None, last_progress_at=started, next_retry=None,
                          blocked_reason=None, blocked_since=None)
        self.worker.progress.update(task, force=True)
        size = task.size_bytes or 0
        last_persist: List[float] = [started]
        base: List[float] = [started, 0.0]

        def on_progress(offset: int, total: int) -> None:
            if self.abandoned:
                return
            now = self._now()
            frac = min(1.0, offset / total) if total else 1.0
            copied = int(size * frac)
            elapsed = now - started
            rate = copied / elapsed if elapsed > 0.5 else None
            persist = now - last_persist[0] >= PERSIST_PROGRESS_SECONDS
            if persist:
                last_persist[0] = now
            t = self.worker.update(self.task_id, lambda t: t.evolve(
                progress=frac * EXECUTE_SHARE, bytes_copied=copied, rate_bytes_per_sec=rate,
                last_progress_at=now), persist=persist)
            self.worker.progress.update(t)
            if self._hold():
                base[:] = [self._now(), copied]
            self._throttle(t, base, copied)

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
                          bytes_copied=size)
        self.next_step = Observed(Step.EXECUTED)
        log.info('task %s: executed in %.1fs', task.id, self._now() - started)

    def _commit(self, task: Task, dest: ImageSpec) -> None:
        task = self._move(State.COMMITTING)
        self.worker.progress.update(task, force=True)

        def on_progress(offset: int, total: int) -> None:
            frac = min(1.0, offset / total) if total else 1.0
            t = self.worker.update(self.task_id, lambda t: t.evolve(
                progress=EXECUTE_SHARE + frac * (1 - EXECUTE_SHARE)), persist=False)
            self.worker.progress.update(t)
        self.adapter.commit(self._client(), dest, on_progress)
        self.next_step = Observed(Step.COMMITTED, dest_image_id=task.dest_image_id)

    def _abort(self, dest: ImageSpec) -> None:
        """Abort, waiting out EBUSY from a dead client's lock."""
        deadline = self._now() + ABORT_BUSY_RETRY_SECONDS
        delay = 0.5
        while True:
            try:
                self.adapter.abort(self._client(), dest)
                return
            except Transient as e:
                self._drop_client()
                if self._now() >= deadline or self.worker.stopping:
                    raise
                log.info('task %s: abort not possible yet (%s); retrying', self.task_id, e)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _cancel(self, task: Task, dest: ImageSpec, observed: Observed) -> None:
        step = observed.step
        if step == Step.COMMITTED:
            task = self._move(State.COMMITTED, cancel_requested=False,
                              error='cancel came too late: the migration was committed')
            self.worker.progress.complete(task)
            return
        if step in (Step.NOT_PREPARED, Step.SOURCE_MISSING, Step.CONFLICT):
            task = self._move(State.ABORTED, error='cancelled before prepare')
            self.worker.progress.forget(task)
            return
        if task.state != State.ABORTING:
            task = self._move(State.ABORTING)
        self._abort(dest)
        task = self._move(State.ABORTED, error='cancelled: migration aborted, source restored')
        self.worker.progress.fail(task, 'cancelled')
        log.info('task %s: aborted; %s restored', task.id, task.source)
