"""Imports: the planner judges them from the destination's header alone, the
runner drives one from queued to committed, and ``import`` checks, stores
credentials apart and sweeps them once the task is over."""

import errno
import json
from typing import Any, Dict, List, Optional

import pytest

from rbd_livemigrate.commands import AddRequest, Commands
from rbd_livemigrate.errors import LiveMigrateError
from rbd_livemigrate.import_guard import ImportGuard
from rbd_livemigrate.import_policy import Endpoints, Policy, parse_networks
from rbd_livemigrate.importer import Importer
from rbd_livemigrate.interface import (End, HeaderType, MigrationHeader, MigState, Observation,
                                       RbdPort)
from rbd_livemigrate.pipeline import Runner
from rbd_livemigrate.planner import Act, Phase, import_dest_id, judge_import, plan
from rbd_livemigrate.source_spec import Stream
from rbd_livemigrate.spec import ImageSpec
from rbd_livemigrate.task import IMPORT_TASK_VERSION, State, Task

from test_pipeline import FakePool, worker

SPEC = '{"stream":{"file_path":"/tmp/d.raw","type":"file"},"type":"raw"}'
# librbd stores the spec re-serialised: same JSON, other key order
LIBRBD_SPEC = '{"type":"raw","stream":{"type":"file","file_path":"/tmp/d.raw"}}'
D = 'did'


def imp(**kw: Any) -> Task:
    base: Dict[str, Any] = dict(id='t1', source='b/img', destination='b/img', created=1.0,
                                import_spec=SPEC, version=IMPORT_TASK_VERSION)
    base.update(kw)
    return Task(**base)


def header(state: MigState, spec: str = LIBRBD_SPEC, pool_id: int = -1) -> MigrationHeader:
    return MigrationHeader(HeaderType.DST, pool_id, '', '', '', state, source_spec=spec)


def obs(image_id: Optional[str] = None, name_id: Optional[str] = None, exists: bool = False,
        h: Optional[MigrationHeader] = None) -> Observation:
    return Observation(End(), End(image_id, name_id, exists, h, None, 2))


# -- planner ------------------------------------------------------------------

@pytest.mark.parametrize('state,phase,act', [
    (MigState.PREPARING, Phase.HALF_PREPARED, Act.ABORT),
    (MigState.PREPARED, Phase.PREPARED, Act.EXECUTE),
    (MigState.EXECUTING, Phase.EXECUTING, Act.EXECUTE),
    (MigState.EXECUTED, Phase.EXECUTED, Act.COMMIT),
    (MigState.ERROR, Phase.ERROR, Act.ABORT),
    (MigState.ABORTING, Phase.ABORTING, Act.ABORT),
])
def test_our_header_before_the_id_is_recorded(state: MigState, phase: Phase, act: Act) -> None:
    """After a restart that lost the id: the header with our spec is ours."""
    t = imp(state=State.PREPARING)
    o = obs(D, D, True, header(state))
    assert judge_import(o, t).phase == phase
    a = plan(t, o)
    assert a.act == act and not a.by_source
    assert import_dest_id(t, o) == D


def test_not_prepared_prepares_and_a_hold_waits() -> None:
    t = imp()
    assert plan(t, obs()).act == Act.PREPARE
    from rbd_livemigrate.hold import Hold, HoldKind
    assert plan(t, obs(), Hold(HoldKind.WINDOW_CLOSED, 'closed')).act == Act.WAIT


@pytest.mark.parametrize('o,phase', [
    (obs(D, D, True, None), Phase.DEST_TAKEN),                     # a plain image
    (obs(D, D, True, header(MigState.PREPARED, spec='{"type":"qcow"}')),
     Phase.OTHER_MIGRATION),                                       # another import
    (obs(D, D, True, header(MigState.PREPARED, pool_id=3)), Phase.OTHER_MIGRATION),
])
def test_foreign_destinations_are_never_touched(o: Observation, phase: Phase) -> None:
    t = imp()
    assert judge_import(o, t).phase == phase
    assert plan(t, o).act == Act.FAIL
    assert import_dest_id(t, o) is None
    cancelled = plan(imp(cancel_requested=True), o)
    assert cancelled.act == Act.MARK and cancelled.state == State.ABORTED


def test_recorded_destination_without_header_is_committed() -> None:
    t = imp(state=State.COMMITTING, dest_image_id=D)
    a = plan(t, obs(D, D, True, None))
    assert a.act == Act.MARK and a.state == State.COMMITTED


def test_recorded_destination_gone() -> None:
    gone = obs(D, None, False, None)
    a = plan(imp(state=State.EXECUTED, dest_image_id=D), gone)
    assert a.act == Act.FAIL and 'aborted outside' in a.detail
    a = plan(imp(state=State.ABORTING, dest_image_id=D, cancel_requested=True), gone)
    assert a.act == Act.MARK and a.state == State.ABORTED and 'destination removed' in a.detail
    # an abort for a retry (error state) prepares again
    assert plan(imp(state=State.QUEUED, dest_image_id=D), gone).act == Act.PREPARE
    # the name now another image's
    a = plan(imp(state=State.QUEUED, dest_image_id=D), obs(D, 'other', False, None))
    assert a.act == Act.FAIL and 'not the recorded id' in a.detail


