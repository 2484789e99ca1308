"""
The per-task planner: ``plan(task, observation, hold) -> Action``.

The per-task counterpart of the scheduler's ``decide``: a pure function,
no I/O, no threads.  ``judge`` reads an ``Observation`` (both ends of the
migration, by image id) into a ``Phase``; ``plan`` maps (phase, the task's
intent, the record's state) to the one action that brings librbd closer to
what the operator asked for.  ``pipeline.Runner`` executes the action,
observes again and asks again, so any intermediate state librbd leaves
behind (a step cut short by a crash, failover or a killed ``rbd``
process) is finished from wherever it stands.

Intermediate states and their action:

========================================  ================================
librbd holds                              action
========================================  ================================
source live, no headers                   prepare (or nothing, on cancel)
source in trash, header PREPARING          abort, then prepare again
both headers PREPARED/EXECUTING           execute
both headers EXECUTED                     verify (unless --verify off, or
                                          passed), then commit (or wait:
                                          manual commit)
either header ABORTING, or the            abort again (by destination, or
destination gone under a source header    by source once it is gone)
source back under its name, out of the    finish the abort: drop the
trash, still ABORTING, destination gone   source's header (``finish_abort``;
(an abort cut at its last step)           librbd's abort fails ENOENT)
destination without header, source        finish the commit: remove the
still in its trash (a cut commit)         source (``finish_commit``)
source's trash entry without its header   finish the commit: drop the entry
object (a commit cut at its last step)    (whatever the destination: the
                                          source's data is gone)
source gone, destination live             drop the protective snapshot,
                                          then committed
a name now resolving to another id        fail: never touch that image
========================================  ================================

The destination is known by its id: recorded by the task, read from the
source's header, or (both headers gone, the record behind) from the intent
key the module wrote on the source before prepare, which prepare copies to
the destination (``interface.Intent``; the adapter's ``observe`` reads it).

A cancel turns every live phase into an abort; once librbd has removed
the destination's header (a commit under way) nothing can be aborted and
the commit is finished instead.  After the abort the source is rolled back
to the protective snapshot when no client wrote to the destination (see
verify.py), and the snapshot is removed.
"""

import enum
import errno
from typing import List, NamedTuple, Optional

from . import remote_spec, source_spec
from .errors import Blocked
from .hold import Hold, HoldKind
from .interface import End, HeaderType, MigrationHeader, MigState, Observation, TrashSource
from .spec import ImageSpec
from .task import State, Task, can_move


class Phase(enum.Enum):
    """Where a migration stands, judged by image id from both ends."""
    NOT_PREPARED = 'not prepared'
    HALF_PREPARED = 'half-prepared'
    PREPARED = 'prepared'
    EXECUTING = 'executing'
    EXECUTED = 'executed'
    ERROR = 'error'
    ABORTING = 'aborting'
    HALF_ABORTED = 'half-aborted'
    HALF_COMMITTED = 'half-committed'
    COMMITTED = 'committed'
    # nothing to do but tell the operator
    DEST_TAKEN = 'destination taken'
    SOURCE_REPLACED = 'source replaced'
    DEST_REPLACED = 'destination replaced'
    SOURCE_MISSING = 'source missing'
    SOURCE_IN_TRASH = 'source in trash'
    OTHER_MIGRATION = 'other migration'
    STRANDED = 'stranded'
    INCONSISTENT = 'inconsistent'

    @property
    def fatal(self) -> bool:
        return self in _FATAL


_FATAL = frozenset({Phase.DEST_TAKEN, Phase.SOURCE_REPLACED, Phase.DEST_REPLACED,
                    Phase.SOURCE_MISSING, Phase.SOURCE_IN_TRASH, Phase.OTHER_MIGRATION,
                    Phase.INCONSISTENT})

