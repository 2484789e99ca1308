"""
A cancel whose abort was cut, for a task with a protective snapshot (the
default ``--verify auto``), on a real cluster.  librbd's ``migration_abort``
first marks both headers ABORTING; cut there (mgr killed), the destination
refuses writes (EROFS: "migration is being aborted"; read-only it opens:
measured on Pacific 16.2.15, Reef and Tentacle).  The state is made
with the same ``rbd`` class calls librbd makes (as ``test_reconcile.py``
does); the module must finish the cancel: the source back byte for byte
(head and every snapshot), the protective snapshot gone, nothing in either
pool's trash, and ``status`` truthful at every poll.
"""

import errno
import importlib
import os
import sys
from typing import Any, List

import rbd

from cluster import Cluster
from conftest import Livemigrate, rbdtools, wait_for
from test_reconcile import (cls_exec, cut_abort, image_id, remove_snaps, set_aborting,
                            trash_empty)

MiB = 1 << 20


def _open_errno(c: Cluster, spec: str, read_only: bool) -> int:
    """What opening ``spec`` answers (0: it opens)."""
    with rbdtools.connect(c.conf) as cluster, rbdtools.ioctx(cluster, spec) as (io, name):
        try:
            with rbd.Image(io, name, read_only=read_only):
                return 0
        except rbd.Error as e:
            return abs(getattr(e, 'errno', 0) or errno.EIO)


def test_cancel_of_a_cut_abort_with_a_protective_snapshot(cluster: Cluster, lm: Livemigrate,
                                                          name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 16 * MiB, seed=src, snaps=2)
    before = rbdtools.checksums(cluster.conf, src)
    task = lm.add(src, dst, '--manual-commit')          # verify: the default (auto)
    t = lm.wait(task['id'], ('executed',))
    lm.ok('pause', task['id'])
    assert t['verify'] == 'auto' and t['protect_snap'], t
    sid, did = t['source_image_id'], t['dest_image_id']
    assert did == image_id(cluster, dst)
    # librbd's abort, cut after its first two writes: both headers ABORTING
    set_aborting(cluster, src, sid)
    set_aborting(cluster, dst, did)
    # librbd sees an abort under way: the destination refuses writes (read-only
    # it opens on Pacific, Reef and Tentacle; printed, should a release differ)
    assert _open_errno(cluster, dst, False) == errno.EROFS
    print('read-only open of the destination under abort:', _open_errno(cluster, dst, True))
    lm.ok('cancel', task['id'])

    seen: List[str] = []

    def ended() -> bool:
        s = lm.status(task['id'])
        seen.append(s['state'])
        if s['state'] == 'aborted':
            # claimed only once it is true
            assert image_id(cluster, src) == sid
            assert not rbdtools.image_exists(cluster.conf, dst)
        return s['state'] in ('aborted', 'failed', 'committed')
    wait_for(ended, 180, 'the cancel of {} to end (seen {})'.format(task['id'], seen))
    t = lm.status(task['id'])
    assert t['state'] == 'aborted', (t['state'], t.get('error'), seen)
    assert 'committed' not in seen and 'committing' not in seen, seen
    assert not t['cancel_requested'] and t['protect_snap'] is None, t
    assert t['attempts'] == 0, t                         # not retried into success
    # the source is back, byte for byte, with exactly its own snapshots
    # (a leftover protective snapshot, or one moved to the snapshot trash,
    # would be a key more)
    assert rbdtools.checksums(cluster.conf, src) == before
    assert image_id(cluster, src) == sid
    assert not rbdtools.image_exists(cluster.conf, dst)
    assert trash_empty(cluster, src, 'a', 'b')
    # an accepted cancel is never followed by a commit
    rc, _, err = lm.run('commit', task['id'])
    assert rc != 0 and 'aborted' in err


# -- the unit tests' fake against librbd, state by state -------------------

def _fakes() -> Any:
    """The unit tests' fakes module (src/pybind/mgr/rbd_livemigrate/tests/fakes.py)."""
    mgr = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'src',
                       'pybind', 'mgr')
    for p in (mgr, os.path.join(mgr, 'rbd_livemigrate', 'tests')):
        if p not in sys.path:
            sys.path.insert(0, p)
    had = 'UNITTEST' in os.environ
    os.environ['UNITTEST'] = '1'            # the package without the mgr
    try:
        return importlib.import_module('fakes')
    finally:
        if not had:
            del os.environ['UNITTEST']


