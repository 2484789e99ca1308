"""Tenants and late-failing inputs, on the real cluster.

A tenant key scoped to two pools (``allow module rbd_livemigrate with
pool=X rw`` once per pool, made with ``ceph auth get-or-create``) can move,
pause, adopt and list nothing outside them; every input librbd would refuse
late, or act on destructively (mirrored images, a trashed source's name,
format 1 clones in a namespace, ...), is refused at ``add`` with an errno and
one line.  Each refusal checks that nothing was queued and that no image
changed (checksums of head and snapshots, ``rbd info``).
"""

import json
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from cluster import Cluster, wait_for
import conftest
from conftest import Livemigrate, make_tenant, rbdtools

MiB = 1 << 20
TENANT = 'client.lm-tenant'
# fields of rbd info that reading an image may change
_VOLATILE = ('access_timestamp', 'modify_timestamp', 'create_timestamp')


@pytest.fixture(scope='module')
def tenant(cluster: Cluster) -> str:
    """A key for pools a and b only (mgr: this module; osd: rbd profile)."""
    return make_tenant(cluster, TENANT)


def as_tenant(cluster: Cluster, keyring: str, *args: str) -> Tuple[int, str, str]:
    return conftest.as_tenant(cluster, TENANT, keyring, *args)


def fingerprint(cluster: Cluster, spec: str) -> Tuple[Dict[str, str], Dict[str, Any]]:
    info = json.loads(cluster.rbd('info', spec, '--format', 'json').stdout)
    for k in _VOLATILE:
        info.pop(k, None)
    return rbdtools.checksums(cluster.conf, spec), info


class Unchanged:
    """Asserts that a refused command queued nothing and changed no image."""

    def __init__(self, cluster: Cluster, lm: Livemigrate, *specs: str) -> None:
        self.cluster, self.lm, self.specs = cluster, lm, specs
        self.tasks = sorted(t['id'] for t in lm.ls() if t['id'])
        self.before = {s: fingerprint(cluster, s) for s in specs}

    def check(self) -> None:
        assert sorted(t['id'] for t in self.lm.ls() if t['id']) == self.tasks
        for s in self.specs:
            assert fingerprint(self.cluster, s) == self.before[s], s


def refused(rc: int, err: str, errno: int) -> None:
    assert rc == errno, (rc, err)
    line = err.strip()
    assert line and '\n' not in line and 'Traceback' not in line, err


@pytest.fixture
def paused(lm: Livemigrate) -> Iterator[None]:
    """The queue held, so tasks made by a test stay queued while it looks."""
    lm.ok('pause')
    try:
        yield
    finally:
        lm.ok('resume')


# -- tenants ------------------------------------------------------------------

@pytest.mark.parametrize('args,errno', [
    (['add', 'a/{n}', 'c/{n}'], 13),                           # destination outside
    (['add', 'c/{n}', 'a/{n}'], 13),                           # source outside
    (['add', 'a/{n}', 'b/{n}', '--data-pool', 'c'], 13),       # data pool outside
    (['add', 'a/{n}', '--object-size', '1M', '--data-pool', 'c'], 13),
    (['add-pool', 'a', 'c'], 13),
    (['add-pool', 'a', 'b', '--data-pool', 'c', '--pattern', '{n}'], 13),
    (['pause'], 13), (['resume'], 13),                          # queue-wide
    (['adopt', 'c/{n}'], 13),
])
def test_tenant_cannot_reach_outside(cluster: Cluster, lm: Livemigrate, tenant: str,
                                     name: str, args: List[str], errno: int) -> None:
    for pool in ('a', 'c'):
        rbdtools.create_image(cluster.conf, '{}/{}'.format(pool, name), 4 * MiB,
                              written=1 * MiB, seed=name)
    guard = Unchanged(cluster, lm, 'a/' + name, 'c/' + name)
    rc, out, err = as_tenant(cluster, tenant, *[a.format(n=name) for a in args])
    refused(rc, err, errno)
    guard.check()
    assert not rbdtools.image_exists(cluster.conf, 'b/' + name)