# phases in which librbd holds no migration state for the recorded ids:
# a cancel has nothing to undo
_NOTHING_TO_UNDO = frozenset({Phase.NOT_PREPARED, Phase.DEST_TAKEN, Phase.SOURCE_REPLACED,
                              Phase.SOURCE_MISSING, Phase.SOURCE_IN_TRASH,
                              Phase.OTHER_MIGRATION})

_BY_DEST_STATE = {
    MigState.PREPARING: Phase.HALF_PREPARED,
    MigState.PREPARED: Phase.PREPARED,
    MigState.EXECUTING: Phase.EXECUTING,
    MigState.EXECUTED: Phase.EXECUTED,
    MigState.ERROR: Phase.ERROR,
    MigState.ABORTING: Phase.ABORTING,
}


class Verdict(NamedTuple):
    phase: Phase
    detail: str = ''


def _points_to(h: MigrationHeader, end: End, spec: ImageSpec) -> bool:
    """Does header ``h`` name the image ``end`` (at ``spec``)?"""
    return ((h.pool_id == end.pool_id or end.pool_id < 0) and h.namespace == spec.namespace
            and h.image_name == spec.image
            and (end.image_id is None or h.image_id == end.image_id))


def judge(obs: Observation, source: ImageSpec, dest: ImageSpec) -> Verdict:
    """The phase of the migration ``source`` -> ``dest`` that ``obs`` shows."""
    s, d = obs.source, obs.dest
    sid, did = s.image_id, d.image_id
    sh = s.header
    dh = d.header
    if sh is not None and sh.kind != HeaderType.SRC:
        return Verdict(Phase.OTHER_MIGRATION, "source '{}' (id {}) is the destination of "
                       "another migration: see rbd status {}".format(source, sid, source))
    if dh is not None and dh.kind != HeaderType.DST:
        return Verdict(Phase.OTHER_MIGRATION, "destination '{}' (id {}) is the source of "
                       "another migration".format(dest, did))
    if sh is not None and not _points_to(sh, d, dest):
        return Verdict(Phase.OTHER_MIGRATION, "source '{}' (id {}) is being migrated to "
                       "'{}' (id {}), not to '{}': see rbd status".format(
                           source, sid, sh.image_name, sh.image_id, dest))
    if dh is not None and not _points_to(dh, s, source):
        return Verdict(Phase.OTHER_MIGRATION, "'{}' is the target of another migration "
                       "(source image id {}, this task's is {})".format(dest, dh.image_id, sid))

    if sh is None and dh is None:
        return _judge_no_headers(s, d, source, dest)
    if sh is None:
        assert dh is not None
        if dh.state == MigState.ABORTING:
            return Verdict(Phase.ABORTING)
        return Verdict(Phase.INCONSISTENT, "destination '{}' (id {}) has a migration header "
                       'but its source (id {}) has none: see rbd migration abort {}'.format(
                           dest, did, sid, dest))
    if sh.state == MigState.ABORTING and dh is None and d.exists and d.name_id == did:
        # librbd's abort marks the source first, then fails (EINVAL) on a
        # destination without header: a prepare or a commit cut short.  After
        # a cut commit the destination holds the only current data: never
        # guess which it was
        return Verdict(Phase.INCONSISTENT, "an abort was tried on '{}' -> '{}', whose "
                       'destination (id {}) has no migration header (a prepare or a commit '
                       'cut short); the destination may hold the only current data: check '
                       'it with rbd info and rbd du {} before removing anything'.format(
                           source, dest, did, dest))
    if (sh.state == MigState.ABORTING and dh is None and not d.exists
            and s.exists and s.trash is None and s.name_id == sid):
        # librbd's abort put the source back and was cut before its last
        # write (the source's header); its own abort now fails ENOENT
        return Verdict(Phase.HALF_ABORTED)
    if sh.state == MigState.ABORTING or (dh is not None and dh.state == MigState.ABORTING):
        return Verdict(Phase.ABORTING)
    if dh is not None:
        phase = _BY_DEST_STATE.get(dh.state)
        if phase is None:
            return Verdict(Phase.INCONSISTENT, "destination '{}' reports an unknown migration "
                           'state'.format(dest))
        return Verdict(phase, dh.description if phase == Phase.ERROR else '')
    # a source header without a destination header
    if sh.state == MigState.PREPARING:
        return Verdict(Phase.HALF_PREPARED)
    if not d.exists:
        # abort removes the destination before it restores the source
        return Verdict(Phase.ABORTING)
    if d.name_id != did:
        return Verdict(Phase.DEST_REPLACED, _replaced('destination', dest, d.name_id, did))
    if sh.state == MigState.EXECUTED:
        return Verdict(Phase.HALF_COMMITTED)
    return Verdict(Phase.INCONSISTENT, "destination '{}' (id {}) lost its migration header "
                   'before the copy finished (source state {}): see rbd status {}'.format(
                       dest, did, sh.state.name.lower(), dest))


