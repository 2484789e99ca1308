import json

import pytest

from rbd_livemigrate.errors import WrongState
from rbd_livemigrate.task import TASK_VERSION, CorruptRecord, Layout, State, Task, can_move

NOW = 1_700_000_000.0


def make(**kw: object) -> Task:
    return Task(id='t1', source='a/img', destination='b/img', created=NOW, **kw)  # type: ignore


def test_happy_path() -> None:
    t = make()
    for s in (State.PREPARING, State.PREPARED, State.EXECUTING, State.EXECUTED,
              State.COMMITTING, State.COMMITTED):
        t = t.moved_to(s, NOW + 1)
    assert t.state == State.COMMITTED
    assert t.started == NOW + 1 and t.finished == NOW + 1
    assert t.progress == 1.0 and t.terminal and t.done and not t.needs_worker


@pytest.mark.parametrize('old,new', [
    (State.QUEUED, State.EXECUTING), (State.QUEUED, State.COMMITTING),
    (State.COMMITTED, State.QUEUED), (State.ABORTED, State.PREPARING),
    (State.COMMITTING, State.ABORTING), (State.PREPARED, State.PREPARING),
])
def test_refused(old: State, new: State) -> None:
    assert not can_move(old, new)
    with pytest.raises(WrongState):
        make(state=old).moved_to(new, NOW)


def test_abort_from_every_live_state() -> None:
    for s in (State.PREPARING, State.PREPARED, State.EXECUTING, State.EXECUTED, State.FAILED):
        t = make(state=s).moved_to(State.ABORTING, NOW).moved_to(State.ABORTED, NOW)
        assert t.terminal and t.finished == NOW


def test_retry_clears_finished() -> None:
    t = make(state=State.FAILED, finished=NOW, error='boom')
    t = t.moved_to(State.QUEUED, NOW + 5, error=None)
    assert t.finished is None and t.error is None


def test_manual_commit_waits() -> None:
    t = make(state=State.EXECUTED, manual_commit=True)
    assert not t.needs_worker
    assert t.evolve(commit_requested=True).needs_worker
    assert t.evolve(cancel_requested=True).needs_worker


def test_round_trip() -> None:
    t = make(layout=Layout(object_size=1 << 20, features=['layering']), priority=3)
    back = Task.loads(t.dumps())
    assert back == t
    assert json.loads(t.dumps())['version'] == TASK_VERSION


@pytest.mark.parametrize('text', [
    'not json', '[]', '{}', json.dumps({'version': TASK_VERSION + 1, 'id': 'x'}),
    json.dumps({'version': 1, 'id': 'x', 'source': 'a/b', 'destination': 'c/d',
                'state': 'bogus'}),
    json.dumps({'version': 1, 'id': '', 'source': 'a/b', 'destination': 'c/d'}),
])
def test_corrupt(text: str) -> None:
    with pytest.raises(CorruptRecord):
        Task.loads(text)


def test_unknown_fields_are_ignored() -> None:
    d = make().to_json()
    d['future_field'] = 1
    assert Task.from_json(d).id == 't1'


def test_view_has_iso_times() -> None:
    v = make().moved_to(State.PREPARING, NOW).view()
    assert v['created'].endswith('Z') and v['started'].startswith('2023-11-14T')
    assert v['finished'] is None and v['error'] is None
    for key in ('id', 'source', 'destination', 'state', 'progress'):
        assert key in v
