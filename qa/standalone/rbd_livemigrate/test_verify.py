"""Verify before commit on the real cluster: a destination object rewritten
behind librbd's back (a raw ``rados put``) is caught before commit, the task
fails naming the first difference, and ``cancel`` gives the source back
byte-identical (head and every snapshot) to what it was before prepare;
``auto`` compares the head as of prepare when a client wrote to the
destination, and a cancel then keeps that client's write (librbd's abort
copies it back)."""

import errno
import json
from typing import Any, Dict, List

from cluster import Cluster
from conftest import Livemigrate, rbdtools, wait_for

MiB = 1 << 20


def _snaps(conf: str, spec: str) -> Any:
    with rbdtools.opened(conf, spec) as image:
        return sorted(s['name'] for s in image.list_snaps())


def _user(sums: Dict[str, str]) -> Dict[str, str]:
    """Checksums without the module's protective snapshot (there while the
    migration is not committed or aborted)."""
    return {k: v for k, v in sums.items() if not k.startswith('rbd_livemigrate-')}


def _clean(cluster: Cluster, src: str, dst: str) -> None:
    """Neither pool's trash holds either image (other tests share the pools)."""
    for spec in (src, dst):
        pool, image = spec.split('/')
        assert image not in rbdtools.trash_names(cluster.conf, pool), spec


def _rados_put(cluster: Cluster, pool: str, dest_id: str, objno: int, data: bytes) -> None:
    """Rewrite one data object of an image behind librbd's back."""
    with rbdtools.connect(cluster.conf) as r:
        io = r.open_ioctx(pool)
        try:
            io.write_full('rbd_data.{}.{:016x}'.format(dest_id, objno), data)
        finally:
            io.close()


def test_auto_by_default_compares_every_snapshot_and_the_head(
        cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 24 * MiB, seed=name, snaps=2)
    before = rbdtools.checksums(cluster.conf, src)
    snaps = _snaps(cluster.conf, src)
    task = lm.add(src, dst)
    assert task['verify'] == 'auto'
    t = lm.wait(task['id'])
    v = t['verification']
    assert v['result'] == 'passed' and v['mode'] == 'auto', v
    assert v['compared'] == snaps + ['HEAD'] and v['note'] is None
    assert v['client_writes'] == 0 and v['bytes_compared'] > 0
    assert v['bytes_compared'] == v['bytes_total'] and v['mismatch'] is None
    assert rbdtools.checksums(cluster.conf, dst) == before
    assert _snaps(cluster.conf, dst) == snaps          # the protective snapshot is gone
    assert not rbdtools.image_exists(cluster.conf, src)
    _clean(cluster, src, dst)


def test_damaged_destination_is_caught_and_cancel_restores_the_source(
        cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 16 * MiB, seed=name, snaps=2)
    before = rbdtools.checksums(cluster.conf, src)
    snaps = _snaps(cluster.conf, src)
    task = lm.add(src, dst, '--manual-commit', '--verify', 'full')
    t = lm.wait(task['id'], ('executed',))
    assert t['verification'] is None          # compared just before the commit
    _rados_put(cluster, 'b', t['dest_image_id'], 2, b'\xee' * (4 * MiB))
    lm.ok('commit', task['id'])
    t = lm.wait(task['id'], ('failed',))
    v = t['verification']
    assert v['result'] == 'mismatch' and v['mode'] == 'full', v
    # one line, naming the first difference: the first snapshot, object 2
    assert 'snapshot {} differs at offset {} (object 2)'.format(snaps[0], 8 * MiB) in t['error']
    assert '\n' not in t['error']
    # nothing was committed: the source still sits in the trash
    assert rbdtools.image_exists(cluster.conf, dst)
    assert not rbdtools.image_exists(cluster.conf, src)
    out = lm.ok('cancel', task['id'])
    t = lm.wait(task['id'], ('aborted',)) if out['state'] != 'aborted' else out
    assert t['state'] == 'aborted'
    # byte-identical to before prepare, head and every snapshot, and no
    # protective snapshot left behind
    assert rbdtools.checksums(cluster.conf, src) == before
    assert _snaps(cluster.conf, src) == snaps
    assert not rbdtools.image_exists(cluster.conf, dst)
    _clean(cluster, src, dst)


