"""Faults on a cluster of its own: mgr kill/restart in every state, mgr
failover, our clients blocklisted, an OSD frozen mid-copy, a pool deleted
under a queued task.  Every migration ends with identical data."""

import json
from typing import Dict, Iterator, List

import pytest

from cluster import Cluster
from conftest import Livemigrate, make_cluster, rbdtools, destroy_cluster, wait_for

MiB = 1 << 20


@pytest.fixture(scope='module')
def fcluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = make_cluster('lm-faults-', ['a', 'b', 'victim'])
    yield c
    destroy_cluster(c, request.session.testsfailed > 0)


@pytest.fixture
def flm(fcluster: Cluster) -> Livemigrate:
    return Livemigrate(fcluster)


def restart_active_mgr(c: Cluster) -> None:
    """kill -9 the active mgr and start it again."""
    active = c.active_mgr()
    c.kill_mgr(active)
    c.start_mgr(active)
    c.wait_module_ready(timeout=90)


def migrate_and_check(c: Cluster, lm: Livemigrate, name: str, before: Dict[str, str],
                      task_id: str, timeout: float = 240) -> None:
    lm.wait(task_id, timeout=timeout)
    assert rbdtools.checksums(c.conf, 'b/' + name) == before
    assert not rbdtools.image_exists(c.conf, 'a/' + name)
    assert name not in rbdtools.trash_names(c.conf, 'a')


def test_restart_while_executing(fcluster: Cluster, flm: Livemigrate, name: str) -> None:
    rbdtools.create_image(fcluster.conf, 'a/' + name, 48 * MiB, seed=name, snaps=2)
    before = rbdtools.checksums(fcluster.conf, 'a/' + name)
    task = flm.add('a/' + name, 'b/' + name, '--bandwidth-limit', '6M')
    flm.wait(task['id'], pred=lambda t: t['state'] == 'executing' and t['progress'] > 0.1)
    restart_active_mgr(fcluster)
    migrate_and_check(fcluster, flm, name, before, task['id'])


