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
one.  After a step of its own succeeds, librbd's state is known without
reading it back, and the planner says what is next from it
(``planner.plan_known``).

The runner's steps live by concern: ``cutover.py`` (the look at the source,
the protective snapshot, prepare), ``copying.py`` (execute, commit),
``verifying.py`` (the comparison); what they share is in
``runner_base.py``.  The scheduler is reached through ``runctx.RunContext``.
"""

import logging
from typing import Any, Dict

from .copying import Copying
from .cutover import Cutover
from .errors import Blocked, LiveMigrateError, Transient
from .hold import Hold, HoldKind
from .interface import Intent, MigState, Observation
from .options import retry_delay
from .planner import Act, Action, Phase, import_dest_id, plan, plan_known
from .runner_base import _FALLBACK, MAX_PASSES, Abandoned
from .spec import ImageSpec
from .task import State, Task, VerifyMode
from .verify import protect_name, rollback_safe
from .verifying import Verifying

log = logging.getLogger(__name__)

# what librbd shows right after the runner's own step succeeded, by the state
# that step leaves the record in (a commit: committing, until it is marked)
_KNOWN = {State.PREPARED: Phase.PREPARED, State.EXECUTED: Phase.EXECUTED,
          State.COMMITTING: Phase.COMMITTED}
# the actions done without reading librbd back (``Runner._straight_on``)
_STRAIGHT = (Act.EXECUTE, Act.VERIFY, Act.COMMIT, Act.DROP_SNAP, Act.MARK)


class Runner(Cutover, Copying, Verifying):
    """One task's runner thread (see the module docstring)."""

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
                if self._remote_task(task):
                    # librbd opens the remote through these files whenever the
                    # destination is opened before commit (after a restart too)
                    assert self.remote is not None
                    self.remote.ensure_files(task.import_spec)
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
        if act in (Act.PREPARE, Act.EXECUTE) and self._remote_task(task):
            if not self._remote_gate(task):
                return False
        elif act in (Act.PREPARE, Act.EXECUTE) and task.import_spec is not None \
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
        if act in (Act.FINISH_COMMIT, Act.FINISH_ABORT, Act.RESTORE_SOURCE, Act.DISCARD_DEST):
            return self._finish_cut_step(task, action, source, dest, obs)
        return self._do_abort(task, action, source, dest, obs)

    def _remote_task(self, task: Task) -> bool:
        return self.remote is not None and self.remote.is_remote(task.import_spec)

    def _remote_gate(self, task: Task) -> bool:
        """Before a remote task's prepare and execute: its image has no
        clients, the module's snapshot exists, HEAD has not moved since it
        (``RemoteSources.before_prepare``).  A finding holds the task like a
        local source's clients; False: wait."""
        assert self.remote is not None and task.import_spec is not None
        try:
            self.remote.before_prepare(task.id, task.import_spec)
        except Blocked as e:
            if not e.wait:
                raise
            log.info('task %s: %s', task.id, e)
            self._set_hold(Hold(HoldKind.WATCHERS, str(e)),
                           self._now() + self.worker.options.blocked_recheck_seconds)
            return False
        if task.blocked_kind is not None:
            self.worker.update(self.task_id, lambda t: t.evolve(
                blocked_reason=None, blocked_kind=None, blocked_since=None), wait=False)
        return True

    def _remote_end(self, task: Task, state: State) -> None:
        """A remote task ends: the module's snapshot leaves the remote and,
        after a commit, the destination (librbd copied it); files no task
        needs go.  A failure (the remote away) raises: the end is tried again."""
        assert self.remote is not None
        dest = ImageSpec.parse(task.destination)

        def drop_dest_snap(snap: str) -> None:
            if state == State.COMMITTED and self.adapter.unprotect(self._client(), dest, snap,
                                                                   False):
                log.info('task %s: removed snapshot %s from %s', task.id, snap, dest)
        self.remote.after_end(task.id, task.import_spec, drop_dest_snap)

    def _finish_cut_step(self, task: Task, action: Action, source: ImageSpec, dest: ImageSpec,
                         obs: Observation) -> bool:
        """Finish a librbd step that was cut short where librbd cannot (see
        the planner's phases); True: observe again."""
        act = action.act
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
        assert act == Act.DISCARD_DEST, action
        assert action.state is not None and obs.dest.image_id is not None
        if task.state != action.state:
            self._move(action.state, error=action.detail)
        did = obs.dest.image_id
        self._wait_busy(lambda c: self.adapter.discard_dest(c, dest, did))
        return True

    def _do_abort(self, task: Task, action: Action, source: ImageSpec, dest: ImageSpec,
                  obs: Observation) -> bool:
        """Abort (a cancel, or a half-done prepare undone); True: observe again."""
        assert action.act == Act.ABORT, action
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
            # ls words it; nothing to warn about.  The source is left as it
            # is until the operator's cutover (no protective snapshot yet)
            return
        self._set_hold(hold)

    def _finish(self, action: Action, **more: Any) -> None:
        state = action.state
        assert state in (State.COMMITTED, State.ABORTED), action
        changes: Dict[str, Any] = dict(more, cancel_requested=False)
        if action.detail or state == State.COMMITTED:
            changes['error'] = action.detail or None
        self._sweep_protect(self.worker.get(self.task_id), state, action.detail)
        ending = self.worker.get(self.task_id)
        if self._remote_task(ending):
            self._remote_end(ending, state)
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
