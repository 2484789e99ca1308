"""
The planner's whole table: every task state x every situation librbd can
leave behind (cross-pool and in place) x cancel or not, against a table
written out here, plus invariants that hold for every cell.
"""

import itertools
from typing import Dict, Tuple

import pytest

from rbd_livemigrate.hold import Hold, HoldKind
from rbd_livemigrate.interface import (End, HeaderType, Intent, MigrationHeader, MigState,
                                       Observation, TrashSource)
from rbd_livemigrate.planner import Act, Phase, judge, plan, state_of
from rbd_livemigrate.spec import ImageSpec
from rbd_livemigrate.task import Layout, State, Task, can_move

S, D, X = 'src1', 'dst1', 'other9'
A, B = 1, 2          # pool ids of a and b


def src_header(state: MigState, dest_pool: int = B, name: str = 'img', did: str = D
               ) -> MigrationHeader:
    return MigrationHeader(HeaderType.SRC, dest_pool, '', name, did, state)


def dst_header(state: MigState, sid: str = S) -> MigrationHeader:
    return MigrationHeader(HeaderType.DST, A, '', 'img', sid, state)


def obs(s: End, d: End) -> Observation:
    return Observation(s, d)


def cross_pool() -> Dict[str, Tuple[Observation, Phase]]:
    """Every situation, for a/img -> b/img, with the phase it must be judged."""
    live = End(S, S, True, None, None, A)
    trashed = lambda h: End(S, None, True, h, TrashSource.MIGRATION, A)  # noqa: E731
    d_live = lambda h: End(D, D, True, h, None, B)  # noqa: E731
    d_gone = End(D, None, False, None, None, B)
    both = lambda st: obs(trashed(src_header(st)), d_live(dst_header(st)))  # noqa: E731
    return {
        'not prepared': (obs(live, End(None, None, pool_id=B)), Phase.NOT_PREPARED),
        'destination name taken': (obs(live, End(None, X, pool_id=B)), Phase.DEST_TAKEN),
        'prepare cut before destination': (
            obs(trashed(src_header(MigState.PREPARING)), d_gone), Phase.HALF_PREPARED),
        'prepare cut, destination without header': (
            obs(trashed(src_header(MigState.PREPARING)), d_live(None)), Phase.HALF_PREPARED),
        'prepare cut, both preparing': (both(MigState.PREPARING), Phase.HALF_PREPARED),
        'prepared': (both(MigState.PREPARED), Phase.PREPARED),
        'executing': (both(MigState.EXECUTING), Phase.EXECUTING),
        'executed': (both(MigState.EXECUTED), Phase.EXECUTED),
        'error': (both(MigState.ERROR), Phase.ERROR),
        'abort cut, source aborting': (
            obs(trashed(src_header(MigState.ABORTING)), d_live(dst_header(MigState.EXECUTED))),
            Phase.ABORTING),
        'abort cut, both aborting': (both(MigState.ABORTING), Phase.ABORTING),
        'abort cut after destination removal': (
            obs(trashed(src_header(MigState.ABORTING)), d_gone), Phase.ABORTING),
        # librbd's abort put the source back and was cut before its last
        # write (measured: a new migration_abort fails ENOENT here)
        'abort cut after source restore': (
            obs(End(S, S, True, src_header(MigState.ABORTING), None, A), d_gone),
            Phase.HALF_ABORTED),
        'abort cut while restoring, still in the trash': (
            obs(End(S, S, True, src_header(MigState.ABORTING), TrashSource.MIGRATION, A),
                d_gone), Phase.ABORTING),
        'commit cut after destination header removal': (
            obs(trashed(src_header(MigState.EXECUTED)), d_live(None)), Phase.HALF_COMMITTED),
        'finish of a commit cut after migration_remove': (
            obs(End(S, None, True, None, TrashSource.MIGRATION, A), d_live(None)),
            Phase.HALF_COMMITTED),
        'commit cut after source header removal': (
            obs(End(S, None, False, None, TrashSource.MIGRATION, A), d_live(None)),
            Phase.HALF_COMMITTED),
        # issue 21: the record never got the destination's id and both
        # headers are gone: the trash entry is all that is left to remove
        'commit cut at its last step, destination not recorded': (
            obs(End(S, None, False, None, TrashSource.MIGRATION, A), End(None, X, pool_id=B)),
            Phase.HALF_COMMITTED),
        'commit cut at its last step, destination gone too': (
            obs(End(S, None, False, None, TrashSource.MIGRATION, A), d_gone),
            Phase.HALF_COMMITTED),
        # ... and once that is done: the destination found by its intent key
        'committed, destination found by its intent key': (
            obs(End(S, None, False, None, None, A),
                End(D, D, True, None, None, B, Intent('t1', 'commit', S, D))),
            Phase.COMMITTED),
        'committed': (obs(End(S, None, False, None, None, A), d_live(None)), Phase.COMMITTED),
        'source replaced before prepare': (
            obs(End(S, X, False, None, None, A), End(None, None, pool_id=B)),
            Phase.SOURCE_REPLACED),
        'source renamed away': (obs(End(S, None, True, None, None, A),
                                    End(None, None, pool_id=B)), Phase.SOURCE_REPLACED),
        'destination replaced after commit': (
            obs(End(S, None, False, None, None, A), End(D, X, False, None, None, B)),
            Phase.DEST_REPLACED),
        'destination replaced during commit': (
            obs(trashed(src_header(MigState.EXECUTED)), End(D, X, True, None, None, B)),
            Phase.DEST_REPLACED),
        'source missing': (obs(End(S, None, False, None, None, A), End(None, None, pool_id=B)),
                           Phase.SOURCE_MISSING),
        'source and destination gone': (
            obs(End(S, None, False, None, None, A), d_gone), Phase.SOURCE_MISSING),
        'source gone, unrecorded destination exists': (
            obs(End(S, None, False, None, None, A), End(None, X, pool_id=B)),
            Phase.SOURCE_MISSING),
        'source moved to trash by a user': (
            obs(End(S, None, True, None, TrashSource.USER, A), End(None, None, pool_id=B)),
            Phase.SOURCE_IN_TRASH),
        'source migrating elsewhere': (
            obs(trashed(src_header(MigState.PREPARED, name='elsewhere', did=X)),
                End(None, None, pool_id=B)), Phase.OTHER_MIGRATION),
        'destination of another migration': (
            obs(live, d_live(dst_header(MigState.PREPARED, sid=X))), Phase.OTHER_MIGRATION),
        'source is itself a destination': (
            obs(End(S, S, True, dst_header(MigState.PREPARED, sid=X), None, A),
                End(None, None, pool_id=B)), Phase.OTHER_MIGRATION),
        'destination is itself a source': (
            obs(live, End(D, None, True, src_header(MigState.PREPARED), TrashSource.MIGRATION,
                          B)), Phase.OTHER_MIGRATION),
        'prepare cut between trash move and header': (
            obs(trashed(None), End(None, None, pool_id=B)), Phase.STRANDED),
        'abort tried on a destination without header': (
            obs(trashed(src_header(MigState.ABORTING)), d_live(None)), Phase.INCONSISTENT),
        'destination lost its header mid-copy': (
            obs(trashed(src_header(MigState.EXECUTING)), d_live(None)), Phase.INCONSISTENT),
        'trash move cut before it unlinked the name': (
            obs(End(S, S, True, None, TrashSource.MIGRATION, A), End(None, None, pool_id=B)),
            Phase.STRANDED),
        'in the trash without header, name taken': (
            obs(End(S, X, True, None, TrashSource.MIGRATION, A), End(None, None, pool_id=B)),
            Phase.INCONSISTENT),
        'destination header without source header': (
            obs(End(S, None, True, None, TrashSource.MIGRATION, A),
                d_live(dst_header(MigState.PREPARED))), Phase.INCONSISTENT),
        'both live without headers': (obs(live, d_live(None)), Phase.INCONSISTENT),
    }