def test_tenant_sees_and_acts_only_within(cluster: Cluster, lm: Livemigrate, tenant: str,
                                          name: str, paused: None) -> None:
    for spec in ('a/' + name, 'c/' + name, 'a/{}-x'.format(name)):
        rbdtools.create_image(cluster.conf, spec, 4 * MiB, seed=name)
    inside = lm.add('a/' + name, 'b/' + name)
    outside = lm.add('c/' + name, 'c/{}-new'.format(name))
    across = lm.add('a/{}-x'.format(name), 'c/{}-x'.format(name))
    rc, out, err = as_tenant(cluster, tenant, 'ls', '--format', 'json')
    assert rc == 0, err
    seen = {t['id'] for t in json.loads(out)}
    assert inside['id'] in seen and not seen & {outside['id'], across['id']}
    rc, out, err = as_tenant(cluster, tenant, 'ls')
    # no image spec of pool c (a word starting c/; a temporary directory of
    # another test may end in c/ inside a path)
    assert rc == 0 and not [w for w in out.split() if w.startswith('c/')], out
    assert outside['id'] not in out and across['id'] not in out, out
    for task in (outside, across):
        for args in (['status', task['id']], ['status', task['destination']],
                     ['cancel', task['id']], ['pause', task['id']], ['resume', task['id']],
                     ['retry', task['id']], ['commit', task['id']]):
            rc, out, err = as_tenant(cluster, tenant, *args)
            refused(rc, err, 13)
            assert 'not authorized on task {}'.format(task['id']) in err, err
    # its own task: visible and its to pause and resume
    rc, out, err = as_tenant(cluster, tenant, 'status', inside['id'], '--format', 'json')
    assert rc == 0 and json.loads(out)['id'] == inside['id']
    rc, out, err = as_tenant(cluster, tenant, 'pause', inside['id'])
    assert rc == 0 and json.loads(out)['paused'], err
    rc, out, err = as_tenant(cluster, tenant, 'resume', inside['id'])
    assert rc == 0 and not json.loads(out)['paused'], err
    # nothing the tenant did moved the other tasks
    for task in (outside, across):
        assert lm.status(task['id'])['state'] == 'queued'
        lm.ok('cancel', task['id'])
    lm.ok('cancel', inside['id'])


def test_tenant_cannot_touch_pools_librbd_would_write(cluster: Cluster, lm: Livemigrate,
                                                      tenant: str, name: str) -> None:
    """Besides the two ends, librbd writes the clones' headers (it re-links
    their parent) and the data pool a pool-level ``rbd_default_data_pool``
    gives the destination: outside the tenant's pools, both are refused."""
    parent = 'a/' + name
    rbdtools.create_image(cluster.conf, parent, 4 * MiB, written=1 * MiB, seed=name)
    cluster.rbd('snap', 'create', parent + '@s')
    cluster.rbd('snap', 'protect', parent + '@s')
    cluster.rbd('clone', '--rbd-default-clone-format', '2', parent + '@s',
                'c/{}-kid'.format(name))
    guard = Unchanged(cluster, lm, parent, 'c/{}-kid'.format(name))
    for extra in ([], ['--dry-run']):
        rc, out, err = as_tenant(cluster, tenant, 'add', parent, 'b/' + name,
                                 '--allow-descendants', *extra)
        refused(rc, err, 13)
        assert 'kid' not in err + out, err          # another pool's clone is not named
    guard.check()
    # a pool option of the tenant's own pool b pointing new images' data at c
    other = 'a/{}-2'.format(name)
    rbdtools.create_image(cluster.conf, other, 4 * MiB, written=1 * MiB, seed=name)
    cluster.rbd('config', 'pool', 'set', 'b', 'rbd_default_data_pool', 'c')
    try:
        guard = Unchanged(cluster, lm, other)
        rc, out, err = as_tenant(cluster, tenant, 'add', other, 'b/{}-2'.format(name))
        refused(rc, err, 13)
        assert "'c'" in err, err
        guard.check()
    finally:
        cluster.rbd('config', 'pool', 'rm', 'b', 'rbd_default_data_pool')


