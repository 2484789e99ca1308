"""Scheduler on the real cluster: concurrency, priority, window, pause and
resume, add-pool, the total bandwidth option."""

import datetime
import json
import threading
import time
from typing import Dict, Iterator, List, Set

import pytest

from cluster import Cluster
from conftest import Livemigrate, rbdtools, wait_for

MiB = 1 << 20
ACTIVE = ('preparing', 'executing', 'committing')


@pytest.fixture
def limit2(lm: Livemigrate) -> Iterator[None]:
    lm.set_option('max_concurrent', '2')
    yield
    lm.rm_option('max_concurrent')


def images(cluster: Cluster, name: str, n: int, size: int = 8 * MiB) -> List[str]:
    out = []
    for i in range(n):
        spec = 'a/{}-{}'.format(name, i)
        rbdtools.create_image(cluster.conf, spec, size, seed=spec)
        out.append(spec)
    return out


def test_concurrency_limit(cluster: Cluster, lm: Livemigrate, name: str, limit2: None) -> None:
    # 4 s a copy at 4 MiB/s: long enough for a loaded machine's ls to see each run
    srcs = images(cluster, name, 6, 16 * MiB)
    sums = {s: rbdtools.checksums(cluster.conf, s) for s in srcs}
    lm.ok('pause')
    try:
        ids = [lm.add(s, s.replace('a/', 'b/', 1), '--bandwidth-limit', '4M')['id']
               for s in srcs]
    finally:
        lm.ok('resume')
    peak = 0
    seen: Set[str] = set()

    def sample() -> bool:
        nonlocal peak
        tasks = {t['id']: t for t in lm.ls() if t['id'] in ids}
        active = [i for i, t in tasks.items() if t['state'] in ACTIVE]
        peak = max(peak, len(active))
        seen.update(active)
        return all(t['state'] == 'committed' for t in tasks.values())
    wait_for(sample, 240, 'all six committed', interval=0.1)
    assert peak == 2, peak
    assert seen == set(ids)
    for s in srcs:
        assert rbdtools.checksums(cluster.conf, s.replace('a/', 'b/', 1)) == sums[s]


