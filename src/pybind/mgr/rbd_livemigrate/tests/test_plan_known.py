"""``planner.plan_known``: the step after one that succeeded, decided by the
planner from the state that step leaves (the runner keeps no sequence of
its own)."""

from rbd_livemigrate.hold import Hold, HoldKind
from rbd_livemigrate.planner import Act, Phase, plan_known
from rbd_livemigrate.task import (Layout, State, Task, Verification, VerifyMode,
                                  VerifyResult)

HOLD = Hold(HoldKind.WINDOW_CLOSED, 'outside the window')
PASSED = Verification(VerifyMode.AUTO, VerifyResult.PASSED, 'd', ['HEAD'], None)


def _task(**kw: object) -> Task:
    kw.setdefault('source', 'a/img')
    return Task(id='t1', destination='b/img', created=1.0, **kw)  # type: ignore


def test_after_prepare_the_copy_unless_held() -> None:
    t = _task(state=State.PREPARED)
    a = plan_known(t, Phase.PREPARED)
    assert a is not None and a.act == Act.EXECUTE
    a = plan_known(t, Phase.PREPARED, HOLD)
    assert a is not None and a.act == Act.WAIT and a.hold == HOLD


def test_after_execute_verify_then_commit() -> None:
    t = _task(state=State.EXECUTED, verify=VerifyMode.AUTO, dest_image_id='d')
    a = plan_known(t, Phase.EXECUTED)
    assert a is not None and a.act == Act.VERIFY
    a = plan_known(t.evolve(verification=PASSED), Phase.EXECUTED)
    assert a is not None and a.act == Act.COMMIT
    # a hold does not keep a commit
    a = plan_known(t.evolve(verification=PASSED), Phase.EXECUTED, HOLD)
    assert a is not None and a.act == Act.COMMIT
    a = plan_known(t.evolve(manual_commit=True), Phase.EXECUTED)
    assert a is not None and a.act == Act.WAIT and a.hold is not None
    assert a.hold.kind == HoldKind.MANUAL_COMMIT


def test_an_import_commits_without_a_comparison() -> None:
    t = _task(state=State.EXECUTED, verify=VerifyMode.AUTO, source='b/img',
              import_spec='{"type": "raw"}')
    a = plan_known(t, Phase.EXECUTED)
    assert a is not None and a.act == Act.COMMIT


def test_after_commit_the_snapshot_then_the_record() -> None:
    t = _task(state=State.COMMITTING, protect_snap='rbd_livemigrate-t1')
    a = plan_known(t, Phase.COMMITTED)
    assert a is not None and a.act == Act.DROP_SNAP and not a.by_source
    a = plan_known(t.evolve(protect_snap=None), Phase.COMMITTED)
    assert a is not None and a.act == Act.MARK and a.state == State.COMMITTED
    a = plan_known(t.evolve(protect_snap=None, layout=Layout(flatten=True)), Phase.COMMITTED)
    assert a is not None and a.act == Act.FLATTEN


def test_a_cancel_or_another_phase_reads_the_headers_first() -> None:
    assert plan_known(_task(state=State.PREPARED, cancel_requested=True),
                      Phase.PREPARED) is None
    assert plan_known(_task(state=State.ABORTING), Phase.ABORTING) is None


# -- the holds the planner makes of what the runner found -----------------

def test_prepare_hold_waits_for_clients_and_space_and_raises_the_rest() -> None:
    import errno
    import pytest
    from rbd_livemigrate.errors import Blocked
    from rbd_livemigrate.planner import prepare_hold
    t = _task(state=State.QUEUED)
    assert prepare_hold(t, [], 5.0) is None
    held = prepare_hold(t, [Blocked('a/img has watchers', errno.EBUSY, wait=True)], 5.0)
    assert held is not None and held.hold.kind == HoldKind.WATCHERS
    assert held.recheck_seconds == 0.0 and not held.end_cutover     # the scheduler watches
    held = prepare_hold(t.evolve(cutover_requested=True),
                        [Blocked('no room', errno.ENOSPC)], 5.0)
    assert held is not None and held.hold.kind == HoldKind.NO_SPACE
    assert held.recheck_seconds == 5.0 and held.end_cutover
    with pytest.raises(Blocked):
        prepare_hold(t, [Blocked('a/img has watchers', errno.EBUSY, wait=True),
                         Blocked('no such pool', errno.ENOENT)], 5.0)


def test_descendants_hold_names_only_the_destinations_own_pool() -> None:
    from rbd_livemigrate.planner import descendants_hold
    from rbd_livemigrate.spec import ImageSpec
    dest = ImageSpec.parse('b/img')
    assert descendants_hold(dest, []) is None
    hold = descendants_hold(dest, ['b/c1', 'x/secret'])
    assert hold is not None and hold.kind == HoldKind.DESCENDANTS
    assert 'b/c1' in str(hold) and 'x/secret' not in str(hold) and '1 in other pools' in str(hold)
