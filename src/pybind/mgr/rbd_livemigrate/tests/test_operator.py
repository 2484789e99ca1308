"""What an operator is told: mistakes refused at once, options never
silently dropped, every wait explained (issue 25)."""

import errno
import json
from typing import Any

from rbd_livemigrate.commands import AddRequest
from rbd_livemigrate.formatting import human_duration, reply, task_rows
from rbd_livemigrate.progress import message
from rbd_livemigrate.spec import ImageSpec
from rbd_livemigrate.task import State
from rbd_livemigrate.views import queue_entry, refusal_entry, removed_entry

from test_batch import Fleet, commands
from test_commands_auth import call


class NoNamespace(Fleet):
    def namespace_exists(self, pool: str, namespace: str) -> bool:
        return namespace == ''


def test_add_pool_refuses_what_it_can_check_at_once() -> None:
    c = commands(3, fleet=NoNamespace(3))
    for args, err, word in ((('a', 'nopool'), errno.ENOENT, 'nopool'),
                            (('nopool', 'b'), errno.ENOENT, 'nopool'),
                            (('a/ns9', 'b'), errno.ENOENT, 'ns9'),
                            (('a', 'b/ns9'), errno.ENOENT, 'ns9'),
                            (('a', 'a'), errno.EINVAL, 'changes nothing')):
        r, msg = call(c.add_pool, *args, None, AddRequest())
        assert r == -err and word in msg, (args, r, msg)
    r, msg = call(c.add_pool, 'a', 'b', None, AddRequest(data_pool='nopool'))
    assert r == -errno.ENOENT and 'nopool' in msg
    assert c.table.all_batches() == [] and c.table.all() == []
    # the same pool with a layout change is a batch
    r, b = call(c.add_pool, 'a', 'a', None, AddRequest(object_size='1M'))
    assert r == 0 and b['id'].startswith('batch-')


def test_add_again_with_other_options_is_refused_naming_them() -> None:
    c = commands(2)
    r, t = call(c.add, 'a/img0000', 'b/img0000', AddRequest())
    assert r == 0
    # the same request again: the same task
    assert call(c.add, 'a/img0000', 'b/img0000', AddRequest())[1]['id'] == t['id']
    for req, word in ((AddRequest(manual_commit=True), 'manual_commit'),
                      (AddRequest(priority=5), 'priority'),
                      (AddRequest(bandwidth_limit='10M'), 'bandwidth_limit'),
                      (AddRequest(object_size='1M'), 'layout'),
                      (AddRequest(verify='off'), 'verify')):
        r, msg = call(c.add, 'a/img0000', 'b/img0000', req)
        assert r == -errno.EEXIST and word in msg and t['id'] in msg, (req, msg)
        assert '\n' not in msg
    task = c.table.get(t['id'])
    assert not task.manual_commit and task.priority == 0


def test_nonsense_is_refused() -> None:
    c = commands(2)
    r, msg = call(c.add, 'a/img0000', 'b/img0000', AddRequest(bandwidth_limit='10P'))
    assert r == -errno.EINVAL and 'too large' in msg
    r, t = call(c.add, 'a/img0000', 'b/img0000', AddRequest(manual_commit=True))
    r, msg = call(c.pause, t['id'], False)
    assert r == -errno.EINVAL and 'not paused' in msg
    c.table.update(t['id'], lambda x: x.evolve(state=State.COMMITTED))
    r, msg = call(c.commit, t['id'])
    assert r == -errno.EINVAL and 'already committed' in msg and 'by itself' not in msg


def test_cancel_of_a_finished_batch_is_refused() -> None:
    c = commands(2)
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest())
    c.batches.expand(b['id'])
    for t in c.table.all():
        c.table.update(t.id, lambda x: x.evolve(state=State.COMMITTED))
    r, msg = call(c.cancel, b['id'])
    assert r == -errno.EINVAL and 'finished' in msg


def test_waits_are_explained() -> None:
    c = commands(1)
    r, t = call(c.add, 'a/img0000', 'b/img0000', AddRequest(manual_commit=True))
    # right after add, with slots free: not "waiting for a free slot"
    assert 'free slot' not in str(c.views.task(c.table.get(t['id']))['waiting_reason'])
    task = c.table.update(t['id'], lambda x: x.evolve(state=State.EXECUTED, progress=0.95))
    v: Any = c.views.task(task)
    assert v['waiting_reason'] == 'executed: waiting for ceph rbd livemigrate commit {}'.format(
        t['id'])
    assert 'commit ' + t['id'] in task_rows([v])
    assert 'waiting for ceph rbd livemigrate commit' in message(task)
    # paused: the rate and time left are not shown as if the copy ran
    task = c.table.update(t['id'], lambda x: x.evolve(
        state=State.EXECUTING, rate_bytes_per_sec=1e6, size_bytes=1 << 30, bytes_copied=0))
    assert c.views.task(task)['eta_seconds'] is not None
    r, v = call(c.pause, t['id'], True)
    assert v['rate_bytes_per_sec'] is None and v['eta_seconds'] is None
    assert 'resume ' + t['id'] in message(c.table.get(t['id']))
    # an aborted task is at 0, not at its last share
    task = c.table.update(t['id'], lambda x: x.moved_to(State.ABORTED, 2.0))
    assert task.progress == 0.0
    assert human_duration(3723) == '1h02m03s' and human_duration(65) == '1m05s'


