"""Walking skeleton: add -> committed on the real cluster, ls/status, errors."""

import json
from typing import Any, Dict, List

import pytest

from cluster import Cluster
from conftest import Livemigrate, rbdtools

MiB = 1 << 20


def progress_events(cluster: Cluster) -> List[Dict[str, Any]]:
    p = cluster.ceph('progress', 'json')
    d = json.loads(p.stdout)
    return list(d.get('events', [])) + list(d.get('completed', []))


def test_add_to_committed(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 64 * MiB, seed=name, snaps=2)
    before = rbdtools.checksums(cluster.conf, src)
    task = lm.add(src, dst)
    assert task['source'] == src and task['destination'] == dst
    for key in ('id', 'state', 'progress', 'error', 'created', 'started', 'finished'):
        assert key in task
    assert task['created'].endswith('Z')
    done = lm.wait(task['id'])
    assert done['progress'] == 1.0 and done['error'] is None and done['finished']
    assert rbdtools.checksums(cluster.conf, dst) == before
    assert not rbdtools.image_exists(cluster.conf, src)
    assert name not in rbdtools.trash_names(cluster.conf, 'a')
    # the task key is in the mon config-key store
    keys = json.loads(cluster.ceph('config-key', 'ls').stdout)
    assert 'mgr/rbd_livemigrate/task/{}'.format(task['id']) in keys
    # and a completed progress event names it
    events = [e for e in progress_events(cluster)
              if e.get('refs', {}).get('task_id') == task['id']]
    assert events and events[0]['refs']['origin'] == 'rbd_livemigrate'
    completed = json.loads(cluster.ceph('progress', 'json').stdout)['completed']
    assert any(e['refs'].get('task_id') == task['id'] for e in completed)


def test_ls_and_status_formats(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    rbdtools.create_image(cluster.conf, 'a/' + name, 8 * MiB, seed=name)
    task = lm.add('a/' + name, 'b/' + name)
    lm.wait(task['id'])
    listed = lm.ls()
    assert [t['id'] for t in listed if t['id'] == task['id']]
    assert listed[-1]['created'] >= listed[0]['created']          # newest last
    pretty = lm.ok('ls', '--format', 'json-pretty')
    assert pretty == listed
    plain = lm.ok('ls')
    assert 'STATE' in plain.splitlines()[0] and task['id'] in plain
    assert 'committed' in lm.ok('status', task['id'])
    by_image = lm.status('b/' + name)
    assert by_image['id'] == task['id']


def test_second_add_returns_same_task(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src = 'a/' + name
    # 32 s of copy at 1 MiB/s: still running when the cancel comes, even on a loaded machine
    rbdtools.create_image(cluster.conf, src, 32 * MiB, seed=name)
    before = rbdtools.checksums(cluster.conf, src)
    first = lm.add(src, 'b/' + name, '--bandwidth-limit', '1M')
    second = lm.add(src, 'b/' + name, '--bandwidth-limit', '1M')
    assert second['id'] == first['id']
    same = [t for t in lm.ls() if t['source'] == src and t['state'] not in ('committed',)]
    assert len(same) == 1
    rc, out, err = lm.run('add', src, 'c/' + name)          # another destination: refused
    assert rc == 16 and err.count('\n') <= 1
    lm.ok('cancel', first['id'])
    lm.wait(first['id'], ('aborted',))
    # the source is given back byte for byte, under its name, nothing left over
    assert rbdtools.checksums(cluster.conf, src) == before
    assert not rbdtools.image_exists(cluster.conf, 'b/' + name)
    assert name not in rbdtools.trash_names(cluster.conf, 'a')


@pytest.mark.parametrize('args,errno_', [
    (['a/no-such-image', 'b/x'], 2),
    (['nopool/img', 'b/x'], 2),
    (['a/{name}', 'nopool/{name}'], 2),
    (['not-a-spec', 'b/x'], 22),
    (['a/b/c/d', 'b/x'], 22),
    (['a/{name}@snap', 'b/x'], 22),
    (['a/{name}', 'b/bad name'], 22),
])
def test_bad_add(cluster: Cluster, lm: Livemigrate, name: str, args: List[str],
                 errno_: int) -> None:
    rbdtools.create_image(cluster.conf, 'a/' + name, 4 * MiB, seed=name)
    before = rbdtools.checksums(cluster.conf, 'a/' + name)
    count = len(lm.ls())
    rc, out, err = lm.run('add', *[a.format(name=name) for a in args])
    assert rc == errno_, err
    assert err.strip() and err.strip().count('\n') == 0
    assert len(lm.ls()) == count
    assert rbdtools.checksums(cluster.conf, 'a/' + name) == before