def _fake_errno(fakes: Any, phase: str, end: str, read_only: bool) -> int:
    from rbd_livemigrate.spec import ImageSpec
    e = fakes.FakeLibrbd(phase).open_error(ImageSpec.parse(end + '/img'), not read_only, 'open')
    return 0 if e is None else e.errno


def _cut_commit_first_write(c: Cluster, src: str, dst: str) -> None:
    """librbd's commit cut after its first write (the destination's header)."""
    cls_exec(c, dst, image_id(c, dst), 'migration_remove')


def _states(c: Cluster, src: str, dst: str, phase: str) -> str:
    """Make ``phase`` (a FakeLibrbd phase) for src -> dst with the rbd CLI and
    the cls calls librbd makes; the source's id."""
    rbdtools.create_image(c.conf, src, 8 * MiB, seed=src, snaps=1)
    sid = image_id(c, src)
    if phase == 'not-prepared':
        return sid
    c.rbd('migration', 'prepare', src, dst)
    if phase == 'prepared':
        return sid
    c.rbd('migration', 'execute', dst)
    if phase == 'executed':
        return sid
    did = image_id(c, dst)
    if phase == 'aborting':
        set_aborting(c, src, sid)
        set_aborting(c, dst, did)
    elif phase == 'half-aborted':
        cut_abort(c, src, sid, dst, did)
    elif phase == 'half-committed':
        _cut_commit_first_write(c, src, dst)
    else:
        assert phase == 'committed', phase
        c.rbd('migration', 'commit', dst)
    return sid


def _clean(c: Cluster, src: str, sid: str, dst: str, phase: str) -> None:
    """Finish what ``_states`` left, by hand: nothing in any trash after."""
    if phase in ('prepared', 'executed', 'aborting'):
        c.rbd('migration', 'abort', dst)
    elif phase == 'half-aborted':
        cls_exec(c, src, sid, 'migration_remove')
    elif phase == 'half-committed':
        with rbdtools.connect(c.conf) as cluster, rbdtools.ioctx(cluster, src) as (io, _):
            io.execute('rbd_header.' + sid, 'rbd', 'migration_remove', b'')
            remove_snaps(io, sid)
            rbd.RBD().trash_remove(io, sid, force=True)
    for spec in (src, dst):
        if rbdtools.image_exists(c.conf, spec):
            c.rbd('snap', 'purge', spec)
            c.rbd('rm', spec)


PHASES = ['not-prepared', 'prepared', 'executed', 'aborting', 'half-aborted',
          'half-committed', 'committed']


def test_the_fakes_open_what_librbd_opens(cluster: Cluster, name: str) -> None:
    """For each state the unit tests' FakeLibrbd models, made here for real:
    opening each end by its name, read-only and for writing, answers what
    the fake answers (0, ENOENT or EROFS)."""
    fakes = _fakes()
    cluster.rbd('namespace', 'create', 'a/' + name)
    cluster.rbd('namespace', 'create', 'b/' + name)
    wrong: List[str] = []
    seen: List[str] = []
    for i, phase in enumerate(PHASES):
        src, dst = 'a/{}/img{}'.format(name, i), 'b/{}/img{}'.format(name, i)
        sid = _states(cluster, src, dst, phase)
        try:
            for end, spec in (('a', src), ('b', dst)):
                for ro in (True, False):
                    real = _open_errno(cluster, spec, ro)
                    fake = _fake_errno(fakes, phase, end, ro)
                    what = '{} {} {}: librbd {} fake {}'.format(
                        phase, 'source' if end == 'a' else 'destination',
                        'read-only' if ro else 'read-write', errno.errorcode.get(real, real),
                        errno.errorcode.get(fake, fake))
                    seen.append(what)
                    if real != fake:
                        wrong.append(what)
        finally:
            _clean(cluster, src, sid, dst, phase)
    print('\n'.join(seen))
    assert not wrong, wrong
    for ns in ('a/' + name, 'b/' + name):
        pool, _, space = ns.partition('/')
        assert rbdtools.trash_names(cluster.conf, pool, space) == []
