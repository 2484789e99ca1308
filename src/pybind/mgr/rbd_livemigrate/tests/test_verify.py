"""What is compared before commit (``verify.plan_comparison``), the planner's
verify and protective-snapshot steps, and the runner's way back."""

from typing import Any, List, Optional, Tuple

from rbd_livemigrate.pipeline import Runner
from rbd_livemigrate.planner import Act, plan
from rbd_livemigrate.task import State, Task, Verification, VerifyMode, VerifyResult
from rbd_livemigrate.verify import (HEAD, Pair, first_difference, merge_extents,
                                    plan_comparison, protect_name, rollback_safe)

from fakes import D, S, FakeLibrbd, VerifyingLibrbd
from test_pipeline import POOLS, worker

P = protect_name('t1')
SNAPS = [('s1', 10), ('s2', 20)]


def test_full_compares_every_snapshot_and_the_head() -> None:
    p = plan_comparison(VerifyMode.FULL, SNAPS + [(P, 20)], SNAPS + [(P, 20)], P, 3)
    assert p.pairs == [Pair('s1', 's1', 's1'), Pair('s2', 's2', 's2'), Pair(HEAD, None, None)]
    assert p.note is None and p.mismatch is None


def test_auto_compares_the_head_when_no_client_wrote() -> None:
    p = plan_comparison(VerifyMode.AUTO, SNAPS + [(P, 20)], SNAPS + [(P, 20)], P, 0)
    assert p.pairs[-1] == Pair(HEAD, None, None) and p.note is None


def test_auto_compares_the_head_as_of_prepare_when_a_client_wrote() -> None:
    for writes, words in ((2, '2 object(s)'), (None, 'unknown number')):
        p = plan_comparison(VerifyMode.AUTO, SNAPS + [(P, 20)], SNAPS + [(P, 20)], P, writes)
        # the source is read-only since prepare: its head is what was copied
        assert p.pairs[-1] == Pair('HEAD as of prepare', None, P)
        assert p.note is not None and 'head not compared' in p.note and words in p.note


def test_auto_without_protective_snapshot_says_the_head_is_not_compared() -> None:
    p = plan_comparison(VerifyMode.AUTO, SNAPS, SNAPS, None, None)
    assert [x.label for x in p.pairs] == ['s1', 's2']
    assert p.note is not None and 'no protective snapshot' in p.note


def test_snapshot_lists_that_differ() -> None:
    """A snapshot missing on the destination is a mismatch with full (found
    without reading), a note with auto; one only the destination has was
    taken there since prepare (a client's): a note."""
    p = plan_comparison(VerifyMode.FULL, SNAPS, SNAPS[:1], None, 0)
    assert p.pairs == [] and p.mismatch == 'snapshot s2 is missing on the destination'
    p = plan_comparison(VerifyMode.AUTO, SNAPS + [(P, 20)], SNAPS[:1] + [(P, 20)], P, 0)
    assert [x.label for x in p.pairs] == ['s1', HEAD] and p.mismatch is None
    assert p.note is not None and 's2 removed from the destination' in p.note
    p = plan_comparison(VerifyMode.FULL, SNAPS[:1], SNAPS, None, 0)
    assert [x.label for x in p.pairs] == ['s1', HEAD] and p.mismatch is None
    assert p.note is not None and 's2 taken on the destination since prepare' in p.note
    p = plan_comparison(VerifyMode.AUTO, SNAPS, [('s1', 10), ('s2', 21)], None, 0)
    assert p.mismatch is not None and 'snapshot s2 is 20 bytes' in p.mismatch


def test_rollback_only_when_no_client_wrote() -> None:
    assert rollback_safe(0)
    assert not rollback_safe(1) and not rollback_safe(None)


def test_extents_are_merged_and_cut() -> None:
    assert merge_extents([(8, 4), (0, 4), (4, 4), (20, 10)], 25, 6) == [
        (0, 6), (6, 6), (20, 5)]
    assert merge_extents([], 100, 4) == []


def test_first_difference() -> None:
    a = bytes(10000)
    assert first_difference(a, a[:5000] + b'\x01' + a[5001:]) == 5000
    assert first_difference(a, a) == 10000


# -- the planner -------------------------------------------------------


def _task(**kw: Any) -> Task:
    kw.setdefault('state', State.EXECUTED)
    kw.setdefault('dest_image_id', D)
    return Task(id='t1', source='a/img', destination='b/img', source_image_id=S, **kw)


def test_planner_verifies_before_commit_and_not_twice() -> None:
    obs = FakeLibrbd('executed').observe(*[None] * 4)  # type: ignore[arg-type]
    assert plan(_task(verify=VerifyMode.AUTO), obs).act == Act.VERIFY
    assert plan(_task(verify=VerifyMode.OFF), obs).act == Act.COMMIT
    passed = Verification(VerifyMode.AUTO, VerifyResult.PASSED, D)
    assert plan(_task(verify=VerifyMode.AUTO, verification=passed), obs).act == Act.COMMIT
    # a verification of another destination (an undone prepare) does not count
    other = passed.__class__(VerifyMode.AUTO, VerifyResult.PASSED, 'old')
    assert plan(_task(verify=VerifyMode.AUTO, verification=other), obs).act == Act.VERIFY
    # a manual commit verifies when it is asked for, just before the commit
    a = plan(_task(verify=VerifyMode.FULL, manual_commit=True), obs)
    assert a.act == Act.WAIT
    a = plan(_task(verify=VerifyMode.FULL, manual_commit=True, commit_requested=True), obs)
    assert a.act == Act.VERIFY