def _replaced(role: str, spec: ImageSpec, now: Optional[str], recorded: Optional[str]) -> str:
    return ("{} '{}' is now image id {}, not the recorded id {}: the module will not touch "
            'it; cancel this task, or add the migration again'.format(
                role, spec, now, recorded))


def _judge_no_headers(s: End, d: End, source: ImageSpec, dest: ImageSpec) -> Verdict:
    sid, did = s.image_id, d.image_id
    in_place = source == dest
    if sid is not None and s.exists and s.trash is None:
        if s.name_id != sid:
            return Verdict(Phase.SOURCE_REPLACED, _replaced('source', source, s.name_id, sid))
        if did is not None and did != sid and d.exists:
            return Verdict(Phase.INCONSISTENT, "both '{}' (id {}) and '{}' (id {}) exist "
                           'without migration headers: check them with rbd info'.format(
                               source, sid, dest, did))
        if not in_place and d.name_id is not None:
            return Verdict(Phase.DEST_TAKEN, "destination image '{}' exists (id {}): choose "
                           'another name or remove it'.format(dest, d.name_id))
        return Verdict(Phase.NOT_PREPARED)
    if sid is not None and s.trash is not None:
        if s.trash != TrashSource.MIGRATION:
            return Verdict(Phase.SOURCE_IN_TRASH, "source '{}' (id {}) was moved to the trash: "
                           'restore it with rbd trash restore'.format(source, sid))
        if not s.exists:
            # a prepare adds the trash entry while the header object exists;
            # only a commit removes that object (with the source's data and
            # snapshots) before the entry, its last write: nothing is left
            # to go back to, whatever the destination
            return Verdict(Phase.HALF_COMMITTED)
        if did is not None and d.exists and d.name_id == did:
            # a commit (librbd's, or our finish of one) removed the source's
            # migration header or its header object, not yet its trash entry;
            # a prepare writes the source's header before the destination exists
            return Verdict(Phase.HALF_COMMITTED)
        if s.exists and s.name_id in (None, sid) and (in_place or d.name_id is None):
            # a prepare moved the source to the trash and was cut before it
            # wrote the source's migration header (or even before the trash
            # move unlinked the name: librbd adds the trash entry first)
            return Verdict(Phase.STRANDED)
        return Verdict(Phase.INCONSISTENT, "source '{}' (id {}) is in the trash as a migration "
                       "source without a migration header, and its name or the destination's "
                       'is taken: see rbd trash ls --all {}'.format(source, sid, source.pool))
    # the source id is gone
    if did is not None and d.exists and d.name_id == did:
        return Verdict(Phase.COMMITTED)
    if did is not None and d.name_id is not None:
        return Verdict(Phase.DEST_REPLACED, _replaced('destination', dest, d.name_id, did))
    if did is None and s.name_id is not None and s.name_id != sid:
        return Verdict(Phase.SOURCE_REPLACED, _replaced('source', source, s.name_id, sid))
    if did is None and d.name_id is not None and not in_place:
        return Verdict(Phase.SOURCE_MISSING, "source image '{}' (id {}) no longer exists and "
                       "'{}' (id {}) was never recorded as its destination: check both with "
                       'rbd info'.format(source, sid, dest, d.name_id))
    return Verdict(Phase.SOURCE_MISSING, "source image '{}' (id {}) does not exist{}".format(
        source, sid, '' if did is None else " and neither does destination '{}' (id {})".format(
            dest, did)))