def in_place() -> Dict[str, Tuple[Observation, Phase]]:
    """a/img -> a/img: the source goes to the trash, the name moves to D."""
    def sh(st: MigState) -> MigrationHeader:
        return src_header(st, dest_pool=A)
    trashed = lambda h: End(S, D, True, h, TrashSource.MIGRATION, A)  # noqa: E731
    d_live = lambda h: End(D, D, True, h, None, A)  # noqa: E731
    return {
        'not prepared': (obs(End(S, S, True, None, None, A), End(None, S, pool_id=A)),
                         Phase.NOT_PREPARED),
        'executing': (obs(trashed(sh(MigState.EXECUTING)), d_live(dst_header(
            MigState.EXECUTING))), Phase.EXECUTING),
        'commit cut': (obs(trashed(sh(MigState.EXECUTED)), d_live(None)), Phase.HALF_COMMITTED),
        'commit cut at its last step': (
            obs(End(S, D, False, None, TrashSource.MIGRATION, A), End(None, D, pool_id=A)),
            Phase.HALF_COMMITTED),
        'abort cut at its last step': (
            obs(End(S, S, True, sh(MigState.ABORTING), None, A), End(D, S, False, None, None, A)),
            Phase.HALF_ABORTED),
        'prepare cut, destination named without header object': (
            obs(trashed(sh(MigState.PREPARING)), End(D, D, False, None, None, A)),
            Phase.HALF_PREPARED),
        'prepare cut, destination took the name': (
            obs(trashed(sh(MigState.PREPARING)), d_live(None)), Phase.HALF_PREPARED),
        'committed': (obs(End(S, D, False, None, None, A), d_live(None)), Phase.COMMITTED),
        # issue scenario 3: removed and replaced by a clone while queued
        'replaced while queued': (obs(End(S, X, False, None, None, A), End(None, X, pool_id=A)),
                                  Phase.SOURCE_REPLACED),
    }


