"""
Moving images from another cluster (issue 27), on two Tentacle clusters side
by side (distinct dirs, ports, fsids).

The pieces the module will wire into ``remote add`` and remote ``add``
(remote_spec, remotes.ConfFiles, rbd_remote, compat's probe) run here under
the destination's own release through ``qa/standalone/remote_driver.py``;
data is checked with checksums of the destination against the remote.
The module's own commands (``remote add/ls/rm``, ``add <remote>:...``) run
on the destination cluster, which loads the module (``test_module_*``).
Skipped unless LM_RELEASE=tentacle (the first release whose librbd imports
from another cluster), but for ``test_remote_add_refused_without_support``,
which runs everywhere else.  Run:

    LM_RELEASE=tentacle flock /tmp/lm-integ.lock tox -e integration -- \
        qa/standalone/rbd_livemigrate/test_remote.py
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from conftest import RELEASE, Livemigrate, as_tenant, make_tenant, rbdtools
from cluster import DEFAULT_MODULE, Cluster, wait_for

tentacle = pytest.mark.skipif(RELEASE != 'tentacle',
                              reason='cross-cluster import: LM_RELEASE=tentacle only')

DRIVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'remote_driver.py')
# enough to read and snapshot an image; the copy alone needs rbd-read-only
RW_CAPS = {'mon': 'profile rbd', 'osd': 'profile rbd'}
RO_CAPS = {'mon': 'profile rbd', 'osd': 'profile rbd-read-only'}


def _start(prefix: str, pools: Any, module: Any = None) -> Cluster:
    c = Cluster(dir=tempfile.mkdtemp(prefix=prefix, dir='/tmp'), osds=1, mgrs=1,
                osd_bytes=1 << 30, module=module, pools=pools, release=RELEASE)
    c.start()
    return c


@pytest.fixture(scope='module')
def pair(request: pytest.FixtureRequest) -> Iterator[Tuple[Cluster, Cluster]]:
    """(destination, remote): two clusters of the same release on one host;
    the destination runs the module."""
    dest = _start('lm-remote-dst-', ['rbd'], DEFAULT_MODULE)
    try:
        remote = _start('lm-remote-src-', ['rbd', 'p2'])
    except BaseException:
        dest.stop()
        raise
    assert dest.port != remote.port and dest.dir != remote.dir
    yield dest, remote
    failed = request.session.testsfailed > 0
    for c in (dest, remote):
        c.stop()
        if not failed and not os.environ.get('LM_KEEP_CLUSTER'):
            shutil.rmtree(c.dir, ignore_errors=True)


@pytest.fixture(scope='module')
def rw_user(pair: Tuple[Cluster, Cluster]) -> Tuple[str, str]:
    return pair[1].create_user('client.lmrw', RW_CAPS)


@pytest.fixture
def conf_dir(pair: Tuple[Cluster, Cluster]) -> str:
    return os.path.join(pair[0].dir, 'run', 'rbd_livemigrate-' + uuid.uuid4().hex[:6])


def drive(dest: Cluster, *args: str) -> Dict[str, Any]:
    p = dest.python(DRIVER, *args, check=False, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def sums(c: Cluster, spec: str) -> Dict[str, str]:
    return rbdtools.checksums(c.conf, spec)


def fsid(c: Cluster) -> str:
    return str(c.ceph_json('fsid')['fsid'])


@tentacle
def test_two_clusters_side_by_side(pair: Tuple[Cluster, Cluster]) -> None:
    dest, remote = pair
    assert fsid(dest) != fsid(remote)
    assert dest.mon_host != remote.mon_host


@tentacle
def test_release_probe(pair: Tuple[Cluster, Cluster]) -> None:
    out = drive(pair[0], 'probe')
    assert out['supported'] is True
    assert out['probe_dest_created'] is False


@tentacle
def test_connect_check(pair: Tuple[Cluster, Cluster], rw_user: Tuple[str, str]) -> None:
    dest, remote = pair
    keyring, key = rw_user
    ok = drive(dest, 'connect', 'east', remote.mon_host, 'client.lmrw', keyring)
    assert ok.get('fsid') == fsid(remote), ok
    # a real key of another user, given as client.lmrw: EACCES
    other_keyring, other_key = remote.create_user('client.other', RO_CAPS)
    wrong = os.path.join(dest.dir, 'wrong.keyring')
    with open(wrong, 'w') as f:
        f.write('[client.lmrw]\n\tkey = {}\n'.format(other_key))
    bad = drive(dest, 'connect', 'east', remote.mon_host, 'client.lmrw', wrong)
    assert bad.get('errno') == 13, bad
    assert other_key not in json.dumps(bad) and key not in json.dumps(bad)
    # this cluster's key at the other cluster: EACCES too
    bad = drive(dest, 'connect', 'east', dest.mon_host, 'client.lmrw', keyring)
    assert bad.get('errno') == 13, bad
    # nobody answers: ETIMEDOUT within the timeout (not librados' 300 s default)
    gone = drive(dest, 'connect', 'east', 'v2:127.0.0.1:1', 'client.lmrw', keyring,
                 '--timeout', '3')
    assert gone.get('errno') == 110 and gone['seconds'] < 10, gone


@tentacle
def test_move_image_with_snapshots(pair: Tuple[Cluster, Cluster], rw_user: Tuple[str, str],
                                   conf_dir: str) -> None:
    """Two snapshots and data written after each; no @snap: a snapshot is taken
    (HEAD as it is), the copy matches the remote byte for byte, the snapshot
    is removed from the remote, the remote is otherwise untouched, and the
    conf/keyring existed (0600 in 0700) only while needed."""
    dest, remote = pair
    keyring, key = rw_user
    rbdtools.create_image(remote.conf, 'rbd/vm1', 48 << 20, 40 << 20, seed='vm1', snaps=2)
    before = sums(remote, 'rbd/vm1')
    out = drive(dest, 'move', 'east', remote.mon_host, 'client.lmrw', keyring, conf_dir,
                'rbd/vm1', 'rbd/vm1')
    assert out['head_differs'] is False and out['watchers'] == []
    assert out['files_during'] == {'.': '0o700', 'east.conf': '0o600',
                                   'east.keyring': '0o600'}
    assert out['files_after'] == {'.': '0o700'} and out['files_removed'] == ['east']
    assert 'key' not in out['spec'] and 'mon_host' not in out['spec']
    assert key not in json.dumps(out)
    snap = out['snap']
    assert out['snap_removed'] is True
    after = sums(remote, 'rbd/vm1')
    assert after == before, 'the remote image changed'
    got = sums(dest, 'rbd/vm1')
    assert got['HEAD'] == before['HEAD']
    assert got['snap1'] == before['snap1'] and got['snap2'] == before['snap2']
    # librbd copies every remote snapshot, the module's own too: the wiring
    # removes it from the destination after commit
    assert got[snap] == before['HEAD']
    assert set(got) == {'HEAD', 'snap1', 'snap2', snap}


@tentacle
def test_clone_is_flattened(pair: Tuple[Cluster, Cluster], rw_user: Tuple[str, str],
                            conf_dir: str) -> None:
    dest, remote = pair
    keyring, _ = rw_user
    rbdtools.create_image(remote.conf, 'rbd/golden', 32 << 20, 16 << 20, seed='golden')
    remote.rbd('snap', 'create', 'rbd/golden@base')
    remote.rbd('snap', 'protect', 'rbd/golden@base')
    remote.rbd('clone', 'rbd/golden@base', 'p2/vm2')
    remote.rbd('snap', 'create', 'p2/vm2@ready')
    out = drive(dest, 'move', 'east', remote.mon_host, 'client.lmrw', keyring, conf_dir,
                'p2/vm2@ready', 'rbd/vm2')
    assert out['snap'] == 'ready' and 'snap_removed' not in out
    assert rbdtools.parent_of(dest.conf, 'rbd/vm2') is None
    assert sums(dest, 'rbd/vm2')['HEAD'] == sums(remote, 'p2/vm2')['ready']
    assert rbdtools.parent_of(remote.conf, 'p2/vm2') == 'rbd/golden@base'


@tentacle
def test_head_moved_after_snapshot(pair: Tuple[Cluster, Cluster], rw_user: Tuple[str, str],
                                   conf_dir: str) -> None:
    """librbd 20.2.4 copies the remote HEAD, not the spec's snapshot (tracker
    67401): the pieces detect a HEAD that moved, and the copy shows why it
    matters.  If this fails on the copy's assertion, upstream fixed it."""
    dest, remote = pair
    keyring, _ = rw_user
    rbdtools.create_image(remote.conf, 'rbd/vm3', 16 << 20, 8 << 20, seed='vm3', snaps=1)
    r = sums(remote, 'rbd/vm3')
    assert r['HEAD'] != r['snap1']
    out = drive(dest, 'head-differs', 'east', remote.mon_host, 'client.lmrw', keyring,
                'rbd/vm3@snap1')
    assert out['head_differs'] is True
    out = drive(dest, 'move', 'east', remote.mon_host, 'client.lmrw', keyring, conf_dir,
                'rbd/vm3@snap1', 'rbd/vm3')
    assert out['head_differs'] is True
    got = sums(dest, 'rbd/vm3')
    assert got['snap1'] == r['snap1']
    assert got['HEAD'] == r['HEAD'], 'librbd now copies the snapshot: revisit remote_spec.py'