def test_auto_with_a_client_write_compares_the_head_as_of_prepare(
        cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 12 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(cluster.conf, src)
    task = lm.add(src, dst, '--manual-commit')
    lm.wait(task['id'], ('executed',))
    with rbdtools.opened(cluster.conf, dst) as image:
        image.write(b'\x42' * 4096, 5 * MiB)
    after_write = _user(rbdtools.checksums(cluster.conf, dst))
    lm.ok('commit', task['id'])
    t = lm.wait(task['id'])
    v = t['verification']
    assert v['result'] == 'passed' and v['client_writes'] == 1, v
    assert v['compared'][-1] == 'HEAD as of prepare'
    assert 'head not compared' in v['note'] and 'clients wrote 1 object' in v['note']
    got = rbdtools.checksums(cluster.conf, dst)
    assert got == after_write and got['HEAD'] != before['HEAD']
    _clean(cluster, src, dst)


def test_cancel_after_a_client_write_keeps_it(cluster: Cluster, lm: Livemigrate,
                                              name: str) -> None:
    """The source is rolled back only when no client wrote: a write made to
    the destination survives the cancel (librbd's abort copies it back)."""
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 8 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(cluster.conf, src)
    task = lm.add(src, dst, '--manual-commit')
    lm.wait(task['id'], ('executed',))
    with rbdtools.opened(cluster.conf, dst) as image:
        image.write(b'\x42' * 4096, 0)
    expected = _user(rbdtools.checksums(cluster.conf, dst))
    lm.ok('cancel', task['id'])
    lm.wait(task['id'], ('aborted',))
    got = rbdtools.checksums(cluster.conf, src)
    assert got == expected and got['HEAD'] != before['HEAD']
    assert [k for k in got] == [k for k in before]      # no protective snapshot left
    _clean(cluster, src, dst)


def test_verify_off_takes_no_snapshot(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    task = lm.add(src, dst, '--verify', 'off', '--manual-commit')
    lm.wait(task['id'], ('executed',))
    assert _snaps(cluster.conf, dst) == []
    lm.ok('commit', task['id'])
    t = lm.wait(task['id'])
    assert t['verification'] is None and t['verify'] == 'off'


def test_bad_verify_mode(lm: Livemigrate, cluster: Cluster, name: str) -> None:
    src = 'a/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    count = len(lm.ls())
    rc, out, err = lm.run('add', src, 'b/' + name, '--verify', 'sometimes')
    assert rc == errno.EINVAL and ('full|auto|off' in err or 'full, auto, off' in err)
    assert len(lm.ls()) == count


def _status_is_true(t: Dict[str, Any]) -> bool:
    return t['state'] != 'committed' or t['verification']['result'] == 'passed'


def _poll_verification(status: Any, seen: List[Dict[str, Any]]) -> None:
    def running() -> bool:
        t = status()
        assert _status_is_true(t)
        v = t['verification']
        if v is not None:
            seen.append(v)
            # while running, what it compares and how far it got are there
            if v['result'] == 'running':
                assert v['compared'] == ['HEAD'] and t['state'] == 'executed', t
                assert 0 <= v['bytes_compared'] <= v['bytes_total'], v
        return bool(t['state'] == 'committed')
    wait_for(running, 180, 'committed', interval=0.01)


def test_status_during_verification(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    """While the comparison runs, status shows it running with its bytes."""
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 256 * MiB, seed=name)
    seen: List[Dict[str, Any]] = []
    with rbdtools.connect(cluster.conf) as rados_client:
        def status() -> Dict[str, Any]:
            # the mgr command without the ceph CLI's start (about 0.3 s a
            # call): the comparison of 256 MiB lasts well under a second
            cmd = {'prefix': 'rbd livemigrate status', 'task_or_image': task['id'],
                   'format': 'json'}
            ret, out, err = rados_client.mgr_command(json.dumps(cmd), b'', timeout=60)
            assert ret == 0, err
            return json.loads(out)  # type: ignore[no-any-return]
        task = lm.add(src, dst, '--verify', 'full')
        _poll_verification(status, seen)
    assert seen and seen[-1]['result'] == 'passed'
    # it was seen running, with the bytes it compares and how far it got
    during = [v for v in seen if v['result'] == 'running']
    print('polls that saw the comparison running:', len(during),
          [v['bytes_compared'] >> 20 for v in during], 'MiB')
    assert any(v['bytes_total'] >= 256 * MiB and 0 < v['bytes_compared'] for v in during), \
        seen
    # every byte of the head was compared, and the record says so
    last = seen[-1]
    assert last['bytes_compared'] == last['bytes_total'] >= 256 * MiB, last
    assert last['seconds'] > 0 and last['dest_image_id'] == lm.status(task['id'])[
        'dest_image_id']


def test_a_snapshot_removal_cut_short_is_finished(cluster: Cluster, name: str) -> None:
    """librbd removes a snapshot by moving it to the trash namespace first: a
    mgr killed in between (measured in the partial-states grid, a commit cut
    300 ms in) leaves the protective snapshot there under another name; the
    next removal finds it by its original name."""
    import os
    import struct
    import sys
    os.environ.setdefault('UNITTEST', '1')
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', '..',
                                    'src', 'pybind', 'mgr'))
    import rbd
    from rbd_livemigrate.rbd_adapter import _remove_named_snap

    spec = 'a/' + name
    rbdtools.create_image(cluster.conf, spec, 4 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(cluster.conf, spec)
    protect = 'rbd_livemigrate-' + name
    with rbdtools.connect(cluster.conf) as r:
        io = r.open_ioctx('a')
        try:
            with rbd.Image(io, name) as image:
                image.create_snap(protect)
                snap_id = image.snap_get_id(protect)
                image_id = image.id()
            io.execute('rbd_header.' + image_id, 'rbd', 'snapshot_trash_add',
                       struct.pack('<Q', snap_id))
            with rbd.Image(io, name) as image:
                assert [s['namespace'] for s in image.list_snaps()
                        if s['id'] == snap_id] == [rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH]
                assert _remove_named_snap(image, protect)
            with rbd.Image(io, name) as image:
                assert not _remove_named_snap(image, protect)
        finally:
            io.close()
    assert rbdtools.checksums(cluster.conf, spec) == before     # snap1 and HEAD only
