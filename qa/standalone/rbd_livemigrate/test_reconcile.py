"""
Reconciliation against what librbd holds, on a real cluster: the states an
interrupted librbd step leaves behind are made exactly (the first write of
``migration_commit``/``migration_abort``, done with the same ``rbd`` object
class call librbd makes) and the module must finish them; an image replaced
under the recorded name is never touched; a malformed store record never
stops the module.  The kill -9 grid is ``test_partial_states.py``.
"""

import datetime
import json
import struct
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import rados
import rbd

from cluster import Cluster
from conftest import Livemigrate, destroy_cluster, make_cluster, rbdtools, wait_for

MiB = 1 << 20
ABORTING = 5                        # cls::rbd::MIGRATION_STATE_ABORTING


@pytest.fixture(scope='module')
def rcluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = make_cluster('lm-reconcile-', ['a', 'b'])
    c.rbd('namespace', 'create', 'a/ns1')
    c.rbd('namespace', 'create', 'b/ns2')
    yield c
    destroy_cluster(c, request.session.testsfailed > 0)


@pytest.fixture
def rlm(rcluster: Cluster) -> Livemigrate:
    return Livemigrate(rcluster)


def image_id(c: Cluster, spec: str) -> str:
    return str(json.loads(c.rbd('info', '--format', 'json', spec).stdout)['id'])


def cls_exec(c: Cluster, spec: str, image: str, method: str, data: bytes = b'') -> None:
    """Run an ``rbd`` class method on an image header, as librbd does."""
    pool, ns, _ = rbdtools.split(spec)
    with rbdtools.connect(c.conf) as cluster:
        io = cluster.open_ioctx(pool)
        io.set_namespace(ns)
        try:
            io.execute('rbd_header.' + image, 'rbd', method, data)
        finally:
            io.close()


def source_trash_id(c: Cluster, spec: str) -> str:
    pool, ns, name = rbdtools.split(spec)
    with rbdtools.connect(c.conf) as cluster:
        io = cluster.open_ioctx(pool)
        io.set_namespace(ns)
        try:
            with rados.ReadOpCtx() as op:
                it, _ = io.get_omap_vals(op, '', 'id_', 1000)
                io.operate_read_op(op, 'rbd_trash')
                for key, value in it:
                    buf = bytes(value)
                    (n,) = struct.unpack_from('<I', buf, 7)
                    if buf[11:11 + n].decode() == name:
                        return str(key[3:])
        finally:
            io.close()
    raise AssertionError('{} not in the trash'.format(spec))


def set_aborting(c: Cluster, spec: str, image: str) -> None:
    """What migration_abort writes first (source, then destination)."""
    cls_exec(c, spec, image, 'migration_set_state', struct.pack('<BI', ABORTING, 0))


def trash_empty(c: Cluster, image: str, *where: str) -> bool:
    """No trash entry named ``image`` in these pool[/namespace]s."""
    for w in where:
        pool, _, ns = w.partition('/')
        if image.rsplit('/', 1)[-1] in rbdtools.trash_names(c.conf, pool, ns):
            return False
    return True


def prepared_by_hand(c: Cluster, src: str, dst: str, size: int = 16 * MiB
                     ) -> Dict[str, str]:
    """An image with 2 snapshots prepared and executed with the rbd CLI."""
    rbdtools.create_image(c.conf, src, size, seed=src, snaps=2)
    before = rbdtools.checksums(c.conf, src)
    c.rbd('migration', 'prepare', src, dst)
    c.rbd('migration', 'execute', dst)
    return before


def orphan(lm: Livemigrate, dst: str) -> Optional[Dict[str, object]]:
    for row in lm.ls():
        if row.get('orphan') and row.get('destination') == dst:
            return row
    return None


def poll_truthful(c: Cluster, lm: Livemigrate, task_id: str, src: str, dst: str,
                  want: str) -> Dict[str, object]:
    """Wait for ``want``; at every poll a committed/aborted claim must hold."""
    seen: List[str] = []

    def check() -> bool:
        t = lm.status(task_id)
        seen.append(str(t['state']))
        if t['state'] == 'committed':
            assert trash_empty(c, src, src.rsplit('/', 1)[0]), \
                'committed with the source in trash'
            assert image_id(c, dst) == t['dest_image_id']
        if t['state'] == 'aborted':
            assert image_id(c, src) == t['source_image_id']
        return t['state'] == want
    wait_for(check, 120, 'task {} to reach {} (seen {})'.format(task_id, want, seen))
    return lm.status(task_id)


