"""The Ceph dashboard shows live migrations, on a cluster of its own.

The module reports each task through the mgr ``progress`` module; the
dashboard's ``/api/summary`` lists every progress event under
``executing_tasks`` as ``progress/<message>`` with a percentage, and under
``finished_tasks`` once it completes or fails.  Enabling the dashboard makes
the mgrs respawn, hence the separate cluster.  Uses urllib only (see
qa/dashboard_screenshot.py for the helpers and the screenshot).
"""

import os
import secrets
import sys
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from cluster import Cluster
from conftest import Livemigrate, destroy_cluster, make_cluster, rbdtools, wait_for

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from dashboard_screenshot import DashboardClient, enable_dashboard, migration_tasks  # noqa: E402

MiB = 1 << 20
PREFIX = 'progress/Live-migrating RBD image '


@pytest.fixture(scope='module')
def dash(request: pytest.FixtureRequest) -> Iterator[Tuple[Cluster, DashboardClient]]:
    c = make_cluster('lm-dash-', ['a', 'b'])
    try:
        user, password = 'lmadmin', 'Lm-' + secrets.token_urlsafe(12) + '-9'
        t0 = time.monotonic()
        url = enable_dashboard(c, user, password)
        print('dashboard up at {} in {:.1f}s'.format(url, time.monotonic() - t0))
        client = DashboardClient(url, user, password)
        client.login()
        yield c, client
    finally:
        destroy_cluster(c, request.session.testsfailed > 0)


@pytest.fixture
def dlm(dash: Tuple[Cluster, DashboardClient]) -> Livemigrate:
    return Livemigrate(dash[0])


def finished(summary: Dict[str, Any], task_id: str) -> List[Dict[str, Any]]:
    return [t for t in summary.get('finished_tasks', [])
            if (t.get('metadata') or {}).get('task_id') == task_id]


def test_login_needs_credentials(dash: Tuple[Cluster, DashboardClient]) -> None:
    _, client = dash
    anonymous = DashboardClient(client.url, client.user, 'wrong-' + client.password)
    status, _ = anonymous.request('GET', '/api/summary')
    assert status == 401
    with pytest.raises(RuntimeError, match='login failed'):
        anonymous.login()


def test_summary_shows_progress(dash: Tuple[Cluster, DashboardClient], dlm: Livemigrate,
                                name: str) -> None:
    c, client = dash
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(c.conf, src, 32 * MiB, seed=name)
    before = rbdtools.checksums(c.conf, src)
    task = dlm.add(src, dst, '--bandwidth-limit', '4M')

    seen: List[Tuple[int, float]] = []

    def bar_moves() -> bool:
        entries = migration_tasks(client.summary(), src)
        if entries:
            status = dlm.status(task['id'])
            seen.append((entries[0]['progress'], status['progress']))
        return len([p for p, _ in seen if 0 < p < 95]) >= 2 and seen[-1][0] > seen[0][0]
    wait_for(bar_moves, 60, 'a moving bar for {} in /api/summary'.format(src), interval=1)

    entry = migration_tasks(client.summary(), src) or [None]
    print('dashboard saw (dashboard %, module progress):', seen)
    for percent, progress in seen:
        assert isinstance(percent, int) and 0 <= percent <= 100
        # the module updates progress about once a second: the two agree roughly
        assert abs(percent - progress * 100) <= 35, seen
    if entry[0] is not None:
        e = entry[0]
        assert e['name'] == '{}{} to {}'.format(PREFIX, src, dst)
        assert e['metadata'] == {'origin': 'rbd_livemigrate', 'task_id': task['id'],
                                 'source': src, 'destination': dst}
        assert e['begin_time'].endswith('Z')

    dlm.wait(task['id'])
    assert rbdtools.checksums(c.conf, dst) == before

    def done() -> bool:
        s = client.summary()
        return not migration_tasks(s, src) and bool(finished(s, task['id']))
    wait_for(done, 30, 'the migration to move to finished_tasks', interval=1)
    (f,) = finished(client.summary(), task['id'])
    assert f['success'] is True and f['progress'] == 100 and f['exception'] is None
    assert f['name'] == '{}{} to {}'.format(PREFIX, src, dst)
    assert 0 < f['duration'] < 120


def test_cancel_shows_failed(dash: Tuple[Cluster, DashboardClient], dlm: Livemigrate,
                             name: str) -> None:
    c, client = dash
    spec = 'a/' + name
    rbdtools.create_image(c.conf, spec, 32 * MiB, seed=name)
    task = dlm.add(spec, '--object-size', '1M', '--bandwidth-limit', '4M')
    wait_for(lambda: bool(migration_tasks(client.summary(), spec)), 60,
             'the in-place migration in executing_tasks', interval=1)
    (e,) = migration_tasks(client.summary(), spec)
    assert e['name'] == '{}{} (layout change)'.format(PREFIX, spec)
    dlm.ok('cancel', task['id'])
    wait_for(lambda: bool(finished(client.summary(), task['id'])), 30,
             'the cancelled migration in finished_tasks', interval=1)
    (f,) = finished(client.summary(), task['id'])
    assert f['success'] is False
    assert f['exception'] == {'detail': 'cancelled'}
    assert not migration_tasks(client.summary(), spec)
