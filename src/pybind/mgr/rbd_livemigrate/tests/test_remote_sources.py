"""The remote sources' room: commands, the task's steps and the files,
with a fake remote client and a fake store."""

import errno
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import pytest

from rbd_livemigrate import compat, remote_spec
from rbd_livemigrate.errors import Blocked, Busy, InvalidArgument
from rbd_livemigrate.remote_sources import RemoteSources, own_snap, spec_of
from rbd_livemigrate.remotes import ConfFiles, NotSupported, Remote, RemoteRegistry

from test_remotes import KEY, KEYRING, Checker, Store


class FakeImage:
    def __init__(self) -> None:
        self.snaps: List[str] = []
        self.watchers: List[str] = []
        self.moved: bool = False


class FakeClient:
    """rbd_remote.RemoteClient's surface, over dicts."""

    def __init__(self, images: Dict[Tuple[str, str, str], FakeImage], log: List[str]) -> None:
        self.images = images
        self.log = log

    def __enter__(self) -> 'FakeClient':
        self.log.append('connect')
        return self

    def __exit__(self, *exc: Any) -> None:
        self.log.append('close')

    def image_info(self, pool: str, ns: str, image: str) -> Dict[str, Any]:
        i = self.images[(pool, ns, image)]
        return {'size': 1, 'snaps': list(i.snaps), 'watchers': list(i.watchers)}

    def watchers(self, pool: str, ns: str, image: str) -> List[str]:
        return list(self.images[(pool, ns, image)].watchers)

    def list_images(self, pool: str, ns: str) -> List[str]:
        return [k[2] for k in self.images if k[:2] == (pool, ns)]

    def create_snap(self, pool: str, ns: str, image: str, snap: str) -> bool:
        i = self.images[(pool, ns, image)]
        if snap in i.snaps:
            return False
        i.snaps.append(snap)
        self.log.append('snap+' + snap)
        return True

    def remove_snap(self, pool: str, ns: str, image: str, snap: str) -> bool:
        i = self.images[(pool, ns, image)]
        if snap not in i.snaps:
            return False
        i.snaps.remove(snap)
        self.log.append('snap-' + snap)
        return True

    def head_differs(self, pool: str, ns: str, image: str, snap: str) -> bool:
        return self.images[(pool, ns, image)].moved

    def user_snaps(self, pool: str, ns: str, image: str) -> List[Tuple[str, int]]:
        return [(s, 1) for s in self.images[(pool, ns, image)].snaps]

    def open_at(self, pool: str, ns: str, image: str, snap: Optional[str]) -> str:
        self.log.append('open {}@{}'.format(image, snap))
        return image


class World:
    def __init__(self, tmp: str, supported: bool = True) -> None:
        self.store = Store()
        self.images: Dict[Tuple[str, str, str], FakeImage] = {
            ('rbd', '', 'vm1'): FakeImage(), ('rbd', '', 'vm2'): FakeImage()}
        self.images[('rbd', '', 'vm1')].snaps = ['s1']
        self.log: List[str] = []
        self.tasks: Dict[str, Optional[str]] = {}
        self.registry = RemoteRegistry(self.store.get_prefix, self.store.set, Checker(),
                                       lambda: supported, compat.cross_cluster_refusal,
                                       lambda: 'local')
        self.files = ConfFiles(os.path.join(tmp, 'remotes'))
        self.keys_seen: List[str] = []

        def client_for(remote: Remote, key: str) -> FakeClient:
            self.keys_seen.append(key)
            return FakeClient(self.images, self.log)
        self.rs = RemoteSources(self.registry, self.files, client_for,   # type: ignore
                                lambda: list(self.tasks.items()))


@pytest.fixture
def world(tmp_path: Any) -> World:
    w = World(str(tmp_path))
    w.rs.add_remote('east', 'v2:10.0.0.1:3300', None, KEYRING)
    return w


def test_remote_commands(world: World) -> None:
    out = world.rs.add_remote('east', 'v2:10.0.0.1:3300', None, KEYRING)
    assert out['added'] is False and out['conf_path'].endswith('/remotes/east.conf')
    assert KEY not in json.dumps(out)
    assert [v['name'] for v in world.rs.ls()] == ['east'] and world.rs.ls()[0]['tasks'] == 0
    spec = world.rs.spec_for(remote_spec.RemoteImageSpec.parse('east:rbd/vm1@s1'), 't1')
    world.tasks['t1'] = json.dumps(spec)
    world.tasks['t2'] = '{"type": "raw", "stream": {"type": "file", "file_path": "/x"}}'
    world.tasks['t3'] = None
    assert world.rs.ls()[0]['tasks'] == 1
    with pytest.raises(Busy, match='t1'):
        world.rs.rm('east')
    del world.tasks['t1']
    world.rs.rm('east')
    assert world.rs.ls() == [] and world.store.d == {}


