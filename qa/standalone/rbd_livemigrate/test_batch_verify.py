"""A pool moved with the default verify, on the real cluster: a batch's
task whose source no client holds takes no protective snapshot (each one
would be OSDMap changes on the task's path: its creation, its copy at
prepare, its removals), so the OSDMap epoch stays where it was; its verify
compares the head; and a destination damaged behind librbd's back is caught,
after which ``cancel`` gives every source back byte for byte (librbd's abort
copies the destination's head back; the module first writes the source's
bytes over what differs)."""

import json
from typing import Any, Dict, List

from cluster import Cluster
from conftest import Livemigrate, rbdtools, wait_for

MiB = 1 << 20


def _epoch(cluster: Cluster) -> int:
    return int(json.loads(cluster.ceph('osd', 'dump', '--format', 'json').stdout)['epoch'])


def _batch(lm: Livemigrate, batch_id: str) -> Dict[str, Any]:
    v = lm.ok('status', batch_id, '--format', 'json')
    assert isinstance(v, dict)
    return v


def _tasks(lm: Livemigrate, batch_id: str) -> List[Dict[str, Any]]:
    return [t for t in lm.ls() if t.get('batch_id') == batch_id]


def _fleet(cluster: Cluster, ns: str, n: int, size: int) -> List[str]:
    cluster.rbd('namespace', 'create', 'c/' + ns)
    specs = ['c/{}/v{:02d}'.format(ns, i) for i in range(n)]
    for spec in specs:
        rbdtools.create_image(cluster.conf, spec, size, written=size // 2, seed=spec)
    return specs


def _no_trash(cluster: Cluster, src_ns: str, dst_ns: str) -> None:
    assert rbdtools.trash_names(cluster.conf, 'c', src_ns) == []
    assert rbdtools.trash_names(cluster.conf, 'b', dst_ns) == []


def test_a_pool_with_the_default_verify_changes_no_osdmap(
        cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src_ns, dst_ns = name + '-s', name + '-d'
    specs = _fleet(cluster, src_ns, 8, 4 * MiB)
    sums = {s: rbdtools.checksums(cluster.conf, s) for s in specs}
    cluster.rbd('namespace', 'create', 'b/' + dst_ns)
    before = _epoch(cluster)
    b = lm.ok('add-pool', 'c/' + src_ns, 'b/' + dst_ns)
    wait_for(lambda: _batch(lm, b['id'])['finished'], 240, 'the batch to finish')
    assert _batch(lm, b['id'])['committed'] == 8
    after = _epoch(cluster)
    tasks = _tasks(lm, b['id'])
    assert len(tasks) == 8
    for t in (lm.ok('status', x['id'], '--format', 'json') for x in tasks):
        v = t['verification']
        assert v['mode'] == 'auto' and v['result'] == 'passed', t
        assert v['compared'] == ['HEAD'], t          # the head itself, not a stand-in
        assert t['protect_snap'] is None
    # no snapshot was taken, copied or removed for any of them (each would be
    # OSDMap changes: with one per image the epoch would move by 24); one
    # change of the cluster's own (a young cluster's PG creation) is allowed
    assert after - before <= 1, 'OSDMap epoch {} -> {} for 8 images'.format(before, after)
    for s in specs:
        dest = s.replace('c/{}/'.format(src_ns), 'b/{}/'.format(dst_ns))
        assert rbdtools.checksums(cluster.conf, dest) == sums[s]
    _no_trash(cluster, src_ns, dst_ns)


def test_a_damaged_batch_destination_is_caught_and_cancel_restores_the_source(
        cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src_ns, dst_ns = name + '-s', name + '-d'
    specs = _fleet(cluster, src_ns, 2, 16 * MiB)
    sums = {s: rbdtools.checksums(cluster.conf, s) for s in specs}
    cluster.rbd('namespace', 'create', 'b/' + dst_ns)
    b = lm.ok('add-pool', 'c/' + src_ns, 'b/' + dst_ns, '--manual-commit')
    wait_for(lambda: len(_tasks(lm, b['id'])) == 2 and all(
        t['state'] == 'executed' for t in _tasks(lm, b['id'])), 180, 'both executed')
    victim = next(t for t in _tasks(lm, b['id']) if t['source'] == specs[0])
    # object 1 rewritten behind librbd's back (no snapshot context)
    with rbdtools.connect(cluster.conf) as r:
        io = r.open_ioctx('b')
        try:
            io.set_namespace(dst_ns)
            io.write_full('rbd_data.{}.{:016x}'.format(victim['dest_image_id'], 1),
                          b'\xee' * (4 * MiB))
        finally:
            io.close()
    lm.ok('commit', victim['id'])
    t = lm.wait(victim['id'], ('failed',))
    v = t['verification']
    assert v['result'] == 'mismatch' and v['compared'] == ['HEAD'], v
    assert 'the head differs at offset {} (object 1)'.format(4 * MiB) in t['error'], t['error']
    # the failed task, then the rest of the batch
    lm.ok('cancel', victim['id'])
    lm.ok('cancel', b['id'])
    for t in _tasks(lm, b['id']):
        lm.wait(t['id'], ('aborted',))
    for s in specs:
        assert rbdtools.checksums(cluster.conf, s) == sums[s], s
        dest = s.replace('c/{}/'.format(src_ns), 'b/{}/'.format(dst_ns))
        assert not rbdtools.image_exists(cluster.conf, dest)
    _no_trash(cluster, src_ns, dst_ns)
