"""Remote sources: spec parsing, the registry, the private files, the remote
client's errno mapping and the release gate, without a cluster."""

import errno
import json
import os
import stat
from typing import Any, Dict, List, Optional

import pytest

from rbd_livemigrate import compat, remote_spec
from rbd_livemigrate.errors import (AlreadyExists, Busy, InvalidArgument, LiveMigrateError,
                                    NotAuthorized, NotFound)
from rbd_livemigrate.rbd_remote import RemoteClient, Unreachable, client_conf, connect_check
from rbd_livemigrate.remote_spec import RemoteImageSpec, RemotePoolSpec
from rbd_livemigrate.remotes import (ConfFiles, CorruptRemote, NotSupported, Remote,
                                     RemoteRegistry)

KEY = 'AQBVDRdrSk6DDiAAg5oe7h8B2hBvyxX3mdGZrw=='          # AES-128 shape
KEY2 = 'AgBVDRdrSk6DDiAAg5oe7h8B2hBvyxX3mdGZr1L2Ya4BrgoejU/v+pwpafc='   # AES-256-K shape
KEYRING = '[client.lm]\n\tkey = {}\n\tcaps mon = "profile rbd"\n'.format(KEY)


# -- remote_spec ------------------------------------------------------------

@pytest.mark.parametrize('text,want', [
    ('east:rbd/img', ('east', 'rbd', '', 'img', None)),
    ('east:rbd/img@s1', ('east', 'rbd', '', 'img', 's1')),
    ('east:rbd/ns/img@s1', ('east', 'rbd', 'ns', 'img', 's1')),
    ('dc-2.b_x:p/i', ('dc-2.b_x', 'p', '', 'i', None)),
])
def test_image_spec(text: str, want: tuple) -> None:
    s = RemoteImageSpec.parse(text)
    assert tuple(s) == want
    assert str(s) == text


@pytest.mark.parametrize('text', [
    'rbd/img', ':rbd/img', 'east:rbd', 'east:rbd/a/b/c', 'east:rbd/img@', 'e/x:rbd/img',
    'east:rbd/im g', '-east:rbd/img', 'east:/img', 'a' * 64 + ':rbd/img',
])
def test_image_spec_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        RemoteImageSpec.parse(text)


def test_pool_spec() -> None:
    assert tuple(RemotePoolSpec.parse('east:rbd')) == ('east', 'rbd', '')
    assert tuple(RemotePoolSpec.parse('east:rbd/ns')) == ('east', 'rbd', 'ns')
    assert str(RemotePoolSpec.parse('east:rbd/ns')) == 'east:rbd/ns'
    for bad in ('rbd', 'east:', 'east:a/b/c'):
        with pytest.raises(InvalidArgument):
            RemotePoolSpec.parse(bad)


def test_split_remote_only_registered_names() -> None:
    assert remote_spec.split_remote('east:rbd/img', {'east'}) == ('east', 'rbd/img')
    # a local pool may have ':' in its name: not a remote unless registered
    assert remote_spec.split_remote('east:rbd/img', {'west'}) is None
    assert remote_spec.split_remote('rbd/a:b', {'rbd'}) is None
    assert remote_spec.split_remote('rbd/img', {'rbd'}) is None


@pytest.mark.parametrize('mon_host', [
    '10.0.0.1', '10.0.0.1,10.0.0.2:6789', '[v2:10.0.0.1:3300,v1:10.0.0.1:6789]',
    'v2:127.0.0.1:11135', 'mon1.example.com', '[::1]:3300', 'v2:10.0.0.1:3300/0',
])
def test_mon_host_ok(mon_host: str) -> None:
    assert remote_spec.validate_mon_host(mon_host) == mon_host


@pytest.mark.parametrize('mon_host', [
    '', '10.0.0.1 10.0.0.2', '10.0.0.1\nkeyring = /etc/shadow', 'a=b', 'x;y', 'x#y',
])
def test_mon_host_refused(mon_host: str) -> None:
    # it goes into a conf file: no way to smuggle another option in
    with pytest.raises(InvalidArgument):
        remote_spec.validate_mon_host(mon_host)


def test_parse_keyring() -> None:
    assert remote_spec.parse_keyring(KEYRING, None) == ('client.lm', KEY)
    assert remote_spec.parse_keyring(KEYRING, 'client.lm') == ('client.lm', KEY)
    assert remote_spec.parse_keyring(KEY2 + '\n', 'client.x') == ('client.x', KEY2)
    assert remote_spec.parse_keyring(KEY2, None) == ('client.admin', KEY2)
    two = KEYRING + '[client.other]\n\tkey = {}\n'.format(KEY2)
    assert remote_spec.parse_keyring(two, 'client.other') == ('client.other', KEY2)
    with pytest.raises(InvalidArgument, match='2 client sections'):
        remote_spec.parse_keyring(two, None)
    with pytest.raises(InvalidArgument, match=r'no \[client.nope\] section'):
        remote_spec.parse_keyring(KEYRING, 'client.nope')
    with pytest.raises(InvalidArgument):
        remote_spec.parse_keyring('', None)
    with pytest.raises(InvalidArgument):
        remote_spec.parse_keyring('[client.lm]\n\tkey = notbase64!!\n', None)
    with pytest.raises(InvalidArgument):
        remote_spec.parse_keyring(KEYRING, 'osd.0')


