"""
The executor against a fake librbd (an ``RbdPort`` holding one migration's
headers in memory): it follows the planner from any state librbd is left
in, and an accepted cancel is never followed by a commit, even when the
cancel lands between the plan and the commit.
"""

import errno
from typing import Any, List, Optional, Tuple

from rbd_livemigrate.errors import LiveMigrateError, Transient
from rbd_livemigrate.interface import (Client, ImageInfo, Intent, MigrationHeader, MigState,
                                       Observation)
from rbd_livemigrate.pipeline import Runner
from rbd_livemigrate.preflight import PoolInfo
from rbd_livemigrate.progress import ProgressReporter
from rbd_livemigrate.scheduler import Worker
from rbd_livemigrate.spec import ImageSpec
from rbd_livemigrate.task import State, Task, VerifyMode

from fakes import D, S, FakeClient, FakeLibrbd, FakePool  # noqa: F401
from test_store import make_store


def worker() -> Worker:
    store = make_store({})
    return Worker(store, ProgressReporter(lambda *a, **k: None), lambda w, t: None,  # type: ignore
                  lambda checks: None, lambda: None)


POOLS = {n: PoolInfo(n, i, True, False, False, None) for i, n in ((1, 'a'), (2, 'b'))}


def run(fake: FakeLibrbd, **task: Any) -> Task:
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0,
               source_image_id=S, **task))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    return w.get('t1')


def test_full_run_records_ids() -> None:
    fake = FakeLibrbd('not-prepared')
    t = run(fake)
    assert fake.calls == ['prepare', 'execute', 'list clones', 'commit']
    assert t.state == State.COMMITTED and t.dest_image_id == D and t.error is None


def test_half_committed_is_finished_not_reported_early() -> None:
    fake = FakeLibrbd('half-committed')
    t = run(fake, state=State.EXECUTED, dest_image_id=D)
    assert fake.calls == ['finish commit of ' + S]
    assert t.state == State.COMMITTED


def test_cut_abort_is_finished_on_cancel() -> None:
    fake = FakeLibrbd('aborting')
    t = run(fake, state=State.ABORTING, cancel_requested=True, dest_image_id=D)
    assert fake.calls == ['abort via b/img']
    assert t.state == State.ABORTED and not t.cancel_requested


def test_operators_abort_is_not_undone() -> None:
    fake = FakeLibrbd('aborting')
    t = run(fake, state=State.EXECUTED, dest_image_id=D)
    assert fake.calls == ['abort via b/img']                 # finished, never re-prepared
    assert t.state == State.FAILED and 'outside this module' in (t.error or '')


def test_redone_prepare_records_the_new_destination() -> None:
    """A prepare cut short is undone and done again: the second prepare makes
    a new destination id, which replaces the one recorded from the first."""
    fake = FakeLibrbd('prepared')
    new_id = 'did2'

    def prepare(*a: Any) -> None:
        fake.calls.append('prepare')
        fake.phase = 'prepared'
        fake.did = new_id
    fake.prepare = prepare  # type: ignore[assignment]
    fake.phase = 'half-prepared'
    t = run(fake, state=State.PREPARING, dest_image_id='did')
    assert t.state == State.COMMITTED and t.dest_image_id == new_id, t
    assert fake.calls == ['abort via a/img', 'prepare', 'execute', 'list clones', 'commit']


def test_cancel_between_plan_and_commit_wins() -> None:
    """The cancel lands after the runner read the task and observed librbd,
    before it starts the commit: the commit must not run."""
    fake = FakeLibrbd('executed')
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0, source_image_id=S,
               dest_image_id=D, state=State.EXECUTED))

    def cancel_once() -> None:
        fake.on_observe = None
        w.update('t1', lambda t: t.evolve(cancel_requested=True))
    fake.on_observe = cancel_once
    Runner(w, 't1', fake, lambda: POOLS)._main()
    assert 'commit' not in fake.calls
    assert fake.calls == ['list clones', 'abort via b/img']
    assert w.get('t1').state == State.ABORTED


