import json
import logging
from typing import Any, Dict, Optional

import pytest

from rbd_livemigrate.store import MAX_REASON_CHARS, TaskStore
from rbd_livemigrate.task import Layout, State, Task

NOW = 1_700_000_000.0


def good(task_id: str, **kw: Any) -> Task:
    return Task(id=task_id, source='a/{}'.format(task_id), destination='b/{}'.format(task_id),
                created=NOW, **kw)


def bad(task_id: str, **changes: Any) -> str:
    d = good(task_id).to_json()
    d.update(changes)
    return json.dumps(d)


def make_store(kv: Dict[str, Any]) -> TaskStore:
    def set_key(k: str, v: Optional[str]) -> None:
        if v is None:
            kv.pop(k, None)
        else:
            kv[k] = v
    return TaskStore(lambda p: {k: v for k, v in kv.items() if k.startswith(p)}, set_key)


def test_good_records_load_and_bad_ones_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    goods = [good('g1'), good('g2', state=State.EXECUTING, priority=-5, progress=0.5,
                              layout=Layout(object_size=1 << 23, features=['layering'])),
             good('g3', state=State.FAILED, error='boom\nbang')]
    kv: Dict[str, Any] = {'task/' + t.id: t.dumps() for t in goods}
    bads = {
        'task/b1': bad('b1', layout=[1]),
        'task/b2': bad('b2', priority='high'),
        'task/b3': bad('b3', created=None),
        'task/b4': bad('b4', progress='x'),
        'task/b5': bad('b5', paused='yes'),
        'task/b6': bad('b6', attempts=1.5),
        'task/b7': bad('b7', layout={'object_size': '8M'}),
        'task/b8': bad('b8', layout={'features': 'layering'}),
        'task/b9': bad('b9', source=5),
        'task/b10': bad('b10', priority=True),
        'task/b11': bad('b11', size_bytes=-1),
        'task/b12': bad('b12', state='bogus'),
        'task/b13': bad('b13', id='b 13'),
        'task/b14': bad('b14', progress=float('nan')),     # NaN in the JSON text
        'task/b15': '{nope',
        'task/b16': None,
        'task/b17': bad('other'),                 # key does not match the id
        'task/b18': bad('b18', version=99),
        'task/b19': json.dumps([1, 2]),
    }
    kv.update(bads)
    kv['flag/queue_paused'] = 'true'              # not a task: not read as one
    with caplog.at_level(logging.ERROR, logger='rbd_livemigrate.store'):
        tasks, skipped = make_store(kv).load()
    assert tasks == goods
    assert sorted(skipped) == sorted(bads)
    for key, why in skipped.items():
        assert why and '\n' not in why and len(why) <= MAX_REASON_CHARS, (key, why)
    assert skipped['task/b2'].startswith('task record field priority:')
    assert 'skipping stored task task/b2' in caplog.text


def test_unexpected_error_in_one_record_is_skipped(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    kv: Dict[str, Any] = {'task/g1': good('g1').dumps(), 'task/boom': 'boom',
                          'task/g2': good('g2').dumps()}
    real = Task.loads

    def loads(text: str) -> Task:
        if text == 'boom':
            raise RuntimeError('no such\nthing')
        return real(text)
    monkeypatch.setattr(Task, 'loads', staticmethod(loads))
    with caplog.at_level(logging.ERROR, logger='rbd_livemigrate.store'):
        tasks, skipped = make_store(kv).load()
    assert [t.id for t in tasks] == ['g1', 'g2']
    assert skipped == {'task/boom': 'unexpected error loading it: RuntimeError: no such thing'}
    assert any(r.exc_info for r in caplog.records)        # the traceback goes to the log


def test_save_then_load() -> None:
    kv: Dict[str, Any] = {}
    store = make_store(kv)
    t = good('s1', state=State.EXECUTED, manual_commit=True, bandwidth_limit_bytes=1 << 20)
    store.save(t)
    assert store.load() == ([t], {})
    store.delete('s1')
    assert store.load() == ([], {})