class Act(enum.Enum):
    PREPARE = 'prepare'
    EXECUTE = 'execute'
    COMMIT = 'commit'
    ABORT = 'abort'
    FINISH_COMMIT = 'finish commit'
    FINISH_ABORT = 'finish abort'            # an abort cut at its last step
    DISCARD_DEST = 'discard destination'   # a prepare cut before the header
    RESTORE_SOURCE = 'restore source'      # a prepare cut before any header
    FLATTEN = 'flatten'
    VERIFY = 'verify'        # compare source and destination before commit
    DROP_SNAP = 'drop protective snapshot'   # (after an abort: roll back to it first)
    MARK = 'mark'            # only the record changes, to ``state``
    WAIT = 'wait'            # nothing to do now (a hold, or an operator's move)
    FAIL = 'fail'


class Action(NamedTuple):
    act: Act
    state: Optional[State] = None    # the record's state when the action starts
    detail: str = ''                 # error/reason for the record
    by_source: bool = False          # ABORT through the source's name
    retry: bool = False              # after ABORT: retry later (an error state)
    hold: Optional[Hold] = None      # WAIT: why
    rollback: bool = False           # DROP_SNAP: roll the image back to it first


def plan(task: Task, obs: Observation, hold: Optional[Hold] = None) -> Action:
    """The one action that moves ``task`` towards its intent, given ``obs``.

    ``hold`` (window, health, pause) keeps new prepare/execute work from
    starting; it never holds an abort, a commit or a finish.
    """
    source = ImageSpec.parse(task.source)
    dest = ImageSpec.parse(task.destination)
    if task.import_spec is not None:
        verdict = judge_import(obs, task)
        action = plan_import(task, verdict, hold)
    else:
        verdict = judge(obs, source, dest)
        action = plan_phase(task, verdict, obs, hold)
    if action.state is not None and (not can_move(task.state, action.state) or (
            task.state == State.ABORTING and action.act == Act.COMMIT)):
        # a record and headers no sequence of steps produces: touch nothing
        # (an abort under way never turns into a commit; a commit found under
        # way is finished by FINISH_COMMIT, not started again)
        return Action(Act.FAIL, State.FAILED, 'librbd shows the migration {} but the task '
                      'is {}: check with rbd status {}, then cancel or retry'.format(
                          verdict.phase.value, task.state, dest))
    return action


def plan_known(task: Task, phase: Phase, hold: Optional[Hold] = None) -> Optional[Action]:
    """The next action right after the runner's own step succeeded, when
    librbd's state is known without reading it back: ``phase`` is what that
    step leaves (prepared, executed, committed).  None when the headers must
    be read first: a cancel, whose abort depends on them."""
    if task.cancel_requested or phase not in (Phase.PREPARED, Phase.EXECUTED,
                                              Phase.COMMITTED):
        return None
    verdict = Verdict(phase)
    action = (plan_import(task, verdict, hold) if task.import_spec is not None
              else plan_phase(task, verdict, None, hold))
    if action.state is not None and not can_move(task.state, action.state):
        return None
    return action