def spec_for(case: str) -> Tuple[str, str]:
    return ('a/img', 'a/img') if case.startswith('in place') else ('a/img', 'b/img')


CASES = {**{k: v for k, v in cross_pool().items()},
         **{'in place: ' + k: v for k, v in in_place().items()}}


@pytest.mark.parametrize('case', sorted(CASES))
def test_judge(case: str) -> None:
    observation, phase = CASES[case]
    source, dest = (ImageSpec.parse(x) for x in spec_for(case))
    verdict = judge(observation, source, dest)
    assert verdict.phase == phase, verdict
    if phase.fatal:
        assert verdict.detail and '\n' not in verdict.detail


def test_every_phase_is_covered() -> None:
    assert {p for _, p in CASES.values()} == set(Phase)


# -- the table ---------------------------------------------------------

STEP_STATES = (State.QUEUED, State.PREPARING)
LIVE_STATES = [s for s in State if not s.terminal]

# (phase, cancel) -> expected act, when it does not depend on the record
TABLE: Dict[Tuple[Phase, bool], Act] = {}
for p in Phase:
    if p.fatal:
        TABLE[(p, False)] = Act.FAIL
        TABLE[(p, True)] = Act.FAIL if p in (Phase.INCONSISTENT,
                                             Phase.DEST_REPLACED) else Act.MARK
TABLE.update({
    (Phase.HALF_PREPARED, False): Act.ABORT, (Phase.HALF_PREPARED, True): Act.ABORT,
    (Phase.STRANDED, False): Act.RESTORE_SOURCE, (Phase.STRANDED, True): Act.RESTORE_SOURCE,
    (Phase.PREPARED, False): Act.EXECUTE, (Phase.PREPARED, True): Act.ABORT,
    (Phase.EXECUTING, False): Act.EXECUTE, (Phase.EXECUTING, True): Act.ABORT,
    (Phase.EXECUTED, True): Act.ABORT,
    (Phase.ERROR, False): Act.ABORT, (Phase.ERROR, True): Act.ABORT,
    (Phase.ABORTING, False): Act.ABORT, (Phase.ABORTING, True): Act.ABORT,
    (Phase.HALF_ABORTED, False): Act.FINISH_ABORT, (Phase.HALF_ABORTED, True): Act.FINISH_ABORT,
    (Phase.HALF_COMMITTED, False): Act.FINISH_COMMIT,
    (Phase.HALF_COMMITTED, True): Act.FINISH_COMMIT,
    (Phase.COMMITTED, False): Act.MARK, (Phase.COMMITTED, True): Act.MARK,
})


