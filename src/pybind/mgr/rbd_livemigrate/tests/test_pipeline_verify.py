"""
The runner with the product's default verify mode (``auto``: a protective
snapshot, a comparison before commit), against fakes that fail like librbd
(``fakes.py``): a cancel whose abort was cut (the destination's header says
ABORTING, which librbd will not open: EROFS), a kill -9 at every step of
the path with VERIFY in it, and a cancel racing each step.
"""

import itertools
from typing import Any, Dict, List, Optional, Tuple

import pytest

from rbd_livemigrate.errors import Transient
from rbd_livemigrate.pipeline import Runner
from rbd_livemigrate.task import State, Task, VerifyMode, VerifyResult
from rbd_livemigrate.verify import protect_name

from fakes import D, S, VerifyingLibrbd
from test_pipeline import POOLS, worker
from test_store import make_store

P = protect_name('t1')


class Tracked(VerifyingLibrbd):
    """VerifyingLibrbd that knows whether the protective snapshot is still
    there (``protected``): taken on the source, carried to the destination
    by prepare (librbd copies snapshots), gone with the image an abort
    deletes or with ``unprotect``."""

    def __init__(self, phase: str, **kw: Any) -> None:
        super().__init__(phase, **kw)
        self.protected = False

    def protect_source(self, client: Any, source: Any, name: str,
                       clients: bool = False) -> bool:
        ok = super().protect_source(client, source, name, clients)
        self.protected = True
        return ok

    def unprotect(self, client: Any, spec: Any, name: str, rollback: bool) -> bool:
        if self.open_error(spec, True, 'remove snap') is None:
            had, self.protected = self.protected, False
            super().unprotect(client, spec, name, rollback)
            return had
        return super().unprotect(client, spec, name, rollback)


def _task(**kw: Any) -> Task:
    base: Dict[str, Any] = dict(id='t1', source='a/img', destination='b/img', created=1.0,
                                source_image_id=S, verify=VerifyMode.AUTO)
    base.update(kw)
    return Task(**base)


def _run(fake: VerifyingLibrbd, **kw: Any) -> Task:
    w = worker()
    w.put(_task(**kw))
    Runner(w, 't1', fake, lambda: POOLS)._main()
    return w.get('t1')


# -- the fake itself: it opens what librbd opens ------------------------


def test_the_fake_opens_a_destination_under_abort_like_librbd() -> None:
    """Measured (test_cut_abort.py, Pacific 16.2.15): read-only it opens,
    for writing EROFS; where the destination is gone, ENOENT."""
    from rbd_livemigrate.errors import NotFound
    from rbd_livemigrate.spec import ImageSpec
    dest = ImageSpec.parse('b/img')
    fake = VerifyingLibrbd('aborting')
    assert fake.client_writes(dest, P) == 0
    for step in (lambda: fake.commit(None, dest), lambda: fake.execute(None, dest),
                 lambda: fake.unprotect(None, dest, P, False)):
        with pytest.raises(Transient) as e:
            step()
        assert e.value.errno == 30 and 'being aborted' in str(e.value)
    fake.ro_refused = True
    with pytest.raises(Transient):
        fake.client_writes(dest, P)
    with pytest.raises(Transient):
        fake.compare(None, ImageSpec.parse('a/img'), S, dest, [], lambda d, t: True)
    assert VerifyingLibrbd('executed').client_writes(dest, P) == 0
    with pytest.raises(NotFound):
        VerifyingLibrbd('half-aborted').client_writes(dest, P)
    # an abort cut at its last write: librbd's own abort fails ENOENT
    with pytest.raises(NotFound):
        VerifyingLibrbd('half-aborted').abort(None, ImageSpec.parse('a/img'))


# -- a cancel whose abort was cut ----------------------------------------


@pytest.mark.parametrize('ro_refused', [False, True],
                         ids=['read-only-opens', 'read-only-refused'])
@pytest.mark.parametrize('recorded', [True, False], ids=['rollback-recorded', 'keep-recorded'])
def test_cancel_of_a_cut_abort_with_a_protective_snapshot_finishes(recorded: bool,
                                                                   ro_refused: bool) -> None:
    """The abort (this module's, or an operator's) was cut after it marked
    both headers ABORTING: the destination refuses writes (EROFS).  The
    cancel finishes the abort at once (no retry spent, no error), removes
    the protective snapshot, and never rolls the source back unless the
    record said so before the cut (the look before that abort; a rollback
    could drop clients' writes)."""
    fake = Tracked('aborting', writes=3)          # clients wrote 3 objects
    fake.ro_refused = ro_refused
    fake.protected = True
    t = _run(fake, state=State.ABORTING, cancel_requested=True, dest_image_id=D,
             protect_snap=P, rollback_source=recorded)
    assert 'abort via b/img' in fake.calls, fake.calls
    assert t.state == State.ABORTED and not t.cancel_requested, t
    assert t.attempts == 0 and t.next_retry is None, t
    assert t.error == 'cancelled: migration aborted, source restored', t.error
    assert t.protect_snap is None and not fake.protected, fake.calls
    assert 'commit' not in fake.calls
    if not recorded:
        assert 'rollback, remove snap of a/img' not in fake.calls, fake.calls


