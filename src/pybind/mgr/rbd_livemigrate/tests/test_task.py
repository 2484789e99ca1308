import json
import enum
import typing
from dataclasses import fields
from typing import Any, Dict

import pytest

from rbd_livemigrate import records
from rbd_livemigrate.batch import Batch
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
    (State.QUEUED, State.EXECUTING), (State.EXECUTING, State.PREPARING),
    (State.ABORTING, State.QUEUED), (State.COMMITTING, State.PREPARED),
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


# -- loading records that cannot hurt ------------------------------------

def record(**changes: Any) -> Dict[str, Any]:
    """A good stored record with ``changes`` (a value of DROP removes the key)."""
    d = make(layout=Layout(object_size=1 << 22)).to_json()
    for k, v in changes.items():
        if v is DROP:
            d.pop(k, None)
        else:
            d[k] = v
    return d


DROP = object()


@pytest.mark.parametrize('field_name,changes', [
    ('layout', {'layout': [1]}),
    ('layout', {'layout': None}),
    ('layout', {'layout': 'object_size=8M'}),
    ('layout.object_size', {'layout': {'object_size': '8M'}}),
    ('layout.object_size', {'layout': {'object_size': -4096}}),
    ('layout.object_size', {'layout': {'object_size': 4096.0}}),
    ('layout.stripe_count', {'layout': {'stripe_count': True}}),
    ('layout.features', {'layout': {'features': 'layering'}}),
    ('layout.features', {'layout': {'features': ['layering', 1]}}),
    ('layout.features', {'layout': {'features': [None]}}),
    ('layout.data_pool', {'layout': {'data_pool': 5}}),
    ('layout.data_pool', {'layout': {'data_pool': 'a/b'}}),
    ('layout.data_pool', {'layout': {'data_pool': ''}}),
    ('layout.flatten', {'layout': {'flatten': 1}}),
    ('priority', {'priority': 'high'}),
    ('priority', {'priority': True}),
    ('priority', {'priority': 1.0}),
    ('priority', {'priority': None}),
    ('priority', {'priority': 2 ** 63}),
    ('created', {'created': None}),
    ('created', {'created': '2023-11-14'}),
    ('created', {'created': False}),
    ('created', {'created': 1e300}),
    ('created', {'created': -1.0}),
    ('progress', {'progress': 'x'}),
    ('progress', {'progress': -0.5}),
    ('paused', {'paused': 'yes'}),
    ('paused', {'paused': 1}),
    ('paused', {'paused': None}),
    ('manual_commit', {'manual_commit': 'false'}),
    ('attempts', {'attempts': 1.5}),
    ('attempts', {'attempts': -1}),
    ('attempts', {'attempts': '3'}),
    ('size_bytes', {'size_bytes': -1}),
    ('size_bytes', {'size_bytes': 10 ** 30}),
    ('size_bytes', {'size_bytes': True}),
    ('bytes_copied', {'bytes_copied': -4096}),
    ('bandwidth_limit_bytes', {'bandwidth_limit_bytes': -1}),
    ('bandwidth_limit_bytes', {'bandwidth_limit_bytes': '10M'}),
    ('rate_bytes_per_sec', {'rate_bytes_per_sec': [1.0]}),
    ('next_retry', {'next_retry': {}}),
    ('error', {'error': 5}),
    ('error', {'error': ['boom']}),
    ('source_image_id', {'source_image_id': 12345}),
    ('state', {'state': 'bogus'}),
    ('state', {'state': 'QUEUED'}),
    ('state', {'state': 3}),
    ('state', {'state': None}),
    ('state', {'state': ['queued']}),
    ('source', {'source': 5}),
    ('source', {'source': ''}),
    ('source', {'source': None}),
    ('source', {'source': 'img'}),
    ('source', {'source': 'a/img@snap'}),
    ('source', {'source': 'a/b/c/d'}),
    ('destination', {'destination': ['b', 'img']}),
    ('destination', {'destination': 'b/ im g'}),
    ('id', {'id': ''}),
    ('id', {'id': 7}),
    ('id', {'id': 'a/b'}),
    ('id', {'id': 't 1'}),
    ('id', {'id': 't1\n'}),
    ('id', {'id': '../t1'}),
    ('id', {'id': None}),
    ('id', {'id': DROP}),
    ('source', {'source': DROP}),
    ('version', {'version': True}),
    ('version', {'version': -1}),
])
def test_malformed_field(field_name: str, changes: Dict[str, Any]) -> None:
    with pytest.raises(CorruptRecord) as e:
        Task.from_json(record(**changes))
    msg = str(e.value)
    assert msg.startswith('task record field {}'.format(field_name)), msg
    assert '\n' not in msg and len(msg) < 300, msg