def test_commit_waits_for_clones_made_during_the_migration() -> None:
    """A clone of the destination made since add (not allowed by
    --allow-descendants) holds the commit; once it is gone the commit runs."""
    fake = FakeLibrbd('executed')
    fake.clones = ['b/kid', 'c/other']
    t = run(fake, state=State.EXECUTED, dest_image_id=D)
    assert fake.calls == ['list clones']
    assert t.state == State.EXECUTED and t.blocked_kind == 'descendants', t
    # the clone in the destination's pool is named; another pool's only counted
    assert 'b/kid and 1 in other pools' in (t.blocked_reason or ''), t.blocked_reason
    assert 'c/other' not in (t.blocked_reason or '') and t.next_retry is not None
    fake.clones = []
    fake.calls = []
    w = worker()
    w.put(t.evolve(next_retry=None))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    t = w.get('t1')
    assert fake.calls == ['list clones', 'commit']
    assert t.state == State.COMMITTED and t.blocked_reason is None and t.blocked_kind is None


def test_commit_with_allow_descendants_does_not_list_clones() -> None:
    fake = FakeLibrbd('executed')
    fake.clones = ['c/kid']
    t = run(fake, state=State.EXECUTED, dest_image_id=D, allow_descendants=True)
    assert fake.calls == ['commit'] and t.state == State.COMMITTED


def test_eio_while_listing_clones_fails_not_retries() -> None:
    """EIO is not transient: the task fails with the error, no retry."""
    fake = FakeLibrbd('executed')

    def broken(spec: ImageSpec) -> List[str]:
        raise LiveMigrateError("cannot list the clones of 'b/img': [errno 5] EIO", errno.EIO)
    fake.descendants = broken  # type: ignore[assignment]
    t = run(fake, state=State.EXECUTED, dest_image_id=D)
    assert 'commit' not in fake.calls
    assert t.state == State.FAILED and 'EIO' in (t.error or '') and t.attempts == 0


def test_a_task_is_written_twice_over_its_life() -> None:
    """add and committed: the rest (preparing with no protective snapshot to
    remember, ids, executing, committing, quick progress) is re-read from the
    headers after a crash."""
    fake = FakeLibrbd('not-prepared')
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0, source_image_id=S))
    stored: List[str] = []
    save = w.store.save
    w.store.save = lambda t: (stored.append(t.state.value), save(t))  # type: ignore
    Runner(w, 't1', fake, lambda: POOLS)._main()
    assert w.get('t1').state == State.COMMITTED and w.get('t1').dest_image_id == D
    assert w.writes == 2 and stored == ['committed']
    assert Task.loads(w.store._get_prefix('task/')['task/t1']).dest_image_id == D


def test_prepare_records_the_cutover_from_when_the_clients_were_seen_gone() -> None:
    fake = FakeLibrbd('not-prepared')
    w = worker()
    now = [100.0]
    w.clock = lambda: now[0]
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0,
               source_image_id=S, clients_gone_at=99.9))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    t = w.get('t1')
    assert t.state == State.COMMITTED and t.cutover_ms == 100.0


def test_manual_cutover_waits_then_a_cutover_with_clients_is_refused() -> None:
    fake = FakeLibrbd('not-prepared')
    t = run(fake, manual_cutover=True)
    assert fake.calls == [] and t.state == State.QUEUED and t.awaiting_cutover
    assert t.blocked_kind is None         # a deliberate wait: no health warning

    def busy(spec: ImageSpec, with_used: bool = True) -> ImageInfo:
        return FakeLibrbd.image_info(fake, spec)._replace(watchers=['127.0.0.1:0/7'])
    fake.image_info = busy  # type: ignore[assignment]
    t = run(fake, manual_cutover=True, cutover_requested=True)
    assert fake.calls == [] and t.state == State.QUEUED
    assert not t.cutover_requested and t.awaiting_cutover
    assert '127.0.0.1:0/7' in (t.blocked_reason or '')
    del fake.image_info
    t = run(fake, manual_cutover=True, cutover_requested=True)
    assert fake.calls == ['prepare', 'execute', 'list clones', 'commit']
    assert t.state == State.COMMITTED and t.cutover_ms is not None


