"""
A task's comparison before commit (what is compared: ``verify.py``), and
what a cancel does first when a batch's task without a protective snapshot
found a difference.
"""

import logging
from dataclasses import replace
from typing import Any, Callable, List, Optional, Tuple

from .interface import MigState, Observation
from .planner import Action
from .runner_base import RECORD_EVERY_SECONDS, RunnerBase
from .spec import ImageSpec
from .task import Task, Verification, VerifyMode, VerifyResult
from .verify import ComparisonPlan, explain_mismatch, plan_comparison

log = logging.getLogger(__name__)

VERIFY_BAR_AFTER_SECONDS = 1.0

# (pairs, on_progress) -> the first difference (label, offset, message) or None
Compare = Callable[[List[Any], Callable[[int, int], bool]], Optional[Tuple[str, int, str]]]


class Verifying(RunnerBase):
    """The verify step."""

    def _verify(self, task: Task, source: ImageSpec, dest: ImageSpec) -> bool:
        """Compare the destination with its source before commit (see
        verify.py).  True: it matches; False: the task failed with the first
        difference.  A cancel or shutdown stops it (``Interrupted``)."""
        if task.import_spec is not None:
            return self._verify_remote(task, dest)
        source_id = task.source_image_id
        assert source_id is not None
        protect = task.protect_snap
        # one look at both sides: their snapshots and what clients wrote
        inputs = self.adapter.verify_inputs(source, source_id, dest, protect)
        unused = (protect is None and task.batch_id is not None and task.verify == VerifyMode.AUTO
                  and not self.adapter.watchers(dest))
        cmp = plan_comparison(task.verify, inputs.src_snaps, inputs.dst_snaps, protect,
                              inputs.client_writes, unused)
        return self._compare(task, dest, str(source), cmp, inputs.client_writes,
                             lambda pairs, on_progress: self.adapter.compare(
                                 self._client(), source, source_id, dest, pairs, on_progress))

    def _verify_remote(self, task: Task, dest: ImageSpec) -> bool:
        """An image imported from another cluster: the remote image at the
        spec's snapshot (what librbd was to copy) against the destination's
        head, and each remote snapshot against its copy.  The snapshot plays
        the protective snapshot's part: librbd copied it to the destination,
        so fast-diff from it there tells what clients wrote since."""
        assert self.remote is not None and task.import_spec is not None
        with self.remote.reader(task.import_spec) as reader:
            snap = reader.snap
            dst_snaps, writes = self.adapter.dest_inputs(dest, snap)
            cmp = plan_comparison(task.verify, reader.snaps, dst_snaps, snap, writes)
            # the remote's "head" is its snapshot: its HEAD may have moved since
            cmp = cmp._replace(pairs=[p._replace(src_snap=p.src_snap or snap)
                                      for p in cmp.pairs])
            return self._compare(task, dest, 'the remote image at snapshot {}'.format(snap),
                                 cmp, writes,
                                 lambda pairs, on_progress: self.adapter.compare_with(
                                     self._client(), reader, dest, pairs, on_progress))

    def _compare(self, task: Task, dest: ImageSpec, source: str, cmp: ComparisonPlan,
                 writes: Optional[int], compare: Compare) -> bool:
        """Run ``cmp`` (``compare(pairs, on_progress)`` reads both sides),
        keeping ``status`` told; True when it matched."""
        started = self._now()
        first = Verification(task.verify, VerifyResult.RUNNING, task.dest_image_id,
                             [p.label for p in cmp.pairs], cmp.note, started=started,
                             client_writes=writes)
        task = self.worker.update(self.task_id, lambda t: t.evolve(verification=first),
                                  persist=False)
        # a bar of its own only for a comparison that lasts: drawn once it
        # has run VERIFY_BAR_AFTER_SECONDS (a pool of small images would
        # otherwise start and end a bar per image, each a progress-module call)
        last = [started]

        def on_progress(done: int, total: int) -> bool:
            if (self.interrupted or self.abandoned or self.worker.stopping
                    or self.worker.get(self.task_id).cancel_requested):
                return False
            now = self._now()
            if now - last[0] >= RECORD_EVERY_SECONDS or done >= total:
                last[0] = now

                def counted(t: Task) -> Task:
                    if t.verification is None:
                        return t
                    return t.evolve(verification=replace(
                        t.verification, bytes_compared=done, bytes_total=total,
                        seconds=now - started))
                t = self.worker.update(self.task_id, counted, persist=False)
                if now - started >= VERIFY_BAR_AFTER_SECONDS:
                    self.worker.progress.verify(t)
            return True
        if cmp.mismatch is not None:
            found: Optional[Tuple[str, int, str]] = ('', 0, cmp.mismatch)
        else:
            found = compare(cmp.pairs, on_progress)
        seconds = self._now() - started
        result = VerifyResult.PASSED if found is None else VerifyResult.MISMATCH
        self._check()
        task = self.worker.update(self.task_id, lambda t: t.evolve(verification=replace(
            t.verification or first, result=result, seconds=seconds,
            mismatch=found[2] if found is not None else None)),
            persist=task.manual_commit, wait=False)
        self.worker.progress.verified(task)
        if found is None:
            log.info('task %s: verified %s against %s in %.1fs (%s)', task.id, dest, source,
                     seconds, ', '.join(first.compared) or 'nothing to compare')
            return True
        back = ('cancel removes the destination and leaves the remote image as it is'
                if task.import_spec is not None else
                'cancel aborts the migration and gives the source back')
        self._fail('verification failed: {}; nothing was committed: {} (see status)'.format(
            explain_mismatch(task.verify, found[0], found[2], writes), back))
        return False

    @staticmethod
    def _unsnapshotted_mismatch(task: Task, action: Action, obs: Observation) -> bool:
        """A batch's task without a protective snapshot whose comparison found
        a difference, its destination still whole (not under abort)."""
        v = task.verification
        return (task.protect_snap is None and task.batch_id is not None
                and task.source_image_id is not None and not action.by_source
                and v is not None and v.result == VerifyResult.MISMATCH
                and obs.dest.exists and obs.dest.header is not None
                and obs.dest.header.state != MigState.ABORTING)

    def _restore_head(self, task: Task, source: ImageSpec, dest: ImageSpec) -> None:
        """librbd's abort copies the destination's head back into the source
        from the source's last snapshot on (all of it without one), damage
        included (its ``revert_data``).  Without a protective snapshot, first
        write the source's bytes over every extent of the destination's head
        that differs, so that the abort copies back exactly the source.  Only
        while no client has the destination open (a batch is for images no
        client uses; with one, the abort keeps its writes)."""
        assert task.source_image_id is not None
        clients = self.adapter.watchers(dest)
        if clients:
            log.warning('task %s: %s has clients (%s): the abort copies its head back into '
                        'the source as it is', task.id, dest, ', '.join(clients[:3]))
            return
        written = self.adapter.restore_head(self._client(), source, task.source_image_id, dest)
        log.warning('task %s: wrote %d byte(s) of the source over the destination %s where '
                    'its head differed, before the abort copies it back', task.id, written,
                    dest)
