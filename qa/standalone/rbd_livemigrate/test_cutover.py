"""The cutover on the real cluster: a source's last client leaving starts the
prepare at once, ``cutover_ms`` is reported, and ``--manual-cutover`` waits
for ``ceph rbd livemigrate cutover``, which answers EBUSY naming the clients
while they hold the source.  No timings are asserted here (the benchmark's
``cutover`` section measures them); the data and what ``status`` said are."""

import errno
from typing import Any, Dict, List

from cluster import Cluster
from conftest import Livemigrate, rbdtools, wait_for

MiB = 1 << 20


def _check_done(cluster: Cluster, src: str, dst: str, before: Dict[str, str]) -> None:
    assert rbdtools.checksums(cluster.conf, dst) == before
    assert not rbdtools.image_exists(cluster.conf, src)
    for spec in (src, dst):      # other tests share the pools
        pool, image = spec.split('/')
        assert image not in rbdtools.trash_names(cluster.conf, pool), spec


def test_last_client_leaving_starts_the_prepare(cluster: Cluster, lm: Livemigrate,
                                                name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 8 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(cluster.conf, src)
    th, release = rbdtools.holder(cluster.conf, src)
    try:
        task = lm.add(src, dst)
        t = lm.wait(task['id'], pred=lambda t: 'open by' in (t['blocked_reason'] or ''))
        # status says only true things while the client stays
        assert t['state'] == 'queued' and t['cutover_ms'] is None
        assert t['clients_gone_at'] is None
        assert not rbdtools.image_exists(cluster.conf, dst)
    finally:
        release.set()
        th.join()
    t = lm.wait(task['id'])
    assert t['cutover_ms'] is not None and t['cutover_ms'] >= 0
    assert t['clients_gone_at'] is not None
    _check_done(cluster, src, dst, before)


def test_manual_cutover(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 8 * MiB, seed=name, snaps=2)
    before = rbdtools.checksums(cluster.conf, src)
    th, release = rbdtools.holder(cluster.conf, src)
    seen: List[Dict[str, Any]] = []
    try:
        task = lm.add(src, dst, '--manual-cutover')
        assert task['manual_cutover'] and task['state'] == 'queued'
        t = lm.status(task['id'])
        assert 'cutover ' + task['id'] in (t['waiting_reason'] or '')
        seen.append(t)
        # the clients still hold the source: EBUSY naming them, nothing prepared
        rc, out, err = lm.run('cutover', task['id'])
        assert rc == -errno.EBUSY or rc == errno.EBUSY, (rc, err)
        assert 'open by' in err and '\n' not in err.strip()
        assert not rbdtools.image_exists(cluster.conf, dst)
        assert rbdtools.checksums(cluster.conf, src) == before
        assert lm.status(task['id'])['state'] == 'queued'
    finally:
        release.set()
        th.join()
    # it still waits for the operator after the clients left
    t = lm.status(task['id'])
    assert t['state'] == 'queued' and not rbdtools.image_exists(cluster.conf, dst)
    out = lm.ok('cutover', task['id'])
    assert out['id'] == task['id'] and out['cutover_ms'] is not None
    assert out['state'] in ('prepared', 'executing', 'executed', 'committing', 'committed')
    # the destination is there when the command returns: the client may start
    assert rbdtools.image_exists(cluster.conf, dst)
    with rbdtools.opened(cluster.conf, dst) as image:
        assert image.size() == 8 * MiB
    t = lm.wait(task['id'])
    assert t['cutover_ms'] == out['cutover_ms']
    _check_done(cluster, src, dst, before)
    # a second cutover of a finished task is refused in one line
    rc, out2, err = lm.run('cutover', task['id'])
    assert rc != 0 and 'committed' in err


def test_cutover_of_unknown_task(lm: Livemigrate) -> None:
    rc, out, err = lm.run('cutover', 'nosuchtask')
    assert rc in (-errno.ENOENT, errno.ENOENT), (rc, err)


def test_manual_cutover_takes_no_slot_and_can_be_cancelled(
        cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    before = rbdtools.checksums(cluster.conf, src)
    task = lm.add(src, dst, '--manual-cutover')
    wait_for(lambda: 'cutover' in (lm.status(task['id'])['waiting_reason'] or ''), 30,
             'waiting for cutover')
    out = lm.ok('cancel', task['id'])
    assert out['state'] == 'aborted'
    assert rbdtools.checksums(cluster.conf, src) == before
    assert not rbdtools.image_exists(cluster.conf, dst)


def test_a_cutover_takes_no_slot(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    """With the only slot held by a long copy, a cutover still prepares at
    once: the operator waits with the VM stopped, not behind the queue."""
    busy, src, dst = 'a/' + name + '-busy', 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, busy, 32 * MiB, seed=busy)
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    before = rbdtools.checksums(cluster.conf, src)
    lm.set_option('max_concurrent', '1')
    slow = lm.add(busy, 'b/' + name + '-busy', '--bandwidth-limit', '1M')
    try:
        lm.wait(slow['id'], pred=lambda t: t['state'] == 'executing')
        task = lm.add(src, dst, '--manual-cutover')
        out = lm.ok('cutover', task['id'])
        assert out['cutover_ms'] is not None and out['state'] != 'queued', out
        assert rbdtools.image_exists(cluster.conf, dst)
        # the slot was taken all along
        assert lm.status(slow['id'])['state'] == 'executing'
        lm.wait(task['id'])
    finally:
        lm.rm_option('max_concurrent')
        lm.run('cancel', slow['id'])
    _check_done(cluster, src, dst, before)
