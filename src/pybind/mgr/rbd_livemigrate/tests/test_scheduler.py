from typing import Any, Dict, List, Optional, Tuple

from rbd_livemigrate.health import build_checks
from rbd_livemigrate.progress import ProgressReporter
from rbd_livemigrate.scheduler import (FAST_RECHECK_SECONDS, FAST_WATCH_TASKS, Options,
                                       RunnerHandle, Worker, decide, decide_ordered,
                                       history_to_drop, order_key,
                                       retry_delay)
from rbd_livemigrate.store import TaskStore
from rbd_livemigrate.task import State, Task

from test_store import make_store

NOW = 1_000_000.0


def mk(i: int, src: str = 'a', dst: str = 'b', **kw: Any) -> Task:
    kw.setdefault('created', NOW + i)
    return Task(id='t{}'.format(i), source='{}/img{}'.format(src, i),
                destination='{}/img{}'.format(dst, i), **kw)


def test_global_limit_and_order() -> None:
    tasks = [mk(i) for i in range(6)]
    d = decide(tasks, set(), Options(max_concurrent=2), NOW)
    assert d.start == ['t0', 't1']
    assert 'free slot' in d.waiting['t5']
    d = decide(tasks, {'t0'}, Options(max_concurrent=2), NOW)
    assert d.start == ['t1']


def test_a_paused_copy_frees_its_slot() -> None:
    """A tenant pausing its own running copies cannot hold the queue."""
    tasks = [mk(0, state=State.EXECUTING, paused=True), mk(1, state=State.EXECUTING,
                                                           paused=True), mk(2), mk(3)]
    d = decide(tasks, {'t0', 't1'}, Options(max_concurrent=2), NOW)
    assert d.start == ['t2', 't3']
    d = decide(tasks, {'t0', 't1'}, Options(max_concurrent=2, max_concurrent_per_pool=1), NOW)
    assert d.start == ['t2']


def test_priority_then_age() -> None:
    tasks = [mk(0), mk(1), mk(2, priority=5)]
    assert decide(tasks, set(), Options(max_concurrent=1), NOW).start == ['t2']


def test_per_pool_limit() -> None:
    tasks = [mk(0, 'a', 'b'), mk(1, 'a', 'c'), mk(2, 'x', 'y')]
    d = decide(tasks, set(), Options(max_concurrent=5, max_concurrent_per_pool=1), NOW)
    assert d.start == ['t0', 't2']
    assert 'per_pool' in d.waiting['t1']


def test_paused_retry_cancel_and_block() -> None:
    tasks = [mk(0, paused=True), mk(1, next_retry=NOW + 3), mk(2, cancel_requested=True),
             mk(3)]
    d = decide(tasks, set(), Options(max_concurrent=1), NOW, cluster_block='OSD full')
    assert d.start == ['t2']                   # cancels bypass blocks and limits
    assert d.waiting['t0'] == 'paused'
    assert d.waiting['t3'] == 'OSD full'
    assert 2.9 < d.next_tick <= 3
    d = decide(tasks, set(), Options(max_concurrent=1), NOW + 31)
    assert d.start == ['t2', 't1']


def test_done_and_manual_tasks_not_started() -> None:
    tasks = [mk(0, state=State.COMMITTED), mk(1, state=State.FAILED),
             mk(2, state=State.EXECUTED, manual_commit=True)]
    assert decide(tasks, set(), Options(), NOW).start == []


