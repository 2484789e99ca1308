"""
A cancel whose abort was cut, for a task with a protective snapshot (the
default ``--verify auto``), on a real cluster.  librbd's ``migration_abort``
first marks both headers ABORTING; cut there (mgr killed), the destination
refuses writes (EROFS: "migration is being aborted"; read-only it opens on
Pacific 16.2.15, the fakes model both).  The state is made
with the same ``rbd`` class calls librbd makes (as ``test_reconcile.py``
does); the module must finish the cancel: the source back byte for byte
(head and every snapshot), the protective snapshot gone, nothing in either
pool's trash, and ``status`` truthful at every poll.
"""

import errno
from typing import List

import rbd

from cluster import Cluster
from conftest import Livemigrate, rbdtools, wait_for
from test_reconcile import image_id, set_aborting, trash_empty

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
    # it opens on Pacific 16.2.15; printed, as releases may differ)
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