# -- the add's look reused by the prepare ---------------------------------

class Rechecked(FakeLibrbd):
    """Counts full looks (an image open) and header rechecks (one stat)."""

    def __init__(self, phase: str, version: int = 7) -> None:
        super().__init__(phase)
        self.version = version      # the source header's version now
        self.busy = False           # a client has the source open

    def image_info(self, spec: ImageSpec, with_used: bool = True) -> ImageInfo:
        self.calls.append('open')
        return FakeLibrbd.image_info(self, spec)._replace(
            header_version=self.version, watchers=['127.0.0.1:0/7'] if self.busy else [])

    def header_unchanged(self, spec: ImageSpec, image_id: str, version: int) -> bool:
        self.calls.append('stat')
        return image_id == S and version == self.version

    def prepare(self, client: Client, source: ImageSpec, dest: ImageSpec, layout: Any,
                info: ImageInfo) -> None:
        if self.busy:
            self.calls.append('prepare: EBUSY')
            raise Transient('prepare failed: image has watchers', errno.EBUSY)
        super().prepare(client, source, dest, layout, info)


def run_seen(fake: Rechecked, seen: Optional[ImageInfo], **task: Any) -> Worker:
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0,
               source_image_id=S, **task), seen=seen)
    Runner(w, 't1', fake, lambda: POOLS)._main()
    return w


def seen_info(version: int = 7) -> ImageInfo:
    return FakeLibrbd.image_info(FakeLibrbd('x'), ImageSpec.parse('a/img'))._replace(
        header_version=version)


def test_prepare_reuses_the_adds_look_while_the_header_is_unchanged() -> None:
    fake = Rechecked('not-prepared')
    w = run_seen(fake, seen_info())
    assert fake.calls == ['stat', 'prepare', 'execute', 'list clones', 'commit']
    assert w.get('t1').state == State.COMMITTED and not w.seen


def test_a_changed_header_means_a_full_look() -> None:
    fake = Rechecked('not-prepared', version=8)      # a snapshot was taken since, say
    w = run_seen(fake, seen_info(7))
    assert fake.calls == ['stat', 'open', 'prepare', 'execute', 'list clones', 'commit']
    assert w.get('t1').state == State.COMMITTED


def test_without_a_look_kept_the_prepare_looks_in_full() -> None:
    fake = Rechecked('not-prepared')
    run_seen(fake, None)
    assert fake.calls[:2] == ['open', 'prepare']


def test_clients_found_by_prepare_hold_the_task_like_the_full_look() -> None:
    """The reused look lists no clients: librbd's prepare refuses them
    (EBUSY, nothing changed), and the full look names them; the task waits
    for them as if it had found them itself, with no error or attempt."""
    fake = Rechecked('not-prepared')
    fake.busy = True
    w = run_seen(fake, seen_info())
    t = w.get('t1')
    assert fake.calls == ['stat', 'prepare: EBUSY', 'open']
    assert t.state == State.QUEUED and t.blocked_kind == 'watchers', t
    assert '127.0.0.1:0/7' in (t.blocked_reason or '') and t.error is None
    assert t.attempts == 0 and 't1' in w.watching


def test_the_look_is_kept_only_while_the_task_is_queued() -> None:
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0), seen=seen_info())
    w.put(Task(id='t2', source='a/i2', destination='b/i2', created=1.0), seen=seen_info())
    assert set(w.seen) == {'t1', 't2'}
    w.update('t1', lambda t: t.moved_to(State.FAILED, 2.0, error='x'))
    w.remove(['t2'])
    assert w.seen == {}
    w.put(Task(id='t3', source='a/i3', destination='b/i3', created=1.0,
               state=State.EXECUTED), seen=seen_info())
    assert w.seen == {} and w.take_seen('t3') is None


