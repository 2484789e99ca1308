"""Remote sources wired in (issue 27): ``add <remote>:...`` makes an import
task with the native spec, the runner's gate waits for the remote image's
clients and takes the module's snapshot, and the task's end removes it from
both ends; ls/status name the remote image, never a key."""

import errno
import json
from typing import Any, Optional

from rbd_livemigrate.commands import AddRequest, Commands
from rbd_livemigrate.errors import LiveMigrateError
from rbd_livemigrate.hold import HoldKind
from rbd_livemigrate.import_guard import ImportGuard
from rbd_livemigrate.import_policy import Endpoints, Policy
from rbd_livemigrate.importer import Importer
from rbd_livemigrate.pipeline import Runner
from rbd_livemigrate.remote_spec import RemoteImageSpec
from rbd_livemigrate.spec import ImageSpec
from rbd_livemigrate.task import IMPORT_TASK_VERSION, State, Task, VerifyMode

from test_import import Cluster, FakeImport
from test_pipeline import worker
from test_remote_sources import World
from test_remotes import KEY, KEYRING

SNAP = 'rbd_livemigrate-t1'


def world(tmp: Any) -> World:
    w = World(str(tmp))
    w.rs.add_remote('east', 'v2:10.0.0.1:3300', None, KEYRING)
    return w


class FakeRemoteImport(FakeImport):
    def unprotect(self, client: Any, spec: ImageSpec, name: str, rollback: bool) -> bool:
        self.calls.append('drop {}@{}'.format(spec, name))
        return True


def remote_task(w: World, src: str = 'east:rbd/vm2', **kw: Any) -> Task:
    spec = w.rs.spec_for(RemoteImageSpec.parse(src), 't1')
    return Task(id='t1', source='b/vm2', destination='b/vm2', created=1.0,
                import_spec=json.dumps(spec, sort_keys=True), version=IMPORT_TASK_VERSION,
                **kw)


def run(w: World, fake: FakeImport, task: Task) -> Task:
    wk = worker()
    wk.put(task)
    w.tasks['t1'] = task.import_spec
    Runner(wk, 't1', fake, lambda: {}, remote=w.rs)._main()
    return wk.get('t1')


def test_a_remote_task_snapshots_imports_commits_and_drops_the_snapshot(tmp_path: Any) -> None:
    w = world(tmp_path)
    fake = FakeRemoteImport()
    t = run(w, fake, remote_task(w))
    assert t.state == State.COMMITTED, t.error
    assert fake.calls[0].startswith('prepare_import ') and '"snap_name": "{}"'.format(SNAP) \
        in fake.calls[0] and KEY not in fake.calls[0]
    assert fake.calls[-1] == 'drop b/vm2@' + SNAP
    assert 'snap+' + SNAP in w.log and 'snap-' + SNAP in w.log
    assert w.images[('rbd', '', 'vm2')].snaps == []


def test_a_users_snapshot_stays(tmp_path: Any) -> None:
    w = world(tmp_path)
    fake = FakeRemoteImport()
    t = run(w, fake, remote_task(w, 'east:rbd/vm1@s1'))
    assert t.state == State.COMMITTED
    assert not any(c.startswith('drop') for c in fake.calls)
    assert w.images[('rbd', '', 'vm1')].snaps == ['s1']


def test_remote_clients_hold_the_task_before_anything_is_done(tmp_path: Any) -> None:
    w = world(tmp_path)
    w.images[('rbd', '', 'vm2')].watchers = ['10.0.0.9:0/1']
    fake = FakeRemoteImport()
    t = run(w, fake, remote_task(w))
    assert t.state == State.QUEUED and fake.calls == []
    assert t.blocked_kind == HoldKind.WATCHERS.value and t.next_retry is not None
    assert 'east:rbd/vm2' in (t.blocked_reason or '')
    assert w.images[('rbd', '', 'vm2')].snaps == []
    # once they close, the same task goes on to the end
    w.images[('rbd', '', 'vm2')].watchers = []
    t = run(w, fake, t.evolve(next_retry=None))
    assert t.state == State.COMMITTED and t.blocked_kind is None