def test_tenant_cannot_adopt_a_migration_reaching_outside(cluster: Cluster,
                                                          lm: Livemigrate, tenant: str,
                                                          name: str, paused: None) -> None:
    """A migration started by hand from pool c into pool a: its destination is
    the tenant's, its source is not, so the tenant may not adopt it; an image
    of the same name in the tenant's pool changes nothing."""
    rbdtools.create_image(cluster.conf, 'c/' + name, 4 * MiB, written=1 * MiB, seed=name)
    rbdtools.create_image(cluster.conf, 'b/' + name, 4 * MiB, written=1 * MiB, seed='other')
    before_b = fingerprint(cluster, 'b/' + name)
    src_sums = rbdtools.checksums(cluster.conf, 'c/' + name)
    cluster.rbd('migration', 'prepare', 'c/' + name, 'a/' + name)
    try:
        tasks = sorted(t['id'] for t in lm.ls() if t['id'])
        for spec in ('a/' + name, 'b/' + name, 'c/' + name):
            rc, out, err = as_tenant(cluster, tenant, 'adopt', spec)
            assert rc in (13, 2, 22), (spec, rc, err)
            assert rc == 13 or spec != 'a/' + name, err
        assert sorted(t['id'] for t in lm.ls() if t['id']) == tasks
        assert fingerprint(cluster, 'b/' + name) == before_b
        # an operator with full caps adopts it and can cancel it
        task = lm.ok('adopt', 'a/' + name)
        assert task['source'] == 'c/' + name and task['destination'] == 'a/' + name
        rc, out, err = as_tenant(cluster, tenant, 'cancel', task['id'])
        refused(rc, err, 13)
        lm.ok('cancel', task['id'])
        lm.wait(task['id'], ('aborted',))
    finally:
        cluster.rbd('migration', 'abort', 'a/' + name, check=False)
    assert rbdtools.checksums(cluster.conf, 'c/' + name) == src_sums
    assert not rbdtools.image_exists(cluster.conf, 'a/' + name)
    assert name not in rbdtools.trash_names(cluster.conf, 'c')


# -- inputs that would fail late ---------------------------------------------

def test_stripe_unit_larger_than_the_object_size(cluster: Cluster, lm: Livemigrate,
                                                 name: str) -> None:
    src = 'a/' + name
    rbdtools.create_image(cluster.conf, src, 8 * MiB, written=4 * MiB, seed=name)
    guard = Unchanged(cluster, lm, src)
    rc, out, err = lm.run('add', src, 'b/' + name, '--stripe-unit', '8M')
    refused(rc, err, 22)
    assert 'object size' in err
    guard.check()


def test_destination_named_like_a_parked_source(cluster: Cluster, lm: Livemigrate,
                                                name: str) -> None:
    """``a/name`` is migrating (by hand) to b: its source is in a's trash and its
    name is free in ``rbd ls``, but its abort needs the name back."""
    src, other = 'a/' + name, 'c/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, written=1 * MiB, seed=name)
    rbdtools.create_image(cluster.conf, other, 4 * MiB, written=1 * MiB, seed='o')
    sums = rbdtools.checksums(cluster.conf, src)
    cluster.rbd('migration', 'prepare', src, 'b/' + name)
    try:
        guard = Unchanged(cluster, lm, other)
        rc, out, err = lm.run('add', other, src)
        refused(rc, err, 17)
        assert 'another live migration' in err
        guard.check()
    finally:
        cluster.rbd('migration', 'abort', 'b/' + name)
    assert rbdtools.checksums(cluster.conf, src) == sums