@pytest.mark.parametrize('text', [
    '{"version": 1, "id": "t1", "source": "a/b", "destination": "c/d", "progress": NaN}',
    '{"version": 1, "id": "t1", "source": "a/b", "destination": "c/d", "created": Infinity}',
    '{"version": 1, "id": "t1", "source": "a/b", "destination": "c/d", "started": -Infinity}',
    '{"version": 1, "id": "t1", "source": "a/b", "destination": "c/d", "rate_bytes_per_sec": NaN}',
    '{"version": 1, "id": "t1", "source": "a/b", "destination": "c/d", "size_bytes": 1e999}',
    '{"version": "1", "id": "t1", "source": "a/b", "destination": "c/d"}',
    '{"version": null, "id": "t1", "source": "a/b", "destination": "c/d"}',
    '{"version": 2, "id": "t1", "source": "a/b", "destination": "c/d"}',
    '[{"version": 1}]', '"task"', 'null', '1', '',
])
def test_malformed_text(text: str) -> None:
    with pytest.raises(CorruptRecord) as e:
        Task.loads(text)
    assert '\n' not in str(e.value)


def test_message_shows_the_value_cut_short() -> None:
    with pytest.raises(CorruptRecord) as e:
        Task.from_json(record(priority='high'))
    assert str(e.value) == (
        'task record field priority: expected integer from -2^63 to 2^63-1, got "high"')
    with pytest.raises(CorruptRecord) as e:
        Task.from_json(record(error=['x' * 1000, '\n']))
    assert str(e.value).endswith('got ["' + 'x' * 55 + '...')
    with pytest.raises(CorruptRecord) as e:
        Task.from_json(record(created=None))
    assert str(e.value) == ('task record field created: expected number from 0 to '
                            '253402300799, got null')


def test_old_record_takes_defaults() -> None:
    t = Task.from_json({'version': 1, 'id': 't_1-A', 'source': 'a/ns/img',
                        'destination': 'b/img', 'layout': {}})
    assert t == Task(id='t_1-A', source='a/ns/img', destination='b/img')
    t = Task.from_json({'version': 1, 'id': 't1', 'source': 'a/img', 'destination': 'b/img'})
    assert t.state == State.QUEUED and t.layout == Layout() and t.priority == 0


def test_numbers_are_typed() -> None:
    t = Task.from_json(record(created=5, progress=1, priority=-3, size_bytes=0,
                              layout={'stripe_count': 2, 'future': [1]}))
    assert type(t.created) is float and t.created == 5.0
    assert type(t.progress) is float and t.priority == -3 and t.size_bytes == 0
    assert t.layout == Layout(stripe_count=2)
    assert isinstance(t.state, State)


def test_explicit_null_for_optional_fields() -> None:
    t = Task.from_json(record(size_bytes=None, error=None,
                              layout={'features': None, 'data_pool': None}))
    assert t.size_bytes is None and t.error is None and t.layout == Layout()


def _sample(hint: Any, name: str) -> Any:
    """A value of ``hint`` that is not the field's default (for any field added later too)."""
    special = {'id': 'T_9-x', 'source': 'rbd/ns/src', 'destination': 'ssd/dst',
               'data_pool': 'ec-data', 'batch_id': 'batch-0123abcd',
               'features': ['exclusive-lock', 'layering'],
               'import_spec': '{"type":"raw","stream":{"type":"file","file_path":"/x"}}'}
    if name in special:
        return special[name]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, type(int | None)):
        return _sample([a for a in typing.get_args(hint) if a is not type(None)][0], name)
    if origin is list:
        return [_sample(typing.get_args(hint)[0], name)]
    if hint is State:
        return State.EXECUTING
    if hint is bool:
        return True
    if hint is int:
        return 7
    if hint is float:
        return 1_700_000_123.25
    if hint is str:
        return 'some {} text'.format(name)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return list(hint)[0]          # none of the enums' defaults comes first
    if hasattr(hint, '__dataclass_fields__'):
        return hint(**{f.name: _sample(h, f.name)
                       for f in fields(hint)
                       for h in [typing.get_type_hints(hint)[f.name]]})
    raise AssertionError('no sample for {} {!r}: teach _sample'.format(name, hint))


def test_fully_populated_round_trip() -> None:
    hints = typing.get_type_hints(Task)
    kw = {f.name: _sample(hints[f.name], f.name) for f in fields(Task) if f.init}
    kw['version'] = TASK_VERSION
    t = Task(**kw)
    for f in fields(Task):
        if f.name != 'version':
            assert getattr(t, f.name) != getattr(Task(id='i', source='a/b', destination='c/d'),
                                                 f.name), f.name
    back = Task.loads(t.dumps())
    assert back == t
    assert Task.loads(back.dumps()) == t


def test_every_field_type_has_a_check() -> None:
    for cls in (Task, Layout, Batch):
        for name, hint in typing.get_type_hints(cls).items():
            assert records.type_name(hint, False), name
