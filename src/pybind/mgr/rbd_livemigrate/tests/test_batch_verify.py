"""A batch's task whose source no client held takes no protective snapshot
(an OSDMap change on its path): its verify compares the head while no client
has the destination open, and a cancel after a mismatch writes the source's
bytes over the destination's differing head before librbd's abort copies
that head back."""

from typing import Any, List

from rbd_livemigrate.pipeline import Runner
from rbd_livemigrate.spec import ImageSpec
from rbd_livemigrate.task import State, Task, VerifyMode, VerifyResult
from rbd_livemigrate.verify import HEAD, Pair, plan_comparison, protect_name

from fakes import S, VerifyingLibrbd
from test_pipeline import POOLS, worker

SNAPS = [('s1', 10)]
BATCH = 'batch-0123abcd'


def test_plan_compares_the_head_of_an_unused_batch_destination() -> None:
    p = plan_comparison(VerifyMode.AUTO, SNAPS, SNAPS, None, None, unused=True)
    assert p.pairs == [Pair('s1', 's1', 's1'), Pair(HEAD, None, None)]
    assert p.note is not None and 'no client' in p.note
    # with a client on the destination: the snapshots only, and why
    p = plan_comparison(VerifyMode.AUTO, SNAPS, SNAPS, None, None, unused=False)
    assert p.pairs == [Pair('s1', 's1', 's1')]
    assert p.note is not None and 'head not compared' in p.note


class Batchy(VerifyingLibrbd):
    def __init__(self, phase: str, difference: Any = None) -> None:
        super().__init__(phase, difference=difference)
        self.dest_clients: List[str] = []
        self.restored: List[str] = []

    def watchers(self, spec: ImageSpec) -> List[str]:
        return self.dest_clients if spec.pool == 'b' else []

    def restore_head(self, client: Any, source: Any, source_id: str, dest: Any) -> int:
        self.opened(dest, True, 'restore head')
        self.calls.append('restore head of ' + str(dest))
        self.restored.append(source_id)
        return 4096


def _run(fake: VerifyingLibrbd, **kw: Any) -> Task:
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0, source_image_id=S,
               batch_id=BATCH, **kw))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    return w.get('t1')


def test_a_batch_task_without_clients_takes_no_snapshot_and_compares_the_head() -> None:
    fake = Batchy('not-prepared')
    t = _run(fake, verify=VerifyMode.AUTO)
    assert not any(c.startswith('snap ') for c in fake.calls), fake.calls
    assert 'compare s1,HEAD' in fake.calls, fake.calls
    assert t.state == State.COMMITTED and t.protect_snap is None
    assert t.verification is not None and t.verification.compared == ['s1', HEAD]


def test_a_single_add_keeps_its_snapshot() -> None:
    fake = Batchy('not-prepared')
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0, source_image_id=S,
               verify=VerifyMode.AUTO))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    assert 'snap ' + protect_name('t1') in fake.calls


def test_a_batch_destination_with_a_client_has_its_head_left_out() -> None:
    fake = Batchy('not-prepared')
    fake.dest_clients = ['127.0.0.1:0/9']
    t = _run(fake, verify=VerifyMode.AUTO)
    assert 'compare s1' in fake.calls, fake.calls
    assert t.verification is not None and t.verification.compared == ['s1']


def _failed(fake: Batchy) -> Task:
    t = _run(fake, verify=VerifyMode.AUTO)
    assert t.state == State.FAILED and t.verification is not None
    assert t.verification.result == VerifyResult.MISMATCH
    return t


def test_cancel_after_a_mismatch_restores_the_head_before_the_abort() -> None:
    fake = Batchy('not-prepared', difference=(HEAD, 8 << 20, 'the head differs'))
    t = _failed(fake)
    fake.phase = 'executed'
    fake.calls.clear()
    w = worker()
    w.put(t.evolve(cancel_requested=True))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    assert fake.calls.index('restore head of b/img') < fake.calls.index('abort via b/img')
    assert fake.restored == [S] and w.get('t1').state != State.FAILED


def test_no_restore_while_a_client_has_the_destination_open() -> None:
    fake = Batchy('not-prepared', difference=(HEAD, 0, 'the head differs'))
    t = _failed(fake)
    fake.phase = 'executed'
    fake.dest_clients = ['127.0.0.1:0/9']
    w = worker()
    w.put(t.evolve(cancel_requested=True))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    assert fake.restored == []


def test_no_restore_when_the_comparison_passed_or_the_abort_was_cut() -> None:
    for phase, difference in (('executed', None), ('aborting', (HEAD, 0, 'x'))):
        fake = Batchy('not-prepared', difference=difference)
        t = _run(fake, verify=VerifyMode.AUTO, manual_commit=True)
        t = t.evolve(cancel_requested=True, verification=None if difference is None else
                     _failed(Batchy('not-prepared', difference=difference)).verification)
        fake.phase = phase
        w = worker()
        w.put(t)
        Runner(w, 't1', fake, lambda: POOLS)._main()
        assert fake.restored == [], (phase, fake.calls)
