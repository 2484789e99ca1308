"""
add-pool as a batch: it returns at once; the images become tasks (or
refusals with their errno) in the background; the batch is shown, paused,
resumed and cancelled as one; its record survives a restart.
"""

import errno
import json
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest

from rbd_livemigrate.batch import MAX_REFUSED, Batch, BatchState
from rbd_livemigrate.commands import AddRequest, Commands
from rbd_livemigrate.interface import ImageInfo, RbdPort
from rbd_livemigrate.preflight import PoolInfo
from rbd_livemigrate.scheduler import Worker
from rbd_livemigrate.spec import ImageSpec, PoolSpec
from rbd_livemigrate.task import CorruptRecord, State

from test_commands_auth import call
from test_pipeline import worker

POOLS = {n: PoolInfo(n, i, True, False, False, None)
         for i, n in ((1, 'a'), (2, 'b'), (3, 'c'))}


class Fleet(RbdPort):
    """Pool a holds ``n`` images; those named in ``clones`` have a clone in c."""

    def __init__(self, n: int, clones: Set[str] = frozenset()) -> None:  # type: ignore
        self.names = ['img{:04d}'.format(i) for i in range(n)]
        self.clones = clones
        self.listed = 0
        self.opened = 0             # full looks (an image open each)

    def pool_exists(self, pool: str) -> bool:
        return pool in POOLS

    def list_images(self, spec: PoolSpec) -> List[str]:
        self.listed += 1
        return list(self.names) if spec.pool == 'a' else []

    def namespace_exists(self, pool: str, namespace: str) -> bool:
        return True

    def image_exists(self, spec: ImageSpec) -> bool:
        return spec.pool == 'a' and spec.image in self.names

    def trashed_source(self, spec: ImageSpec) -> Optional[str]:
        return None

    def pool_config(self, spec: PoolSpec) -> Dict[str, str]:
        return {}

    def image_info(self, spec: ImageSpec, with_used: bool = True) -> ImageInfo:
        self.opened += 1
        kids = ['c/kid-' + spec.image] if spec.image in self.clones else []
        return ImageInfo('id-' + spec.image, 1 << 20, 4 << 20, 4 << 20, 1, 1, -1, [], kids,
                         ['s'] if kids else [], 1 << 20, False, False, header_version=1)

    def plain_image_info(self, spec: ImageSpec) -> Optional[ImageInfo]:
        if spec.image in self.clones:          # it has a snapshot: not plain
            return None
        return ImageInfo('id-' + spec.image, 1 << 20, 4 << 20, 4 << 20, 1, 1, -1, [], [],
                         [], 1 << 20, False, False, header_version=1)


def commands(n: int, rights: Set[Tuple[str, str]] = frozenset(),  # type: ignore
             clones: Set[str] = frozenset(), unscoped: bool = True,  # type: ignore
             fleet: Optional[Fleet] = None) -> Commands:
    w = worker()
    w.load()
    c = Commands(table=w, scheduler=w, adapter=fleet or Fleet(n, clones), pools=lambda: POOLS,
                 authorized=lambda p, ns: unscoped or (p, ns) in rights, clock=lambda: 1.0,
                 unscoped=lambda: unscoped)
    c.batches.start = lambda batch_id: None     # run by hand below
    return c


def scheduler(c: Commands) -> Worker:
    """The tests' table is the worker itself (module.py wires it so)."""
    assert isinstance(c.table, Worker)
    return c.table


def test_add_pool_returns_a_batch_before_listing() -> None:
    c = commands(30)
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest(allow_descendants=True))
    assert r == 0 and Batch.is_id(b['id']) and b['state'] == 'expanding', b
    assert c.adapter.listed == 0 and c.table.all() == []      # type: ignore
    c.batches.expand(b['id'])
    tasks = c.table.all()
    assert len(tasks) == 30 and {t.batch_id for t in tasks} == {b['id']}
    r, v = call(c.status, b['id'], 'json')
    assert (v['state'], v['images'], v['tasks'], v['refused_count']) == ('expanded', 30, 30, 0)
    assert v['by_state'] == {'queued': 30} and v['progress'] == 0.0 and not v['finished']
    r, text = call(c.status, b['id'], 'plain')
    assert '30 task(s)' in text


def test_the_listing_reads_plain_images_and_opens_the_rest() -> None:
    """Only an image that is not plain (here: one with a snapshot and a
    clone) is opened; each plain one's look is kept for its prepare."""
    c = commands(10, clones={'img0003'})
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest(allow_descendants=True))
    c.batches.expand(b['id'])
    assert len(c.table.all()) == 10 and c.adapter.opened == 1      # type: ignore
    kept = {c.table.get(i).source for i in c.table.seen}
    assert len(kept) == 9 and 'a/img0003' not in kept


