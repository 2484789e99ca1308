"""
Who sees and changes what: a caller whose mgr caps name some pools sees and
acts only on tasks all of whose pools (source, destination, data pool) are
among them; queue-wide pause/resume needs caps on every pool.
"""

import errno
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest

from rbd_livemigrate.commands import AddRequest, Commands
from rbd_livemigrate.errors import LiveMigrateError
from rbd_livemigrate.handles import SchedulerHandle
from rbd_livemigrate.interface import (End, HeaderType, ImageInfo, MigrationHeader, MigState,
                                       RbdPort)
from rbd_livemigrate.preflight import PoolInfo
from rbd_livemigrate.spec import ImageSpec, PoolSpec
from rbd_livemigrate.task import Layout, State, Task

from test_pipeline import worker


def commands(pools: Set[Tuple[str, str]], unscoped: bool = False,
             adapter: Optional[RbdPort] = None,
             pool_info: Optional[Dict[str, PoolInfo]] = None) -> Commands:
    w = worker()
    w.load()
    for tid, src, dst, data in (('t-aa', 'a/x', 'a/y', None), ('t-ab', 'a/p', 'b/p', None),
                                ('t-cc', 'c/q', 'c/r', None), ('t-ad', 'a/d', 'a/e', 'c')):
        w.put(Task(id=tid, source=src, destination=dst, created=1.0, source_image_id=tid,
                   layout=Layout(data_pool=data)))
    return Commands(table=w, scheduler=w, adapter=adapter or RbdPort(),
                    pools=lambda: pool_info or {},
                    authorized=lambda p, ns: (p, ns) in pools, clock=lambda: 1.0,
                    unscoped=lambda: unscoped)


def call(fn: Any, *args: Any) -> Tuple[int, Any]:
    try:
        r, out, err = fn(*args)
    except LiveMigrateError as e:
        return -e.errno, str(e)
    return r, json.loads(out) if out.startswith(('[', '{')) else out


def test_scoped_ls_shows_only_tasks_wholly_in_its_pools() -> None:
    c = commands({('a', '')})
    r, views = call(c.ls, 'json')
    assert r == 0 and [v['id'] for v in views] == ['t-aa']
    r, views = call(commands({('a', ''), ('b', ''), ('c', '')}).ls, 'json')
    assert sorted(v['id'] for v in views) == ['t-aa', 't-ab', 't-ad', 't-cc']


@pytest.mark.parametrize('target', ['t-ab', 'b/p', 'a/p', 't-cc', 'c/q', 't-ad'])
def test_scoped_status_and_changes_refused_outside(target: str) -> None:
    c = commands({('a', '')})
    for fn, args in ((c.status, (target, 'json')), (c.cancel, (target,)),
                     (c.commit, (target,)), (c.retry, (target,)),
                     (c.pause, (target, True)), (c.pause, (target, False))):
        r, msg = call(fn, *args)
        assert r == -errno.EACCES, (fn, r, msg)
        # no other pool's name leaks through a refusal by task id
        if not target.startswith(('b/', 'c/')):
            assert "'b'" not in msg and "'c'" not in msg


def test_queue_wide_pause_needs_unscoped_caps() -> None:
    c = commands({('a', '')})
    assert call(c.pause, None, True)[0] == -errno.EACCES
    assert call(c.pause, None, False)[0] == -errno.EACCES
    assert not c.table.queue_paused
    c = commands({('a', '')}, unscoped=True)
    assert call(c.pause, None, True)[0] == 0 and c.table.queue_paused


def test_data_pool_is_authorized_at_add() -> None:
    c = commands({('a', ''), ('b', '')})
    for fn, args in ((c.add, ('a/img', 'b/img', AddRequest(data_pool='c'))),
                     (c.add_pool, ('a', 'b', None, AddRequest(data_pool='c')))):
        r, msg = call(fn, *args)
        assert r == -errno.EACCES and "'c'" in msg, (r, msg)


def test_namespace_scoped_caller() -> None:
    c = commands({('a', 'ns1')})
    assert call(c.ls, 'json') == (0, [])
    assert call(c.add, 'a/img', 'a/ns1/img', AddRequest())[0] == -errno.EACCES


@pytest.mark.parametrize('limit', ['1', '1000', '1023K'])
def test_bandwidth_floor(limit: str) -> None:
    c = commands({('a', ''), ('b', '')})
    r, msg = call(c.add, 'a/img', 'b/img', AddRequest(bandwidth_limit=limit))
    assert r == -errno.EINVAL and '1M' in msg