def test_keyring_errors_never_show_the_key() -> None:
    bad = '[client.lm]\n\tkey = {}\n'.format(KEY[:-6] + '!!!!==')
    with pytest.raises(InvalidArgument) as e:
        remote_spec.parse_keyring(bad, None)
    assert KEY[:12] not in str(e.value)


def test_build_source_spec() -> None:
    spec = remote_spec.build_source_spec('/run/ceph/rbd_livemigrate', 'east', 'client.lm',
                                         'rbd', 'ns', 'img', 'snap1')
    assert spec == {'type': 'native', 'cluster_name': '/run/ceph/rbd_livemigrate/east',
                    'client_name': 'client.lm', 'pool_name': 'rbd', 'pool_namespace': 'ns',
                    'image_name': 'img', 'snap_name': 'snap1'}
    assert set(spec) <= set(remote_spec.SPEC_KEYS)
    # never the form librbd 20.2.4 reads as a *local* source
    assert not set(spec) & set(remote_spec.SECRET_SPEC_KEYS)
    remote_spec.check_no_secret(spec)
    assert remote_spec.is_remote_spec(spec)
    assert remote_spec.remote_of_spec(spec) == 'east'
    with pytest.raises(InvalidArgument):
        remote_spec.build_source_spec('/d', 'east', 'client.lm', 'rbd', '', 'img', '')
    with pytest.raises(InvalidArgument):
        remote_spec.build_source_spec('relative', 'east', 'client.lm', 'rbd', '', 'img', 's')
    with pytest.raises(InvalidArgument, match='key_ref, mon_host'):
        remote_spec.check_no_secret(dict(spec, mon_host='x', key_ref='y'))


def test_conf_and_keyring_text() -> None:
    conf = remote_spec.conf_text('v2:10.0.0.1:3300', '/d/east.keyring')
    assert 'mon_host = v2:10.0.0.1:3300' in conf and 'keyring = /d/east.keyring' in conf
    assert KEY not in conf
    assert remote_spec.keyring_text('client.lm', KEY) == '[client.lm]\n\tkey = {}\n'.format(KEY)


def test_module_snap_name() -> None:
    assert remote_spec.module_snap_name('abc123') == 'rbd_livemigrate-abc123'


# -- the registry ---------------------------------------------------------

class Store:
    def __init__(self) -> None:
        self.d: Dict[str, str] = {}

    def get_prefix(self, prefix: str) -> Dict[str, str]:
        return {k: v for k, v in self.d.items() if k.startswith(prefix)}

    def set(self, key: str, value: Optional[str]) -> None:
        if value is None:
            self.d.pop(key, None)
        else:
            self.d[key] = value


class Checker:
    def __init__(self, fsid: str = 'remote-fsid', error: Optional[Exception] = None) -> None:
        self.fsid = fsid
        self.error = error
        self.calls: List[tuple] = []

    def __call__(self, name: str, mon_host: str, client: str, key: str) -> str:
        self.calls.append((name, mon_host, client, key))
        if self.error:
            raise self.error
        return self.fsid


def registry(store: Store, check: Checker, supported: bool = True) -> RemoteRegistry:
    return RemoteRegistry(store.get_prefix, store.set, check, lambda: supported,
                          compat.cross_cluster_refusal, lambda: 'local-fsid')


def test_add_ls_rm() -> None:
    store, check = Store(), Checker()
    reg = registry(store, check)
    remote, new = reg.add('east', 'v2:10.0.0.1:3300', None, KEYRING)
    assert new and remote.client_name == 'client.lm' and remote.fsid == 'remote-fsid'
    assert check.calls == [('east', 'v2:10.0.0.1:3300', 'client.lm', KEY)]
    assert store.d['remote-key/east'] == KEY
    # the key is nowhere but its own store key
    for k, v in store.d.items():
        if k != 'remote-key/east':
            assert KEY not in v
    view = reg.ls('/run/ceph/rbd_livemigrate')
    assert [v['name'] for v in view] == ['east']
    assert view[0]['conf_path'] == '/run/ceph/rbd_livemigrate/east.conf'
    assert KEY not in json.dumps(view)
    assert reg.key('east') == KEY
    # the same again: the existing one, no second connect
    again, new = reg.add('east', 'v2:10.0.0.1:3300', 'client.lm', KEYRING)
    assert not new and again == remote and len(check.calls) == 1
    with pytest.raises(AlreadyExists, match='mon_host, key') as e:
        reg.add('east', 'v2:10.0.0.2:3300', None, '[client.lm]\n\tkey = {}\n'.format(KEY2))
    assert KEY2 not in str(e.value)
    with pytest.raises(Busy, match='t1, t2'):
        reg.rm('east', lambda name: ['t1', 't2'])
    assert 'remote/east' in store.d
    reg.rm('east', lambda name: [])
    assert store.d == {}
    with pytest.raises(NotFound):
        reg.rm('east', lambda name: [])


