"""What a new user tries first, on whichever release LM_RELEASE names (issue
22's acceptance, run on Pacific, Reef and Tentacle): a 1 GiB image with a
snapshot moves to another pool with a new object size, the active mgr is
killed (-9) in the middle of the copy, the standby finishes, head and
snapshot are identical, and ``ceph progress`` showed the migration."""

from typing import Any, Dict, Iterator, List

import pytest

from cluster import Cluster
from conftest import Livemigrate, destroy_cluster, make_cluster, rbdtools, wait_for

MiB = 1 << 20
GiB = 1 << 30


@pytest.fixture(scope='module')
def acluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    # the source, the copy and memstore's overhead: 4 GiB per OSD
    c = make_cluster('lm-accept-', ['a', 'b'], osd_bytes=4 << 30)
    yield c
    destroy_cluster(c, request.session.testsfailed > 0)


def ours(events: List[Dict[str, Any]], task_id: str) -> List[Dict[str, Any]]:
    return [e for e in events if e.get('refs', {}).get('origin') == 'rbd_livemigrate'
            and e.get('refs', {}).get('task_id') == task_id]


def test_gib_image_with_snapshot_survives_mgr_kill(acluster: Cluster) -> None:
    c, lm, name = acluster, Livemigrate(acluster), 'vm-disk'
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(c.conf, src, GiB, seed=name, snaps=1)
    before = rbdtools.checksums(c.conf, src)
    assert len(before) == 2 and len(set(before.values())) == 2     # head and snap1 differ
    assert rbdtools.image_layout(c.conf, src)['object_size'] == 4 * MiB

    # 64 MiB/s: the copy takes about 16 s, long enough to kill the mgr in it
    task = lm.add(src, dst, '--object-size', '8M', '--bandwidth-limit', '64M')
    lm.wait(task['id'], pred=lambda t: t['state'] == 'executing' and t['progress'] > 0.15,
            timeout=120)
    running = ours(c.ceph_json('progress', 'json')['events'], task['id'])
    assert running and 0 < running[0]['progress'] < 1, running
    assert name in running[0]['message']

    killed = c.active_mgr()
    c.kill_mgr(killed)                                  # SIGKILL; the standby takes over
    wait_for(lambda: c.active_mgr() not in ('', killed), 60, 'a standby to take over')
    c.wait_module_ready(timeout=90)
    c.start_mgr(killed)                                 # back as the standby

    done = lm.wait(task['id'], timeout=600)
    assert done['state'] == 'committed'
    assert rbdtools.checksums(c.conf, dst) == before
    layout = rbdtools.image_layout(c.conf, dst)
    assert layout['object_size'] == 8 * MiB
    assert not rbdtools.image_exists(c.conf, src)
    assert name not in rbdtools.trash_names(c.conf, 'a')
    # the new active mgr's progress module lists the migration as completed
    wait_for(lambda: bool(ours(c.ceph_json('progress', 'json')['completed'], task['id'])),
             30, 'the completed progress event')