class MigratingInto(RbdPort):
    """One migration c/src (id 'sid', pool id 3) -> b/dst, as its headers say."""

    def read_image(self, spec: ImageSpec) -> End:
        assert str(spec) == 'b/dst', spec
        return End('did', 'did', True, MigrationHeader(HeaderType.DST, 3, '', 'src', 'sid',
                                                       MigState.PREPARED), None, 2)

    def pool_name(self, pool_id: int) -> str:
        return {1: 'a', 2: 'b', 3: 'c'}[pool_id]


def test_adopt_authorizes_the_end_the_header_names() -> None:
    c = commands({('a', ''), ('b', '')}, adapter=MigratingInto())
    before = [t.id for t in c.table.all()]
    r, msg = call(c.adopt, 'b/dst')
    assert r == -errno.EACCES and "'c'" in msg, msg
    assert [t.id for t in c.table.all()] == before


def test_adopt_returns_the_failed_task_that_owns_the_migration() -> None:
    c = commands({('a', ''), ('b', ''), ('c', '')}, adapter=MigratingInto())
    c.table.put(Task(id='t-failed', source='c/src', destination='b/dst', created=1.0,
                     source_image_id='sid', state=State.FAILED, error='boom'))
    r, view = call(c.adopt, 'b/dst')
    assert r == 0 and view['id'] == 't-failed', view
    assert len([t for t in c.table.all() if t.source_image_id == 'sid']) == 1
    # and a retry of a failed task whose migration another task runs is refused
    c.table.put(Task(id='t-live', source='c/src', destination='b/dst2', created=2.0,
                     source_image_id='sid', state=State.QUEUED))
    r, msg = call(c.retry, 't-failed')
    assert r == -errno.EBUSY and 't-live' in msg


class OneImage(RbdPort):
    """a/img exists (with the given clones); b has the given pool options."""

    def __init__(self, clones: List[str], conf: Dict[str, str]) -> None:
        self.clones, self.conf = clones, conf

    def namespace_exists(self, pool: str, namespace: str) -> bool:
        return True

    def image_exists(self, spec: ImageSpec) -> bool:
        return str(spec) == 'a/img'

    def trashed_source(self, spec: ImageSpec) -> Optional[str]:
        return None

    def pool_config(self, spec: PoolSpec) -> Dict[str, str]:
        return self.conf if spec.pool == 'b' else {}

    def image_info(self, spec: ImageSpec, with_used: bool = True) -> ImageInfo:
        return ImageInfo('sid', 1 << 20, 4 << 20, 4 << 20, 1, 1, -1, [], self.clones, [],
                         1 << 20, False, False)


POOLS = {n: PoolInfo(n, i, True, False, False, None)
         for i, n in ((1, 'a'), (2, 'b'), (3, 'c'))}


@pytest.mark.parametrize('clones,conf,ok', [
    (['a/kid'], {}, True),
    (['c/kid'], {}, False),                              # librbd re-links a clone in c
    ([], {'rbd_default_data_pool': 'c'}, False),         # data objects would land in c
    ([], {'rbd_journal_pool': 'c'}, False),
    ([], {'rbd_default_data_pool': 'b'}, True),
])
def test_pools_librbd_writes_besides_the_ends(clones: List[str], conf: Dict[str, str],
                                              ok: bool) -> None:
    c = commands({('a', ''), ('b', '')}, adapter=OneImage(clones, conf), pool_info=POOLS)
    r, out = call(c.add, 'a/img', 'b/img', AddRequest(allow_descendants=True, dry_run=True))
    if ok:
        assert r == 0 and out['ok'], out
    else:
        assert r == -errno.EACCES, out
        assert 'kid' not in out, out                     # the clone is not named


def test_another_tenants_task_is_not_described() -> None:
    c = commands({('a', '')}, adapter=OneImage([], {}), pool_info=POOLS)
    r, msg = call(c.add, 'a/p', 'a/q', AddRequest())     # a/p is t-ab's source (a -> b)
    assert r == -errno.EBUSY and 'b/p' not in msg and 't-ab' not in msg, msg


def test_commands_reach_the_scheduler_only_through_its_handle() -> None:
    """The commands and the importer import neither the scheduler nor the
    runner (handles.SchedulerHandle is their door); the worker fits the door."""
    handle: SchedulerHandle = worker()          # mypy checks the Worker fits it
    assert callable(handle.kick)
    code = ('import sys\n'
            'sys.modules["rbd_livemigrate.scheduler"] = None\n'   # an import of it raises
            'sys.modules["rbd_livemigrate.pipeline"] = None\n'
            'import rbd_livemigrate.commands, rbd_livemigrate.importer\n')
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, UNITTEST='1', PYTHONPATH=os.path.join(here, '..', '..'))
    p = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