def test_refused_images_are_listed_with_their_errno() -> None:
    c = commands(10, clones={'img0003', 'img0007'})
    r, b = call(c.add_pool, 'a', 'b', 'img000*', AddRequest())
    c.batches.expand(b['id'])
    v = call(c.status, b['id'], 'json')[1]
    assert v['tasks'] == 8 and v['refused_count'] == 2
    assert {x['source'] for x in v['refused']} == {'a/img0003', 'a/img0007'}
    assert {x['errno'] for x in v['refused']} == {-errno.EBUSY}


def test_refusals_kept_are_capped_but_counted() -> None:
    c = commands(MAX_REFUSED + 20, clones={'img{:04d}'.format(i) for i in range(200)})
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest())
    c.batches.expand(b['id'])
    v = call(c.status, b['id'], 'json')[1]
    assert v['refused_count'] == MAX_REFUSED + 20 and len(v['refused']) == MAX_REFUSED


def test_pause_resume_and_cancel_the_batch() -> None:
    c = commands(5)
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest())
    c.batches.expand(b['id'])
    assert call(c.pause, b['id'], True)[1]['paused']
    assert all(t.paused for t in c.table.all())
    assert not call(c.pause, b['id'], False)[1]['paused']
    assert not any(t.paused for t in c.table.all())
    r, v = call(c.cancel, b['id'])
    assert r == 0 and v['state'] == 'cancelled' and 'cancel in progress' in v['action']
    assert all(t.cancel_requested for t in c.table.all())


def test_a_paused_batch_adds_its_tasks_paused_and_a_cancelled_one_stops() -> None:
    c = commands(5)
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest())
    call(c.pause, b['id'], True)
    c.batches.expand(b['id'])
    assert len(c.table.all()) == 5 and all(t.paused for t in c.table.all())
    r, b2 = call(c.add_pool, 'a', 'c', None, AddRequest())
    call(c.cancel, b2['id'])
    c.batches.expand(b2['id'])
    assert c.table.batch_tasks(b2['id']) == []


def test_the_callers_rights_go_with_the_batch() -> None:
    """The images are added later, without the caller: its rights are kept
    with the batch, so a clone in a pool it may not touch is refused."""
    c = commands(4, rights={('a', ''), ('b', '')}, clones={'img0001'}, unscoped=False)
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest(allow_descendants=True))
    assert r == 0, b
    assert c.table.get_batch(b['id']).allowed == ['a', 'b']
    c.batches.expand(b['id'])
    v = call(c.status, b['id'], 'json')[1]
    assert v['tasks'] == 3 and v['refused'][0]['errno'] == -errno.EACCES
    assert 'kid' not in v['refused'][0]['message']
    # another caller, scoped elsewhere, may not see or change it
    c.access.authorized = lambda p, ns: p == 'c'
    for fn, args in ((c.status, (b['id'], 'json')), (c.cancel, (b['id'],)),
                     (c.pause, (b['id'], True))):
        assert call(fn, *args)[0] == -errno.EACCES


def test_batch_survives_a_restart_and_listing_resumes() -> None:
    c = commands(6)
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest())
    c.adapter.names = c.adapter.names[:2]          # type: ignore  # a first pass cut short
    c.batches.expand(b['id'])
    c.table.update_batch(b['id'], lambda x: x.evolve(state=BatchState.EXPANDING))
    store = c.table.store
    w2 = worker()
    w2.store = store
    w2.load()
    assert w2.get_batch(b['id']).state == BatchState.EXPANDING
    assert len(w2.batch_tasks(b['id'])) == 2
    c2 = Commands(table=w2, scheduler=w2, adapter=Fleet(6), pools=lambda: POOLS,
                  authorized=lambda p, ns: True, clock=lambda: 2.0)
    c2.batches.expand(b['id'])                     # what batches.resume starts
    assert len(w2.batch_tasks(b['id'])) == 6 and len(w2.all()) == 6


def test_progress_counts_done_tasks() -> None:
    c = commands(4)
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest())
    c.batches.expand(b['id'])
    ids = [t.id for t in c.table.all()]
    for i, st in zip(ids, (State.COMMITTED, State.COMMITTED, State.FAILED)):
        c.table.update(i, lambda t: t.evolve(state=st))
    v = call(c.status, b['id'], 'json')[1]
    # a failed image is not migrated: the share done counts committed ones only
    assert v['progress'] == 0.5 and v['committed'] == 2 and v['live'] == 1
    events: List[Tuple[Any, ...]] = []
    scheduler(c).progress._remote = lambda *a, **k: events.append(a)      # type: ignore
    scheduler(c).progress.batch(c.table.get_batch(b['id']), c.table.batch_state_counts(b['id']))
    assert events[-1][1] == 'update' and \
        'Migrating pool a to b: 2/4 images migrated (1 failed)' in events[-1][3]