def plan_phase(task: Task, verdict: Verdict, obs: Optional[Observation],
               hold: Optional[Hold] = None) -> Action:
    """``obs`` is read only where a half-done step must be undone (None:
    not read, see ``plan_known``)."""
    phase = verdict.phase
    cancel = task.cancel_requested
    if phase == Phase.STRANDED:
        # nothing of the migration exists but the source's trash entry
        return Action(Act.RESTORE_SOURCE, State.ABORTING if cancel else State.QUEUED,
                      'a prepare was cut short before it wrote a migration header: restoring '
                      'the source from the trash')
    if phase == Phase.HALF_PREPARED and obs is not None and _half_created(obs):
        # librbd's abort cannot undo this (EINVAL, or EEXIST in place): the
        # destination it created has no header yet; it holds nothing but what
        # prepare copied, so remove it, then abort through the source
        return Action(Act.DISCARD_DEST, State.ABORTING if cancel else State.QUEUED,
                      'a prepare was cut short before the destination had its header: '
                      'removing that destination')
    if phase == Phase.COMMITTED:
        return _plan_committed(task)
    if phase == Phase.HALF_COMMITTED:
        # librbd removed the destination's header: the source cannot come back
        return Action(Act.FINISH_COMMIT, State.COMMITTING)
    if phase == Phase.HALF_ABORTED:
        # the destination is gone: the abort can only be finished (the intent
        # it shows, like ABORTING below; a cancel's record says aborting)
        return Action(Act.FINISH_ABORT, State.ABORTING if cancel else None)
    if cancel:
        return _plan_cancel(task, verdict, obs)
    if phase.fatal:
        return Action(Act.FAIL, State.FAILED, verdict.detail)
    if phase == Phase.NOT_PREPARED:
        return _plan_start(task, hold)
    if phase == Phase.HALF_PREPARED:
        return Action(Act.ABORT, State.QUEUED, 'a prepare was cut short: undoing it',
                      by_source=_abort_by_source(phase, obs))
    if phase == Phase.ERROR:
        return Action(Act.ABORT, State.QUEUED,
                      'migration in error state ({}): aborted to start over'.format(
                          verdict.detail or 'no detail'),
                      by_source=_abort_by_source(phase, obs), retry=True)
    if phase == Phase.ABORTING:
        # someone's abort was cut short: finish it (the intent it shows)
        return Action(Act.ABORT, None, by_source=_abort_by_source(phase, obs))
    assert phase in (Phase.PREPARED, Phase.EXECUTING, Phase.EXECUTED), phase
    return _copy_and_commit(task, phase, hold, verifies=True)


def _plan_committed(task: Task) -> Action:
    """Committed: the protective snapshot (it moved to the destination with
    the others) is dropped, then the record marked (after a flatten)."""
    if task.protect_snap is not None:
        return Action(Act.DROP_SNAP)
    if task.state == State.COMMITTED:
        return Action(Act.WAIT)
    late = 'cancel came too late: the migration was committed' if task.cancel_requested else ''
    if task.layout.flatten:
        return Action(Act.FLATTEN, State.COMMITTED, late)
    return Action(Act.MARK, State.COMMITTED, late)


def _plan_start(task: Task, hold: Optional[Hold]) -> Action:
    """Nothing of the migration exists yet: prepare, unless the record says
    it went further (then an abort happened outside the module), or it
    waits for its operator's cutover or a hold."""
    if task.state not in (State.QUEUED, State.PREPARING):
        return Action(Act.FAIL, State.FAILED,
                      'the migration was aborted outside this module (source {} is '
                      'intact): use retry to start it again'.format(task.source))
    if task.awaiting_cutover:
        return Action(Act.WAIT, State.QUEUED, hold=cutover_hold(task))
    if hold is not None and not task.cutover_requested:
        # an operator's cutover prepares whatever holds new work: the
        # copy after it holds like any other
        return Action(Act.WAIT, hold=hold)
    return Action(Act.PREPARE, State.PREPARING)