@pytest.mark.parametrize('src,dst', [('a/{}', 'b/{}'), ('a/ns1/{}', 'b/ns2/{}'),
                                     ('a/{}', 'a/{}')])
def test_half_committed_is_finished(rcluster: Cluster, rlm: Livemigrate, name: str,
                                    src: str, dst: str) -> None:
    """Issue scenario 1: commit cut after the destination's header went."""
    src, dst = src.format(name), dst.format(name)
    if src == dst:
        rbdtools.create_image(rcluster.conf, src, 16 * MiB, seed=src, snaps=2)
        before = rbdtools.checksums(rcluster.conf, src)
        rcluster.rbd('migration', 'prepare', src, dst, '--object-size', '8M', '--stripe-unit', '8M',
                     '--stripe-count', '1')
        rcluster.rbd('migration', 'execute', dst)
    else:
        before = prepared_by_hand(rcluster, src, dst)
    sid = source_trash_id(rcluster, src)
    did = image_id(rcluster, dst) if src != dst else None
    # commit's first write: the destination's migration header goes
    dest_id = did or json.loads(rcluster.rbd('info', '--format', 'json', dst).stdout)['id']
    cls_exec(rcluster, dst, dest_id, 'migration_remove')
    rlm.ok('ls')                                  # the module answers
    task = rlm.ok('adopt', dst)
    assert task['state'] == 'committing' and task['source_image_id'] == sid
    t = poll_truthful(rcluster, rlm, task['id'], src, dst, 'committed')
    assert t['error'] is None
    assert rbdtools.checksums(rcluster.conf, dst) == before
    assert trash_empty(rcluster, src, src.rsplit('/', 1)[0], dst.rsplit('/', 1)[0])
    assert orphan(rlm, dst) is None


def test_half_aborted_is_finished(rcluster: Cluster, rlm: Livemigrate, name: str) -> None:
    """Issue scenario 2: an abort cut after it marked both headers aborting
    (opening either image answers EROFS)."""
    src, dst = 'a/' + name, 'b/' + name
    before = prepared_by_hand(rcluster, src, dst)
    sid, did = source_trash_id(rcluster, src), image_id(rcluster, dst)
    set_aborting(rcluster, src, sid)
    set_aborting(rcluster, dst, did)
    rlm.ok('adopt', dst)
    t = poll_truthful(rcluster, rlm, rlm.status(dst)['id'], src, dst, 'aborted')
    assert t['source_image_id'] == sid
    assert rbdtools.checksums(rcluster.conf, src) == before
    assert not rbdtools.image_exists(rcluster.conf, dst)
    assert trash_empty(rcluster, src, 'a', 'b')


@pytest.mark.parametrize('in_place', [False, True], ids=['cross-pool', 'in-place'])
def test_prepare_cut_before_destination_header(rcluster: Cluster, rlm: Livemigrate, name: str,
                                               in_place: bool) -> None:
    """A prepare cut after it created the destination, before it wrote the
    destination's header: librbd's own abort fails (EINVAL, EEXIST in place,
    and it marks the source aborting first); the module removes that
    destination and restores the source."""
    src = 'a/' + name
    dst = src if in_place else 'b/' + name
    rbdtools.create_image(rcluster.conf, src, 16 * MiB, seed=src, snaps=2)
    before = rbdtools.checksums(rcluster.conf, src)
    rcluster.rbd('migration', 'prepare', src, dst, '--object-size', '8M', '--stripe-unit', '8M',
                 '--stripe-count', '1')
    sid, did = source_trash_id(rcluster, src), image_id(rcluster, dst)
    cls_exec(rcluster, src, sid, 'migration_set_state', struct.pack('<BI', 1, 0))  # PREPARING
    cls_exec(rcluster, dst, did, 'migration_remove')
    task = rlm.ok('adopt', dst)
    assert task['state'] == 'aborting'
    t = poll_truthful(rcluster, rlm, task['id'], src, dst, 'aborted')
    assert t['source_image_id'] == sid
    assert rbdtools.checksums(rcluster.conf, src) == before
    assert rbdtools.image_layout(rcluster.conf, src)['object_size'] == 4 * MiB
    assert trash_empty(rcluster, src, 'a', 'b')
    if not in_place:
        assert not rbdtools.image_exists(rcluster.conf, dst)


