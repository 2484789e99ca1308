"""
A task's copy and commit: librbd's execute (held and throttled from its
progress callback), the clones looked at again, the commit.
"""

import logging
from typing import List

from .interface import Intent
from .planner import descendants_hold
from .progress import EXECUTE_SHARE
from .runner_base import PERSIST_PROGRESS_SECONDS, RECORD_EVERY_SECONDS, RunnerBase, _CancelWins
from .spec import ImageSpec
from .task import State, Task

log = logging.getLogger(__name__)


class Copying(RunnerBase):
    """The execute and the commit."""

    def _hold(self) -> bool:
        """Block inside the copy while the task may not run (stalls librbd)."""
        held = False
        while not self.interrupted and not self.worker.stopping:
            task = self.worker.get(self.task_id)
            if task.cancel_requested:
                return held
            hold = self.worker.hold_reason(task)
            if hold is None:
                break
            if not held or task.blocked_reason != str(hold):
                self._set_hold(hold)
                held = True
            self.worker.wait_for(lambda: self.interrupted or self.worker.stopping, 1.0)
        if held:
            self.worker.update(self.task_id, lambda t: t.evolve(
                blocked_reason=None, blocked_kind=None, blocked_since=None,
                last_progress_at=self._now()), wait=False)
        return held

    def _throttle(self, limit: int, base: List[float], copied: int) -> None:
        """Token bucket: sleeping in librbd's progress callback stalls the copy.

        ``base`` is (time, bytes, limit) where the bucket was last reset: at
        the start, after every hold and whenever the effective limit changes
        (a share of the total limit, an option change), so a copy neither
        bursts to catch up nor pays back, at a new rate, the time it ran
        unthrottled or faster.
        """
        if limit != base[2]:
            base[:] = [self._now(), float(copied), float(limit)]
        if limit <= 0:
            return
        due = base[0] + (copied - base[1]) / float(limit)
        delay = due - self._now()
        if delay > 0:
            # keep throttling after an interrupt: the blocklist stops the copy
            # within seconds, and it must not burst at full speed meanwhile
            self.worker.wait_for(lambda: self.abandoned or self.worker.stopping
                                 or self._now() >= due, delay)

    def _execute(self, task: Task, dest: ImageSpec) -> None:
        started = self._now()
        # not written: after a crash the headers say how far the copy got, and
        # progress is written every PERSIST_PROGRESS_SECONDS of a long copy
        task = self._move(State.EXECUTING, persist=False, progress=0.0, bytes_copied=0,
                          rate_bytes_per_sec=None, last_progress_at=started, next_retry=None,
                          blocked_reason=None, blocked_kind=None, blocked_since=None)
        self.worker.progress.update(task, force=True)
        size = task.size_bytes or 0
        last_persist: List[float] = [started]
        base: List[float] = [started, 0.0, float(self.worker.bandwidth_limit(task))]

        # librbd calls back once per object: the record, the progress bar,
        # holds and the limit are looked at every RECORD_EVERY_SECONDS; only
        # the token bucket's arithmetic runs on every call
        last_record: List[float] = [0.0]
        limit: List[int] = [int(base[2])]

        def on_progress(offset: int, total: int) -> None:
            if self.abandoned:
                return
            now = self._now()
            frac = min(1.0, offset / total) if total else 1.0
            copied = int(size * frac)
            if now - last_record[0] >= RECORD_EVERY_SECONDS or frac >= 1.0:
                last_record[0] = now
                elapsed = now - started
                rate = copied / elapsed if elapsed > 0.5 else None
                persist = now - last_persist[0] >= PERSIST_PROGRESS_SECONDS
                if persist:
                    last_persist[0] = now
                t = self.worker.update(self.task_id, lambda t: t.evolve(
                    progress=frac * EXECUTE_SHARE, bytes_copied=copied,
                    rate_bytes_per_sec=rate, last_progress_at=now), persist=persist,
                    wait=False)
                self.worker.progress.update(t)
                if self._hold():
                    base[:2] = [self._now(), float(copied)]
                limit[0] = self.worker.bandwidth_limit(t)
            self._throttle(limit[0], base, copied)

        client = self._client()
        with self._lock:
            if self.interrupted:
                return
            self.executing = True
        try:
            self.adapter.execute(client, dest, on_progress)
        finally:
            with self._lock:
                self.executing = False
        self._check()
        task = self._move(State.EXECUTED, persist=task.manual_commit, progress=EXECUTE_SHARE,
                          bytes_copied=size, execute_seconds=round(self._now() - started, 3))
        log.info('task %s: executed in %.1fs', task.id, self._now() - started)

    def _clones_allowed(self, task: Task, dest: ImageSpec) -> bool:
        """Check the clones again just before commit: a clone made since add
        (of the destination, which clients use meanwhile) may be open
        read-only, and would not see its parent move.  A task added without
        --allow-descendants waits until none is left; an error listing them
        is retried like any other."""
        if task.allow_descendants:
            return True
        hold = descendants_hold(dest, self.adapter.descendants(dest))
        if hold is None:
            return True
        self._set_hold(hold, self._now() + self.worker.options.blocked_recheck_seconds)
        return False

    def _commit(self, task: Task, dest: ImageSpec) -> None:
        """Commit, unless a cancel was accepted first (checked under the table lock:
        a cancel accepted after this point answers EBUSY instead)."""
        now = self._now()
        dest_id = task.dest_image_id or self.adapter.image_id(dest)

        def to_committing(t: Task) -> Task:
            if t.cancel_requested:
                raise _CancelWins()
            return t.moved_to(State.COMMITTING, now, blocked_reason=None, blocked_kind=None,
                              blocked_since=None)
        self._check()
        try:
            # not stored on its own (a commit takes a fraction of a second;
            # the record written once it is done says committed): after a
            # crash in between, the next runner reads librbd's phase (half
            # committed: finished) like after any other cut step
            task = self.worker.update(self.task_id, to_committing, persist=False)
        except _CancelWins:
            return
        if dest_id is not None and (task.source_image_id or task.import_spec is not None):
            # an import's destination: known by the task id once its header is gone
            self._mark(dest, dest_id, Intent(task.id, 'commit', task.source_image_id or '',
                                             dest_id))
        self.worker.progress.update(task, force=True)

        def on_progress(offset: int, total: int) -> None:
            frac = min(1.0, offset / total) if total else 1.0
            t = self.worker.update(self.task_id, lambda t: t.evolve(
                progress=EXECUTE_SHARE + frac * (1 - EXECUTE_SHARE)), persist=False)
            self.worker.progress.update(t)
        self.adapter.commit(self._client(), dest, on_progress)
