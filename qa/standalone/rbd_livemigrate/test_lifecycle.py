"""Lifecycle on the real cluster: layouts, snapshots, clones, namespaces,
manual commit, cancel in every state, dry run, blockers, orphans."""

import json
from typing import List, Tuple

import pytest

from cluster import Cluster
from conftest import Livemigrate, rbdtools, wait_for

MiB = 1 << 20


def test_object_size_with_snapshots(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 48 * MiB, seed=name, snaps=3)
    before = rbdtools.checksums(cluster.conf, src)
    assert len(set(before.values())) == 4           # head and 3 snaps all differ
    task = lm.add(src, dst, '--object-size', '1M')
    lm.wait(task['id'])
    assert rbdtools.checksums(cluster.conf, dst) == before
    layout = rbdtools.image_layout(cluster.conf, dst)
    assert layout['object_size'] == MiB and layout['stripe_unit'] == MiB
    assert not rbdtools.image_exists(cluster.conf, src)
    assert name not in rbdtools.trash_names(cluster.conf, 'a')


def test_layout_only_in_place(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    spec = 'a/' + name
    rbdtools.create_image(cluster.conf, spec, 16 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(cluster.conf, spec)
    task = lm.add(spec, '--object-size', '8M', '--features',
                  'layering,exclusive-lock,object-map,fast-diff')
    assert task['destination'] == spec
    lm.wait(task['id'])
    assert rbdtools.checksums(cluster.conf, spec) == before
    assert rbdtools.image_layout(cluster.conf, spec)['object_size'] == 8 * MiB
    assert name not in rbdtools.trash_names(cluster.conf, 'a')


def test_namespace_to_namespace(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/ns1/' + name, 'b/ns2/' + name
    rbdtools.create_image(cluster.conf, src, 8 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(cluster.conf, src)
    lm.wait(lm.add(src, dst)['id'])
    assert rbdtools.checksums(cluster.conf, dst) == before
    assert not rbdtools.image_exists(cluster.conf, src)


def _clone(cluster: Cluster, name: str) -> str:
    parent = 'a/{}-parent'.format(name)
    rbdtools.create_image(cluster.conf, parent, 8 * MiB, seed=name)
    cluster.rbd('snap', 'create', parent + '@base')
    cluster.rbd('snap', 'protect', parent + '@base')
    child = 'a/' + name
    cluster.rbd('clone', parent + '@base', child)
    with rbdtools.opened(cluster.conf, child) as image:
        rbdtools.write(image, 0, MiB, name + '-child')
    return parent


def test_clone_keeps_parent(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    parent = _clone(cluster, name)
    child, dst = 'a/' + name, 'b/' + name
    before = rbdtools.checksums(cluster.conf, child)
    lm.wait(lm.add(child, dst)['id'])
    assert rbdtools.checksums(cluster.conf, dst) == before
    assert rbdtools.parent_of(cluster.conf, dst) == parent + '@base'


def test_clone_flatten(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    _clone(cluster, name)
    child, dst = 'a/' + name, 'b/' + name
    before = rbdtools.checksums(cluster.conf, child)
    lm.wait(lm.add(child, dst, '--flatten')['id'])
    assert rbdtools.checksums(cluster.conf, dst) == before
    assert rbdtools.parent_of(cluster.conf, dst) is None


def test_parent_of_clones_needs_consent(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    parent = _clone(cluster, name)
    rc, out, err = lm.run('add', parent, 'b/{}-parent'.format(name))
    assert rc == 16 and 'allow-descendants' in err
    before = rbdtools.checksums(cluster.conf, parent)
    task = lm.add(parent, 'b/{}-parent'.format(name), '--allow-descendants')
    lm.wait(task['id'])
    assert rbdtools.checksums(cluster.conf, 'b/{}-parent'.format(name)) == before
    assert rbdtools.parent_of(cluster.conf, 'a/' + name) == 'b/{}-parent@base'.format(name)


def test_manual_commit(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 8 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(cluster.conf, src)
    task = lm.add(src, dst, '--manual-commit')
    t = lm.wait(task['id'], ('executed',))
    assert t['manual_commit'] and name in rbdtools.trash_names(cluster.conf, 'a')
    # the wait is said everywhere, with the command that ends it
    waits = 'waiting for ceph rbd livemigrate commit ' + task['id']
    assert waits in t['waiting_reason'] and waits in lm.ok('ls')
    wait_for(lambda: any(waits in e.get('message', '') and e.get('progress', 0) > 0.9
                         for e in cluster.ceph_json('progress', 'json').get('events', [])),
             30, 'the progress bar saying it waits for commit')
    # the destination is usable (and holds the data) before commit; the
    # protective snapshot taken before prepare (verify) came along, as the head
    protect = 'rbd_livemigrate-' + task['id']
    assert rbdtools.checksums(cluster.conf, dst) == dict(before, **{protect: before['HEAD']})
    lm.ok('commit', task['id'])
    lm.wait(task['id'])
    assert rbdtools.checksums(cluster.conf, dst) == before
    rc, _, err = lm.run('commit', task['id'])
    assert rc == 22 and 'already committed' in err and 'by itself' not in err


def _assert_restored(cluster: Cluster, lm: Livemigrate, task_id: str, src: str, dst: str,
                     before: dict) -> None:
    t = lm.wait(task_id, ('aborted',))
    assert t['state'] == 'aborted'
    assert rbdtools.checksums(cluster.conf, src) == before
    if dst != src:
        assert not rbdtools.image_exists(cluster.conf, dst)
    assert src.split('/')[-1] not in rbdtools.trash_names(cluster.conf, src.split('/')[0])


def test_cancel_queued(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    before = rbdtools.checksums(cluster.conf, src)
    lm.ok('pause')
    try:
        task = lm.add(src, dst)
        out = lm.ok('cancel', task['id'])
        # cancel returns within about a second: done, or under way (see status)
        assert out['action'] == 'removed from the queue' or 'in progress' in out['action']
        t = lm.wait(task['id'], ('aborted',))
        assert t['error'] == 'cancelled before prepare', t
    finally:
        lm.ok('resume')
    _assert_restored(cluster, lm, task['id'], src, dst, before)


def test_cancel_executing(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 64 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(cluster.conf, src)
    task = lm.add(src, dst, '--bandwidth-limit', '4M')
    lm.wait(task['id'], pred=lambda t: t['state'] == 'executing' and t['progress'] > 0.05)
    out = lm.ok('cancel', task['id'])
    assert 'restored' in out['action'] or 'in progress' in out['action'], out
    lm.wait(task['id'], ('aborted',))
    _assert_restored(cluster, lm, task['id'], src, dst, before)


def test_cancel_executed(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 8 * MiB, seed=name, snaps=2)
    before = rbdtools.checksums(cluster.conf, src)
    task = lm.add(src, dst, '--manual-commit')
    lm.wait(task['id'], ('executed',))
    lm.ok('cancel', task['id'])
    _assert_restored(cluster, lm, task['id'], src, dst, before)


def test_orphan_adopt_and_cancel_prepared(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    """A migration prepared by hand shows as an orphan; adopted, it can be
    cancelled from prepared (or driven to the end)."""
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 8 * MiB, seed=name, snaps=1)
    before = rbdtools.checksums(cluster.conf, src)
    cluster.rbd('migration', 'prepare', src, dst)
    lm.ok('pause')
    try:
        # orphans are found at module start; restart the module to rescan
        cluster.ceph('mgr', 'fail')
        cluster.wait_module_ready()
        wait_for(lambda: any(t.get('orphan') and t['destination'] == dst
                             and t['source'] == src for t in lm.ls()),
                 60, 'orphan {} -> {} in ls'.format(src, dst))
        task = lm.ok('adopt', dst)
        assert task['state'] == 'prepared' and task['source'] == src
        assert lm.ok('adopt', dst)['id'] == task['id']            # idempotent
        lm.ok('cancel', task['id'])
    finally:
        lm.ok('resume')
    _assert_restored(cluster, lm, task['id'], src, dst, before)


def test_dry_run_lists_every_blocker(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src = 'a/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    rbdtools.create_image(cluster.conf, 'b/' + name, 4 * MiB, seed='other')
    before = rbdtools.checksums(cluster.conf, src)
    count = len(lm.ls())
    with rbdtools.opened(cluster.conf, src):
        rc, out, err = lm.run('add', src, 'b/' + name, '--dry-run')
    assert rc != 0
    report = json.loads(out)
    assert report['dry_run'] and not report['ok']
    errnos = sorted(b['error'] for b in report['blockers'])
    assert errnos == ['EBUSY', 'EEXIST'], report
    assert len(lm.ls()) == count
    assert rbdtools.checksums(cluster.conf, src) == before
    ok = lm.ok('add', src, 'c/' + name, '--dry-run')
    assert ok['ok'] and ok['blockers'] == []
    assert len(lm.ls()) == count


def test_watchers_block_then_proceed(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    before = rbdtools.checksums(cluster.conf, src)
    lm.set_option('blocked_warn_seconds', '1')
    th, release = rbdtools.holder(cluster.conf, src)
    try:
        task = lm.add(src, dst)
        t = lm.wait(task['id'], pred=lambda t: bool(t['blocked_reason']))
        assert t['state'] == 'queued' and 'open by' in t['blocked_reason']

        def warned() -> bool:
            h = json.loads(cluster.ceph('health', 'detail', '--format', 'json').stdout)
            return 'RBD_LIVEMIGRATE_BLOCKED' in h.get('checks', {})
        wait_for(warned, 30, 'RBD_LIVEMIGRATE_BLOCKED')
    finally:
        release.set()
        th.join()
        lm.rm_option('blocked_warn_seconds')
    lm.wait(task['id'])
    assert rbdtools.checksums(cluster.conf, dst) == before


def test_clients_that_open_the_source_after_add_hold_the_task(
        cluster: Cluster, lm: Livemigrate, name: str) -> None:
    """The prepare reuses add's look at an unchanged source and lists no
    clients itself: librbd's prepare refuses one, and the task then waits
    for it exactly as if add had found it (no error, no attempt spent)."""
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    before = rbdtools.checksums(cluster.conf, src)
    lm.ok('pause')
    release = None
    try:
        task = lm.add(src, dst)
        # add found no client (the queue's own pause may be said: it is true)
        assert task['blocked_kind'] is None and 'open by' not in str(task['blocked_reason'])
        # open only: a write would take the exclusive lock, which writes
        # the header, and the prepare would look in full by itself
        th, release = rbdtools.holder(cluster.conf, src)
        lm.ok('resume')
        t = lm.wait(task['id'], pred=lambda t: t['blocked_kind'] == 'watchers')
        assert t['state'] == 'queued' and 'open by 1 client' in t['blocked_reason'], t
        assert t['blocked_kind'] == 'watchers' and t['error'] is None and t['attempts'] == 0
        assert rbdtools.image_exists(cluster.conf, src)
        assert not rbdtools.image_exists(cluster.conf, dst)
    finally:
        lm.ok('resume')
        if release is not None:
            release.set()
            th.join()
    t = lm.wait(task['id'])
    assert t['state'] == 'committed' and t['error'] is None and t['attempts'] == 0
    assert rbdtools.checksums(cluster.conf, dst) == before
    assert not rbdtools.image_exists(cluster.conf, src)
    assert name not in rbdtools.trash_names(cluster.conf, 'a')
    assert name not in rbdtools.trash_names(cluster.conf, 'b')


BAD: List[Tuple[List[str], int]] = [
    (['add', ''], 22),
    (['add', 'a'], 22),
    (['add', 'a/'], 22),
    (['add', '/x'], 22),
    (['add', 'a/{n}', 'a/{n}'], 22),
    (['add', 'a/{n}', 'nopool/{n}'], 2),
    (['add', 'nopool/{n}', 'b/{n}'], 2),
    (['add', 'a/missing-{n}', 'b/{n}'], 2),
    (['add', 'a/{n}', 'b/exists-{n}'], 17),
    (['add', 'a/{n}', 'b/{n}', '--object-size', '3M'], 22),
    (['add', 'a/{n}', 'b/{n}', '--object-size', '1K'], 22),
    (['add', 'a/{n}', 'b/{n}', '--object-size', 'lots'], 22),
    (['add', 'a/{n}', 'b/{n}', '--features', 'layering,warp-drive'], 22),
    (['add', 'a/{n}', 'b/{n}', '--features', 'fast-diff'], 22),
    (['add', 'a/{n}', 'plain/{n}'], 22),
    (['add', 'a/{n}', 'b/nons/{n}'], 2),
    (['add', 'a/{n}', 'b/{n}', '--stripe-unit', '8M', '--object-size', '4M'], 22),
    (['add', 'a/{n}', 'b/{n}', '--stripe-count', '0'], 22),
    (['add', 'a/{n}', 'b/{n}', '--priority', '100000'], 22),
    (['add', 'a/{n}', 'b/{n}', '--data-pool', 'nopool'], 2),
    (['add', 'a/{n}', 'b/{n}', '--bandwidth-limit', '-5'], 22),
    (['status', 'nosuchtask'], 2),
    (['cancel', 'nosuchtask'], 2),
    (['commit', 'nosuchtask'], 2),
    (['retry', 'nosuchtask'], 2),
    (['pause', 'nosuchtask'], 2),
    (['ls', '--format', 'xml'], 22),
    (['adopt', 'b/not-migrating-{n}'], 2),
]


def test_bad_inputs(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src = 'a/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    rbdtools.create_image(cluster.conf, 'b/exists-' + name, 4 * MiB, seed='x')
    rbdtools.create_image(cluster.conf, 'b/not-migrating-' + name, 4 * MiB, seed='x')
    before = rbdtools.checksums(cluster.conf, src)
    count = len(lm.ls())
    failures = []
    for args, want in BAD:
        argv = [a.format(n=name) for a in args]
        rc, out, err = lm.run(*argv)
        line = err.strip()
        if rc != want or not line or '\n' in line or 'Traceback' in line:
            failures.append((argv, want, rc, err))
    assert not failures, failures
    assert len(lm.ls()) == count
    assert rbdtools.checksums(cluster.conf, src) == before


def test_wrong_state_commands(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src = 'a/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    task = lm.add(src, 'b/' + name)
    lm.wait(task['id'])
    for cmd, errno_ in (('commit', 22), ('retry', 22), ('cancel', 22), ('pause', 22)):
        rc, out, err = lm.run(cmd, task['id'])
        assert rc == errno_, (cmd, rc, err)
        assert err.strip() and '\n' not in err.strip()


@pytest.mark.parametrize('value', ['{nope', json.dumps({'version': 99, 'id': 'x'})])
def test_corrupt_record_is_skipped(cluster: Cluster, lm: Livemigrate, value: str) -> None:
    key = 'mgr/rbd_livemigrate/task/corrupt'
    cluster.ceph('config-key', 'set', key, value)
    try:
        cluster.ceph('mgr', 'fail')
        cluster.wait_module_ready()
        lm.ls()

        def warned() -> bool:
            h = json.loads(cluster.ceph('health', 'detail', '--format', 'json').stdout)
            return 'RBD_LIVEMIGRATE_BAD_RECORD' in h.get('checks', {})
        wait_for(warned, 30, 'RBD_LIVEMIGRATE_BAD_RECORD')
    finally:
        cluster.ceph('config-key', 'rm', key)