@tentacle
def test_remote_stopped_mid_copy(pair: Tuple[Cluster, Cluster], rw_user: Tuple[str, str],
                                 conf_dir: str) -> None:
    """The remote's OSD stops mid-copy: with the op timeout in the remote conf
    the execute fails ETIMEDOUT (without it librbd waits), and an execute
    again once the remote is back completes with the data matching."""
    dest, remote = pair
    keyring, _ = rw_user
    rbdtools.create_image(remote.conf, 'rbd/vm4', 160 << 20, seed='vm4')
    remote.rbd('snap', 'create', 'rbd/vm4@m')
    out = drive(dest, 'prepare', 'east', remote.mon_host, 'client.lmrw', keyring, conf_dir,
                'rbd/vm4@m', 'rbd/vm4', '--op-timeout', '5')
    assert 'rados_osd_op_timeout = 5' in out['conf']
    osd = remote.osd_pid(0)
    assert osd is not None
    p = subprocess.Popen(dest.wrap_argv(['/usr/bin/python3', DRIVER, 'step', 'execute',
                                         'rbd/vm4']),
                         env=dest.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        time.sleep(0.3)
        os.kill(osd, signal.SIGSTOP)
        stdout, _ = p.communicate(timeout=120)
    finally:
        os.kill(osd, signal.SIGCONT)
        if p.poll() is None:
            p.kill()
    first = json.loads(stdout.strip().splitlines()[-1])
    if first['ok']:
        pytest.skip('the copy ended before the remote stopped ({} s)'.format(first['seconds']))
    assert first['errno'] == 110, first
    again = drive(dest, 'step', 'execute', 'rbd/vm4')
    assert again['ok'], again
    assert drive(dest, 'step', 'commit', 'rbd/vm4')['ok']
    assert sums(dest, 'rbd/vm4')['HEAD'] == sums(remote, 'rbd/vm4')['m']


# -- the module's commands (the wiring) ------------------------------------

def _lm(dest: Cluster) -> Livemigrate:
    lm = Livemigrate(dest)
    lm.set_option('retry_backoff_seconds', '1')
    lm.set_option('blocked_recheck_seconds', '1')
    return lm


class Seen:
    """Every reply the test got, to grep for the key at the end."""

    def __init__(self, lm: Livemigrate) -> None:
        self.lm = lm
        self.texts: List[str] = []

    def run(self, *args: str) -> Tuple[int, str, str]:
        rc, out, err = self.lm.run(*args)
        self.texts += [out, err]
        return rc, out, err

    def ok(self, *args: str) -> Any:
        rc, out, err = self.run(*args)
        assert rc == 0, 'ceph rbd livemigrate {} -> {}: {}'.format(' '.join(args), rc, err)
        return json.loads(out) if out.strip().startswith(('{', '[')) else out


def _register(dest: Cluster, remote: Cluster, keyring: str, seen: Seen) -> Dict[str, Any]:
    rc, out, err = seen.run('remote', 'add', 'east', remote.mon_host, '--client-name',
                            'client.lmrw', '-i', keyring, '--format', 'json')
    assert rc == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.fixture(scope='module')
def registered(pair: Tuple[Cluster, Cluster], rw_user: Tuple[str, str]) -> Seen:
    dest, remote = pair
    seen = Seen(_lm(dest))
    _register(dest, remote, rw_user[0], seen)
    return seen


@tentacle
def test_module_remote_add_ls_rm(pair: Tuple[Cluster, Cluster], rw_user: Tuple[str, str]
                                 ) -> None:
    """remote add checks by connecting (a wrong key: EACCES), is idempotent,
    operator-wide (a pool-scoped caller: EACCES); ls shows no key; rm."""
    dest, remote = pair
    keyring, key = rw_user
    seen = Seen(_lm(dest))
    _, other_key = remote.create_user('client.other2', RO_CAPS)
    wrong = os.path.join(dest.dir, 'wrong2.keyring')
    with open(wrong, 'w') as f:
        f.write('[client.lmrw]\n\tkey = {}\n'.format(other_key))
    rc, out, err = seen.run('remote', 'add', 'west', remote.mon_host, '-i', wrong)
    assert rc == 13, (rc, out, err)
    assert other_key not in out + err
    assert 'west' not in json.dumps(seen.ok('remote', 'ls', '--format', 'json'))
    new = _register(dest, remote, keyring, seen)
    assert new['name'] == 'east' and new['fsid'] == fsid(remote) and new['added'] is True
    assert _register(dest, remote, keyring, seen)['added'] is False
    rows = seen.ok('remote', 'ls', '--format', 'json')
    assert [r['name'] for r in rows] == ['east'] and rows[0]['tasks'] == 0
    assert rows[0]['client_name'] == 'client.lmrw'
    assert 'east' in seen.ok('remote', 'ls')
    tenant = make_tenant(dest, 'client.lmtenant', pools=('rbd',))
    for args in (('remote', 'add', 'west', remote.mon_host, '-i', keyring),
                 ('remote', 'rm', 'east'), ('add', 'east:rbd/none', 'rbd/none')):
        p = dest.ceph('--name', 'client.lmtenant', '--keyring', tenant, 'rbd', 'livemigrate',
                      *args, check=False)
        assert p.returncode == 13, (args, p.returncode, p.stderr)
    assert as_tenant(dest, 'client.lmtenant', tenant, 'remote', 'ls')[0] == 0
    seen.ok('remote', 'rm', 'east')
    assert seen.ok('remote', 'ls', '--format', 'json') == []
    rc, _, err = seen.run('add', 'east:rbd/none', 'rbd/none')
    assert rc != 0          # no longer a remote: a local spec with a ':' pool
    assert key not in ''.join(seen.texts)


def _snaps_on(c: Cluster, spec: str) -> List[str]:
    return sorted(s['name'] for s in json.loads(
        c.rbd('snap', 'ls', spec, '--format', 'json').stdout))


@tentacle
def test_module_moves_remote_image(pair: Tuple[Cluster, Cluster], rw_user: Tuple[str, str],
                                   registered: Seen) -> None:
    """add east:rbd/mv1 rbd/mv1: the module snapshots the remote image,
    imports, commits; the data and both snapshots match the remote's; no
    module snapshot is left on either end, nothing in either trash; the
    remote is refused removal while the task lives; no key anywhere but its
    own config-key entry."""
    dest, remote = pair
    _, key = rw_user
    seen = registered
    lm = seen.lm
    rbdtools.create_image(remote.conf, 'rbd/mv1', 48 << 20, 40 << 20, seed='mv1', snaps=2)
    before = sums(remote, 'rbd/mv1')
    assert set(before) == {'HEAD', 'snap1', 'snap2'}
    seen.ok('pause')                # the whole queue: the task waits, still live
    try:
        task = seen.ok('add', 'east:rbd/mv1', 'rbd/mv1', '--format', 'json')
        assert task['source'] == 'east:rbd/mv1@rbd_livemigrate-{}'.format(task['id'])
        again = seen.ok('add', 'east:rbd/mv1', 'rbd/mv1', '--format', 'json')
        assert again['id'] == task['id']
        rc, _, err = seen.run('remote', 'rm', 'east')
        assert rc == 16 and task['id'] in err, (rc, err)
        rows = seen.ok('remote', 'ls', '--format', 'json')
        assert rows[0]['tasks'] == 1
    finally:
        seen.ok('resume')
    done = lm.wait(task['id'], timeout=240)
    seen.texts.append(json.dumps(done))
    assert done['source'] == task['source']
    # verified before commit (the default verify): the remote at the module's
    # snapshot against the head, each remote snapshot against its copy
    v = done['verification']
    assert v['result'] == 'passed' and v['compared'] == ['snap1', 'snap2', 'HEAD'], v
    assert v['bytes_compared'] > 0, v
    seen.texts.append(seen.ok('status', task['id']))
    seen.texts.append(json.dumps(seen.ok('ls', '--format', 'json')))
    got = sums(dest, 'rbd/mv1')
    assert got == before, 'destination differs from the remote (or a snapshot is left)'
    assert sums(remote, 'rbd/mv1') == before, 'the remote image changed'
    assert _snaps_on(remote, 'rbd/mv1') == ['snap1', 'snap2']
    assert _snaps_on(dest, 'rbd/mv1') == ['snap1', 'snap2']
    assert rbdtools.trash_names(dest.conf, 'rbd') == []
    assert rbdtools.trash_names(remote.conf, 'rbd') == []
    assert rbdtools.parent_of(dest.conf, 'rbd/mv1') is None
    # the files go once no task needs them (the module's sweep, every 10 s)
    conf_dir = os.path.join(dest.run_dir, 'rbd_livemigrate')
    wait_for(lambda: not any(n.startswith('east.') for n in os.listdir(conf_dir)), 30,
             'the remote files to be removed')
    # secrets: in no reply, no log, and no config-key entry but its own
    assert key not in ''.join(seen.texts)
    for mgr in dest.mgr_ids:
        with open(dest.mgr_log(mgr), errors='replace') as f:
            assert key not in f.read(), 'the key is in the log of mgr.' + mgr
    dump = json.loads(dest.ceph('config-key', 'dump').stdout)
    holders = sorted(k for k, v in dump.items() if key in str(v))
    assert holders == ['mgr/rbd_livemigrate/remote-key/east'], holders


@tentacle
def test_module_waits_for_remote_clients(pair: Tuple[Cluster, Cluster],
                                         registered: Seen) -> None:
    """A remote image that a client holds: the task waits (its reason names
    the remote image), and goes on once the client closes it."""
    dest, remote = pair
    seen = registered
    rbdtools.create_image(remote.conf, 'rbd/mv2', 16 << 20, 8 << 20, seed='mv2')
    th, release = rbdtools.holder(remote.conf, 'rbd/mv2')
    try:
        task = seen.ok('add', 'east:rbd/mv2', 'rbd/mv2', '--format', 'json')
        waiting = seen.lm.wait(task['id'], states=(), timeout=60, pred=lambda t: bool(
            t.get('blocked_reason') and 'watcher' in t['blocked_reason']))
        assert waiting['state'] == 'queued', waiting
        assert 'east:rbd/mv2' in waiting['blocked_reason']
    finally:
        release.set()
        th.join(30)
    seen.lm.wait(task['id'], timeout=120)
    assert sums(dest, 'rbd/mv2')['HEAD'] == sums(remote, 'rbd/mv2')['HEAD']
    assert _snaps_on(remote, 'rbd/mv2') == [] and _snaps_on(dest, 'rbd/mv2') == []


@tentacle
def test_module_cancel_leaves_the_remote_untouched(pair: Tuple[Cluster, Cluster],
                                                   registered: Seen) -> None:
    """cancel of an executed remote task (--manual-commit): the destination
    is removed, the remote image is as it was (its module snapshot gone)."""
    dest, remote = pair
    seen = registered
    rbdtools.create_image(remote.conf, 'rbd/mv3', 16 << 20, 8 << 20, seed='mv3', snaps=1)
    before = sums(remote, 'rbd/mv3')
    task = seen.ok('add', 'east:rbd/mv3', 'rbd/mv3', '--manual-commit', '--format', 'json')
    seen.lm.wait(task['id'], states=('executed',), timeout=120)
    assert _snaps_on(remote, 'rbd/mv3') == ['rbd_livemigrate-' + task['id'], 'snap1']
    seen.ok('cancel', task['id'])
    done = seen.lm.wait(task['id'], states=('aborted',), timeout=120)
    assert not rbdtools.image_exists(dest.conf, 'rbd/mv3'), done
    assert sums(remote, 'rbd/mv3') == before
    assert _snaps_on(remote, 'rbd/mv3') == ['snap1']
    assert rbdtools.trash_names(dest.conf, 'rbd') == []


@tentacle
def test_module_verify_catches_a_damaged_destination(pair: Tuple[Cluster, Cluster],
                                                     registered: Seen) -> None:
    """An imported destination damaged behind librbd's back before commit
    (--manual-commit; a raw rados write of one of its objects): verify,
    reading the remote at its snapshot, finds it; nothing is committed;
    cancel removes the destination and leaves the remote as it was."""
    dest, remote = pair
    seen = registered
    rbdtools.create_image(remote.conf, 'rbd/mv4', 16 << 20, 12 << 20, seed='mv4', snaps=1)
    before = sums(remote, 'rbd/mv4')
    task = seen.ok('add', 'east:rbd/mv4', 'rbd/mv4', '--manual-commit', '--format', 'json')
    t = seen.lm.wait(task['id'], states=('executed',), timeout=120)
    with rbdtools.connect(dest.conf) as r:
        io = r.open_ioctx('rbd')
        try:
            io.write_full('rbd_data.{}.{:016x}'.format(t['dest_image_id'], 1), b'\xee' * 4096)
        finally:
            io.close()
    seen.ok('commit', task['id'])
    failed = seen.lm.wait(task['id'], states=('failed',), timeout=120)
    assert 'verification failed' in failed['error'], failed
    assert 'cancel removes the destination' in failed['error'], failed
    assert failed['verification']['result'] == 'mismatch', failed
    seen.ok('cancel', task['id'])
    seen.lm.wait(task['id'], states=('aborted',), timeout=120)
    assert not rbdtools.image_exists(dest.conf, 'rbd/mv4')
    assert sums(remote, 'rbd/mv4') == before
    assert _snaps_on(remote, 'rbd/mv4') == ['snap1']
    assert rbdtools.trash_names(dest.conf, 'rbd') == []


@tentacle
def test_module_moves_a_remote_pool_as_one_batch(pair: Tuple[Cluster, Cluster],
                                                 rw_user: Tuple[str, str],
                                                 registered: Seen) -> None:
    """add-pool east:pool20 rbd: 20 remote images as one batch, each equal
    to the remote's after commit; no module snapshot left on either end."""
    dest, remote = pair
    seen = registered
    remote.create_pool('pool20')
    names = ['b20-{:02d}'.format(i) for i in range(20)]
    for n in names:
        rbdtools.create_image(remote.conf, 'pool20/' + n, 4 << 20, 1 << 20, seed=n)
    before = {n: sums(remote, 'pool20/' + n) for n in names}
    batch = seen.ok('add-pool', 'east:pool20', 'rbd', '--format', 'json')
    assert batch['source'] == 'east:pool20'
    last: Dict[str, Any] = {}

    def finished() -> bool:
        nonlocal last
        last = seen.ok('status', batch['id'], '--format', 'json')
        return bool(last['finished'])
    wait_for(finished, 300, 'the batch to finish')
    seen.texts.append(json.dumps(last))
    assert last['committed'] == 20 and last['tasks'] == 20, last
    for n in names:
        assert sums(dest, 'rbd/' + n) == before[n], n
        assert _snaps_on(remote, 'pool20/' + n) == [] and _snaps_on(dest, 'rbd/' + n) == []
    assert rbdtools.trash_names(dest.conf, 'rbd') == []
    assert rw_user[1] not in ''.join(seen.texts)


@pytest.mark.skipif(RELEASE == 'tentacle', reason='refused only without cross-cluster import')
def test_remote_add_refused_without_support(cluster: Cluster) -> None:
    """Pacific and Reef: remote add (and ls's neighbours) answer EOPNOTSUPP
    with one line naming the release that has the import."""
    keyring = os.path.join(cluster.dir, 'keyring')
    p = cluster.ceph('rbd', 'livemigrate', 'remote', 'add', 'east', '127.0.0.1:1', '-i',
                     keyring, check=False)
    assert p.returncode == 95, (p.returncode, p.stderr)
    assert 'Tentacle' in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = cluster.ceph('rbd', 'livemigrate', 'remote', 'ls', '--format', 'json')
    assert json.loads(p.stdout) == []