def test_planner_drops_the_protective_snapshot_after_commit_and_abort() -> None:
    committed = FakeLibrbd('committed').observe(*[None] * 4)  # type: ignore[arg-type]
    a = plan(_task(state=State.COMMITTING, protect_snap=P), committed)
    assert a.act == Act.DROP_SNAP and not a.by_source and not a.rollback
    assert plan(_task(state=State.COMMITTING), committed).act == Act.MARK
    aborted = FakeLibrbd('not-prepared').observe(*[None] * 4)  # type: ignore[arg-type]
    a = plan(_task(state=State.ABORTING, cancel_requested=True, protect_snap=P,
                   rollback_source=True), aborted)
    assert a.act == Act.DROP_SNAP and a.by_source and a.rollback
    a = plan(_task(state=State.ABORTING, cancel_requested=True, protect_snap=P), aborted)
    assert a.act == Act.DROP_SNAP and not a.rollback
    # cancelled before prepare (the snapshot of a prepare that failed): no rollback
    a = plan(_task(state=State.QUEUED, cancel_requested=True, protect_snap=P,
                   rollback_source=True, dest_image_id=None), aborted)
    assert a.act == Act.DROP_SNAP and not a.rollback


# -- the runner against a fake librbd ----------------------------------


def _run(fake: FakeLibrbd, **kw: Any) -> Task:
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0, source_image_id=S,
               **kw))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    return w.get('t1')


def test_runner_snapshots_verifies_commits_and_drops_the_snapshot() -> None:
    fake = VerifyingLibrbd('not-prepared')
    t = _run(fake, verify=VerifyMode.AUTO)
    assert fake.calls == ['snap ' + P, 'prepare', 'execute', 'compare s1,HEAD', 'list clones',
                          'commit', 'remove snap of b/img']
    assert t.state == State.COMMITTED and t.protect_snap is None
    v = t.verification
    assert v is not None and v.result == VerifyResult.PASSED and v.bytes_compared == 10
    assert v.dest_image_id == D and v.client_writes == 0


def test_nothing_is_stored_on_the_way_to_prepare() -> None:
    """A store write is a monitor commit, which would hold the snapshots
    prepare copies (OSDMap changes) for up to a paxos interval: a stored
    task is not written again on its way to prepare, even when it names a
    protective snapshot (after a crash, ``_sweep_protect`` finds that
    snapshot by the task's name)."""
    fake = VerifyingLibrbd('not-prepared')
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0, source_image_id=S,
               verify=VerifyMode.AUTO))
    stored: List[Tuple[str, Optional[str]]] = []
    save = w.store.save
    w.store.save = lambda t: (stored.append((t.state.value, t.protect_snap)),  # type: ignore
                              save(t))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    assert stored == [('committed', None)], stored
    assert w.get('t1').state == State.COMMITTED


def test_runner_mismatch_fails_and_cancel_rolls_the_source_back() -> None:
    why = 'snapshot s1 differs at offset 8388608 (object 2)'
    fake = VerifyingLibrbd('not-prepared', difference=('s1', 8 << 20, why))
    t = _run(fake, verify=VerifyMode.FULL)
    assert 'commit' not in fake.calls and t.state == State.FAILED
    assert t.error is not None and t.error.startswith(
        'verification failed: snapshot s1 differs at offset 8388608 (object 2)')
    assert t.verification is not None and t.verification.result == VerifyResult.MISMATCH
    fake.calls = []
    keep = ('state', 'verify', 'protect_snap', 'dest_image_id', 'verification')
    t = _run(fake, cancel_requested=True, **{k: getattr(t, k) for k in keep})
    assert fake.calls == ['abort via b/img', 'rollback, remove snap of a/img']
    assert t.state == State.ABORTED and t.protect_snap is None and not t.rollback_source


def test_runner_cancel_after_a_client_write_keeps_it() -> None:
    fake = VerifyingLibrbd('executed', writes=3)
    t = _run(fake, state=State.EXECUTED, dest_image_id=D, verify=VerifyMode.AUTO,
             protect_snap=P, manual_commit=True, cancel_requested=True)
    assert fake.calls == ['abort via b/img', 'remove snap of a/img']
    assert t.state == State.ABORTED


def test_plain_status_shows_the_verification_in_one_line() -> None:
    from rbd_livemigrate.formatting import status_text
    v = Verification(VerifyMode.FULL, VerifyResult.MISMATCH, D, ['s1', HEAD],
                     mismatch='snapshot s1 differs at offset 0 (object 0)',
                     bytes_compared=4 << 20, bytes_total=8 << 20, seconds=0.25)
    text = status_text(_task(verify=VerifyMode.FULL, verification=v, cutover_ms=42.0).view())
    line = [x for x in text.splitlines() if x.startswith('verification:')][0]
    assert 'mismatch (full): 4.0 MiB of 8.0 MiB in 0.2s; compared s1, HEAD' in line
    assert 'first difference: snapshot s1 differs at offset 0' in line
    assert 'cutover_ms:          42.0' in text
