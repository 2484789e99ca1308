"""
Fixtures for the real-cluster tests: one throwaway cluster per session
(1 mon, 2 mgrs, 2 memstore OSDs, our module loaded in the real ceph-mgr),
plus a ``Livemigrate`` helper that drives ``ceph rbd livemigrate`` through
the real ``ceph`` binary.  Destructive tests make their own cluster with
``make_cluster``.
"""

import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Iterator, List, Sequence, Tuple

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cluster import Cluster, wait_for  # noqa: E402
from lmcli import TERMINAL, Livemigrate, json_args  # noqa: E402,F401
import rbdtools  # noqa: E402


# the Ceph release every cluster of this run uses: LM_RELEASE=pacific|reef,
# default what the host's own packages give (see cluster.py --release)
RELEASE = os.environ.get('LM_RELEASE') or None


def make_cluster(prefix: str, pools: List[str], osd_bytes: int = 3 << 30) -> Cluster:
    base = tempfile.mkdtemp(prefix=prefix, dir='/tmp')
    c = Cluster(dir=base, osds=2, mgrs=2, osd_bytes=osd_bytes, pools=pools, release=RELEASE)
    try:
        c.start()
        lm = Livemigrate(c)
        lm.set_option('retry_backoff_seconds', '1')
        lm.set_option('blocked_recheck_seconds', '1')
    except BaseException:
        c.stop()
        raise
    return c


def destroy_cluster(c: Cluster, failed: bool) -> None:
    c.stop()
    if failed or os.environ.get('LM_KEEP_CLUSTER'):
        print('cluster logs kept in', c.dir)
    else:
        shutil.rmtree(c.dir, ignore_errors=True)


@pytest.fixture(scope='session')
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = make_cluster('lm-test-', ['a', 'b', 'c'])
    for args in (('osd', 'pool', 'create', 'plain', '8'),):
        c.ceph(*args)
    c.rbd('namespace', 'create', 'a/ns1')
    c.rbd('namespace', 'create', 'b/ns2')
    yield c
    destroy_cluster(c, request.session.testsfailed > 0)


@pytest.fixture
def lm(cluster: Cluster) -> Livemigrate:
    return Livemigrate(cluster)


@pytest.fixture
def name() -> str:
    return 'img-' + uuid.uuid4().hex[:8]


def now() -> float:
    return time.time()


def make_tenant(cluster: Cluster, entity: str, pools: Sequence[str] = ('a', 'b')) -> str:
    """A key (its keyring's path) whose mgr and osd caps cover ``pools``
    only: this module with ``pool=X rw`` and the rbd profile, per pool."""
    keyring = os.path.join(cluster.dir, '{}.keyring'.format(entity.replace('client.', '')))
    cluster.ceph('auth', 'rm', entity, check=False)
    out = cluster.ceph('auth', 'get-or-create', entity, 'mon', 'allow r', 'mgr',
                       ', '.join('allow module rbd_livemigrate with pool={} rw'.format(p)
                                 for p in pools),
                       'osd', ', '.join('profile rbd pool={}'.format(p) for p in pools)).stdout
    with open(keyring, 'w') as f:
        f.write(out)
    return keyring


def as_tenant(cluster: Cluster, entity: str, keyring: str,
              *args: str) -> Tuple[int, str, str]:
    """``ceph rbd livemigrate <args>`` as ``entity`` (a changing command's
    record as JSON unless a format is given)."""
    p = cluster.ceph('--name', entity, '--keyring', keyring, 'rbd', 'livemigrate',
                     *json_args(args), check=False)
    return p.returncode, p.stdout, p.stderr


__all__ = ['Livemigrate', 'make_cluster', 'destroy_cluster', 'rbdtools', 'wait_for', 'now']