def test_add_refused_keeps_nothing() -> None:
    for err in (NotAuthorized('refused', errno.EACCES), Unreachable('no answer')):
        store = Store()
        reg = registry(store, Checker(error=err))
        with pytest.raises(LiveMigrateError) as e:
            reg.add('east', '10.0.0.1', None, KEYRING)
        assert e.value.errno in (errno.EACCES, errno.ETIMEDOUT)
        assert store.d == {}


def test_add_this_cluster_refused() -> None:
    store = Store()
    reg = registry(store, Checker(fsid='local-fsid'))
    with pytest.raises(InvalidArgument, match='is this cluster'):
        reg.add('self', '10.0.0.1', None, KEYRING)
    assert store.d == {}


def test_release_gate() -> None:
    store, check = Store(), Checker()
    reg = registry(store, check, supported=False)
    with pytest.raises(NotSupported) as e:
        reg.add('east', '10.0.0.1', None, KEYRING)
    assert e.value.errno == errno.EOPNOTSUPP
    assert 'Tentacle' in str(e.value) and '\n' not in str(e.value)
    assert check.calls == [] and store.d == {}


def test_load_skips_corrupt_and_drops_orphan_keys() -> None:
    store = Store()
    good = Remote('east', '10.0.0.1', 'client.lm', 'f', 1.0)
    store.d['remote/east'] = good.to_json()
    store.d['remote-key/east'] = KEY
    store.d['remote/bad'] = '{not json'
    store.d['remote-key/bad'] = KEY          # kept: its record may be fixed by hand
    store.d['remote-key/orphan'] = KEY
    store.d['remote/keyed'] = json.dumps(dict(json.loads(good.to_json()), name='keyed',
                                              key=KEY))
    store.d['remote/newer'] = json.dumps(dict(json.loads(good.to_json()), name='newer',
                                              version=99))
    remotes, skipped = registry(store, Checker()).load()
    assert list(remotes) == ['east']
    assert set(skipped) == {'remote/bad', 'remote/keyed', 'remote/newer'}
    assert 'remote-key/orphan' not in store.d and 'remote-key/bad' in store.d
    assert KEY not in json.dumps(skipped)


def test_record_refuses_key() -> None:
    with pytest.raises(CorruptRemote):
        Remote.from_json(json.dumps({'name': 'e', 'mon_host': 'h', 'client_name': 'client.a',
                                     'version': 1, 'key': KEY}))


# -- private files --------------------------------------------------------

def test_conf_files(tmp_path: Any) -> None:
    d = str(tmp_path / 'remotes')
    files = ConfFiles(d)
    assert files.sweep() == []
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    remote = Remote('east', 'v2:10.0.0.1:3300', 'client.lm', 'f', 1.0)
    cluster = files.write(remote, KEY)
    assert cluster == d + '/east'
    conf, keyring = files.paths('east')
    for p in (conf, keyring):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert KEY not in open(conf).read()
    assert 'keyring = ' + keyring in open(conf).read()
    assert KEY in open(keyring).read()
    files.write(remote, KEY)                          # idempotent
    files.write(Remote('west', '10.0.0.9', 'client.w', 'g', 1.0), KEY2)
    assert files.present() == {'east', 'west'}
    assert files.retain({'west'}) == ['east']
    assert files.present() == {'west'}
    assert not os.path.exists(conf)
    # a killed mgr's files (and a temporary one) are swept at start; others stay
    open(os.path.join(d, 'x.keyring.123.tmp'), 'w').close()
    open(os.path.join(d, 'README'), 'w').close()
    assert ConfFiles(d).sweep() == ['west.conf', 'west.keyring', 'x.keyring.123.tmp']
    assert os.listdir(d) == ['README']


def test_conf_files_loose_dir_tightened(tmp_path: Any) -> None:
    d = tmp_path / 'remotes'
    d.mkdir(mode=0o755)
    os.chmod(str(d), 0o755)
    ConfFiles(str(d)).sweep()
    assert stat.S_IMODE(os.stat(str(d)).st_mode) == 0o700
    with pytest.raises(InvalidArgument):
        ConfFiles('relative/dir')