def _encode(text: str) -> bytes:
    return struct.pack('<I', len(text)) + text.encode()


@pytest.mark.parametrize('named', [False, True], ids=['unlinked', 'still-named'])
def test_prepare_cut_before_any_header(rcluster: Cluster, rlm: Livemigrate, name: str,
                                       named: bool) -> None:
    """A prepare cut after it moved the source to the trash (or only added the
    trash entry, the name still linked), before it wrote the source's
    migration header: librbd can neither abort (no migration) nor restore it
    (trash entries of migrations are refused).  ls names it, and its
    next_command puts the source back."""
    src, dst = 'a/' + name, 'b/' + name
    before = prepared_by_hand(rcluster, src, dst)
    sid, did = source_trash_id(rcluster, src), image_id(rcluster, dst)
    # undo all but the trash move: no destination, no source header
    cls_exec(rcluster, dst, did, 'migration_remove')
    rcluster.rbd('snap', 'purge', dst)
    rcluster.rbd('rm', dst)
    cls_exec(rcluster, src, sid, 'migration_remove')
    if named:                      # the trash entry exists, the name not yet unlinked
        with rbdtools.connect(rcluster.conf) as cluster:
            io = cluster.open_ioctx('a')
            try:
                with rados.WriteOpCtx() as op:
                    op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                    op.execute('rbd', 'set_id', _encode(sid))
                    io.operate_write_op(op, 'rbd_id.' + name)
                io.execute('rbd_directory', 'rbd', 'dir_add_image',
                           _encode(name) + _encode(sid))
            finally:
                io.close()
    row = None

    def listed() -> bool:
        nonlocal row
        row = next((r for r in rlm.ls() if r.get('orphan') and r['source'] == src), None)
        return row is not None
    rlm.run('adopt', 'b/none-' + name)           # any adopt rescans for orphans
    wait_for(listed, 30, 'orphan {} in ls'.format(src))
    assert row is not None and row['orphan_kind'] == 'half-prepared', row
    assert row['next_command'] == 'ceph rbd livemigrate adopt ' + src
    task = rlm.ok(*row['next_command'].split()[3:])
    t = poll_truthful(rcluster, rlm, task['id'], src, src, 'aborted')
    assert t['source_image_id'] == sid and image_id(rcluster, src) == sid
    assert rbdtools.checksums(rcluster.conf, src) == before
    assert trash_empty(rcluster, src, 'a', 'b')
    assert not any(r.get('orphan') and r['source'] == src for r in rlm.ls())


def test_task_whose_prepare_was_cut_before_any_header(rcluster: Cluster, rlm: Livemigrate,
                                                      name: str) -> None:
    """The module's own task, its prepare cut before any header: the source is
    put back and the migration runs to commit."""
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(rcluster.conf, src, 16 * MiB, seed=src, snaps=2)
    before = rbdtools.checksums(rcluster.conf, src)
    rlm.ok('pause')
    try:
        task = rlm.add(src, dst)
        rcluster.rbd('migration', 'prepare', src, dst)
        did = image_id(rcluster, dst)
        cls_exec(rcluster, dst, did, 'migration_remove')
        rcluster.rbd('snap', 'purge', dst)
        rcluster.rbd('rm', dst)
        cls_exec(rcluster, src, task['source_image_id'], 'migration_remove')
    finally:
        rlm.ok('resume')
    t = poll_truthful(rcluster, rlm, task['id'], src, dst, 'committed')
    assert t['dest_image_id'] != did                 # a new prepare, a new destination
    assert rbdtools.checksums(rcluster.conf, dst) == before
    assert not rbdtools.image_exists(rcluster.conf, src)
    assert trash_empty(rcluster, src, 'a', 'b')