def test_destination_is_a_queued_tasks_source(cluster: Cluster, lm: Livemigrate, name: str,
                                              paused: None) -> None:
    src, other = 'a/' + name, 'c/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    rbdtools.create_image(cluster.conf, other, 4 * MiB, seed='o')
    task = lm.add(src, 'b/' + name)
    guard = Unchanged(cluster, lm, other, src)
    rc, out, err = lm.run('add', other, src)
    # the queued task's cancel needs its source's name back: EBUSY, naming it
    refused(rc, err, 16)
    assert "'{}' is the source of task {}".format(src, task['id']) in err, err
    guard.check()
    lm.ok('cancel', task['id'])


@pytest.fixture(scope='module')
def mirrored(cluster: Cluster) -> Dict[str, str]:
    """Images of pool c with real mirroring (image mode; no peer is needed)."""
    cluster.rbd('mirror', 'pool', 'enable', 'c', 'image')
    images = {'snapshot': 'c/mir-snap', 'journal': 'c/mir-journal', 'non-primary': 'c/mir-np'}
    for kind, spec in images.items():
        feats = ['--image-feature', 'layering,exclusive-lock,journaling'] \
            if kind == 'journal' else []
        cluster.rbd('create', spec, '--size', '4M', *feats)
        cluster.rbd('mirror', 'image', 'enable', spec,
                    'journal' if kind == 'journal' else 'snapshot')
    cluster.rbd('mirror', 'image', 'demote', images['non-primary'])
    return images


@pytest.mark.parametrize('kind,errno', [('snapshot', 16), ('journal', 16),
                                        ('non-primary', 30)])
def test_mirrored_images_are_refused(cluster: Cluster, lm: Livemigrate,
                                     mirrored: Dict[str, str], kind: str,
                                     errno: int) -> None:
    spec = mirrored[kind]
    guard = Unchanged(cluster, lm, spec)
    mirror_before = cluster.rbd('mirror', 'image', 'status', spec, '--format', 'json',
                                check=False).stdout
    dest = 'b/' + spec.split('/')[1]
    rc, out, err = lm.run('add', spec, dest)
    refused(rc, err, errno)
    assert ('rbd mirror image disable ' + spec) in err or 'primary' in err, err
    guard.check()
    info = json.loads(cluster.rbd('info', spec, '--format', 'json').stdout)
    assert info['mirroring']['state'] == 'enabled', info
    assert json.loads(mirror_before or '{}').get('global_id') == json.loads(
        cluster.rbd('mirror', 'image', 'status', spec, '--format', 'json',
                    check=False).stdout or '{}').get('global_id')
    assert not rbdtools.image_exists(cluster.conf, dest)


def test_add_pool_reports_each_refused_image(cluster: Cluster, lm: Livemigrate,
                                             mirrored: Dict[str, str]) -> None:
    rc, out, err = lm.run('add-pool', 'c', 'b', '--pattern', 'mir-*', '--dry-run')
    assert rc != 0 and out, err
    rows = {r['source']: r for r in json.loads(out)}
    assert set(rows) == set(mirrored.values())
    for kind, spec in mirrored.items():
        assert rows[spec]['ok'] is False
        assert rows[spec]['blockers'][0]['errno'] == (-30 if kind == 'non-primary' else -16)
    guard = Unchanged(cluster, lm, *mirrored.values())
    batch = lm.ok('add-pool', 'c', 'b', '--pattern', 'mir-*')
    wait_for(lambda: lm.ok('status', batch['id'], '--format', 'json')['state'] == 'expanded',
             60, 'the batch to list its images')
    v = lm.ok('status', batch['id'], '--format', 'json')
    assert v['tasks'] == 0 and v['refused_count'] == 3, v
    assert {r['source']: r['errno'] for r in v['refused']} == {
        spec: -30 if kind == 'non-primary' else -16 for kind, spec in mirrored.items()}
    assert all('\n' not in r['message'] for r in v['refused'])
    guard.check()


