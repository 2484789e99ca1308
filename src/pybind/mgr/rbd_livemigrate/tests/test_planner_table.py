"""
The planner's FAIL cells, written without the planner's own helpers
(``plan_phase``, ``can_move``): which task records and librbd situations
cannot go together is written out here by hand, and every cell of the grid
(``test_planner.GRID``) must FAIL exactly there and do what the hand table
(``test_planner.expected``) says everywhere else.  Then runners (with the
default verify, kill -9 at every step, in the middle of librbd's steps, and
cancels before every step) try to produce those records: the planner is
never asked with one.
"""

import itertools
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest

from rbd_livemigrate.pipeline import Runner
from rbd_livemigrate.planner import Act, Phase, plan
from rbd_livemigrate.task import State, Task

from test_pipeline import POOLS, worker
from test_pipeline_verify import STEPS, Killed, Killing, _task
from test_planner import CASES, GRID, expected, make_task
from test_store import make_store

# librbd's phases before the copy is done: a migration that goes on
GOING_ON = {Phase.HALF_PREPARED, Phase.STRANDED, Phase.PREPARED, Phase.EXECUTING, Phase.ERROR}


def hand_fail(phase: Phase, state: State, cancel: bool) -> Optional[str]:
    """Why this record cannot meet this librbd situation (None: it can).

    - committing: the module enters it from executed only, just before
      librbd's commit; from executed librbd never goes back to an earlier
      phase (only an abort leads away, and that is ABORTING);
    - aborting without a cancel (an operator's abort the module finishes):
      librbd's abort only goes forward, to the source back alone; it never
      shows a migration going on again, nor executed.
    With a cancel, every situation has a way forward (the cancel's)."""
    if cancel:
        return None
    if state == State.COMMITTING and phase in GOING_ON:
        return 'a commit never meets a migration going on'
    if state == State.ABORTING and (phase in GOING_ON or phase == Phase.EXECUTED):
        return 'an abort under way never meets a migration going on or executed'
    return None


# cells where the planner disagrees with the hand table: reported, not hidden
# cells where the planner once disagreed with the hand table (an aborting
# record with librbd executed committed without --manual-commit): none left
DISAGREE: Dict[Tuple[str, State, bool, bool], str] = {}


def _cells() -> List[Any]:
    out = []
    for case, state, cancel, manual in GRID:
        key = (case, state, cancel, manual)
        marks = [pytest.mark.xfail(strict=True, reason=DISAGREE[key])] if key in DISAGREE else []
        out.append(pytest.param(case, state, cancel, manual, marks=marks,
                                id='{}-{}-{}-{}'.format(case, state.value, cancel, manual)))
    return out


@pytest.mark.parametrize('case,state,cancel,manual', _cells())
def test_fail_exactly_where_the_hand_table_says(case: str, state: State, cancel: bool,
                                                manual: bool) -> None:
    observation, phase = CASES[case]
    action = plan(make_task(case, state, cancel, manual), observation)
    why = hand_fail(phase, state, cancel)
    if why is not None:
        assert action.act == Act.FAIL, (why, action)
        assert action.state == State.FAILED
        # the operator is told both sides
        assert 'but the task is {}'.format(state.value) in action.detail, action.detail
        return
    assert action.act == expected(phase, state, cancel, manual, case), action


def test_the_hand_table_names_every_fail_cell() -> None:
    """The 45 cells the old grid let through by recomputing with the
    planner's helpers are all written out here."""
    hand = [(case, state, cancel, manual) for case, state, cancel, manual in GRID
            if hand_fail(CASES[case][1], state, cancel) is not None]
    assert len(hand) == 46 + len(DISAGREE)


# -- trying to produce those records -------------------------------------

# the fake's phases as librbd's (written here, not read from ``judge``)
FAKE_PHASE = {'not-prepared': Phase.NOT_PREPARED, 'half-prepared': Phase.HALF_PREPARED,
              'prepared': Phase.PREPARED, 'executed': Phase.EXECUTED,
              'aborting': Phase.ABORTING, 'half-aborted': Phase.HALF_ABORTED,
              'half-committed': Phase.HALF_COMMITTED, 'commit-last-step': Phase.HALF_COMMITTED,
              'committed-unrecorded': Phase.COMMITTED, 'committed': Phase.COMMITTED}

# librbd's steps cut in their middle: the phase they leave
MIDDLE = {'prepare': 'half-prepared', 'commit': 'half-committed', 'abort': 'aborting'}


class Spying(Killing):
    """Records (record state, cancel, librbd phase) at every observation;
    dies before, after, or in the middle of one step."""

    def __init__(self, step: str, when: str) -> None:
        super().__init__(step, when == 'after')
        self.when = when
        self.seen: Set[Tuple[State, bool, Phase]] = set()
        self.read_task: Any = None
        if when == 'middle':
            self.kill = None
            real = getattr(self, step)

            def cut(*a: Any, **k: Any) -> Any:
                if self.when == 'middle':
                    self.when = 'done'
                    self.phase = MIDDLE[step]
                    raise Killed(step)
                return real(*a, **k)
            setattr(self, step, cut)

    def observe(self, *a: Any) -> Any:
        if self.read_task is not None:
            t = self.read_task()
            self.seen.add((t.state, t.cancel_requested, FAKE_PHASE[self.phase]))
        return super().observe(*a)


def _life(fake: Spying, cancel_before: Optional[str]) -> Task:
    """Runners until the task ends: each a new mgr's, from the stored record;
    a cancel accepted once, just before step ``cancel_before``."""
    kv: Dict[str, Any] = {}
    current: Dict[str, Any] = {}
    if cancel_before is not None:
        real = getattr(fake, cancel_before)

        def cancel_then(*a: Any, **k: Any) -> Any:
            if not current.get('cancelled'):
                current['cancelled'] = True
                current['w'].update('t1', lambda t: t.evolve(cancel_requested=True))
            return real(*a, **k)
        setattr(fake, cancel_before, cancel_then)
    for _ in range(12):
        w = worker()
        w.store = make_store(kv)
        record = kv.get('task/t1')
        w.put(_task() if record is None else Task.loads(record))
        current['w'] = w
        fake.read_task = lambda: current['w'].get('t1')
        try:
            Runner(w, 't1', fake, lambda: POOLS)._main()
        except Killed:
            continue
        t = w.get('t1')
        if t.terminal or t.state == State.FAILED:
            return t
        w.update('t1', lambda x: x.evolve(next_retry=None))
        kv['task/t1'] = w.get('t1').dumps()
    raise AssertionError('no end: {}'.format(fake.calls))


KILLS = ([(s, w) for s, w in itertools.product(STEPS, ('before', 'after'))]
         + [(s, 'middle') for s in ('prepare', 'commit')])


@pytest.mark.parametrize('cancel_before', [None, 'prepare', 'execute', 'compare'])
@pytest.mark.parametrize('step,when', KILLS)
def test_runners_never_produce_a_hand_fail_record(step: str, when: str,
                                                  cancel_before: Optional[str]) -> None:
    fake = Spying(step, when)
    t = _life(fake, cancel_before)
    assert t.state in (State.COMMITTED, State.ABORTED), (t, fake.calls)
    bad = [(s.value, c, p.name) for s, c, p in fake.seen if hand_fail(p, s, c) is not None]
    assert not bad, (bad, fake.calls)
    assert fake.seen, 'nothing observed'