def _plan_cancel(task: Task, verdict: Verdict, obs: Optional[Observation]) -> Action:
    """A cancel, once no half-done step needs finishing first: nothing to
    undo (a protective snapshot to drop first, rolled back to when no client
    wrote), a fatal phase, or librbd's abort."""
    phase = verdict.phase
    if phase in _NOTHING_TO_UNDO:
        before_prepare = task.state in (State.QUEUED, State.PREPARING) or (
            task.state == State.FAILED and task.dest_image_id is None)
        if phase == Phase.NOT_PREPARED and task.protect_snap is not None:
            # back to exactly what it was before prepare when no client
            # wrote to the destination (the runner looked before the abort)
            return Action(Act.DROP_SNAP, by_source=True,
                          rollback=task.rollback_source and not before_prepare)
        if phase == Phase.NOT_PREPARED and not before_prepare:
            why = 'cancelled: migration aborted, source restored'
        elif phase == Phase.NOT_PREPARED:
            why = 'cancelled before prepare'
        else:
            why = 'cancelled; nothing to undo: {}'.format(verdict.detail)
        return Action(Act.MARK, State.ABORTED, why)
    if phase.fatal:
        return Action(Act.FAIL, State.FAILED, 'cancel failed: {}'.format(verdict.detail))
    return Action(Act.ABORT, State.ABORTING, by_source=_abort_by_source(phase, obs))


def _copy_and_commit(task: Task, phase: Phase, hold: Optional[Hold], verifies: bool) -> Action:
    """The tail a migration and an import share, from prepared on: the copy
    (which a hold keeps from starting), a manual commit's wait, the
    comparison (a migration's), the commit."""
    if phase in (Phase.PREPARED, Phase.EXECUTING):
        if hold is not None:
            return Action(Act.WAIT, State.PREPARED, hold=hold)
        return Action(Act.EXECUTE, State.PREPARED)
    if task.manual_commit and not task.commit_requested:
        return Action(Act.WAIT, State.EXECUTED, hold=Hold(
            HoldKind.MANUAL_COMMIT, 'executed: waiting for ceph rbd livemigrate commit {}'.format(
                task.id)))
    if verifies and not task.verified:
        # just before the commit (a manual commit's may come much later)
        return Action(Act.VERIFY, State.EXECUTED)
    return Action(Act.COMMIT, State.COMMITTING)


class PrepareHold(NamedTuple):
    """What the look before prepare found in the way (``prepare_hold``)."""
    hold: Hold
    recheck_seconds: float       # when the runner looks again (0: the scheduler's watch)
    end_cutover: bool            # an operator's cutover is answered (EBUSY) and ends


def prepare_hold(task: Task, blockers: List[Blocked], recheck_seconds: float
                 ) -> Optional[PrepareHold]:
    """The hold the look before prepare makes of what it found in the way
    (None: nothing, prepare now); raises the first blocker that is not
    waited for.  Clients of the source are waited for (the scheduler
    watches them); so is space (it can come back, and a mgr that just
    started reports none until the OSDs' stats arrive)."""
    if not blockers:
        return None
    hard = [b for b in blockers if not b.wait and b.errno != errno.ENOSPC]
    if hard:
        raise hard[0]
    space = blockers[0].errno == errno.ENOSPC
    kind = HoldKind.NO_SPACE if space else HoldKind.WATCHERS
    return PrepareHold(Hold(kind, str(blockers[0])), recheck_seconds if space else 0.0,
                       task.cutover_requested)


def descendants_hold(dest: ImageSpec, clones: List[str]) -> Optional[Hold]:
    """Commit waits while the destination has clones made during the
    migration (a task added without --allow-descendants): they may be open
    read-only and would not see their parent move.  Only the clones in the
    destination's own pool and namespace are named (``status`` shows this
    to callers scoped to the task's pools)."""
    if not clones:
        return None
    mine = [c for c in clones if ImageSpec.parse(c).pool_spec == dest.pool_spec]
    others = len(clones) - len(mine)
    named = ', '.join(mine[:3]) + (' and ' if mine and others else '') + (
        '{} in other pools'.format(others) if others else '')
    return Hold(HoldKind.DESCENDANTS, (
        "'{}' has {} clone(s) made during the migration ({}): commit waits until they "
        'are flattened or removed, or cancel the task').format(dest, len(clones), named))