def test_retry_delay_caps() -> None:
    o = Options(retry_backoff_seconds=10, retry_backoff_max_seconds=60)
    assert [retry_delay(a, o) for a in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


def test_history() -> None:
    tasks = [mk(i, state=State.COMMITTED, finished=NOW + i) for i in range(5)] + [mk(9)]
    assert history_to_drop(tasks, 3) == ['t0', 't1']
    assert history_to_drop(tasks, 10) == []


def test_health_checks() -> None:
    tasks = [mk(0, state=State.FAILED, error='boom /etc/secret'),
             mk(1, state=State.EXECUTING, last_progress_at=NOW - 1000),
             mk(2, blocked_reason='watchers on img-2', blocked_since=NOW - 400)]
    checks = build_checks(tasks, NOW, 600, 300)
    assert checks['RBD_LIVEMIGRATE_FAILED']['count'] == 1
    # health detail is readable with mon 'allow r': task id and pools only,
    # never an image name or an error text (status shows those)
    failed = checks['RBD_LIVEMIGRATE_FAILED']['detail'][0]
    assert 't0' in failed and 'status t0' in failed
    every = ' '.join(line for c in checks.values() for line in c['detail'])
    for t in tasks:
        assert t.source.split('/', 1)[1] not in every and t.destination.split('/', 1)[1] \
            not in every
    assert 'boom' not in every and 'secret' not in every and 'img-2' not in every
    assert checks['RBD_LIVEMIGRATE_STALLED']['count'] == 1
    assert checks['RBD_LIVEMIGRATE_BLOCKED']['count'] == 1
    assert build_checks([mk(3)], NOW, 600, 300) == {}


class FakeRunner(RunnerHandle):
    started: List[str] = []

    def __init__(self, worker: Worker, task_id: str) -> None:
        self.task_id = task_id

    def start(self) -> None:
        FakeRunner.started.append(self.task_id)


def test_worker_persists_and_skips_corrupt() -> None:
    kv: Dict[str, str] = {'task/bad': '{nope', 'task/t7': mk(7).dumps()}
    store = make_store(kv)
    health: List[Dict[str, Any]] = []
    calls: List[Tuple[Any, ...]] = []
    w = Worker(store, ProgressReporter(lambda *a, **k: calls.append(a)), FakeRunner,
               health.append, lambda: None, clock=lambda: NOW)
    w.load()
    assert [t.id for t in w.all()] == ['t7'] and 'task/bad' in w.skipped
    w.put(mk(8))
    assert 'task/t8' in kv
    w.update('t8', lambda t: t.evolve(priority=4))
    assert Task.loads(kv['task/t8']).priority == 4
    w.tick()
    assert FakeRunner.started == ['t8', 't7']   # priority first
    assert 'RBD_LIVEMIGRATE_BAD_RECORD' in health[-1]


def _held_worker(hold: Optional[Any]) -> Tuple[Worker, List[Dict[str, Any]]]:
    store = make_store({})
    health: List[Dict[str, Any]] = []
    w = Worker(store, ProgressReporter(lambda *a, **k: None), FakeRunner, health.append,
               lambda: hold, clock=lambda: NOW)
    w.load()
    w.put(mk(1))
    return w, health


def test_invalid_window_warns_at_once_closed_window_never() -> None:
    from rbd_livemigrate.hold import Hold, HoldKind
    from rbd_livemigrate.window import parse_window
    import pytest
    with pytest.raises(Exception) as e:
        parse_window('10:00-10:00')                # an empty range is invalid
    w, health = _held_worker(Hold(HoldKind.WINDOW_INVALID, str(e.value)))
    w.tick()
    check = health[-1]['RBD_LIVEMIGRATE_BLOCKED']
    assert '10:00-10:00' in check['detail'][0]
    w, health = _held_worker(Hold(HoldKind.WINDOW_CLOSED, 'outside the maintenance window'))
    w.tick()
    assert 'RBD_LIVEMIGRATE_BLOCKED' not in health[-1]
    w, health = _held_worker(Hold(HoldKind.CLUSTER_HEALTH, 'cluster health OSD_FULL'))
    w.tick()
    assert 'RBD_LIVEMIGRATE_BLOCKED' not in health[-1]   # only after blocked_warn_seconds


def test_tasks_waiting_for_clients_take_no_slot_and_are_rechecked_in_turn() -> None:
    w = lambda i, **kw: mk(i, blocked_kind='watchers', blocked_reason='clients', **kw)  # noqa
    tasks = [w(0, next_retry=NOW - 1), w(1, next_retry=NOW - 5), w(2, next_retry=NOW + 9),
             mk(3)]
    d = decide(tasks, set(), Options(max_concurrent=1), NOW)
    assert d.start == ['t3']                    # the free one is not starved
    assert d.recheck == ['t1', 't0']            # longest unchecked first; t2 not due
    assert d.waiting['t0'] == 'clients'


def test_manual_cutover_waits_for_the_operator_and_then_takes_no_slot() -> None:
    tasks = [mk(0), mk(1, manual_cutover=True), mk(2)]
    d = decide(tasks, {'t0'}, Options(max_concurrent=1), NOW)
    assert d.start == []
    assert 'ceph rbd livemigrate cutover t1' in d.waiting['t1']
    tasks[1] = tasks[1].evolve(cutover_requested=True)
    d = decide(tasks, {'t0'}, Options(max_concurrent=1), NOW)
    assert d.start == ['t1']                     # past the full slot
    d = decide(tasks, {'t0'}, Options(max_concurrent=1), NOW, cluster_block='window closed')
    assert d.start == ['t1']                     # the prepare; the copy then holds
    # a cutover asked of a task that waits for its clients starts it too
    tasks[2] = tasks[2].evolve(blocked_kind='watchers', cutover_requested=True)
    assert decide(tasks, {'t0'}, Options(max_concurrent=1), NOW).start == ['t1', 't2']


def test_recheck_writes_nothing_while_clients_stay_nor_when_they_go() -> None:
    """A store write is a monitor commit, which would hold the cutover's
    snapshot copies: the look that finds the clients gone writes nothing."""
    kv: Dict[str, str] = {}
    writes: List[str] = []

    def set_key(k: str, v: Optional[str]) -> None:
        writes.append(k)
        if v is None:
            kv.pop(k, None)
        else:
            kv[k] = v
    store = TaskStore(lambda p: {k: v for k, v in kv.items() if k.startswith(p)}, set_key)
    clients = {'a/img1': ['127.0.0.1:0/1']}
    FakeRunner.started = []
    w = Worker(store, ProgressReporter(lambda *a, **k: None), FakeRunner, lambda c: None,
               lambda: None, clock=lambda: NOW, watchers=lambda spec: clients.get(spec, []))
    w.load()
    w.put(mk(1, blocked_kind='watchers', blocked_reason='x'))
    writes.clear()
    w.tick()
    t = w.get('t1')
    assert t.blocked_kind == 'watchers' and '127.0.0.1:0/1' in (t.blocked_reason or '')
    # the only source with clients is at the head of the queue: looked at fast
    assert t.next_retry == NOW + FAST_RECHECK_SECONDS
    assert writes == [] and FakeRunner.started == []
    clients.clear()
    w.update('t1', lambda t: t.evolve(next_retry=None), persist=False)
    w.tick()
    t = w.get('t1')
    assert t.blocked_kind is None and writes == []
    assert t.clients_gone_at == NOW                 # the cutover is measured from here
    w.tick()
    assert FakeRunner.started == ['t1']


def test_the_first_sources_with_clients_are_looked_at_fast() -> None:
    """The few tasks whose cutover is next (queue order) are looked at every
    FAST_RECHECK_SECONDS; the rest every blocked_recheck_seconds; the pass
    comes back in time for the next fast look."""
    clock = [NOW]
    looked: List[str] = []

    def watchers(spec: str) -> List[str]:
        looked.append(spec)
        return ['127.0.0.1:0/1']
    FakeRunner.started = []
    w = Worker(make_store({}), ProgressReporter(lambda *a, **k: None), FakeRunner,
               lambda c: None, lambda: None, clock=lambda: clock[0], watchers=watchers)
    w.load()
    n = FAST_WATCH_TASKS + 3
    for i in range(n):
        w.put(mk(i, blocked_kind='watchers', blocked_reason='x', priority=i))
    delay = w.tick()
    assert len(looked) == n and FakeRunner.started == []
    fast = {t.id for t in w.all() if t.next_retry == NOW + FAST_RECHECK_SECONDS}
    # higher priority first in the queue
    assert fast == {'t{}'.format(i) for i in range(n - FAST_WATCH_TASKS, n)}
    assert delay <= FAST_RECHECK_SECONDS + 1e-9
    looked.clear()
    clock[0] += FAST_RECHECK_SECONDS
    w.tick()
    assert sorted(looked) == sorted('a/img{}'.format(i) for i in range(n - FAST_WATCH_TASKS, n))


def test_a_pass_looks_at_live_tasks_and_housekeeping_once_a_second() -> None:
    store = make_store({})
    clock = [NOW]
    health: List[Any] = []
    FakeRunner.started = []
    w = Worker(store, ProgressReporter(lambda *a, **k: None), FakeRunner, health.append,
               lambda: None, clock=lambda: clock[0])
    w.load()
    for i in range(50):
        w.put(mk(100 + i, state=State.COMMITTED, finished=NOW))
    w.put(mk(1))
    assert w.live == {'t1'}
    w.tick()
    assert FakeRunner.started == ['t1'] and len(health) == 1
    clock[0] += 0.3
    w.tick()
    assert len(health) == 1                      # not again within the second
    clock[0] += 1.0
    w.options = Options(max_history=10)
    w.tick()
    assert len(health) == 2 and len(w.all()) == 11


def test_a_pass_stops_a_little_past_the_last_free_slot() -> None:
    """With 5,000 queued tasks a pass looks at the first few; a cancel or a
    source whose clients are to be rechecked is found wherever it is."""
    from rbd_livemigrate.scheduler import WAITING_DETAIL, decide_ordered
    from rbd_livemigrate.table import order_key
    tasks = [mk(i) for i in range(5000)]
    tasks[4000] = mk(4000, cancel_requested=True)
    tasks[4500] = mk(4500, blocked_kind='watchers', blocked_reason='clients')
    seen: List[str] = []

    def ordered() -> Any:
        for t in sorted(tasks, key=order_key):
            seen.append(t.id)
            yield t
    d = decide_ordered(ordered(), [], set(), Options(max_concurrent=2), NOW,
                       cancels=[tasks[4000]], watching=[tasks[4500]], detail=WAITING_DETAIL)
    assert d.start == ['t4000', 't0', 't1'] and d.recheck == ['t4500']
    assert len(seen) <= 2 + WAITING_DETAIL + 1
    assert d.waiting['t2'].startswith('waiting for a free slot')


def test_ls_words_the_reason_of_tasks_the_pass_did_not_reach() -> None:
    FakeRunner.started = []
    w, _ = _held_worker(None)
    for i in range(2, 200):
        w.put(mk(i))
    w.options = Options(max_concurrent=1)
    w.tick()
    running, waiting = w.run_state()
    assert 't150' not in waiting
    assert (w.why(w.get('t150'), running, waiting) or '').startswith('waiting for a free slot')
    assert w.why(w.get(FakeRunner.started[0]), running, waiting) is None


def test_a_full_pool_holds_only_its_own_tasks() -> None:
    from rbd_livemigrate.health import full_pools, health_block, pool_full_raised, pool_holds
    from rbd_livemigrate.task import Layout
    osd_map = {'pools': [{'pool_name': 'a', 'flags_names': 'hashpspool'},
                         {'pool_name': 'full', 'flags_names': 'hashpspool,full_quota'}]}
    full = full_pools(osd_map)
    assert list(full) == ['full']
    health = {'status': 'HEALTH_ERR', 'checks': {
        'POOL_FULL': {'severity': 'HEALTH_ERR', 'summary': {'message': '1 pool(s) full'}}}}
    triggers = 'POOL_FULL,HEALTH_ERR'
    # per pool: the whole queue is not held, the full pool's tasks are
    assert health_block(health, triggers, per_pool=True) is None
    assert health_block(health, triggers) is not None          # unknown pools: all held
    holds = pool_holds(health, triggers, full)
    assert list(holds) == ['full'] and 'full' in holds['full']
    assert pool_holds(health, 'OSD_FULL', full) == {}
    # without POOL_FULL raised the OSD map is not worth reading
    assert pool_full_raised(health, triggers)
    assert not pool_full_raised({'status': 'HEALTH_OK', 'checks': {}}, triggers)
    assert not pool_full_raised(health, 'OSD_FULL')
    tasks = [mk(0, src='a', dst='b'), mk(1, src='full', dst='b'), mk(2, src='a', dst='full'),
             mk(3, src='a', dst='b', layout=Layout(data_pool='full'))]
    d = decide_ordered(sorted(tasks, key=order_key), [], set(), Options(max_concurrent=8), NOW,
                       pool_blocks=holds)
    assert d.start == ['t0']
    assert all('POOL_FULL' in d.waiting[t] for t in ('t1', 't2', 't3'))