def test_cancel_aborts_through_the_destination() -> None:
    t = imp(state=State.EXECUTING, dest_image_id=D, cancel_requested=True)
    a = plan(t, obs(D, D, True, header(MigState.EXECUTING)))
    assert a.act == Act.ABORT and a.state == State.ABORTING and not a.by_source
    a = plan(imp(cancel_requested=True), obs())
    assert a.act == Act.MARK and a.detail == 'cancelled before prepare'


def test_manual_commit_waits() -> None:
    t = imp(state=State.EXECUTED, dest_image_id=D, manual_commit=True)
    assert plan(t, obs(D, D, True, header(MigState.EXECUTED))).act == Act.WAIT


# -- runner -------------------------------------------------------------------

class FakeImport(RbdPort):
    def __init__(self) -> None:
        self.factory = FakePool()
        self.state: Optional[MigState] = None     # None: nothing; 'done': committed
        self.committed = False
        self.calls: List[str] = []

    def observe_import(self, dest: ImageSpec, dest_id: Optional[str]) -> Observation:
        if self.committed:
            return obs(D, D, True, None)
        if self.state is None:
            return obs(dest_id)
        return obs(D, D, True, header(self.state))

    def image_id(self, spec: ImageSpec) -> Optional[str]:
        return D if self.state is not None or self.committed else None

    def prepare_import(self, client: Any, source_spec: str, dest: ImageSpec,
                       layout: Any) -> None:
        self.calls.append('prepare_import ' + source_spec)
        self.state = MigState.PREPARED

    def execute(self, client: Any, dest: ImageSpec, on_progress: Any = None) -> None:
        self.calls.append('execute')
        on_progress(1, 2)
        on_progress(2, 2)
        self.state = MigState.EXECUTED

    def commit(self, client: Any, dest: ImageSpec, on_progress: Any = None) -> None:
        self.calls.append('commit')
        self.committed = True

    def abort(self, client: Any, spec: ImageSpec, on_progress: Any = None) -> None:
        self.calls.append('abort via ' + str(spec))
        self.state = None

    def descendants(self, spec: ImageSpec) -> List[str]:
        return []

    def mark_intent(self, client: Any, spec: ImageSpec, image_id: str, intent: Any) -> None:
        self.calls.append('mark ' + intent.step)


def run(fake: FakeImport, **kw: Any) -> Task:
    w = worker()
    w.put(imp(size_bytes=1 << 20, **kw))
    Runner(w, 't1', fake, lambda: {})._main()
    return w.get('t1')


def test_runner_imports_to_committed() -> None:
    fake = FakeImport()
    t = run(fake)
    assert fake.calls == ['prepare_import ' + SPEC, 'execute', 'mark commit', 'commit']
    assert t.state == State.COMMITTED and t.dest_image_id == D and t.progress == 1.0


def test_runner_resumes_from_the_header_after_a_restart() -> None:
    fake = FakeImport()
    fake.state = MigState.EXECUTING
    t = run(fake, state=State.PREPARING)        # the record lagged behind librbd
    assert fake.calls == ['execute', 'mark commit', 'commit'] and t.state == State.COMMITTED


def test_runner_cancel_aborts_and_removes() -> None:
    fake = FakeImport()
    fake.state = MigState.EXECUTING
    t = run(fake, state=State.EXECUTING, dest_image_id=D, cancel_requested=True)
    assert fake.calls == ['abort via b/img']
    assert t.state == State.ABORTED and 'destination removed' in (t.error or '')


# -- the command ------------------------------------------------------------------

class Cluster(RbdPort):
    def __init__(self) -> None:
        self.images = {'b/taken'}

    def pool_exists(self, pool: str) -> bool:
        return pool in ('b', 'c')

    def namespace_exists(self, pool: str, namespace: str) -> bool:
        return True

    def image_exists(self, spec: ImageSpec) -> bool:
        return str(spec) in self.images

    def trashed_source(self, spec: ImageSpec) -> Optional[str]:
        return None

    def pool_config(self, spec: Any) -> Dict[str, str]:
        return {}


S3_STREAM = {'type': 's3', 'url': 'http://127.0.0.1:1/b/k', 'access_key': 'AKID',
             'secret_key': 'SECRET'}
S3: Dict[str, Any] = {'type': 'raw', 'stream': S3_STREAM}


# the tests' endpoints are on loopback: the admin allowed it (import_guard)
LOOPBACK_ALLOWED = Policy(networks=parse_networks('127.0.0.0/8'))