def test_cancel_of_a_cut_abort_never_commits_and_keeps_the_snapshot_until_aborted() -> None:
    """Whatever the runner does with the EROFS, it neither commits nor drops
    the protective snapshot of a source that is not back yet."""
    fake = Tracked('aborting')
    fake.protected = True
    t = _run(fake, state=State.ABORTING, cancel_requested=True, dest_image_id=D,
             protect_snap=P)
    assert 'commit' not in fake.calls and 'compare' not in ' '.join(fake.calls)
    if t.state != State.ABORTED:
        assert fake.protected and t.protect_snap == P, (t, fake.calls)


# -- kill -9 at every step, VERIFY in the path ---------------------------


class Killed(BaseException):
    """kill -9: nothing after it runs, not even the runner's handlers."""


STEPS = ['protect_source', 'prepare', 'execute', 'verify_inputs', 'compare', 'commit',
         'unprotect']


class Killing(Tracked):
    """Dies at the ``at``-th call of ``step``, before (``after`` False) or
    after librbd did it."""

    def __init__(self, step: str, after: bool) -> None:
        super().__init__('not-prepared')
        self.kill: Optional[Tuple[str, bool]] = (step, after)
        for name in STEPS:
            setattr(self, name, self._wrap(name, getattr(self, name)))

    def _wrap(self, name: str, real: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            if self.kill == (name, False):
                self.kill = None
                raise Killed(name)
            out = real(*a, **k)
            if self.kill == (name, True):
                self.kill = None
                raise Killed(name)
            return out
        return call


def _run_killed(fake: Killing, cancel_at: Optional[int] = None) -> Tuple[Task, int]:
    """A runner until the kill, then runners from the stored record (what a
    new mgr loads) until the task ends; returns it and the number of runs."""
    kv: Dict[str, Any] = {}
    runs = 0
    for _ in range(10):
        w = worker()
        w.store = make_store(kv)
        record = kv.get('task/t1')
        w.put(_task() if record is None else Task.loads(record))
        runs += 1
        try:
            Runner(w, 't1', fake, lambda: POOLS)._main()
        except Killed:
            continue
        t = w.get('t1')
        if t.terminal:
            return t, runs
        if t.next_retry is not None:            # a retry: the next pass runs it
            w.update('t1', lambda x: x.evolve(next_retry=None))
            kv['task/t1'] = w.get('t1').dumps()
    raise AssertionError('the task never ended: {}'.format(fake.calls))


@pytest.mark.parametrize('step,after', list(itertools.product(STEPS, [False, True])))
def test_a_kill_at_any_step_of_a_verified_migration_ends_committed_and_verified(
        step: str, after: bool) -> None:
    fake = Killing(step, after)
    t, runs = _run_killed(fake)
    calls = fake.calls
    assert t.state == State.COMMITTED and t.error is None, (t, calls)
    assert calls.count('commit') == 1, calls
    # a comparison ran on the destination as it was committed: after the last
    # copy, before the commit
    last_copy = max(i for i, c in enumerate(calls) if c in ('prepare', 'execute'))
    compares = [i for i, c in enumerate(calls) if c.startswith('compare ')]
    assert any(last_copy < i < calls.index('commit') for i in compares), calls
    # the protective snapshot is gone from the image that stays, never rolled back to
    assert not fake.protected, calls
    assert not any(c.startswith('rollback') for c in calls), calls
    assert not any('remove snap of a/' in c for c in calls[calls.index('commit'):]), calls
    if step == 'commit' and after or step == 'unprotect':
        assert t.verification is None or t.verification.result == VerifyResult.PASSED
    else:
        assert t.verification is not None and t.verification.result == VerifyResult.PASSED, t
        assert t.verification.dest_image_id == D
    assert runs == 2 or (step, after) == ('unprotect', True) and runs in (1, 2), runs


# -- a cancel racing each step -------------------------------------------


class Cancelling(Tracked):
    """A cancel accepted just before ``step`` runs (from another thread, as
    the command handler does: the runner sees it only when it reads the
    task again)."""

    def __init__(self, step: str, cancel: Any) -> None:
        super().__init__('not-prepared')
        real = getattr(self, step)

        def call(*a: Any, **k: Any) -> Any:
            cancel()
            return real(*a, **k)
        setattr(self, step, call)


@pytest.mark.parametrize('step', ['prepare', 'execute', 'verify_inputs', 'compare', 'descendants',
                                  'commit'])
def test_a_cancel_before_each_step_is_never_followed_by_a_commit_unless_it_started(
        step: str) -> None:
    w = worker()
    w.put(_task())
    seen: List[str] = []

    def cancel() -> None:
        if not seen:
            seen.append(step)
            w.update('t1', lambda t: t.evolve(cancel_requested=True))
    fake = Cancelling(step, cancel)
    Runner(w, 't1', fake, lambda: POOLS)._main()
    t = w.get('t1')
    assert seen == [step]
    if step == 'commit':
        # the cancel came after the commit was decided: librbd's commit is
        # not undone, and the cancel is answered by the committed state
        assert t.state == State.COMMITTED
        return
    assert 'commit' not in fake.calls, fake.calls
    assert t.state == State.ABORTED and not fake.protected, (t, fake.calls)
    assert t.protect_snap is None
    # the source is rolled back to its snapshot only when no client wrote
    assert fake.calls[-1] in ('rollback, remove snap of a/img', 'remove snap of a/img'), \
        fake.calls