def test_intent_is_marked_before_prepare_and_commit() -> None:
    """Issue 21: before the trash move the source carries the task and its id
    (prepare copies it to the destination); before the commit the
    destination carries both ids and the step."""
    fake = FakeLibrbd('not-prepared')
    t = run(fake)
    assert t.state == State.COMMITTED
    assert [(at, spec, iid, i.step) for at, spec, iid, i in fake.marks] == [
        (0, 'a/img', S, 'prepare'), (3, 'b/img', D, 'commit')]
    assert fake.calls[:1] == ['prepare'] and fake.calls[3] == 'commit'
    assert fake.marks[0][3] == Intent('t1', 'prepare', S)
    assert fake.marks[1][3] == Intent('t1', 'commit', S, D)


def test_intent_is_marked_on_the_source_before_an_abort() -> None:
    fake = FakeLibrbd('executed')
    t = run(fake, state=State.EXECUTED, cancel_requested=True, dest_image_id=D)
    assert t.state == State.ABORTED
    assert [(at, spec, i.step) for at, spec, _, i in fake.marks] == [(0, 'a/img', 'abort')]
    assert fake.calls == ['abort via b/img']


def test_a_commit_cut_at_its_last_step_with_the_record_behind_ends_committed() -> None:
    """Issue 21: the record says dest_image_id null (written behind), librbd's
    commit was cut before it removed the source's trash entry, and both
    headers are gone: the entry is removed and the destination is known by
    the intent key prepare copied to it."""
    fake = FakeLibrbd('not-prepared')
    fake.marks.append((0, 'a/img', S, Intent('t1', 'prepare', S)))
    fake.phase = 'commit-last-step'
    t = run(fake, state=State.PREPARING)
    assert fake.calls == ['finish commit of ' + S]
    assert t.state == State.COMMITTED and t.dest_image_id == D and t.error is None, t


def test_a_destination_without_mark_is_never_claimed() -> None:
    """Without the intent key (a migration made before it, by hand) the
    destination's name is not enough: the task fails naming both images."""
    fake = FakeLibrbd('committed-unrecorded')
    t = run(fake, state=State.EXECUTED)
    assert t.state == State.FAILED
    assert S in (t.error or '') and D in (t.error or '')
    assert fake.calls == []


def test_an_abort_cut_at_its_last_step_is_finished() -> None:
    """librbd's abort put the source back and was cut before it removed the
    source's header (its own abort then fails ENOENT): the module removes it."""
    fake = FakeLibrbd('half-aborted')
    t = run(fake, state=State.ABORTING, cancel_requested=True, dest_image_id=D)
    assert fake.calls == ['finish abort of ' + S]
    assert t.state == State.ABORTED and not t.cancel_requested
    # the planner's own abort (an error state): finished, then prepared again
    fake = FakeLibrbd('half-aborted')
    t = run(fake, state=State.QUEUED, dest_image_id=D)
    assert fake.calls == ['finish abort of ' + S, 'prepare', 'execute', 'list clones', 'commit']
    assert t.state == State.COMMITTED


def test_a_batch_task_is_stored_before_its_prepare() -> None:
    """A batch's task record is written behind at add: before the trash move
    its record (source id, preparing) is waited for, so no source is ever
    prepared for a task that no stored record knows."""
    fake = FakeLibrbd('not-prepared')
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0, source_image_id=S,
               batch_id='b-1', verify=VerifyMode.OFF))
    w.unstored.add('t1')                # put behind, not yet written
    stored: List[Tuple[str, int]] = []
    save = w.store.save
    w.store.save = lambda t: (stored.append((t.state.value, len(fake.calls))),  # type: ignore
                              save(t))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    assert w.get('t1').state == State.COMMITTED
    assert stored[0] == ('preparing', 0) and fake.calls[0] == 'prepare'
    # once written, a batch's task is not waited for (nor written) at prepare
    fake = FakeLibrbd('not-prepared')
    w = worker()
    w.put(Task(id='t1', source='a/img', destination='b/img', created=1.0, source_image_id=S,
               batch_id='b-1', verify=VerifyMode.OFF))
    stored = []
    save = w.store.save
    w.store.save = lambda t: (stored.append((t.state.value, len(fake.calls))),  # type: ignore
                              save(t))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    assert stored == [('committed', 4)], stored