def cutover_hold(task: Task) -> Hold:
    return Hold(HoldKind.MANUAL_CUTOVER, 'waiting for ceph rbd livemigrate cutover {} (added '
                'with --manual-cutover)'.format(task.id))


def _abort_by_source(phase: Phase, obs: Optional[Observation]) -> bool:
    """Abort through the source's name once the destination has no header.

    librbd finds a migration by either name; through the destination it
    needs the destination's header, through the source (in its trash) the
    source's.
    """
    assert obs is not None, phase
    return obs.dest.header is None or not obs.dest.exists


def _half_created(obs: Observation) -> bool:
    """A destination a prepare cut short created without its migration header:
    its id is the one the source's header (state preparing) names and its name
    resolves to it; its header object may not even exist yet (librbd adds the
    id object and the directory entry first)."""
    sh, d = obs.source.header, obs.dest
    return (sh is not None and sh.state == MigState.PREPARING and d.header is None
            and d.image_id == sh.image_id and d.name_id == d.image_id)


def state_of(phase: Phase) -> Optional[State]:
    """The record state an adopted migration in ``phase`` starts from."""
    return {Phase.PREPARED: State.PREPARED, Phase.EXECUTING: State.PREPARED,
            Phase.EXECUTED: State.EXECUTED, Phase.HALF_COMMITTED: State.COMMITTING,
            Phase.ABORTING: State.ABORTING, Phase.HALF_PREPARED: State.ABORTING,
            Phase.HALF_ABORTED: State.ABORTING,
            Phase.STRANDED: State.ABORTING,
            Phase.ERROR: State.PREPARED}.get(phase)


# -- imports ----------------------------------------------------------------
#
# An import (``migration_prepare_import``) has no source image: librbd keeps
# everything in the destination's migration header (type DST, source pool id
# -1, and the source-spec it was given).  The phase is judged from that
# header alone, by the recorded destination id, or before the id is known by
# the name and the source-spec the header carries:
#
# ========================================  ================================
# the destination holds                     action
# ========================================  ================================
# nothing under its name                    prepare (nothing, on cancel)
# import header PREPARING                   abort, then prepare again
# import header PREPARED/EXECUTING          execute
# import header EXECUTED                    commit (or wait: manual commit)
# import header ABORTING                    abort again
# the recorded id (or an image carrying       committed
# this task's intent key) without header
# the recorded id gone                      aborted (fail if not cancelled)
# another image or migration                fail: never touch that image
# ========================================  ================================


def is_our_import(task: Task, header: Optional[MigrationHeader]) -> bool:
    """Is ``header`` the one this import's prepare wrote (same source-spec)?"""
    return (header is not None and header.is_import and task.import_spec is not None
            and source_spec.same(header.source_spec, task.import_spec))


def _marked_by(task: Task, end: End) -> bool:
    """``end`` (without migration header) carries this import task's intent key."""
    return end.header is None and end.intent is not None and end.intent.task_id == task.id


def import_dest_id(task: Task, obs: Observation) -> Optional[str]:
    """The destination id to record once the header (or, after the commit,
    the intent key) shows it is ours."""
    d = obs.dest
    if task.dest_image_id is None and d.image_id is not None and d.exists \
            and (is_our_import(task, d.header) or _marked_by(task, d)):
        return d.image_id
    return None