def test_a_cancel_before_prepare_removes_the_remote_snapshot_only(tmp_path: Any) -> None:
    w = world(tmp_path)
    w.images[('rbd', '', 'vm2')].snaps = [SNAP]       # taken by a gate, then cancelled
    fake = FakeRemoteImport()
    t = run(w, fake, remote_task(w, cancel_requested=True))
    assert t.state == State.ABORTED
    assert w.images[('rbd', '', 'vm2')].snaps == [] and fake.calls == []


# -- the command ----------------------------------------------------------------

def importer(w: World, unscoped: bool = True) -> Importer:
    wk = worker()
    wk.load()
    c = Commands(table=wk, scheduler=wk, adapter=Cluster(), pools=lambda: {},
                 authorized=lambda p, ns: True, unscoped=lambda: unscoped, clock=lambda: 5.0)
    return Importer(table=wk, scheduler=wk, adapter=c.adapter, access=c.access, adder=c.adder,
                    views=c.views, clock=c.clock, set_store=lambda k, v: None,
                    get_store_prefix=lambda p: {}, config_get=lambda k: None,
                    guard=ImportGuard(lambda: Policy(), Endpoints), remotes=w.rs)


def add(i: Importer, src: str, dest: Optional[str], **req: Any) -> Any:
    try:
        _, out, _ = i.add_remote(RemoteImageSpec.parse(src), dest, AddRequest(**req))
    except LiveMigrateError as e:
        return -e.errno
    return json.loads(out)


def test_add_makes_an_import_task_naming_the_remote(tmp_path: Any) -> None:
    w = world(tmp_path)
    i = importer(w)
    t = add(i, 'east:rbd/vm1', 'b/vm1', priority=3)
    assert t['source'] == 'east:rbd/vm1@rbd_livemigrate-{}'.format(t['id'])
    assert t['destination'] == 'b/vm1' and t['priority'] == 3 and t['state'] == 'queued'
    assert KEY not in json.dumps(t)
    stored = i.table.get(t['id'])
    assert stored.import_spec is not None and KEY not in stored.import_spec
    assert 'mon_host' not in json.loads(stored.import_spec)
    # verified before commit like a migration (verify_default, else --verify)
    assert stored.verify == VerifyMode.AUTO and t['verify'] == 'auto'
    assert add(i, 'east:rbd/vm2', 'b/vm2', verify='full')['verify'] == 'full'
    assert add(i, 'east:rbd/vm1', 'b/vm1', priority=3)['id'] == t['id']     # again
    assert add(i, 'east:rbd/vm1@s1', 'b/vm1') == -errno.EEXIST             # another source
    assert add(i, 'east:rbd/vm1@s1', 'b/other')['source'] == 'east:rbd/vm1@s1'
    assert add(i, 'east:rbd/vm1@nope', 'b/x') == -errno.EINVAL
    assert add(i, 'east:rbd/vm1', 'b/taken') == -errno.EEXIST


def test_add_refusals(tmp_path: Any) -> None:
    w = world(tmp_path)
    assert add(importer(w, unscoped=False), 'east:rbd/vm1', 'b/vm1') == -errno.EACCES
    i = importer(w)
    assert add(i, 'east:rbd/vm1', None) == -errno.EINVAL
    assert add(i, 'east:rbd/vm1', 'b/vm1', flatten=True) == -errno.EINVAL
    assert add(i, 'east:rbd/vm1', 'nopool/vm1') == -errno.ENOENT
    dry = add(i, 'east:rbd/vm1', 'b/vm1', dry_run=True)
    assert dry['dry_run'] is True and dry['snapshots'] == ['s1']
    assert i.table.all() == []