def test_sources_only_for_registered_names(world: World) -> None:
    assert world.rs.image_source('rbd/vm1') is None
    assert world.rs.image_source('west:rbd/vm1') is None      # a local pool 'west:rbd'
    src = world.rs.image_source('east:rbd/vm1@s1')
    assert src is not None and src.snap == 's1'
    pool = world.rs.pool_source('east:rbd')
    assert pool is not None and world.rs.pool_images(pool) == ['vm1', 'vm2']


def test_gate_refuses_remote_sources(tmp_path: Any) -> None:
    w = World(str(tmp_path), supported=False)
    with pytest.raises(NotSupported) as e:
        w.rs.add_remote('east', '10.0.0.1', None, KEYRING)
    assert e.value.errno == errno.EOPNOTSUPP and 'Tentacle' in str(e.value)


def test_check_image(world: World) -> None:
    src = remote_spec.RemoteImageSpec.parse('east:rbd/vm1@nope')
    with pytest.raises(InvalidArgument, match="no snapshot 'nope'"):
        world.rs.check_image(src)
    assert world.rs.check_image(remote_spec.RemoteImageSpec.parse('east:rbd/vm1'))['snaps'] \
        == ['s1']


def test_own_snapshot_lifecycle(world: World) -> None:
    src = remote_spec.RemoteImageSpec.parse('east:rbd/vm2')
    spec = world.rs.spec_for(src, 'abc')
    assert spec['snap_name'] == 'rbd_livemigrate-abc' and own_snap('abc', spec)
    text = json.dumps(spec)
    world.tasks['abc'] = text
    img = world.images[('rbd', '', 'vm2')]
    # a client still has it open: the task waits, nothing taken
    img.watchers = ['10.0.0.5:0/123']
    with pytest.raises(Blocked) as e:
        world.rs.before_prepare('abc', text)
    assert e.value.wait and e.value.errno == errno.EBUSY and img.snaps == []
    img.watchers = []
    world.rs.before_prepare('abc', text)
    assert img.snaps == ['rbd_livemigrate-abc']
    conf, keyring = world.files.paths('east')
    assert os.path.exists(conf) and os.path.exists(keyring)
    world.rs.before_prepare('abc', text)               # again (a retry): idempotent
    assert img.snaps == ['rbd_livemigrate-abc']
    removed: List[str] = []
    del world.tasks['abc']
    world.rs.after_end('abc', text, removed.append)
    assert img.snaps == [] and removed == ['rbd_livemigrate-abc']
    assert not os.path.exists(conf) and not os.path.exists(keyring)
    assert set(world.keys_seen) == {KEY}


def test_users_snapshot_kept_and_head_moved(world: World) -> None:
    spec = world.rs.spec_for(remote_spec.RemoteImageSpec.parse('east:rbd/vm1@s1'), 't9')
    text = json.dumps(spec)
    assert not own_snap('t9', spec)
    img = world.images[('rbd', '', 'vm1')]
    img.moved = True
    with pytest.raises(Blocked, match='written after snapshot s1'):
        world.rs.before_prepare('t9', text)
    img.moved = False
    world.rs.before_prepare('t9', text)
    removed: List[str] = []
    world.rs.after_end('t9', text, removed.append)
    assert img.snaps == ['s1'] and removed == []


def test_start_sweeps_then_writes_live(world: World) -> None:
    spec = world.rs.spec_for(remote_spec.RemoteImageSpec.parse('east:rbd/vm1@s1'), 't1')
    world.tasks['t1'] = json.dumps(spec)
    os.makedirs(world.files.dir, exist_ok=True)
    stale = os.path.join(world.files.dir, 'gone.keyring')
    open(stale, 'w').close()
    world.rs.start()
    assert not os.path.exists(stale)
    assert world.files.present() == {'east'}
    del world.tasks['t1']
    assert world.rs.tidy() == ['east'] and world.files.present() == set()


def test_spec_of() -> None:
    assert spec_of(None) is None and spec_of('nonsense') is None
    assert spec_of('{"type": "raw"}') is None
    assert spec_of('{"type": "native", "cluster_name": "/d/e"}') is not None
