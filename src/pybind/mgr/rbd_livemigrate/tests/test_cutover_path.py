"""The cutover's path, from the clients' close to the destination: no
monitor commit on it.  The protective snapshot is taken while the clients
still hold the source (or while a manual cutover is awaited), and the look
that finds them gone writes no record."""

import threading
from typing import Any, Dict, List, Optional

from rbd_livemigrate.interface import ImageInfo
from rbd_livemigrate.pipeline import Runner
from rbd_livemigrate.progress import ProgressReporter
from rbd_livemigrate.scheduler import RunnerHandle, Worker
from rbd_livemigrate.store import TaskStore
from rbd_livemigrate.spec import ImageSpec
from rbd_livemigrate.task import State, Task, VerifyMode
from rbd_livemigrate.verify import protect_name

from fakes import S, FakeLibrbd, VerifyingLibrbd
from test_pipeline import POOLS, worker

P = protect_name('t1')
NOW = 1000.0


class Held(VerifyingLibrbd):
    """A source a client holds until ``busy`` is cleared; records whether
    each snapshot was taken with the clients allowed."""

    def __init__(self) -> None:
        super().__init__('not-prepared')
        self.busy = True
        self.snap_with_clients: List[bool] = []

    def image_info(self, spec: ImageSpec, with_used: bool = True) -> ImageInfo:
        info = FakeLibrbd.image_info(self, spec)
        return info._replace(watchers=['127.0.0.1:0/7'] if self.busy else [])

    def protect_source(self, client: Any, source: Any, name: str,
                       clients: bool = False) -> bool:
        self.snap_with_clients.append(clients)
        return super().protect_source(client, source, name, clients)


def _run(fake: FakeLibrbd, **fields: Any) -> Task:
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0, source_image_id=S,
               **fields))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    return w.get('t1')


def test_the_snapshot_is_taken_while_the_clients_hold_the_source() -> None:
    fake = Held()
    t = _run(fake, verify=VerifyMode.AUTO)
    assert t.state == State.QUEUED and t.blocked_kind == 'watchers', t
    assert fake.calls == ['snap ' + P] and fake.snap_with_clients == [True]
    assert t.protect_snap == P
    # the clients close: prepare at once, no second snapshot on the way
    fake.busy = False
    w = worker()
    w.put(t.evolve(blocked_kind=None, blocked_reason=None, next_retry=None))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    t = w.get('t1')
    assert fake.calls[:2] == ['snap ' + P, 'prepare'], fake.calls
    assert fake.snap_with_clients == [True]
    assert t.state == State.COMMITTED and t.protect_snap is None, t


def test_a_source_without_clients_is_snapshotted_just_before_prepare() -> None:
    fake = Held()
    fake.busy = False
    t = _run(fake, verify=VerifyMode.AUTO)
    assert fake.calls[:2] == ['snap ' + P, 'prepare'] and fake.snap_with_clients == [False]
    assert t.state == State.COMMITTED


def test_verify_off_takes_no_snapshot_even_while_clients_hold_it() -> None:
    fake = Held()
    t = _run(fake, verify=VerifyMode.OFF)
    assert fake.calls == [] and t.protect_snap is None and t.blocked_kind == 'watchers'


def test_a_manual_cutover_leaves_the_source_alone_until_the_operator_acts() -> None:
    """Nothing is taken while the operator is awaited (a queued task changes
    nothing of its source); the snapshot is taken at the cutover."""
    fake = Held()
    fake.busy = False
    t = _run(fake, verify=VerifyMode.AUTO, manual_cutover=True)
    assert t.state == State.QUEUED and t.awaiting_cutover
    assert fake.calls == [] and t.protect_snap is None
    w = worker()
    w.put(t.evolve(cutover_requested=True))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    t = w.get('t1')
    assert fake.calls[:2] == ['snap ' + P, 'prepare'] and t.state == State.COMMITTED


def test_cancel_while_waiting_removes_the_early_snapshot() -> None:
    fake = Held()
    t = _run(fake, verify=VerifyMode.AUTO)
    assert t.protect_snap == P
    w = worker()
    w.put(t.evolve(cancel_requested=True))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    t = w.get('t1')
    assert t.state == State.ABORTED and t.protect_snap is None
    assert fake.calls == ['snap ' + P, 'remove snap of a/img'], fake.calls


# -- the scheduler asks for the snapshot while the clients hold the source --

class AheadRunner(RunnerHandle):
    ahead: List[str] = []
    started: List[str] = []

    def __init__(self, worker: Worker, task_id: str) -> None:
        self.task_id = task_id

    def start(self) -> None:
        AheadRunner.started.append(self.task_id)

    def protect_ahead(self) -> None:
        AheadRunner.ahead.append(self.task_id)


def _worker(clients: Dict[str, List[str]]) -> Worker:
    kv: Dict[str, str] = {}

    def set_key(k: str, v: Optional[str]) -> None:
        if v is None:
            kv.pop(k, None)
        else:
            kv[k] = v
    store = TaskStore(lambda p: {k: v for k, v in kv.items() if k.startswith(p)}, set_key)
    AheadRunner.ahead, AheadRunner.started = [], []
    w = Worker(store, ProgressReporter(lambda *a, **k: None), AheadRunner, lambda c: None,
               lambda: None, clock=lambda: NOW, watchers=lambda spec: clients.get(spec, []))
    w.load()
    return w


def _wait_for(cond: Any) -> None:
    for _ in range(500):
        if cond():
            return
        threading.Event().wait(0.01)
    raise AssertionError('never happened')


def test_the_scheduler_has_the_snapshot_taken_once_while_clients_hold_the_source() -> None:
    w = _worker({'a/img1': ['127.0.0.1:0/1']})
    w.put(Task(id='t1', source='a/img1', destination='b/img1', created=NOW,
               verify=VerifyMode.AUTO, blocked_kind='watchers', blocked_reason='x'))
    w.put(Task(id='t2', source='a/img1', destination='b/img2', created=NOW + 1,
               verify=VerifyMode.OFF, blocked_kind='watchers', blocked_reason='x'))
    w.tick()
    _wait_for(lambda: AheadRunner.ahead == ['t1'])
    w.update('t1', lambda t: t.evolve(next_retry=None), persist=False)
    w.tick()
    assert AheadRunner.ahead == ['t1'] and AheadRunner.started == []


def test_a_task_awaiting_its_manual_cutover_is_not_snapshotted_ahead() -> None:
    w = _worker({})
    w.put(Task(id='t1', source='a/img1', destination='b/img1', created=NOW,
               verify=VerifyMode.AUTO, manual_cutover=True))
    w.tick()
    w.tick()
    assert AheadRunner.ahead == [] and AheadRunner.started == []


def test_the_cutover_starts_between_the_last_look_with_clients_and_the_first_without() -> None:
    clients = {'a/img1': ['127.0.0.1:0/1']}
    w = _worker(clients)
    clock = [NOW]
    w.clock = lambda: clock[0]
    w.put(Task(id='t1', source='a/img1', destination='b/img1', created=NOW,
               verify=VerifyMode.OFF, blocked_kind='watchers', blocked_reason='x'))
    w.tick()
    assert w.get('t1').blocked_kind == 'watchers'
    clients.clear()
    clock[0] = NOW + 0.04
    w.update('t1', lambda t: t.evolve(next_retry=None), persist=False)
    w.tick()
    t = w.get('t1')
    assert t.blocked_kind is None and abs((t.clients_gone_at or 0) - (NOW + 0.02)) < 1e-9