def test_priority_added_last_starts_next(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    lm.set_option('max_concurrent', '1')
    try:
        srcs = images(cluster, name, 4)
        lm.ok('pause')
        ids = [lm.add(s, s.replace('a/', 'b/', 1), '--bandwidth-limit', '16M')['id']
               for s in srcs[:3]]
        urgent = lm.add(srcs[3], srcs[3].replace('a/', 'b/', 1), '--priority', '10')['id']
        lm.ok('resume')
        for i in ids + [urgent]:
            lm.wait(i)
        started = {t['id']: t['started'] for t in lm.ls() if t['id'] in ids + [urgent]}
        order = sorted(started, key=lambda i: started[i])
        assert order[0] == urgent, order
        assert order[1:] == ids, order
    finally:
        lm.rm_option('max_concurrent')
        lm.ok('resume')


def _window(minutes_from_now: int, length: int) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now + datetime.timedelta(minutes=minutes_from_now)
    end = start + datetime.timedelta(minutes=length)
    return '{:%H:%M}-{:%H:%M}'.format(start, end)


def witness(cluster: Cluster, name: str, objects: int = 5) -> None:
    """A clock read from the cluster, for checks that something does NOT
    happen: a client writes ``objects`` 4 MiB objects to an image of its own
    under librbd QoS at 4 MiB/s, and they are counted in the pool; a copy at
    4 MiB/s that was not held would have written about as many meanwhile."""
    spec = 'a/{}-witness'.format(name)
    rbdtools.create_image(cluster.conf, spec, objects * 4 * MiB, written=0)
    cluster.rbd('image-meta', 'set', spec, 'conf_rbd_qos_bps_limit', str(4 * MiB))
    with rbdtools.opened(cluster.conf, spec) as image:
        rbdtools.write(image, 0, objects * 4 * MiB, 'witness')
    wid = json.loads(cluster.rbd('info', '--format', 'json', spec).stdout)['id']
    assert rbdtools.data_objects(cluster.conf, 'a', wid) == objects


def test_window_closed_then_open(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    src = images(cluster, name, 1)[0]
    dst = src.replace('a/', 'b/', 1)
    before = rbdtools.checksums(cluster.conf, src)
    lm.set_option('maintenance_window', _window(120, 60))       # opens in two hours
    try:
        task = lm.add(src, dst)
        t = lm.wait(task['id'], pred=lambda t: bool(t['blocked_reason']))
        assert t['state'] == 'queued' and 'maintenance window' in t['blocked_reason']
        assert 'maintenance window' in lm.ok('status', task['id'])
        witness(cluster, name)
        # nothing prepared, read from the cluster: the source in its place, no destination
        assert lm.status(task['id'])['state'] == 'queued'
        assert not rbdtools.image_exists(cluster.conf, dst)
        assert rbdtools.image_exists(cluster.conf, src)
        assert name not in ' '.join(rbdtools.trash_names(cluster.conf, 'a'))
        lm.set_option('maintenance_window', _window(-1, 60))    # open now
        lm.wait(task['id'])
    finally:
        lm.rm_option('maintenance_window')
    assert rbdtools.checksums(cluster.conf, src.replace('a/', 'b/', 1)) == before


def test_window_closing_pauses_running_copy(cluster: Cluster, lm: Livemigrate,
                                            name: str) -> None:
    src = images(cluster, name, 1, 32 * MiB)[0]
    before = rbdtools.checksums(cluster.conf, src)
    task = lm.add(src, src.replace('a/', 'b/', 1), '--bandwidth-limit', '4M')
    t = lm.wait(task['id'], pred=lambda t: t['state'] == 'executing' and t['progress'] > 0.05)
    did = t['dest_image_id']
    lm.set_option('maintenance_window', _window(120, 60))
    try:
        t = lm.wait(task['id'], pred=lambda t: bool(t['blocked_reason']))
        assert t['state'] == 'executing'
        # held: while the witness writes 5 objects at the copy's rate, the
        # destination gets at most the object that was in flight
        held = rbdtools.data_objects(cluster.conf, 'b', did)
        witness(cluster, name)
        assert rbdtools.data_objects(cluster.conf, 'b', did) <= held + 1
        assert held < 8                     # 32 MiB: 8 objects; not done before the window
    finally:
        lm.rm_option('maintenance_window')
    lm.wait(task['id'])
    assert rbdtools.checksums(cluster.conf, src.replace('a/', 'b/', 1)) == before


def test_invalid_window_holds_queue_and_warns(cluster: Cluster, lm: Livemigrate,
                                              name: str) -> None:
    src = images(cluster, name, 1)[0]
    lm.set_option('maintenance_window', 'whenever')
    lm.set_option('blocked_warn_seconds', '1')
    try:
        task = lm.add(src, src.replace('a/', 'b/', 1))
        t = lm.wait(task['id'], pred=lambda t: bool(t['blocked_reason']))
        assert 'invalid' in t['blocked_reason'] and t['state'] == 'queued'
        wait_for(lambda: 'RBD_LIVEMIGRATE_BLOCKED' in cluster.ceph_json(
                 'health', 'detail').get('checks', {}), 30, 'RBD_LIVEMIGRATE_BLOCKED')
    finally:
        lm.rm_option('maintenance_window')
        lm.rm_option('blocked_warn_seconds')
    lm.wait(task['id'])


def test_pause_resume_one_and_queue(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    """A paused copy writes nothing to its destination while another copy
    goes on, and writes again once resumed: both read from the cluster (the
    destinations' data objects), never from the module's own counters."""
    a, b, c = images(cluster, name, 3, 48 * MiB)
    sums = {s: rbdtools.checksums(cluster.conf, s) for s in (a, b, c)}
    ta = lm.add(a, a.replace('a/', 'b/', 1), '--bandwidth-limit', '4M')['id']
    tb = lm.add(b, b.replace('a/', 'b/', 1), '--bandwidth-limit', '4M')['id']
    for t in (ta, tb):
        lm.wait(t, pred=lambda t: t['state'] == 'executing' and t['progress'] > 0.05)
    dest_ids = {t: lm.status(t)['dest_image_id'] for t in (ta, tb)}

    def objects(task_id: str) -> int:
        return rbdtools.data_objects(cluster.conf, 'b', dest_ids[task_id])
    assert lm.ok('pause', ta)['paused']
    lm.wait(ta, pred=lambda t: t['blocked_reason'] == 'paused')
    held, other = objects(ta), objects(tb)
    # while the other copy writes 3 objects (12 MiB at 4 MiB/s), the paused
    # one writes at most the object that was in flight
    wait_for(lambda: objects(tb) >= other + 3, 60, 'the other copy to go on')
    assert objects(ta) <= held + 1, (held, objects(ta))
    v = lm.status(ta)
    assert v['paused'] and v['rate_bytes_per_sec'] is None and v['eta_seconds'] is None
    assert 'paused' in lm.ok('ls')
    lm.ok('resume', ta)
    wait_for(lambda: objects(ta) >= held + 2, 60, 'the resumed copy to write again')
    lm.wait(ta)
    lm.wait(tb)
    # the whole queue
    assert lm.ok('pause')['queue_paused']
    try:
        tc = lm.add(c, c.replace('a/', 'b/', 1))['id']
        t = lm.wait(tc, pred=lambda t: bool(t['blocked_reason'] or t['waiting_reason']))
        assert t['state'] == 'queued'
        assert 'queue paused' in (t['blocked_reason'] or t['waiting_reason'])
    finally:
        assert not lm.ok('resume')['queue_paused']
    lm.wait(tc)
    for s in (a, b, c):
        assert rbdtools.checksums(cluster.conf, s.replace('a/', 'b/', 1)) == sums[s]
    assert rbdtools.trash_names(cluster.conf, 'a') == []


def test_add_pool_pattern(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    cluster.create_pool('pp-' + name[-8:])
    cluster.create_pool('pq-' + name[-8:])
    src_pool, dst_pool = 'pp-' + name[-8:], 'pq-' + name[-8:]
    specs = ['{}/vm-{}'.format(src_pool, i) for i in range(3)] + \
        ['{}/db-{}'.format(src_pool, i) for i in range(2)]
    for s in specs:
        rbdtools.create_image(cluster.conf, s, 4 * MiB, seed=s)
    sums: Dict[str, Dict[str, str]] = {s: rbdtools.checksums(cluster.conf, s) for s in specs}
    dry = lm.ok('add-pool', src_pool, dst_pool, '--pattern', 'vm-*', '--dry-run')
    assert sorted(d['source'] for d in dry) == sorted(s for s in specs if '/vm-' in s)
    assert all(d['dry_run'] and d['ok'] for d in dry)
    batch = lm.ok('add-pool', src_pool, dst_pool, '--pattern', 'vm-*', '--object-size', '1M')
    assert batch['id'].startswith('batch-'), batch
    wait_for(lambda: lm.ok('status', batch['id'], '--format', 'json')['finished'], 120,
             'the batch to finish')
    tasks = [t for t in lm.ls() if t.get('batch_id') == batch['id']]
    assert len(tasks) == 3
    for t in tasks:
        lm.wait(t['id'])
        dst = t['destination']
        assert rbdtools.checksums(cluster.conf, dst) == sums[t['source']]
        assert rbdtools.image_layout(cluster.conf, dst)['object_size'] == MiB
    for s in specs:
        assert rbdtools.image_exists(cluster.conf, s) == ('/db-' in s)
    rc, out, err = lm.run('add-pool', 'nopool', dst_pool)
    assert rc == 2 and err.strip()


def test_total_bandwidth_shared(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    """Two copies under total_bandwidth_limit_bytes 8 MiB/s write, together,
    at most that rate into the cluster (counted in the destinations' data
    objects: an upper bound, which a slow machine cannot break)."""
    srcs = images(cluster, name, 2, 48 * MiB)
    sums = {s: rbdtools.checksums(cluster.conf, s) for s in srcs}
    lm.set_option('total_bandwidth_limit_bytes', str(8 * MiB))
    try:
        ids = [lm.add(s, s.replace('a/', 'b/', 1))['id'] for s in srcs]
        for i in ids:
            lm.wait(i, pred=lambda t: t['state'] == 'executing' and t['progress'] > 0.1)
        dest_ids = [lm.status(i)['dest_image_id'] for i in ids]

        def written() -> int:
            return sum(rbdtools.data_objects(cluster.conf, 'b', d) for d in dest_ids)
        first, t1 = written(), time.monotonic()
        wait_for(lambda: written() >= first + 6, 120, '24 MiB more copied')
        rate = (written() - first) * 4 * MiB / (time.monotonic() - t1)
        for i in ids:
            lm.wait(i)
    finally:
        lm.rm_option('total_bandwidth_limit_bytes')
    # 24 MiB at 8 MiB/s in total: about 3 s; an unthrottled copy is ten times faster
    assert rate <= 8 * MiB * 1.5, rate / MiB
    for s in srcs:
        assert rbdtools.checksums(cluster.conf, s.replace('a/', 'b/', 1)) == sums[s]


def test_limits_apply_at_once(cluster: Cluster, lm: Livemigrate, name: str) -> None:
    # 16 s a copy at 2 MiB/s: the first is still running when the limit is raised
    srcs = images(cluster, name, 3, 32 * MiB)
    lm.set_option('max_concurrent', '1')
    lm.ok('pause')
    ids = [lm.add(s, s.replace('a/', 'b/', 1), '--bandwidth-limit', '2M')['id'] for s in srcs]
    lm.ok('resume')
    try:
        wait_for(lambda: sum(t['state'] in ACTIVE for t in lm.ls() if t['id'] in ids) == 1,
                 30, 'one running')
        lm.set_option('max_concurrent', '3')
        wait_for(lambda: sum(t['state'] in ACTIVE for t in lm.ls() if t['id'] in ids) == 3,
                 30, 'three running after raising the limit')
    finally:
        lm.rm_option('max_concurrent')
        for i in ids:
            lm.run('cancel', i)             # some may have committed already


def test_client_on_destination_keeps_writes(cluster: Cluster, lm: Livemigrate,
                                            name: str) -> None:
    """A client may use the destination while the copy runs; its writes survive commit."""
    src, dst = 'a/' + name, 'b/' + name
    rbdtools.create_image(cluster.conf, src, 32 * MiB, seed=name)
    task = lm.add(src, dst, '--bandwidth-limit', '4M')
    lm.wait(task['id'], pred=lambda t: t['state'] == 'executing' and t['progress'] > 0.05)
    stop = threading.Event()
    written: List[int] = []

    def writer() -> None:
        with rbdtools.opened(cluster.conf, dst) as image:
            off = 0
            while not stop.is_set() and off < 32 * MiB:
                rbdtools.write(image, off, MiB, 'client')
                written.append(off)
                off += 4 * MiB
                time.sleep(0.2)
    th = threading.Thread(target=writer)
    th.start()
    try:
        wait_for(lambda: len(written) >= 3, 60, 'client writes')
    finally:
        stop.set()
        th.join()
    lm.wait(task['id'])
    with rbdtools.connect(cluster.conf) as c, rbdtools.ioctx(c, dst) as (io, img):
        import rbd
        with rbd.Image(io, img, read_only=True) as image:
            for off in written:
                assert image.read(off, MiB) == rbdtools.pattern('client', off, MiB)
            # and what the client did not touch is the source's data
            assert image.read(MiB, MiB) == rbdtools.pattern(name, MiB, MiB)