# situations whose action is not the phase's: a destination created without its
# header must go before librbd's abort can run
BY_CASE = {'prepare cut, destination without header': Act.DISCARD_DEST,
           'in place: prepare cut, destination took the name': Act.DISCARD_DEST,
           'in place: prepare cut, destination named without header object': Act.DISCARD_DEST}


def expected(phase: Phase, state: State, cancel: bool, manual: bool, case: str = '') -> Act:
    if case in BY_CASE:
        return BY_CASE[case]
    if phase == Phase.NOT_PREPARED:
        if cancel:
            return Act.MARK
        return Act.PREPARE if state in STEP_STATES else Act.FAIL
    if phase == Phase.EXECUTED and not cancel:
        return Act.WAIT if manual else Act.COMMIT
    return TABLE[(phase, cancel)]


def reachable(state: State, cancel: bool) -> bool:
    """Records the module can hold: a cancel is refused while committing."""
    return not (cancel and state == State.COMMITTING)


GRID = [(case, state, cancel, manual)
        for case, state, cancel, manual in itertools.product(
            sorted(CASES), LIVE_STATES, (False, True), (False, True))
        if reachable(state, cancel)]


def make_task(case: str, state: State, cancel: bool, manual: bool,
              flatten: bool = False) -> Task:
    source, dest = spec_for(case)
    return Task(id='t1', source=source, destination=dest, state=state, created=1.0,
                cancel_requested=cancel, manual_commit=manual, source_image_id=S,
                layout=Layout(object_size=8 << 20, flatten=flatten))


@pytest.mark.parametrize('case,state,cancel,manual', GRID)
def test_plan_table(case: str, state: State, cancel: bool, manual: bool) -> None:
    observation, phase = CASES[case]
    task = make_task(case, state, cancel, manual)
    action = plan(task, observation)
    want = expected(phase, state, cancel, manual, case)
    if action.act == Act.FAIL and want != Act.FAIL:
        # only where no step sequence leads from the record to what librbd shows
        assert action.state == State.FAILED
        assert 'but the task is' in action.detail, action
        # (an aborting record never starts a commit: test_planner_table.py)
        assert not can_move(state, _intended_state(phase, state, cancel, manual)) or (
            state == State.ABORTING and want == Act.COMMIT)
        return
    assert action.act == want, (phase, action)
    # invariants of every cell
    if action.state is not None:
        assert can_move(state, action.state), action
    if cancel:
        assert action.act not in (Act.PREPARE, Act.EXECUTE, Act.COMMIT), action
    if phase.fatal:
        assert action.act in (Act.FAIL, Act.MARK)
        assert action.detail
    if action.act == Act.MARK:
        assert action.state in (State.COMMITTED, State.ABORTED)
        if action.state == State.COMMITTED:
            assert phase == Phase.COMMITTED
    if action.act == Act.ABORT:
        # through the destination only while it carries its header
        dest_ok = observation.dest.exists and observation.dest.header is not None
        assert action.by_source == (not dest_ok)


def _intended_state(phase: Phase, state: State, cancel: bool, manual: bool) -> State:
    task = make_task('x', state, cancel, manual)
    from rbd_livemigrate.planner import Verdict, plan_phase
    observation = CASES['committed'][0]
    action = plan_phase(task, Verdict(phase), observation)
    assert action.state is not None
    return action.state


def test_fail_only_on_impossible_records() -> None:
    """The guard fires only for records and headers that do not go together."""
    fired = [(case, state.value, cancel) for case, state, cancel, manual in GRID
             if plan(make_task(case, state, cancel, manual), CASES[case][0]).act == Act.FAIL
             and expected(CASES[case][1], state, cancel, manual, case) != Act.FAIL]
    # a commit under way (committing) cannot meet a fresh or half prepare
    assert {state for _, state, _ in fired} <= {'committing', 'aborting'}


