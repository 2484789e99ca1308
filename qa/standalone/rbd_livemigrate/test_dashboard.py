"""The Ceph dashboard shows live migrations, on a cluster of its own.

The module reports each task through the mgr ``progress`` module; the
dashboard's ``/api/summary`` lists every progress event under
``executing_tasks`` as ``progress/<message>`` with a percentage, and under
``finished_tasks`` once it completes or fails.  Enabling the dashboard makes
the mgrs respawn, hence the separate cluster.  The REST checks use urllib;
the browser check drives Debian's chromium with Selenium (the helpers and the
screenshot are in qa/dashboard_screenshot.py).
"""

import datetime
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from cluster import Cluster
from conftest import Livemigrate, destroy_cluster, make_cluster, rbdtools, wait_for

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from dashboard_screenshot import (  # noqa: E402
    DashboardClient, enable_dashboard, ensure_browser, migration_tasks, take_screenshot)

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
    # the comparison before commit has an event of its own (metadata 'verify')
    return [t for t in summary.get('finished_tasks', [])
            if (t.get('metadata') or {}).get('task_id') == task_id
            and not (t.get('metadata') or {}).get('verify')]


def test_login_needs_credentials(dash: Tuple[Cluster, DashboardClient]) -> None:
    _, client = dash
    anonymous = DashboardClient(client.url, client.user, 'wrong-' + client.password)
    status, _ = anonymous.request('GET', '/api/summary')
    assert status == 401
    with pytest.raises(RuntimeError, match='login failed'):
        anonymous.login()


def test_api_version_from_415(dash: Tuple[Cluster, DashboardClient]) -> None:
    """The client sends the API version the dashboard names in a 415, whatever it is."""
    _, client = dash
    client.versions['/api/summary'] = '9.9'
    try:
        status, body = client.request('GET', '/api/summary')
        assert status == 200 and 'executing_tasks' in body
        assert re.fullmatch(r'\d+\.\d+', client.versions['/api/summary'])
        assert client.versions['/api/summary'] != '9.9'
    finally:
        client.versions.pop('/api/summary', None)


def test_summary_shows_progress(dash: Tuple[Cluster, DashboardClient], dlm: Livemigrate,
                                name: str) -> None:
    c, client = dash
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(c.conf, src, 32 * MiB, seed=name)
    before = rbdtools.checksums(c.conf, src)
    # 16 s of copy at 2 MiB/s: about 6 points a second
    task = dlm.add(src, dst, '--bandwidth-limit', '2M')

    seen: List[Tuple[int, float]] = []
    first: List[Dict[str, Any]] = []

    def bar_moves() -> bool:
        entries = migration_tasks(client.summary(), src)
        if entries:
            first[:] = first or entries[:1]
            status = dlm.status(task['id'])        # read after the dashboard: never behind
            seen.append((entries[0]['progress'], status['progress']))
        return len([p for p, _ in seen if 0 < p < 95]) >= 2 and seen[-1][0] > seen[0][0]
    wait_for(bar_moves, 60, 'a moving bar for {} in /api/summary'.format(src), interval=1)

    print('dashboard saw (dashboard %, module progress):', seen)
    for percent, progress in seen:
        assert isinstance(percent, int) and 0 <= percent <= 100
        # the bar is the module's progress of at most a second or two before:
        # never ahead of it, and behind by no more than two seconds of copy
        assert percent <= progress * 100 + 1, seen
        assert progress * 100 - percent <= 15, seen
    assert [p for p, _ in seen] == sorted(p for p, _ in seen), seen     # it never goes back
    assert first, 'no entry seen'
    for e in first:
        assert e['name'] == '{}{} to {}'.format(PREFIX, src, dst)
        assert e['metadata'] == {'origin': 'rbd_livemigrate', 'task_id': task['id'],
                                 'source': src, 'destination': dst}
        # UTC, ISO 8601: '...Z' up to Reef, '...+00:00' on Tentacle (the dashboard's format)
        begin = datetime.datetime.fromisoformat(e['begin_time'].replace('Z', '+00:00'))
        assert begin.utcoffset() == datetime.timedelta(0), e['begin_time']

    dlm.wait(task['id'])
    assert rbdtools.checksums(c.conf, dst) == before

    def done() -> bool:
        s = client.summary()
        return not migration_tasks(s, src) and bool(finished(s, task['id']))
    wait_for(done, 30, 'the migration to move to finished_tasks', interval=1)
    (f,) = finished(client.summary(), task['id'])
    assert f['success'] is True and f['progress'] == 100 and f['exception'] is None
    assert f['name'] == '{}{} to {}'.format(PREFIX, src, dst)
    assert isinstance(f['duration'], (int, float)) and f['duration'] >= 0


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


def test_browser_shows_bar(dash: Tuple[Cluster, DashboardClient], dlm: Livemigrate,
                           name: str, tmp_path: Path) -> None:
    """An operator logged in to the dashboard sees the running migration's bar."""
    c, client = dash
    ensure_browser()
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(c.conf, src, 48 * MiB, seed=name)
    before = rbdtools.checksums(c.conf, src)
    task = dlm.add(src, dst, '--bandwidth-limit', '2M')
    png = str(tmp_path / 'dashboard-{}.png'.format(c.release))
    title = 'Live-migrating RBD image {} to {}'.format(src, dst)

    t0 = time.monotonic()
    shown = take_screenshot(client.url, client.user, client.password, png, title)
    print('saw {!r} in the DOM after {:.1f}s, screenshot {}'.format(
        shown, time.monotonic() - t0, png))
    assert shown['text'].splitlines()[0] == title, shown
    width = re.search(r'width: ([0-9.]+)%', shown['style'])
    percent = re.search(r'^(\d+) %$', shown['text'], re.MULTILINE)
    assert width and percent, shown
    assert 0 < float(width.group(1)) == int(percent.group(1)) < 100, shown
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert os.path.getsize(png) > 10000

    dlm.wait(task['id'])
    assert rbdtools.checksums(c.conf, dst) == before
