"""add-pool as one batch, on the real cluster: it returns with a batch id
before the images are listed, ``ceph progress`` shows the batch's bar, the
batch is paused, resumed and cancelled as one, and every image ends
committed (checksums, no trash, the name opens) or restored."""

import json
from typing import Any, Dict, List

from cluster import Cluster, wait_for
from conftest import Livemigrate, rbdtools

MiB = 1 << 20


def batch_status(lm: Livemigrate, batch_id: str) -> Dict[str, Any]:
    return lm.ok('status', batch_id, '--format', 'json')  # type: ignore[no-any-return]


def progress_events(cluster: Cluster) -> List[Dict[str, Any]]:
    """Events under way and completed ones (a finished batch's bar moves there)."""
    d = json.loads(cluster.ceph('progress', 'json').stdout)
    return list(d.get('events', [])) + list(d.get('completed', []))


def fleet(cluster: Cluster, ns: str, n: int, size: int) -> List[str]:
    cluster.rbd('namespace', 'create', 'c/' + ns)
    specs = ['c/{}/vm{:02d}'.format(ns, i) for i in range(n)]
    for spec in specs:
        rbdtools.create_image(cluster.conf, spec, size, written=size // 2, seed=spec)
    return specs


def test_batch_runs_to_commit_as_one(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src_ns, dst_ns = name + '-s', name + '-d'
    specs = fleet(cluster, src_ns, 12, 2 * MiB)
    cluster.rbd('snap', 'create', specs[0] + '@s1')
    sums = {s: rbdtools.checksums(cluster.conf, s) for s in specs}
    cluster.rbd('namespace', 'create', 'b/' + dst_ns)
    lm.ok('pause')                      # hold the queue: the batch is seen before it runs
    try:
        b = lm.ok('add-pool', 'c/' + src_ns, 'b/' + dst_ns)
        assert b['id'].startswith('batch-') and b['state'] == 'expanding', b
        wait_for(lambda: batch_status(lm, b['id'])['state'] == 'expanded', 60, 'listing')
        v = batch_status(lm, b['id'])
        assert v['tasks'] == 12 and v['refused_count'] == 0 and v['by_state'] == {'queued': 12}
        assert all(t['batch_id'] == b['id'] for t in lm.ls() if t['source'] in specs)
        v = lm.ok('pause', b['id'])
        assert v['paused']
        assert all(t['paused'] for t in lm.ls() if t.get('batch_id') == b['id'])
        v = lm.ok('resume', b['id'])
        assert not v['paused']
    finally:
        lm.ok('resume')
    wait_for(lambda: batch_status(lm, b['id'])['finished'], 240, 'the batch to finish')
    # the batch's own bar, with what it counted (no fallback: it must exist)
    wait_for(lambda: any('Migrating pool c/{} to b/{}: 12/12 images migrated'.format(
        src_ns, dst_ns) in e.get('message', '') for e in progress_events(cluster)), 60,
        'the batch progress event')
    v = batch_status(lm, b['id'])
    assert v['committed'] == 12 and v['progress'] == 1.0, v
    text = lm.ok('status', b['id'])
    assert 'finished' in text and '12 committed' in text
    for s in specs:
        dest = s.replace('c/{}/'.format(src_ns), 'b/{}/'.format(dst_ns))
        assert rbdtools.checksums(cluster.conf, dest) == sums[s]
        assert not rbdtools.image_exists(cluster.conf, s)
    assert rbdtools.trash_names(cluster.conf, 'c', src_ns) == []
    assert rbdtools.trash_names(cluster.conf, 'b', dst_ns) == []


def test_batch_cancel_restores_every_source(cluster: Cluster, lm: Livemigrate,
                                            name: str) -> None:
    src_ns, dst_ns = name + '-s', name + '-d'
    specs = fleet(cluster, src_ns, 4, 16 * MiB)
    sums = {s: rbdtools.checksums(cluster.conf, s) for s in specs}
    cluster.rbd('namespace', 'create', 'b/' + dst_ns)
    b = lm.ok('add-pool', 'c/' + src_ns, 'b/' + dst_ns, '--bandwidth-limit', '1M')
    wait_for(lambda: batch_status(lm, b['id'])['by_state'].get('executing', 0) > 0, 120,
             'a copy to run')
    v = lm.ok('cancel', b['id'])
    assert v['state'] == 'cancelled' and 'cancel in progress' in v['action'], v
    wait_for(lambda: batch_status(lm, b['id'])['finished'], 180, 'the cancel to end')
    v = batch_status(lm, b['id'])
    assert set(v['by_state']) <= {'aborted', 'committed'}, v
    states = {t['source']: t['state'] for t in lm.ls() if t.get('batch_id') == b['id']}
    assert sorted(states) == sorted(specs), states
    for s in specs:
        dest = s.replace('c/{}/'.format(src_ns), 'b/{}/'.format(dst_ns))
        if states[s] == 'aborted':          # given back, byte for byte; no destination
            assert rbdtools.checksums(cluster.conf, s) == sums[s], s
            assert not rbdtools.image_exists(cluster.conf, dest), dest
        else:                               # committed before the cancel reached it
            assert rbdtools.checksums(cluster.conf, dest) == sums[s], dest
            assert not rbdtools.image_exists(cluster.conf, s), s
    assert v['by_state'].get('aborted', 0) >= 1
    assert rbdtools.trash_names(cluster.conf, 'c', src_ns) == []
    assert rbdtools.trash_names(cluster.conf, 'b', dst_ns) == []
    # the bar does not count a cancelled image as migrated
    msg = 'Migrating pool c/{} to b/{}: {}/4 images migrated ({} cancelled)'.format(
        src_ns, dst_ns, v['committed'], v['by_state']['aborted'])
    wait_for(lambda: any(msg in e.get('message', '') or msg in str(e.get('failure', ''))
                         for e in progress_events(cluster)), 60, msg)


def test_a_batch_reads_plain_images_and_finds_clients_at_their_turn(
        cluster: Cluster, lm: Livemigrate, name: str) -> None:
    """A batch's listing reads a plain image's header instead of opening it
    (striped, small objects, written), and opens the rest (a snapshot);
    every one moves with its layout.  A client that has its source open is
    not listed then: the image's prepare finds it, and the task waits
    without an error or a spent attempt until it closes."""
    src_ns, dst_ns = name + '-s', name + '-d'
    cluster.rbd('namespace', 'create', 'c/' + src_ns)
    cluster.rbd('namespace', 'create', 'b/' + dst_ns)
    base = 'c/{}/'.format(src_ns)
    rbdtools.create_image(cluster.conf, base + 'plain', 4 * MiB, seed='p')
    rbdtools.create_image(cluster.conf, base + 'small', 4 * MiB, seed='o', order=20)
    cluster.rbd('create', base + 'striped', '--size', '8M', '--stripe-unit', '1M',
                '--stripe-count', '2')
    rbdtools.create_image(cluster.conf, base + 'snapped', 4 * MiB, seed='s', snaps=1)
    rbdtools.create_image(cluster.conf, base + 'busy', 4 * MiB, seed='b')
    specs = [base + n for n in ('plain', 'small', 'striped', 'snapped', 'busy')]
    sums = {s: rbdtools.checksums(cluster.conf, s) for s in specs}
    layouts = {s: rbdtools.image_layout(cluster.conf, s) for s in specs}
    th, release = rbdtools.holder(cluster.conf, base + 'busy')
    try:
        b = lm.ok('add-pool', 'c/' + src_ns, 'b/' + dst_ns)
        busy = base + 'busy'

        def held() -> bool:
            t = [t for t in lm.ls() if t['source'] == busy]
            return bool(t) and t[0]['blocked_kind'] == 'watchers'
        wait_for(held, 120, 'the busy image to wait for its client')
        wait_for(lambda: batch_status(lm, b['id'])['committed'] == 4, 120, 'the others')
        t = [t for t in lm.ls() if t['source'] == busy][0]
        assert t['state'] == 'queued' and t['error'] is None and t['attempts'] == 0, t
        assert 'open by 1 client' in t['blocked_reason']
        assert rbdtools.image_exists(cluster.conf, busy)
    finally:
        release.set()
        th.join()
    wait_for(lambda: batch_status(lm, b['id'])['finished'], 120, 'the batch to finish')
    v = batch_status(lm, b['id'])
    assert v['committed'] == 5 and v['refused_count'] == 0, v
    for s in specs:
        dest = s.replace(base, 'b/{}/'.format(dst_ns))
        assert rbdtools.checksums(cluster.conf, dest) == sums[s], s
        assert rbdtools.image_layout(cluster.conf, dest) == layouts[s], s
        assert not rbdtools.image_exists(cluster.conf, s)
    assert rbdtools.trash_names(cluster.conf, 'c', src_ns) == []
    assert rbdtools.trash_names(cluster.conf, 'b', dst_ns) == []