def importer(allowed: Any = lambda p, ns: p != 'c') -> Importer:
    w = worker()
    w.load()
    store: Dict[str, str] = {}

    def set_store(k: str, v: Optional[str]) -> None:
        if v is None:
            store.pop(k, None)
        else:
            store[k] = v
    c = Commands(table=w, scheduler=w, adapter=Cluster(), pools=lambda: {}, authorized=allowed,
                 clock=lambda: 5.0)
    i = Importer(table=w, scheduler=w, adapter=c.adapter, access=c.access, adder=c.adder,
                 views=c.views, clock=c.clock, set_store=set_store,
                 get_store_prefix=lambda p: {k: v for k, v in store.items()
                                             if k.startswith(p)},
                 config_get=lambda k: None,
                 guard=ImportGuard(lambda: LOOPBACK_ALLOWED, Endpoints),
                 probe_stream=lambda s, get: 4 << 20)
    i.store = store       # type: ignore[attr-defined]
    return i


def call(i: Importer, dest: str, spec: Any, **req: Any) -> Any:
    try:
        r, out, err = i.add(dest, spec if isinstance(spec, str) else json.dumps(spec),
                            AddRequest(**req))
    except LiveMigrateError as e:
        return -e.errno
    return json.loads(out)


def test_import_stores_credentials_apart_and_sweeps_them() -> None:
    i = importer()
    v = call(i, 'b/new', S3, priority=5, bandwidth_limit='10M')
    task = i.table.get(v['id'])
    assert task.import_spec and 'SECRET' not in task.import_spec and 'AKID' not in task.dumps()
    assert task.size_bytes == 4 << 20 and task.priority == 5
    assert task.bandwidth_limit_bytes == 10 << 20 and task.source == task.destination
    store = i.store       # type: ignore[attr-defined]
    assert sorted(store.values()) == ['AKID', 'SECRET']
    assert 'SECRET' not in json.dumps(v) and v['source'].startswith('import: raw s3')
    assert v['import']['stream']['secret_key'].startswith('config://mgr/rbd_livemigrate/import/')
    # the same import again: the same task
    assert call(i, 'b/new', S3)['id'] == v['id']
    # another spec into the same name: refused
    other = dict(S3, stream=dict(S3_STREAM, url='http://127.0.0.1:1/b/other'))
    assert call(i, 'b/new', other) == -errno.EEXIST
    i.sweep()
    assert len(store) == 2                    # the task is live
    i.table.update(v['id'], lambda t: t.evolve(state=State.ABORTED))
    i.sweep()
    assert store == {}


@pytest.mark.parametrize('dest,spec,req,err', [
    ('b/taken', S3, {}, errno.EEXIST),
    ('c/x', S3, {}, errno.EACCES),
    ('b/x', S3, {'data_pool': 'c'}, errno.EACCES),
    ('nopool/x', S3, {}, errno.ENOENT),
    ('b/x', '{bad', {}, errno.EINVAL),
    ('b/x', {'type': 'vmdk'}, {}, errno.EINVAL),
    ('b/x', S3, {'object_size': '3M'}, errno.EINVAL),
    ('b/x', S3, {'flatten': True}, errno.EINVAL),
])
def test_refusals_queue_nothing(dest: str, spec: Any, req: Dict[str, Any], err: int) -> None:
    i = importer()
    assert call(i, dest, spec, **req) == -err
    assert i.table.all() == [] and i.store == {}       # type: ignore[attr-defined]


def test_dry_run_queues_nothing() -> None:
    i = importer()
    v = call(i, 'b/x', S3, dry_run=True)
    assert v['dry_run'] and v['size_bytes'] == 4 << 20 and 'SECRET' not in json.dumps(v)
    assert i.table.all() == [] and i.store == {}       # type: ignore[attr-defined]


def test_probe_errors_pass_through() -> None:
    i = importer()

    def refuse(s: Stream, get: Any) -> int:
        raise LiveMigrateError('unreachable', errno.ECONNREFUSED)
    i.probe = refuse
    assert call(i, 'b/x', S3) == -errno.ECONNREFUSED and i.table.all() == []


# -- the header librbd writes --------------------------------------------------------

# rbd_header.<id> 'migration_get' of an import prepared on Pacific 16.2.15
# (raw file, 10 MiB, state prepared)
PACIFIC_IMPORT_HEADER = (
    b'\x03\x03u\x00\x00\x00\x02' + b'\xff' * 8 + b'\x00' * 16 + b'\x00\x00\xa0\x00\x00\x00'
    b'\x00\x00\x01\x00\x02\x00\x00\x00\x00\x00H\x00\x00\x00'
    b'{"stream":{"file_path":"/tmp/lmimp-raw.bin","type":"file"},"type":"raw"}')


def test_decode_an_import_header() -> None:
    pytest.importorskip('rados')
    pytest.importorskip('rbd')
    from rbd_livemigrate.rbd_adapter import decode_migration_spec
    h = decode_migration_spec(PACIFIC_IMPORT_HEADER)
    assert h is not None and h.is_import and h.kind == HeaderType.DST and h.pool_id == -1
    assert h.state == MigState.PREPARED and h.image_name == ''
    assert json.loads(h.source_spec)['stream']['file_path'] == '/tmp/lmimp-raw.bin'
    t = imp(import_spec='{"type":"raw","stream":{"type":"file",'
            '"file_path":"/tmp/lmimp-raw.bin"}}')
    assert judge_import(obs(D, D, True, h), t).phase == Phase.PREPARED
