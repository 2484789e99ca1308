"""A remote import's prepare and the task's record (issue 27's benchmark):
librbd's prepare copies the remote's snapshots into the destination, OSDMap
changes that wait a paxos interval after any record the monitors just
stored, so no record is stored between the gate and librbd's prepare; a
restart reads what the prepare did from the destination's header."""

import json
from typing import Any, Dict, List

from rbd_livemigrate.interface import MigState, Observation
from rbd_livemigrate.pipeline import Runner
from rbd_livemigrate.progress import ProgressReporter
from rbd_livemigrate.scheduler import Worker
from rbd_livemigrate.spec import ImageSpec
from rbd_livemigrate.task import State, Task

from test_import import D, SPEC, FakeImport, header, imp, obs
from test_remote_wiring import FakeRemoteImport, remote_task, world
from test_store import make_store


class Recording(FakeRemoteImport):
    """Notes the task's stored state when librbd's prepare is called."""

    def __init__(self, kv: Dict[str, Any], spec: str = '') -> None:
        super().__init__()
        self.kv = kv
        self.spec = spec          # the remote spec librbd's header carries
        self.stored_at_prepare: List[str] = []

    def observe_import(self, dest: ImageSpec, dest_id: Any) -> Observation:
        if self.state is not None and not self.committed:
            return obs(D, D, True, header(self.state, self.spec))
        return super().observe_import(dest, dest_id)

    def prepare_import(self, client: Any, source_spec: str, dest: ImageSpec,
                       layout: Any) -> None:
        self.stored_at_prepare.append(json.loads(self.kv['task/t1'])['state'])
        self.spec = source_spec
        super().prepare_import(client, source_spec, dest, layout)


class RecordingLocal(FakeImport):
    def __init__(self, kv: Dict[str, Any]) -> None:
        super().__init__()
        self.kv = kv
        self.stored_at_prepare: List[str] = []

    def prepare_import(self, client: Any, source_spec: str, dest: ImageSpec,
                       layout: Any) -> None:
        self.stored_at_prepare.append(json.loads(self.kv['task/t1'])['state'])
        super().prepare_import(client, source_spec, dest, layout)


def _worker(kv: Dict[str, Any]) -> Worker:
    return Worker(make_store(kv), ProgressReporter(lambda *a, **k: None),
                  lambda w, t: None, lambda checks: None, lambda: None)  # type: ignore


def _run(w: Any, fake: FakeImport, task: Task, kv: Dict[str, Any]) -> Task:
    wk = _worker(kv)
    wk.put(task)
    if w is not None:
        w.tasks['t1'] = task.import_spec
    Runner(wk, 't1', fake, lambda: {}, remote=w.rs if w is not None else None)._main()
    return wk.get('t1')


def test_no_record_is_stored_between_a_remote_gate_and_librbds_prepare(tmp_path: Any) -> None:
    w = world(tmp_path)
    kv: Dict[str, Any] = {}
    fake = Recording(kv)
    t = _run(w, fake, remote_task(w), kv)
    assert t.state == State.COMMITTED, t.error
    assert fake.stored_at_prepare == ['queued']
    assert json.loads(kv['task/t1'])['state'] == 'committed'


def test_a_local_import_still_stores_preparing_first() -> None:
    kv: Dict[str, Any] = {}
    fake = RecordingLocal(kv)
    t = _run(None, fake, imp(size_bytes=1 << 20), kv)
    assert t.state == State.COMMITTED
    assert fake.stored_at_prepare == ['preparing']
    assert fake.calls[0] == 'prepare_import ' + SPEC


def test_a_restart_after_an_unrecorded_remote_prepare_goes_on_from_the_header(
        tmp_path: Any) -> None:
    """The mgr died after librbd's prepare, before any record: the record
    says queued, the destination's header says prepared: execute, no
    second prepare."""
    w = world(tmp_path)
    kv: Dict[str, Any] = {}
    task = remote_task(w)
    assert task.import_spec is not None
    fake = Recording(kv, task.import_spec)
    fake.state = MigState.PREPARED
    t = _run(w, fake, task, kv)
    assert t.state == State.COMMITTED, t.error
    assert fake.stored_at_prepare == []
    assert fake.calls[0] == 'execute'