def test_a_clients_write_is_not_called_corruption() -> None:
    from rbd_livemigrate.task import VerifyMode
    from rbd_livemigrate.verify import HEAD, explain_mismatch
    text = 'the head differs at offset 4194304'
    said = explain_mismatch(VerifyMode.FULL, HEAD, text, 1)
    assert said.startswith(text) and 'clients wrote 1 object' in said and 'auto' in said
    assert 'may have written' in explain_mismatch(VerifyMode.FULL, HEAD, text, None)
    assert explain_mismatch(VerifyMode.FULL, HEAD, text, 0) == text      # nobody wrote
    assert explain_mismatch(VerifyMode.FULL, 'snap1', text, 3) == text    # a snapshot


def test_rm_takes_finished_tasks_out_of_the_history() -> None:
    c = commands(3)
    ids = [call(c.add, 'a/img000{}'.format(i), 'b/img000{}'.format(i), AddRequest())[1]['id']
           for i in range(3)]
    c.table.update(ids[0], lambda x: x.evolve(state=State.COMMITTED))
    c.table.update(ids[1], lambda x: x.evolve(state=State.FAILED))
    r, msg = call(c.forget, ids[1], False)
    assert r == -errno.EBUSY and 'retry or cancel' in msg
    r, msg = call(c.forget, ids[2], False)
    assert r == -errno.EBUSY
    assert call(c.forget, None, False)[0] == -errno.EINVAL
    r, out = call(c.forget, ids[0], False)
    assert r == 0 and out == {'removed_tasks': 1}
    assert c.table.find(ids[0]) is None and c.table.find(ids[1]) is not None
    c.table.update(ids[2], lambda x: x.evolve(state=State.ABORTED))
    assert call(c.forget, None, True)[1] == {'removed_tasks': 1}
    assert [t.id for t in c.table.all()] == [ids[1]]


def test_rm_of_a_batch_and_its_count() -> None:
    c = commands(2)
    r, b = call(c.add_pool, 'a', 'b', None, AddRequest())
    c.batches.expand(b['id'])
    tasks = c.table.all()
    c.table.update(tasks[0].id, lambda x: x.evolve(state=State.COMMITTED))
    assert call(c.forget, b['id'], False)[0] == -errno.EBUSY
    # one task forgotten alone: the batch still counts it
    assert call(c.forget, tasks[0].id, False)[0] == 0
    v = call(c.status, b['id'], 'json')[1]
    assert v['committed'] == 1 and v['tasks'] == 2
    c.table.update(tasks[1].id, lambda x: x.evolve(state=State.COMMITTED))
    r, out = call(c.forget, b['id'], False)
    assert r == 0 and out['removed_batch'] == b['id']
    assert c.table.all() == [] and c.table.all_batches() == []


def test_the_partial_state_sample_covers_every_cell_over_offsets() -> None:
    """CI's kill -9 sample rotates with the commit: over enough successive
    offsets every (step, killer, layout, moment) cell of the full grid runs."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', '..',
                                    'qa', 'standalone'))
    try:
        import partial_states
    except ImportError:           # rados/rbd missing on this interpreter
        import pytest
        pytest.skip('partial_states needs python3-rados')
    full = {c.name for c in partial_states.full_cases()}
    seen = set()
    for offset in range(3 * max(len(g) for g in partial_states.GRIDS.values()) * 4):
        seen |= {c.name for c in partial_states.sample_cases(offset=offset)}
    assert seen == full, sorted(full - seen)[:5]


def test_each_kind_of_reply_has_its_plain_line() -> None:
    """formatting.reply renders each kind of reply views.py builds."""
    def plain(data: Any) -> str:
        return reply((0, json.dumps(data), ''), 'plain')[1]
    assert plain(removed_entry(2, 'batch-0123abcd')) == 'removed 2 task(s) and batch ' \
        'batch-0123abcd\n'
    assert plain(queue_entry(False)) == 'queue resumed\n'
    assert plain(refusal_entry(ImageSpec('a', '', 'x'), ImageSpec('b', '', 'x'), -13,
                               'denied')) == 'a/x -> b/x: refused: denied\n'
    assert plain({'id': 'batch-0123abcd', 'state': 'expanded', 'source': 'a',
                  'destination': 'b', 'tasks': 3, 'committed': 1}) == (
        'batch batch-0123abcd: expanded a -> b: 3 task(s), 1 committed; '
        'ceph rbd livemigrate status batch-0123abcd\n')
    assert plain([{'id': 't1', 'state': 'failed', 'source': 'a/x', 'destination': 'b/x',
                   'error': 'boom'}, queue_entry(True)]) == (
        'task t1: failed a/x -> b/x: failed: boom; ceph rbd livemigrate retry t1 or cancel '
        't1\nqueue paused\n')
    assert reply((0, json.dumps(queue_entry(True)), ''), 'json')[1] == '{"queue_paused": true}'