def test_restart_while_executed(fcluster: Cluster, flm: Livemigrate, name: str) -> None:
    rbdtools.create_image(fcluster.conf, 'a/' + name, 8 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(fcluster.conf, 'a/' + name)
    task = flm.add('a/' + name, 'b/' + name, '--manual-commit')
    flm.wait(task['id'], ('executed',))
    restart_active_mgr(fcluster)
    assert flm.status(task['id'])['state'] == 'executed'
    flm.ok('commit', task['id'])
    migrate_and_check(fcluster, flm, name, before, task['id'])


def test_restart_while_prepared(fcluster: Cluster, flm: Livemigrate, name: str) -> None:
    """A task recorded as prepared (here: adopted while the queue is paused)
    survives a kill -9 of the mgr and completes once the queue runs."""
    rbdtools.create_image(fcluster.conf, 'a/' + name, 8 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(fcluster.conf, 'a/' + name)
    flm.ok('pause')
    try:
        fcluster.rbd('migration', 'prepare', 'a/' + name, 'b/' + name)
        task = flm.ok('adopt', 'b/' + name)
        assert task['state'] == 'prepared'
        restart_active_mgr(fcluster)
        assert flm.status(task['id'])['state'] == 'prepared'
    finally:
        flm.ok('resume')
    migrate_and_check(fcluster, flm, name, before, task['id'])


def test_mgr_failover_finishes_queue(fcluster: Cluster, flm: Livemigrate, name: str) -> None:
    names = ['{}-{}'.format(name, i) for i in range(3)]
    sums = {}
    for n in names:
        rbdtools.create_image(fcluster.conf, 'a/' + n, 16 * MiB, seed=n)
        sums[n] = rbdtools.checksums(fcluster.conf, 'a/' + n)
    flm.ok('pause')
    try:
        tasks = [flm.add('a/' + n, 'b/' + n, '--bandwidth-limit', '2M') for n in names]
    finally:
        flm.ok('resume')
    flm.wait(tasks[0]['id'], pred=lambda t: t['state'] == 'executing' and t['progress'] > 0.1)
    fcluster.ceph('mgr', 'fail')
    fcluster.wait_module_ready(timeout=90)
    for n, t in zip(names, tasks):
        migrate_and_check(fcluster, flm, n, sums[n], t['id'])


def _our_clients(c: Cluster) -> List[str]:
    dump = c.ceph_json('mgr', 'dump')
    clients = dump.get('active_clients', [])
    addrs = []
    for cl in clients:
        if cl.get('name') != 'rbd_livemigrate':
            continue
        for a in cl.get('addrvec', []):
            addrs.append('{}/{}'.format(a['addr'], a['nonce']))
    return addrs


def test_blocklisted_clients_recover(fcluster: Cluster, flm: Livemigrate, name: str) -> None:
    """Blocklisting every client the module registered (control and copy)
    mid-copy: the module rebuilds them and finishes without a mgr restart."""
    # 16 s of copy at 2 MiB/s: on a loaded 2-core host the wait for the MgrMap
    # below took long enough that a copy of 8 s ended before the blocklist
    rbdtools.create_image(fcluster.conf, 'a/' + name, 32 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(fcluster.conf, 'a/' + name)
    task = flm.add('a/' + name, 'b/' + name, '--bandwidth-limit', '2M')
    flm.wait(task['id'], pred=lambda t: t['state'] == 'executing' and t['progress'] > 0.1)
    mgr_pid = fcluster.mgr_pid(fcluster.active_mgr())
    # the copy client reaches the MgrMap with the next mgr beacon: wait for
    # it and the control client both
    wait_for(lambda: len(_our_clients(fcluster)) >= 2, 30, 'the copy client in the MgrMap')
    addrs = _our_clients(fcluster)
    for addr in addrs:
        fcluster.ceph('osd', 'blocklist', 'add', addr, '600')
    during = flm.status(task['id'])
    assert during['state'] == 'executing' and during['progress'] < 1, \
        'the copy ended before its clients were blocklisted: {}'.format(during)
    try:
        migrate_and_check(fcluster, flm, name, before, task['id'])
        t = flm.status(task['id'])
        assert t['attempts'] >= 1          # the copy noticed and was retried
        assert fcluster.mgr_pid(fcluster.active_mgr()) == mgr_pid   # no mgr restart
    finally:
        for addr in addrs:
            fcluster.ceph('osd', 'blocklist', 'rm', addr, check=False)


def test_osd_frozen_mid_execute(fcluster: Cluster, flm: Livemigrate, name: str) -> None:
    rbdtools.create_image(fcluster.conf, 'a/' + name, 32 * MiB, seed=name)
    before = rbdtools.checksums(fcluster.conf, 'a/' + name)
    task = flm.add('a/' + name, 'b/' + name, '--bandwidth-limit', '4M')
    flm.wait(task['id'], pred=lambda t: t['state'] == 'executing' and t['progress'] > 0.05)
    flm.set_option('stall_warn_seconds', '3')
    fcluster.stop_osd(1)
    try:
        # the copy stalls on the frozen OSD's PGs: RBD_LIVEMIGRATE_STALLED
        wait_for(lambda: 'RBD_LIVEMIGRATE_STALLED' in fcluster.ceph_json(
                 'health', 'detail').get('checks', {}), 60, 'RBD_LIVEMIGRATE_STALLED')
    finally:
        fcluster.cont_osd(1)
        # A frozen Pacific OSD can come back with its PGs stuck 'laggy' (read
        # leases expired while it slept); a real restart re-peers them, and so
        # does marking it down, which it answers by rejoining at once.
        fcluster.ceph('osd', 'down', '1')
    migrate_and_check(fcluster, flm, name, before, task['id'], timeout=300)
    flm.rm_option('stall_warn_seconds')
    wait_for(lambda: 'RBD_LIVEMIGRATE_STALLED' not in fcluster.ceph_json(
             'health', 'detail').get('checks', {}), 30, 'RBD_LIVEMIGRATE_STALLED cleared')


def test_pool_deleted_under_queued_task(fcluster: Cluster, flm: Livemigrate,
                                        name: str) -> None:
    rbdtools.create_image(fcluster.conf, 'a/' + name, 4 * MiB, seed=name)
    rbdtools.create_image(fcluster.conf, 'a/{}-ok'.format(name), 4 * MiB, seed=name)
    before = rbdtools.checksums(fcluster.conf, 'a/{}-ok'.format(name))
    flm.ok('pause')
    try:
        doomed = flm.add('a/' + name, 'victim/' + name)
        ok = flm.add('a/{}-ok'.format(name), 'b/{}-ok'.format(name))
        fcluster.ceph('osd', 'pool', 'rm', 'victim', 'victim', '--yes-i-really-really-mean-it')
    finally:
        flm.ok('resume')
    t = flm.wait(doomed['id'], ('failed',))
    assert 'victim' in t['error'] and '\n' not in t['error']
    flm.wait(ok['id'])
    assert rbdtools.checksums(fcluster.conf, 'b/{}-ok'.format(name)) == before
    assert rbdtools.image_exists(fcluster.conf, 'a/' + name)
    wait_for(lambda: 'RBD_LIVEMIGRATE_FAILED' in json.loads(fcluster.ceph(
        'health', 'detail', '--format', 'json').stdout)['checks'], 30, 'FAILED raised')
    flm.ok('cancel', doomed['id'])
    wait_for(lambda: 'RBD_LIVEMIGRATE_FAILED' not in json.loads(fcluster.ceph(
        'health', 'detail', '--format', 'json').stdout)['checks'], 30, 'FAILED cleared')


def test_nearfull_osd_pauses_queue(fcluster: Cluster, flm: Livemigrate, name: str) -> None:
    """Fill the OSDs past nearfull: the queue holds with a reason and a health
    warning; deleting the filler frees the space and the task finishes."""
    def usage() -> float:
        return max(n['utilization'] for n in fcluster.ceph_json('osd', 'df')['nodes']) / 100

    src = 'a/' + name
    rbdtools.create_image(fcluster.conf, src, 8 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(fcluster.conf, src)
    empty = usage()
    filler = 'a/{}-filler'.format(name)
    rbdtools.create_image(fcluster.conf, filler, 768 * MiB, seed='filler')
    wait_for(lambda: usage() > empty + 0.08, 60, 'the filler to show in osd df')
    full = usage()
    flm.set_option('blocked_warn_seconds', '1')
    # nearfull between the usage without and with the filler
    fcluster.ceph('osd', 'set-nearfull-ratio', '{:.3f}'.format((empty + full) / 2))
    try:
        wait_for(lambda: 'OSD_NEARFULL' in fcluster.ceph_json('health').get('checks', {}),
                 60, 'OSD_NEARFULL')
        task = flm.add(src, 'b/' + name)
        t = flm.wait(task['id'], pred=lambda t: bool(t['blocked_reason']))
        assert t['state'] == 'queued' and 'OSD_NEARFULL' in t['blocked_reason']
        wait_for(lambda: 'RBD_LIVEMIGRATE_BLOCKED' in fcluster.ceph_json(
                 'health', 'detail').get('checks', {}), 30, 'RBD_LIVEMIGRATE_BLOCKED')
        fcluster.rbd('rm', filler)
        flm.wait(task['id'], timeout=120)
    finally:
        fcluster.ceph('osd', 'set-nearfull-ratio', '0.85')
        flm.rm_option('blocked_warn_seconds')
    assert rbdtools.checksums(fcluster.conf, 'b/' + name) == before
    wait_for(lambda: 'RBD_LIVEMIGRATE_BLOCKED' not in fcluster.ceph_json(
             'health', 'detail').get('checks', {}), 30, 'RBD_LIVEMIGRATE_BLOCKED cleared')


def test_full_pool_holds_only_its_own_tasks(fcluster: Cluster, flm: Livemigrate,
                                            name: str) -> None:
    """A pool at its quota (POOL_FULL) holds the tasks that read or write it;
    another tenant's task between other pools goes on, and ``ceph health
    detail`` names neither image."""
    fcluster.ceph('osd', 'pool', 'create', 'quota', '8')
    fcluster.rbd('pool', 'init', 'quota')
    held, free = 'quota/' + name, 'a/' + name + '-free'
    rbdtools.create_image(fcluster.conf, held, 4 * MiB, written=4 * MiB, seed=name)
    rbdtools.create_image(fcluster.conf, free, 4 * MiB, written=4 * MiB, seed=name + 'f')
    sums = {s: rbdtools.checksums(fcluster.conf, s) for s in (held, free)}
    fcluster.ceph('osd', 'pool', 'set-quota', 'quota', 'max_objects', '1')
    flm.set_option('blocked_warn_seconds', '1')
    try:
        wait_for(lambda: 'POOL_FULL' in fcluster.ceph_json('health').get('checks', {}),
                 90, 'POOL_FULL')
        t_held = flm.add(held, 'b/' + name)
        t_free = flm.add(free, 'b/' + name + '-free')
        flm.wait(t_free['id'], timeout=120)
        t = flm.wait(t_held['id'], ('queued',), pred=lambda t: 'POOL_FULL' in str(
            t.get('waiting_reason') or t.get('blocked_reason')))
        assert t['state'] == 'queued'
        detail = json.dumps(fcluster.ceph_json('health', 'detail'))
        assert name not in detail
    finally:
        fcluster.ceph('osd', 'pool', 'set-quota', 'quota', 'max_objects', '0')
        flm.rm_option('blocked_warn_seconds')
    flm.wait(t_held['id'], timeout=120)
    assert rbdtools.checksums(fcluster.conf, 'b/' + name) == sums[held]
    assert rbdtools.checksums(fcluster.conf, 'b/' + name + '-free') == sums[free]
    assert rbdtools.trash_names(fcluster.conf, 'quota') == []
