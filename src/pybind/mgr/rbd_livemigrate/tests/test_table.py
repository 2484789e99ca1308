"""
The task table's store writes: never under the table lock; with
write-behind, a runner's changes are written by one writer thread (changes
made meanwhile coalesce, the newest record wins), while add and the
commands wait for theirs; a batch's record carries its cancel or pause to
its tasks after a crash.
"""

import threading
from typing import Dict, List, Optional

from rbd_livemigrate.batch import Batch, BatchState
from rbd_livemigrate.store import TaskStore
from rbd_livemigrate.table import TaskTable
from rbd_livemigrate.task import State, Task


class SlowStore:
    """A store whose writes take a while, like a monitor round trip."""

    def __init__(self) -> None:
        self.kv: Dict[str, str] = {}
        self.writes: List[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def get_prefix(self, p: str) -> Dict[str, str]:
        return {k: v for k, v in self.kv.items() if k.startswith(p)}

    def set_key(self, k: str, v: Optional[str]) -> None:
        self.gate.wait(10)
        self.writes.append(k)
        if v is None:
            self.kv.pop(k, None)
        else:
            self.kv[k] = v


def table(backing: SlowStore, write_behind: bool = True) -> TaskTable:
    t = TaskTable(TaskStore(backing.get_prefix, backing.set_key), write_behind=write_behind)
    t.load()
    return t


def mk(i: int, **kw: object) -> Task:
    return Task(id='t{}'.format(i), source='a/i{}'.format(i), destination='b/i{}'.format(i),
                created=float(i), **kw)  # type: ignore[arg-type]


def test_put_waits_for_its_write() -> None:
    b = SlowStore()
    t = table(b)
    t.put(mk(1))
    assert 'task/t1' in b.kv


def test_runner_changes_coalesce_and_the_newest_wins() -> None:
    b = SlowStore()
    t = table(b)
    t.put(mk(1))
    b.gate.clear()                       # the monitor is slow: writes queue up
    t.update('t1', lambda x: x.evolve(priority=1), wait=False)
    for p in range(2, 40):
        t.update('t1', lambda x, p=p: x.evolve(priority=p), wait=False)   # type: ignore
    assert t.get('t1').priority == 39    # in memory at once
    b.gate.set()
    t.flush()
    assert Task.loads(b.kv['task/t1']).priority == 39
    assert b.writes.count('task/t1') <= 3          # add, then one or two for 39 changes


def test_a_removed_task_is_not_written_back() -> None:
    b = SlowStore()
    t = table(b)
    t.put(mk(1, state=State.COMMITTED))
    t.update('t1', lambda x: x.evolve(priority=5), wait=False)
    t.remove(['t1'])
    t.flush()
    assert 'task/t1' not in b.kv


def test_a_batch_record_carries_its_cancel_and_pause_over_a_restart() -> None:
    b = SlowStore()
    t = table(b, write_behind=False)
    cancelled = Batch(id='batch-0000000a', source='a', destination='b',
                      state=BatchState.CANCELLED)
    paused = Batch(id='batch-0000000b', source='a', destination='c', paused=True,
                   state=BatchState.EXPANDED)
    t.put_batch(cancelled)
    t.put_batch(paused)
    t.put(mk(1, batch_id=cancelled.id))
    t.put(mk(2, batch_id=cancelled.id, state=State.COMMITTED))
    t.put(mk(3, batch_id=paused.id))
    again = table(b, write_behind=False)
    assert again.get('t1').cancel_requested and again.cancels == {'t1'}
    assert not again.get('t2').cancel_requested
    assert again.get('t3').paused
    assert Task.loads(b.kv['task/t1']).cancel_requested


def test_housekeeping_indexes_follow_every_change() -> None:
    """The finished, notable and per-batch counts the table keeps are what
    walking every task gives, through puts, updates, removals and a reload."""
    import random
    rnd = random.Random(7)
    backing = SlowStore()
    tab = table(backing, write_behind=False)
    states = list(State)

    def check() -> None:
        tasks = list(tab.tasks.values())
        assert tab.terminal == {t.id for t in tasks if t.terminal}
        assert tab.notable == {t.id for t in tasks if t.state in (State.FAILED, State.EXECUTING)
                               or (t.blocked_reason and not t.done)}
        counts: Dict[str, Dict[str, int]] = {}
        for t in tasks:
            if t.batch_id:
                c = counts.setdefault(t.batch_id, {})
                c[t.state.value] = c.get(t.state.value, 0) + 1
        assert {b: c for b, c in tab.batch_counts.items() if c} == counts
    for i in range(60):
        tab.put(Task(id='t{}'.format(i), source='a/i{}'.format(i), destination='b/i{}'.format(i),
                     created=float(i), batch_id=rnd.choice([None, 'b1', 'b2'])))
    for _ in range(400):
        task_id = 't{}'.format(rnd.randrange(60))
        if task_id not in tab.tasks:
            continue
        state = rnd.choice(states)
        reason = rnd.choice([None, 'held'])
        tab.update(task_id, lambda t: t.evolve(state=state, blocked_reason=reason))
        if rnd.random() < 0.05:
            tab.remove([task_id])
        check()
    tab.load()
    check()