def judge_import(obs: Observation, task: Task) -> Verdict:
    """The phase of import ``task``, from its destination alone."""
    dest = task.destination
    d = obs.dest
    h = d.header
    did = task.dest_image_id
    if did is None:
        if d.name_id is None:
            return Verdict(Phase.NOT_PREPARED)
        if h is None and d.name_id == d.image_id and _marked_by(task, d):
            # the commit removed the header before the record had the id
            return Verdict(Phase.COMMITTED)
        if h is None:
            return Verdict(Phase.DEST_TAKEN, "destination image '{}' exists (id {}): choose "
                           'another name or remove it'.format(dest, d.name_id))
        if not is_our_import(task, h):
            return Verdict(Phase.OTHER_MIGRATION, "'{}' (id {}) is {} migration or import, "
                           'not this task\'s: see rbd status {}'.format(
                               dest, d.name_id, 'the source of a' if h.kind == HeaderType.SRC
                               else 'the target of another', dest))
    elif not d.exists:
        if d.name_id is not None:
            return Verdict(Phase.DEST_TAKEN, "destination '{}' is now image id {}, not the "
                           'recorded id {}: the module will not touch it'.format(
                               dest, d.name_id, did))
        return Verdict(Phase.NOT_PREPARED, 'gone')
    elif h is None:
        if d.name_id != did:
            return Verdict(Phase.DEST_REPLACED, _replaced('destination', ImageSpec.parse(dest),
                                                          d.name_id, did))
        # librbd's commit of an import only removes the destination's header
        return Verdict(Phase.COMMITTED)
    elif not h.is_import:
        return Verdict(Phase.OTHER_MIGRATION, "'{}' (id {}) is part of a migration that is not "
                       'an import: see rbd status {}'.format(dest, did, dest))
    assert h is not None
    phase = _BY_DEST_STATE.get(h.state)
    if phase is None:
        return Verdict(Phase.INCONSISTENT, "destination '{}' reports an unknown migration "
                       'state'.format(dest))
    return Verdict(phase, h.description if phase == Phase.ERROR else '')


def plan_import(task: Task, verdict: Verdict, hold: Optional[Hold] = None) -> Action:
    """The one action for import ``task`` in ``verdict``'s phase (every abort
    goes through the destination: there is no source to restore)."""
    phase = verdict.phase
    if phase == Phase.COMMITTED:
        if task.state == State.COMMITTED:
            return Action(Act.WAIT)
        return Action(Act.MARK, State.COMMITTED, 'cancel came too late: the import was '
                      'committed' if task.cancel_requested else '')
    if task.cancel_requested:
        if phase == Phase.NOT_PREPARED or phase.fatal:
            if phase == Phase.NOT_PREPARED and verdict.detail != 'gone':
                why = 'cancelled before prepare'
            elif phase == Phase.NOT_PREPARED:
                why = 'cancelled: import aborted, destination removed'
            else:
                why = 'cancelled; nothing to undo: {}'.format(verdict.detail)
            return Action(Act.MARK, State.ABORTED, why)
        return Action(Act.ABORT, State.ABORTING)
    if phase.fatal:
        return Action(Act.FAIL, State.FAILED, verdict.detail)
    if phase == Phase.NOT_PREPARED:
        if task.state not in (State.QUEUED, State.PREPARING):
            return Action(Act.FAIL, State.FAILED,
                          "the import was aborted outside this module (destination '{}' is "
                          'gone): use retry to start it again'.format(task.destination))
        if hold is not None:
            return Action(Act.WAIT, hold=hold)
        return Action(Act.PREPARE, State.PREPARING)
    if phase == Phase.HALF_PREPARED:
        return Action(Act.ABORT, State.QUEUED, 'an import prepare was cut short: undoing it')
    if phase == Phase.ERROR:
        return Action(Act.ABORT, State.QUEUED,
                      'import in error state ({}): aborted to start over'.format(
                          verdict.detail or 'no detail'), retry=True)
    if phase == Phase.ABORTING:
        return Action(Act.ABORT, None)
    if phase not in (Phase.PREPARED, Phase.EXECUTING, Phase.EXECUTED):
        return Action(Act.FAIL, State.FAILED, verdict.detail or 'import is {}'.format(
            phase.value))
    # an image in another cluster is read at its snapshot; a stream is not read twice
    remote = remote_spec.spec_of(task.import_spec) is not None
    return _copy_and_commit(task, phase, hold, verifies=remote)