def test_status_view_and_progress_name_the_remote_image(tmp_path: Any) -> None:
    from rbd_livemigrate.progress import message
    w = world(tmp_path)
    task = remote_task(w, 'east:rbd/vm1@s1')
    assert message(task) == 'Importing RBD image b/vm2 from remote image east:rbd/vm1@s1'
    i = importer(w)
    i.table.put(task)
    v = i.views.task(task)
    assert v['source'] == 'east:rbd/vm1@s1' and KEY not in json.dumps(v)


def test_the_schedulers_look_keeps_the_remote_images_name(tmp_path: Any) -> None:
    """The scheduler looks again at a waiting remote task's clients through
    the module (``Module.source_watchers``): the reason keeps naming the
    remote image, not the destination as a 'source image'."""
    w = world(tmp_path)
    wk = worker()
    wk.load()
    why = 'remote image east:rbd/vm2 has 1 watcher(s) (10.0.0.9:0/1): stop its clients'
    wk.put(remote_task(w, blocked_kind=HoldKind.WATCHERS.value, blocked_reason=why))
    wk.watchers = lambda spec: ['10.0.0.9:0/1']
    wk.recheck_watchers(['t1'], 10.0)
    t = wk.get('t1')
    assert t.blocked_reason == why and t.next_retry is not None


# -- add-pool of a remote pool ----------------------------------------------------

def batches(w: World, unscoped: bool = True) -> Any:
    wk = worker()
    wk.load()
    c = Commands(table=wk, scheduler=wk, adapter=Cluster(), pools=lambda: {},
                 authorized=lambda p, ns: True, unscoped=lambda: unscoped, clock=lambda: 5.0)
    i = Importer(table=wk, scheduler=wk, adapter=c.adapter, access=c.access, adder=c.adder,
                 views=c.views, clock=c.clock, set_store=lambda k, v: None,
                 get_store_prefix=lambda p: {}, config_get=lambda k: None,
                 guard=ImportGuard(lambda: Policy(), Endpoints), remotes=w.rs)
    c.batches.remotes = w.rs
    c.batches.add_remote = i.add_remote
    c.batches.start = lambda batch_id: None          # expanded by the test
    return c.batches


def test_add_pool_of_a_remote_pool_is_one_batch(tmp_path: Any) -> None:
    from rbd_livemigrate.remote_spec import RemotePoolSpec
    w = world(tmp_path)
    b = batches(w)
    src = RemotePoolSpec.parse('east:rbd')
    _, out, _ = b.add_remote_pool(src, 'b', None, AddRequest(priority=2))
    batch = json.loads(out)
    b.expand(batch['id'])
    tasks = sorted(b.table.batch_tasks(batch['id']), key=lambda t: t.destination)
    assert [t.destination for t in tasks] == ['b/vm1', 'b/vm2']
    assert all(t.priority == 2 and t.import_spec and KEY not in t.import_spec for t in tasks)
    assert b.views.task(tasks[0])['source'] == 'east:rbd/vm1@rbd_livemigrate-' + tasks[0].id
    assert b.table.get_batch(batch['id']).state.value == 'expanded'
    b.expand(batch['id'])                            # again (a restart): nothing doubled
    assert len(b.table.batch_tasks(batch['id'])) == 2
    _, out, _ = b.add_remote_pool(src, 'c', 'vm2*', AddRequest())
    b.expand(json.loads(out)['id'])
    assert [t.destination for t in b.table.batch_tasks(json.loads(out)['id'])] == ['c/vm2']


def test_add_pool_of_a_remote_pool_refusals(tmp_path: Any) -> None:
    from rbd_livemigrate.remote_spec import RemotePoolSpec
    w = world(tmp_path)
    src = RemotePoolSpec.parse('east:rbd')
    for b, dest, want in ((batches(w, unscoped=False), 'b', errno.EACCES),
                          (batches(w), 'nopool', errno.ENOENT)):
        try:
            b.add_remote_pool(src, dest, None, AddRequest())
            got = 0
        except LiveMigrateError as e:
            got = e.errno
        assert got == want and b.table.all_batches() == []