def test_an_import_committed_before_its_record_had_the_id_ends_committed() -> None:
    """An import's commit only removes the destination's header: with the
    record behind (no destination id) the image under the name is known as
    this task's by the intent key written before the commit."""
    from test_import import FakeImport, imp

    class Marked(FakeImport):
        intent: Optional[Intent] = None

        def mark_intent(self, client: Any, spec: ImageSpec, image_id: str,
                        intent: Intent) -> None:
            self.intent = intent

        def observe_import(self, dest: ImageSpec, dest_id: Optional[str]) -> Observation:
            o = super().observe_import(dest, dest_id)
            if self.committed and dest_id is None:
                return o._replace(dest=o.dest._replace(intent=self.intent))
            return o
    fake = Marked()
    fake.state = MigState.EXECUTED
    w = worker()
    w.put(imp(size_bytes=1 << 20, state=State.EXECUTED))
    # the commit is done, then the mgr dies before the committed record is stored
    fake.commit(None, ImageSpec.parse('b/img'))
    fake.intent = Intent('t1', 'commit', '', D)
    Runner(w, 't1', fake, lambda: POOLS)._main()
    t = w.get('t1')
    assert t.state == State.COMMITTED and t.dest_image_id == D, t
    # another task's mark, or none, never makes it ours
    fake.intent = Intent('t9', 'commit', '', D)
    w = worker()
    w.put(imp(size_bytes=1 << 20, state=State.EXECUTED))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    assert w.get('t1').state == State.FAILED


def test_a_finishing_step_waits_out_a_dead_clients_watch(monkeypatch: Any) -> None:
    """Removing a half-created destination answers EBUSY while the killed
    mgr's client still watches it: waited out (not a retry counted towards
    failing the task), like an abort."""
    import time
    monkeypatch.setattr(time, 'sleep', lambda s: None)
    fake = FakeLibrbd('half-committed')
    busy = [3]

    def finish_commit(client: Client, source: ImageSpec, source_id: str, dest: ImageSpec,
                      header: Optional[MigrationHeader]) -> None:
        if busy[0]:
            busy[0] -= 1
            raise Transient('image has watchers', errno.EBUSY)
        fake.calls.append('finish commit of ' + source_id)
        fake.phase = 'committed'
    fake.finish_commit = finish_commit  # type: ignore[assignment]
    t = run(fake, state=State.EXECUTED, dest_image_id=D)
    assert t.state == State.COMMITTED and t.attempts == 0 and busy == [0]


def test_a_protective_snapshot_the_record_lost_is_removed_by_its_name() -> None:
    """kill -9 between the snapshot and the record's write behind: the next
    runner finds the record without ``protect_snap`` and removes the task's
    snapshot by name from the image that stays; a runner that took or
    removed it itself does not look again."""
    from test_verify import VerifyingLibrbd, _run
    from rbd_livemigrate.verify import protect_name
    fake = VerifyingLibrbd('half-committed')
    t = _run(fake, state=State.PREPARING, verify=VerifyMode.AUTO, dest_image_id=D)
    assert t.state == State.COMMITTED
    assert fake.calls == ['finish commit of ' + S, 'remove snap of b/img']
    assert protect_name('t1').startswith('rbd_livemigrate')
    fake = VerifyingLibrbd('not-prepared')
    t = _run(fake, verify=VerifyMode.AUTO)
    assert t.state == State.COMMITTED
    assert fake.calls.count('remove snap of b/img') == 1        # its own, once
    fake = VerifyingLibrbd('half-committed')
    t = _run(fake, state=State.PREPARING, verify=VerifyMode.OFF, dest_image_id=D)
    assert 'remove snap of b/img' not in fake.calls