def test_conf_files_symlink_refused(tmp_path: Any) -> None:
    real = tmp_path / 'real'
    real.mkdir()
    link = tmp_path / 'link'
    link.symlink_to(real)
    with pytest.raises(InvalidArgument, match='not a directory'):
        ConfFiles(str(link)).sweep()


# -- the remote client, against a fake binding ----------------------------

class RadosError(Exception):
    def __init__(self, err: int) -> None:
        super().__init__('[errno {}] RADOS error (error connecting to the cluster)'.format(err))
        self.errno = err


class FakeRados:
    def __init__(self, connect_errno: int = 0) -> None:
        self.connect_errno = connect_errno
        self.made: List[Dict[str, Any]] = []
        self.shutdowns = 0
        outer = self

        class Rados:
            def __init__(self, conffile: Any = 'unset', name: str = '',
                         conf: Optional[Dict[str, str]] = None) -> None:
                outer.made.append({'conffile': conffile, 'name': name, 'conf': conf})

            def connect(self, timeout: int = 0) -> None:
                if outer.connect_errno:
                    raise RadosError(outer.connect_errno)

            def get_fsid(self) -> str:
                return 'the-fsid'

            def shutdown(self) -> None:
                outer.shutdowns += 1
        self.Rados = Rados


def test_connect_check_ok() -> None:
    fake = FakeRados()
    assert connect_check('east', '10.0.0.1', 'client.lm', KEY, 7, rados_mod=fake) == 'the-fsid'
    made = fake.made[0]
    # no conf file at all (conffile='' would read the local cluster's)
    assert made['conffile'] is None and made['name'] == 'client.lm'
    assert made['conf']['key'] == KEY and made['conf']['client_mount_timeout'] == '7'
    assert fake.shutdowns == 1


@pytest.mark.parametrize('err,cls,want', [
    (errno.EACCES, NotAuthorized, errno.EACCES),
    (errno.ETIMEDOUT, Unreachable, errno.ETIMEDOUT),
    (errno.EHOSTUNREACH, Unreachable, errno.EHOSTUNREACH),
    (errno.EINVAL, InvalidArgument, errno.EINVAL),
])
def test_connect_errors(err: int, cls: type, want: int) -> None:
    fake = FakeRados(err)
    with pytest.raises(cls) as e:
        connect_check('east', '10.0.0.1', 'client.lm', KEY, 5, rados_mod=fake)
    assert e.value.errno == want
    assert KEY not in str(e.value) and 'east' in str(e.value)
    assert fake.shutdowns == 1


def test_client_never_shows_key() -> None:
    c = RemoteClient('east', '10.0.0.1', 'client.lm', KEY)
    assert KEY not in repr(c)
    assert client_conf('h', KEY, 0.2)['rados_mon_op_timeout'] == '1'


# -- the release gate's probe ---------------------------------------------

class RbdError(Exception):
    def __init__(self, err: int) -> None:
        super().__init__('error migrating image')
        self.errno = err


@pytest.mark.parametrize('release,err,want', [
    ('tentacle 20.2.4', errno.EINVAL, True),     # "cannot specify client name without ..."
    ('reef 18.2.7', errno.ENOENT, False),        # no cluster_name: opened the local pool
    ('pacific 16.2.15', errno.ENOENT, False),
    ('other failure', errno.EIO, False),
])
def test_cross_cluster_probe(release: str, err: int, want: bool) -> None:
    seen: List[str] = []

    def prepare_import(spec: str) -> None:
        seen.append(spec)
        raise RbdError(err)
    assert compat.cross_cluster_import(prepare_import) is want
    spec = json.loads(seen[0])
    assert 'client_name' in spec and 'cluster_name' not in spec


def test_cross_cluster_probe_success_is_no() -> None:
    assert compat.cross_cluster_import(lambda spec: None) is False


def test_summary() -> None:
    spec = remote_spec.build_source_spec('/d', 'east', 'client.lm', 'rbd', 'ns', 'img', 's1')
    assert remote_spec.summary(spec) == 'east:rbd/ns/img@s1'
    spec['pool_namespace'] = ''
    assert remote_spec.summary(spec) == 'east:rbd/img@s1'


def test_conf_op_timeout(tmp_path: Any) -> None:
    assert 'op_timeout' not in remote_spec.conf_text('h', '/k')
    conf = remote_spec.conf_text('h', '/k', 60)
    assert 'rados_osd_op_timeout = 60' in conf and 'rados_mon_op_timeout = 60' in conf
    files = ConfFiles(str(tmp_path / 'r'), op_timeout_seconds=30)
    files.write(Remote('east', 'h', 'client.lm', 'f', 1.0), KEY)
    assert 'rados_osd_op_timeout = 30' in open(files.paths('east')[0]).read()