def test_clone_features_without_layering(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    parent, child = 'a/' + name, 'a/{}-kid'.format(name)
    rbdtools.create_image(cluster.conf, parent, 4 * MiB, written=1 * MiB, seed=name)
    cluster.rbd('snap', 'create', parent + '@s')
    cluster.rbd('snap', 'protect', parent + '@s')
    cluster.rbd('clone', parent + '@s', child)
    guard = Unchanged(cluster, lm, parent, child)
    for feats, errno in (('exclusive-lock', 22), ('layering,journaling', 22),
                         ('layering,fast-diff', 22)):
        rc, out, err = lm.run('add', child, 'b/' + name, '--features', feats)
        refused(rc, err, errno)
    rc, out, err = lm.run('add', parent, 'b/' + name)          # parent of a clone
    refused(rc, err, 16)
    assert '--allow-descendants' in err
    guard.check()


def test_format_1_clone_in_a_namespace(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    """Pacific's librbd aborts the process (the mgr!) preparing this: refused."""
    parent, child = 'a/ns1/' + name, 'a/ns1/{}-kid'.format(name)
    rbdtools.create_image(cluster.conf, parent, 4 * MiB, written=1 * MiB, seed=name)
    cluster.rbd('snap', 'create', parent + '@s')
    cluster.rbd('snap', 'protect', parent + '@s')
    cluster.rbd('clone', '--rbd-default-clone-format', '1', parent + '@s', child)
    guard = Unchanged(cluster, lm, parent, child)
    mgr = cluster.active_mgr()
    rc, out, err = lm.run('add', parent, 'b/' + name, '--allow-descendants')
    refused(rc, err, 22)
    assert 'clone format 1' in err and 'rbd flatten' in err
    rc, out, err = lm.run('add', parent, 'b/' + name, '--allow-descendants', '--dry-run')
    assert [b['errno'] for b in json.loads(out)['blockers']] == [-22]
    guard.check()
    assert cluster.active_mgr() == mgr


def test_dry_run_lists_every_blocker(cluster: Cluster, lm: Livemigrate,
                                     mirrored: Dict[str, str]) -> None:
    rc, out, err = lm.run('add', mirrored['snapshot'], 'b/mir-snap', '--stripe-unit', '8M',
                          '--dry-run')
    report = json.loads(out)
    assert rc == -report['blockers'][0]['errno'], (rc, err)
    assert err.startswith('Error') and '2 blocker(s)' in err and 'mirror' in err, err
    assert sorted(b['errno'] for b in report['blockers']) == [-22, -16]
    assert report['ok'] is False


def test_clone_made_during_the_migration_holds_the_commit(cluster: Cluster, lm: Livemigrate,
                                                          name: str) -> None:
    """add checked that the source had no clones; a clone of the destination
    made while it executed (it may be open read-only, and would not see its
    parent move) holds the commit until it is flattened."""
    src, dst, kid = 'a/' + name, 'b/' + name, 'b/{}-kid'.format(name)
    rbdtools.create_image(cluster.conf, src, 8 * MiB, written=8 * MiB, seed=name)
    sums = rbdtools.checksums(cluster.conf, src)
    task = lm.add(src, dst, '--manual-commit')
    lm.wait(task['id'], ('executed',))
    cluster.rbd('snap', 'create', dst + '@s')
    cluster.rbd('snap', 'protect', dst + '@s')
    cluster.rbd('clone', dst + '@s', kid)
    lm.ok('commit', task['id'])
    held = lm.wait(task['id'], pred=lambda t: 'clone' in (t.get('blocked_reason') or ''))
    assert held['state'] == 'executed' and kid in held['blocked_reason'], held
    cluster.rbd('flatten', kid)
    lm.wait(task['id'])
    assert rbdtools.checksums(cluster.conf, dst)['HEAD'] == sums['HEAD']
    assert rbdtools.parent_of(cluster.conf, kid) is None
    assert name not in rbdtools.trash_names(cluster.conf, 'a')
    cluster.rbd('snap', 'unprotect', dst + '@s')
