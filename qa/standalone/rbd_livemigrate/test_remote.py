"""
Moving images from another cluster (issue 27), on two Tentacle clusters side
by side (distinct dirs, ports, fsids).

The pieces the module will wire into ``remote add`` and remote ``add``
(remote_spec, remotes.ConfFiles, rbd_remote, compat's probe) run here under
the destination's own release through ``qa/standalone/remote_driver.py``;
data is checked with checksums of the destination against the remote.
Skipped unless LM_RELEASE=tentacle (the first release whose librbd imports
from another cluster).  Run:

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
from typing import Any, Dict, Iterator, Tuple

import pytest

from conftest import RELEASE, rbdtools
from cluster import Cluster

pytestmark = pytest.mark.skipif(RELEASE != 'tentacle',
                                reason='cross-cluster import: LM_RELEASE=tentacle only')

DRIVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'remote_driver.py')
# enough to read and snapshot an image; the copy alone needs rbd-read-only
RW_CAPS = {'mon': 'profile rbd', 'osd': 'profile rbd'}
RO_CAPS = {'mon': 'profile rbd', 'osd': 'profile rbd-read-only'}


def _start(prefix: str, pools: Any) -> Cluster:
    c = Cluster(dir=tempfile.mkdtemp(prefix=prefix, dir='/tmp'), osds=1, mgrs=1,
                osd_bytes=1 << 30, module=None, pools=pools, release=RELEASE)
    c.start()
    return c


@pytest.fixture(scope='module')
def pair(request: pytest.FixtureRequest) -> Iterator[Tuple[Cluster, Cluster]]:
    """(destination, remote): two clusters of the same release on one host."""
    dest = _start('lm-remote-dst-', ['rbd'])
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


def test_two_clusters_side_by_side(pair: Tuple[Cluster, Cluster]) -> None:
    dest, remote = pair
    assert fsid(dest) != fsid(remote)
    assert dest.mon_host != remote.mon_host


def test_release_probe(pair: Tuple[Cluster, Cluster]) -> None:
    out = drive(pair[0], 'probe')
    assert out['supported'] is True
    assert out['probe_dest_created'] is False


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