def test_cancelled_tasks_are_not_counted_as_migrated() -> None:
    """2 of 4 cancelled, 2 committed: 2/4 and the cancelled named; all 4
    cancelled one by one: the bar fails, it is never full."""
    for states, end in (((State.COMMITTED,) * 2 + (State.ABORTED,) * 2, 'complete'),
                        ((State.ABORTED,) * 4, 'fail')):
        c = commands(4)
        r, b = call(c.add_pool, 'a', 'b', None, AddRequest())
        c.batches.expand(b['id'])
        c.table.update_batch(b['id'], lambda x: x.evolve(state=BatchState.EXPANDED))
        for i, st in zip([t.id for t in c.table.all()], states):
            c.table.update(i, lambda t: t.evolve(state=st))
        events: List[Tuple[Any, ...]] = []
        scheduler(c).progress._remote = lambda *a, **k: events.append(a)      # type: ignore
        scheduler(c).progress.batch(c.table.get_batch(b['id']),
                                    c.table.batch_state_counts(b['id']))
        update = [e for e in events if e[1] == 'update'][-1]
        done = states.count(State.COMMITTED)
        assert '{}/4 images migrated ({} cancelled)'.format(done, 4 - done) in update[3]
        assert update[4] == done / 4
        assert events[-1][1] == end, events


@pytest.mark.parametrize('text', [
    '{}', '[]', 'nope', json.dumps({'id': 'x', 'source': 'a', 'destination': 'b',
                                    'version': 1}),
    json.dumps({'id': 'batch-0123abcd', 'source': 'a', 'destination': 'b', 'version': 9}),
    json.dumps({'id': 'batch-0123abcd', 'source': 'a', 'destination': 'b', 'version': 1,
                'images': -1}),
    json.dumps({'id': 'batch-0123abcd', 'source': 'a', 'destination': 'b', 'version': 1,
                'evil': 1}),
])
def test_bad_batch_records_are_refused(text: str) -> None:
    with pytest.raises(CorruptRecord):
        Batch.loads(text)


def test_batch_record_round_trip() -> None:
    b = Batch(id='batch-0123abcd', source='a', destination='b/ns', pattern='vm-*',
              request={'priority': 3}, allowed=['a', 'b/ns'], created=5.0,
              images=3).with_refusal('a/x', errno.EBUSY, 'busy')
    assert Batch.loads(b.dumps()) == b


def test_tasks_leaving_the_history_still_count() -> None:
    """max_history prunes committed tasks; the batch keeps counting them."""
    from rbd_livemigrate.scheduler import Options
    c = commands(30)
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest())
    c.batches.expand(b['id'])
    for t in c.table.all()[:25]:
        c.table.update(t.id, lambda x: x.evolve(state=State.COMMITTED, finished=1.0))
    scheduler(c).options = Options(max_history=5)
    scheduler(c).housekeeping(2.0, None, 0)
    assert len(c.table.all()) == 10
    v = call(c.status, b['id'], 'json')[1]
    assert v['tasks'] == 30 and v['committed'] == 25 and v['progress'] == round(25 / 30, 4)
    assert c.table.get_batch(b['id']).pruned == {'committed': 20}


def test_ls_json_reuses_unchanged_tasks_and_shows_every_change() -> None:
    """ls --format json keeps each task's text until the record (or what ls
    adds: running, why it waits) changes; the output is what encoding every
    view afresh gives."""
    c = commands(50)
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest())
    c.batches.expand(b['id'])

    def fresh() -> str:
        tasks, running, waiting = c.scheduler.snapshot()
        return json.dumps([c.views.task(t, running, waiting) for t in tasks], sort_keys=True)
    first = c.ls('json')[1]
    assert first == fresh() and len(json.loads(first)) == 50
    task = c.table.all()[7]
    c.table.update(task.id, lambda t: t.evolve(progress=0.5, error='boom'))
    call(c.pause, c.table.all()[9].id, True)
    second = c.ls('json')[1]
    assert second == fresh() and second != first
    views = {v['id']: v for v in json.loads(second)}
    assert views[task.id]['progress'] == 0.5 and views[task.id]['error'] == 'boom'
    assert views[c.table.all()[9].id]['waiting_reason'] == 'paused'
    assert c.ls('json')[1] == second


def test_batch_record_fields_are_typed_like_a_task() -> None:
    """The batch is read by the task's typed decoder (records.py): a bad
    field is named, with what was expected and what was stored."""
    good = {'id': 'batch-0123abcd', 'source': 'a', 'destination': 'b', 'version': 1}
    for changes, words in (({'images': 'many'}, 'field images: expected integer'),
                           ({'pruned': {'committed': -1}}, 'field pruned: expected object'),
                           ({'allowed': ['a', 3]}, 'field allowed: expected list of string'),
                           ({'state': 'gone'}, 'field state: expected one of expanding'),
                           ({'id': 'batch-x'}, 'field id: expected batch-<8 hex digits>')):
        with pytest.raises(CorruptRecord) as e:
            Batch.loads(json.dumps(dict(good, **changes)))
        assert str(e.value).startswith('batch record ' + words), str(e.value)
    assert Batch.loads(json.dumps(good)).state == BatchState.EXPANDING