def test_holds_stop_only_new_work() -> None:
    hold = Hold(HoldKind.WINDOW_CLOSED, 'outside the window')
    for case, (observation, phase) in CASES.items():
        for state in LIVE_STATES:
            task = make_task(case, state, False, False)
            free = plan(task, observation)
            held = plan(task, observation, hold)
            if free.act in (Act.PREPARE, Act.EXECUTE):
                assert held.act == Act.WAIT and held.hold == hold
            else:
                assert held == free


def test_flatten_only_when_committed_and_recorded() -> None:
    observation, _ = CASES['committed']
    task = make_task('committed', State.COMMITTING, False, False, flatten=True)
    assert plan(task, observation).act == Act.FLATTEN
    # issue scenario 3: the clone under the recorded name is never flattened
    observation, _ = CASES['in place: replaced while queued']
    task = make_task('in place: replaced while queued', State.QUEUED, False, False,
                     flatten=True)
    action = plan(task, observation)
    assert action.act == Act.FAIL
    assert S in action.detail and X in action.detail


def test_cancel_after_commit_started_finishes_commit() -> None:
    observation, _ = CASES['commit cut after destination header removal']
    task = make_task('x', State.ABORTING, True, False)
    assert plan(task, observation).act == Act.FINISH_COMMIT
    observation, _ = CASES['committed']
    action = plan(task, observation)
    assert action.act == Act.MARK and action.state == State.COMMITTED
    assert 'too late' in action.detail


def test_error_restarts_with_retry() -> None:
    observation, _ = CASES['error']
    action = plan(make_task('x', State.EXECUTING, False, False), observation)
    assert action.act == Act.ABORT and action.retry and action.state == State.QUEUED


def test_adopted_state() -> None:
    assert state_of(Phase.HALF_COMMITTED) == State.COMMITTING
    assert state_of(Phase.ABORTING) == State.ABORTING
    assert state_of(Phase.EXECUTED) == State.EXECUTED
    assert state_of(Phase.STRANDED) == State.ABORTING
    for p in (Phase.NOT_PREPARED, Phase.COMMITTED) + tuple(p for p in Phase if p.fatal):
        assert state_of(p) is None


def test_manual_commit_waits_with_reason() -> None:
    observation, _ = CASES['executed']
    action = plan(make_task('x', State.EXECUTING, False, True), observation)
    assert action.act == Act.WAIT and action.state == State.EXECUTED
    assert action.hold is not None and action.hold.kind == HoldKind.MANUAL_COMMIT


def test_intent_key_round_trip_and_foreign_values() -> None:
    i = Intent('t1', 'commit', S, D)
    assert Intent.loads(i.dumps()) == i
    assert Intent.loads(Intent('t1', 'prepare', S).dumps()) == Intent('t1', 'prepare', S, '')
    for bad in ('', 'x', '[]', '{"task": "t1"}', '{"task": "t1", "step": "dance", '
                '"source_id": "s"}', '{"task": 1, "step": "commit", "source_id": "s"}'):
        assert Intent.loads(bad) is None, bad
    assert i.names_source(S) and not i.names_source(X) and not i.names_source(None)


def test_import_committed_with_the_record_behind_is_known_by_its_intent_key() -> None:
    from rbd_livemigrate.planner import import_dest_id, judge_import
    t = Task(id='t1', source='b/img', destination='b/img', created=1.0, state=State.PREPARING,
             import_spec='{"type":"raw","stream":{"type":"file","file_path":"/x"}}')
    mine = Observation(End(), End(D, D, True, None, None, B, Intent('t1', 'commit', '', D)))
    assert judge_import(mine, t).phase == Phase.COMMITTED
    assert import_dest_id(t, mine) == D
    assert plan(t, mine).act == Act.MARK and plan(t, mine).state == State.COMMITTED
    for other in (Intent('t2', 'commit', '', D), None):
        o = Observation(End(), End(D, D, True, None, None, B, other))
        assert judge_import(o, t).phase == Phase.DEST_TAKEN
        assert import_dest_id(t, o) is None
    assert Intent.loads(Intent('t1', 'commit', '', D).dumps()) == Intent('t1', 'commit', '', D)
    assert not Intent('t1', 'commit', '', D).names_source('')