def test_cancel_of_task_with_abort_cut(rcluster: Cluster, rlm: Livemigrate, name: str) -> None:
    """A module task whose abort was cut (mgr killed) finishes it on cancel."""
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(rcluster.conf, src, 16 * MiB, seed=src, snaps=1)
    before = rbdtools.checksums(rcluster.conf, src)
    task = rlm.add(src, dst, '--manual-commit')
    rlm.wait(task['id'], ('executed',))
    rlm.ok('pause', task['id'])
    set_aborting(rcluster, src, task['source_image_id'])
    rlm.ok('cancel', task['id'])
    rlm.wait(task['id'], ('aborted',))
    assert rbdtools.checksums(rcluster.conf, src) == before
    assert trash_empty(rcluster, src, 'a', 'b')
    # an accepted cancel is never followed by a commit
    rc, _, err = rlm.run('commit', task['id'])
    assert rc != 0 and 'aborted' in err


def test_replaced_image_is_never_touched(rcluster: Cluster, rlm: Livemigrate,
                                         name: str) -> None:
    """Issue scenario 3: removed and replaced by a clone while the task waits."""
    src = 'a/' + name
    rbdtools.create_image(rcluster.conf, src, 8 * MiB, seed=src)
    rcluster.rbd('create', 'a/tmpl-' + name, '--size', '8M')
    rcluster.rbd('snap', 'create', 'a/tmpl-{}@s'.format(name))
    rcluster.rbd('snap', 'protect', 'a/tmpl-{}@s'.format(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    later = now + datetime.timedelta(hours=2)
    rlm.set_option('maintenance_window', '{:%H:%M}-{:%H:%M}'.format(
        later, later + datetime.timedelta(minutes=30)))
    try:
        task = rlm.add(src, '--object-size', '8M', '--flatten')
        old_id = task['source_image_id']
        rcluster.rbd('rm', src)
        rcluster.rbd('clone', 'a/tmpl-{}@s'.format(name), src)
        new_id = image_id(rcluster, src)
    finally:
        rlm.rm_option('maintenance_window')
    t = rlm.wait(task['id'], ('failed',), timeout=60)
    assert old_id in t['error'] and new_id in t['error']
    assert '\n' not in t['error']
    assert rbdtools.parent_of(rcluster.conf, src) == 'a/tmpl-{}@s'.format(name)
    assert rbdtools.image_layout(rcluster.conf, src)['object_size'] == 4 * MiB
    rlm.ok('cancel', task['id'])
    rlm.wait(task['id'], ('aborted',))
    assert rbdtools.parent_of(rcluster.conf, src) is not None


def test_bad_record_never_stops_the_module(rcluster: Cluster, rlm: Livemigrate,
                                           name: str) -> None:
    bad = {'version': 1, 'id': 'badrec1', 'source': 'a/x', 'destination': 'b/x',
           'priority': 'high', 'layout': [1], 'created': None}
    key = 'mgr/rbd_livemigrate/task/badrec1'
    rcluster.ceph('config-key', 'set', key, json.dumps(bad))
    try:
        active = rcluster.active_mgr()
        rcluster.kill_mgr(active)
        rcluster.start_mgr(active)
        rcluster.wait_module_ready(timeout=90)

        def warned() -> bool:
            checks = rcluster.ceph_json('health', 'detail', '--format', 'json')['checks']
            return 'RBD_LIVEMIGRATE_BAD_RECORD' in checks
        wait_for(warned, 60, 'RBD_LIVEMIGRATE_BAD_RECORD')
        detail = rcluster.ceph_json('health', 'detail', '--format', 'json')['checks'][
            'RBD_LIVEMIGRATE_BAD_RECORD']['detail'][0]['message']
        assert 'task/badrec1' in detail
        # the queue still runs
        src = 'a/' + name
        rbdtools.create_image(rcluster.conf, src, 4 * MiB, seed=src)
        before = rbdtools.checksums(rcluster.conf, src)
        task = rlm.add(src, 'b/' + name)
        rlm.wait(task['id'])
        assert rbdtools.checksums(rcluster.conf, 'b/' + name) == before
    finally:
        rcluster.ceph('config-key', 'rm', key)


# -- issue 21: the last write of each step, with the record behind ------------
#
# The states librbd leaves when its commit or abort is cut at its very last
# write, made exactly: every earlier write of the step is done (with the same
# rbd class calls and librbd removals), the last one is not.  The task's
# record is then put back to what a record written behind can say (no
# destination id, state preparing) with every mgr down, as after a kill -9.

LAYOUTS = [('a/{}', 'b/{}'), ('a/ns1/{}', 'b/ns2/{}'), ('a/{}', 'a/{}')]
LAYOUT_IDS = ['cross-pool', 'namespace', 'in-place']
TASK_KEY = 'mgr/rbd_livemigrate/task/'


def executed_task(c: Cluster, lm: Livemigrate, src: str, dst: str
                  ) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """A module task, executed and held (--manual-commit, paused)."""
    rbdtools.create_image(c.conf, src, 16 * MiB, seed=src, snaps=2)
    before = rbdtools.checksums(c.conf, src)
    args = [src, '--manual-commit'] + (['--object-size', '8M'] if src == dst else [dst])
    task = lm.add(*args)
    lm.wait(task['id'], ('executed',))
    lm.ok('pause', task['id'])
    t = lm.status(task['id'])
    assert t['dest_image_id'] and t['source_image_id']
    # the intent the module wrote on the source before prepare, copied by
    # prepare to the destination
    intent = json.loads(c.rbd('image-meta', 'get', dst, 'rbd_livemigrate.task').stdout)
    assert intent == {'task': t['id'], 'step': 'prepare', 'source_id': t['source_image_id']}
    return t, before


def remove_snaps(io: rados.Ioctx, image_id: str) -> None:
    with rbd.Image(io, image_id=image_id) as image:
        for snap in image.list_snaps():
            if image.is_protected_snap(snap['name']):
                image.unprotect_snap(snap['name'])
            image.remove_snap(snap['name'])


def cut_commit(c: Cluster, src: str, sid: str, dst: str, did: str, last: bool) -> None:
    """librbd's commit: the destination's header, then the source's snapshots,
    objects and header object, then (``last``: not done) its trash entry."""
    cls_exec(c, dst, did, 'migration_remove')
    with rbdtools.connect(c.conf) as cluster:
        with rbdtools.ioctx(cluster, src) as (io, _):
            entry = io_omap(io, 'rbd_trash', 'id_' + sid)
            io.execute('rbd_header.' + sid, 'rbd', 'migration_remove', b'')
            remove_snaps(io, sid)
            rbd.RBD().trash_remove(io, sid, force=True)
            assert not header_object(io, sid)
            if last:
                with rados.WriteOpCtx() as op:
                    io.set_omap(op, ('id_' + sid,), (entry,))
                    io.operate_write_op(op, 'rbd_trash')


def cut_abort(c: Cluster, src: str, sid: str, dst: str, did: str) -> None:
    """librbd's abort: both headers aborting, the destination removed, the
    source put back under its name and out of the trash; not its last write
    (the source's migration header)."""
    set_aborting(c, src, sid)
    set_aborting(c, dst, did)
    cls_exec(c, dst, did, 'migration_remove')
    _, _, name = rbdtools.split(src)
    with rbdtools.connect(c.conf) as cluster:
        with rbdtools.ioctx(cluster, dst) as (io, _):
            remove_snaps(io, did)
            rbd.RBD().remove(io, name)
        with rbdtools.ioctx(cluster, src) as (io, _):
            with rados.WriteOpCtx() as op:
                op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                op.execute('rbd', 'set_id', _encode(sid))
                io.operate_write_op(op, 'rbd_id.' + name)
            io.execute('rbd_directory', 'rbd', 'dir_add_image', _encode(name) + _encode(sid))
            io.execute('rbd_trash', 'rbd', 'trash_remove', _encode(sid))


def io_omap(io: rados.Ioctx, oid: str, key: str) -> bytes:
    with rados.ReadOpCtx() as op:
        it, _ = io.get_omap_vals_by_keys(op, (key,))
        io.operate_read_op(op, oid)
        values = [bytes(v) for _, v in it]
    assert values, '{} has no {}'.format(oid, key)
    return values[0]


def header_object(io: rados.Ioctx, image_id: str) -> bool:
    try:
        io.stat('rbd_header.' + image_id)
        return True
    except rados.ObjectNotFound:
        return False


def record_behind(c: Cluster, task_id: str, **changes: Any) -> None:
    """Every mgr down (kill -9), the task's stored record changed, mgrs back."""
    for m in c.mgr_ids:
        if c.mgr_pid(m) is not None:
            c.kill_mgr(m)
    key = TASK_KEY + task_id
    record = json.loads(c.ceph('config-key', 'get', key).stdout)
    record.update(changes)
    c.ceph('config-key', 'set', key, json.dumps(record))
    for m in c.mgr_ids:
        c.start_mgr(m)
    c.wait_module_ready(timeout=120)


@pytest.mark.parametrize('last', [True, False], ids=['trash-entry-left', 'source-gone'])
@pytest.mark.parametrize('src,dst', LAYOUTS, ids=LAYOUT_IDS)
def test_commit_cut_at_its_last_step_with_the_record_behind(
        rcluster: Cluster, rlm: Livemigrate, name: str, src: str, dst: str,
        last: bool) -> None:
    """Issue 21: the record says dest_image_id null; librbd's commit removed
    both headers (and the source's header object), and either not yet its
    trash entry, or that too.  The destination is known by the intent key
    the module wrote before prepare; the task ends committed."""
    src, dst = src.format(name), dst.format(name)
    t, before = executed_task(rcluster, rlm, src, dst)
    sid, did = t['source_image_id'], t['dest_image_id']
    cut_commit(rcluster, src, sid, dst, did, last)
    assert trash_empty(rcluster, src, src.rsplit('/', 1)[0]) is not last
    record_behind(rcluster, t['id'], dest_image_id=None, state='preparing', paused=False)
    done = poll_truthful(rcluster, rlm, t['id'], src, dst, 'committed')
    assert done['dest_image_id'] == did and done['error'] is None
    assert rbdtools.checksums(rcluster.conf, dst) == before
    assert trash_empty(rcluster, src, src.rsplit('/', 1)[0], dst.rsplit('/', 1)[0])
    if src != dst:
        assert not rbdtools.image_exists(rcluster.conf, src)


@pytest.mark.parametrize('src,dst', LAYOUTS, ids=LAYOUT_IDS)
def test_abort_cut_at_its_last_step(rcluster: Cluster, rlm: Livemigrate, name: str,
                                    src: str, dst: str) -> None:
    """Issue 21: an abort cut after it put the source back (a migration header
    and no trash entry): librbd's own abort now fails ENOENT and the source
    opens EROFS.  The cancelled task finishes it: aborted, source as before."""
    src, dst = src.format(name), dst.format(name)
    t, before = executed_task(rcluster, rlm, src, dst)
    sid, did = t['source_image_id'], t['dest_image_id']
    cut_abort(rcluster, src, sid, dst, did)
    rlm.ok('cancel', t['id'])
    done = poll_truthful(rcluster, rlm, t['id'], src, dst, 'aborted')
    assert done['source_image_id'] == sid
    assert rbdtools.checksums(rcluster.conf, src) == before
    assert trash_empty(rcluster, src, src.rsplit('/', 1)[0], dst.rsplit('/', 1)[0])
    if src != dst:
        assert not rbdtools.image_exists(rcluster.conf, dst)


@pytest.mark.parametrize('src,dst', [LAYOUTS[0], LAYOUTS[2]], ids=['cross-pool', 'in-place'])
def test_operators_abort_cut_at_its_last_step_is_adopted(
        rcluster: Cluster, rlm: Livemigrate, name: str, src: str, dst: str) -> None:
    """An operator's rbd migration abort cut at its last write: no task, no
    trash entry, no destination; ``adopt <source>`` finishes the abort."""
    src, dst = src.format(name), dst.format(name)
    rbdtools.create_image(rcluster.conf, src, 16 * MiB, seed=src, snaps=2)
    before = rbdtools.checksums(rcluster.conf, src)
    extra = ['--object-size', '8M', '--stripe-unit', '8M', '--stripe-count', '1']
    rcluster.rbd('migration', 'prepare', src, dst, *(extra if src == dst else []))
    rcluster.rbd('migration', 'execute', dst)
    sid, did = source_trash_id(rcluster, src), image_id(rcluster, dst)
    cut_abort(rcluster, src, sid, dst, did)
    assert rcluster.rbd('migration', 'abort', src, check=False).returncode != 0
    task = rlm.ok('adopt', src)
    assert task['state'] == 'aborting' and task['source_image_id'] == sid
    done = poll_truthful(rcluster, rlm, task['id'], src, dst, 'aborted')
    assert done['source_image_id'] == sid and image_id(rcluster, src) == sid
    assert rbdtools.checksums(rcluster.conf, src) == before
    assert trash_empty(rcluster, src, src.rsplit('/', 1)[0], dst.rsplit('/', 1)[0])
