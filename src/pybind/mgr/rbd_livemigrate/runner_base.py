"""
What every step of a task's runner shares (``pipeline.Runner`` is made of
this and its steps: ``cutover``, ``copying``, ``verifying``): the record
moves, the holds, the rados client the copy runs on, stopping it.
"""

import errno
import logging
import threading
import time
from typing import Callable, ContextManager, Dict, Optional, Protocol

from .errors import LiveMigrateError, Transient
from .hold import Hold
from .interface import Client, Intent, RbdPort, SourceReader
from .planner import Act, Phase
from .preflight import PoolInfo
from .runctx import RunContext, RunnerHandle
from .spec import ImageSpec
from .task import State, Task

log = logging.getLogger(__name__)


MAX_PASSES = 20
ABORT_BUSY_RETRY_SECONDS = 90.0
PERSIST_PROGRESS_SECONDS = 5.0
RECORD_EVERY_SECONDS = 0.25
CUTOVER_LOOK_SECONDS = 0.005       # how often a cutover looks for the destination


class Abandoned(Exception):
    """This runner was abandoned by the worker; stop touching the task."""


# stable states to fall back to when a step is interrupted before librbd
# changed anything; a commit or abort under way stays what it is
_FALLBACK = {State.PREPARING: State.QUEUED, State.EXECUTING: State.PREPARED}

# what librbd shows right after the runner's own step succeeded, by the state
# that step leaves the record in (a commit: committing, until it is marked)
_KNOWN = {State.PREPARED: Phase.PREPARED, State.EXECUTED: Phase.EXECUTED,
          State.COMMITTING: Phase.COMMITTED}
# the actions done without reading librbd back (``Runner._straight_on``)
_STRAIGHT = (Act.EXECUTE, Act.VERIFY, Act.COMMIT, Act.DROP_SNAP, Act.MARK)


class RemoteHooks(Protocol):
    """What a runner asks of ``remote_sources.RemoteSources`` for a task whose
    source is in another cluster (issue 27)."""

    def is_remote(self, spec_text: Optional[str]) -> bool: ...

    def before_prepare(self, task_id: str, spec_text: str) -> None: ...

    def ensure_files(self, spec_text: Optional[str]) -> None: ...

    def reader(self, spec_text: str) -> ContextManager[SourceReader]: ...

    def after_end(self, task_id: str, spec_text: Optional[str],
                  remove_dest_snap: Callable[[str], None]) -> None: ...


class RunnerBase(RunnerHandle):
    """The runner's state and the helpers its steps share."""

    def __init__(self, worker: RunContext, task_id: str, adapter: RbdPort,
                 pools: Callable[[], Dict[str, PoolInfo]],
                 import_gate: Optional[Callable[[str, ImageSpec, str], None]] = None,
                 remote: Optional[RemoteHooks] = None) -> None:
        self.worker = worker
        # a source in another cluster: its gate, files and end (remote_sources)
        self.remote = remote
        # judges an import's stored source-spec again just before librbd
        # opens its streams (import_guard.ImportGuard.check_text)
        self.import_gate = import_gate
        self.task_id = task_id
        self.adapter = adapter
        self.pools = pools
        self.client: Optional[Client] = None
        self.executing = False
        self.interrupted = False
        self.abandoned = False
        # this runner ran the prepare, or removed the protective snapshot the
        # record named: it knows what became of that snapshot
        self.protect_known = False
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._main, daemon=True,
                                       name='rbd_livemigrate.{}'.format(task_id))

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def client_addr(self) -> Optional[str]:
        with self._lock:
            return self.client.addr if self.client is not None else None

    def abandon(self) -> None:
        """Called by the worker when our copy hangs on a blocklisted client.

        From now on this thread changes nothing: the worker starts a new
        runner, which reads librbd's state and carries on with a new client.
        """
        with self._lock:
            self.abandoned = True
            self.interrupted = True
            self.client = None        # leaked on purpose: librbd may still use it
        self.worker.update(self.task_id, lambda t: t.evolve(
            attempts=t.attempts + 1, next_retry=None,
            error='the copy client was blocklisted; the copy was restarted'), wait=False)
        self.worker.kick()

    def interrupt(self) -> None:
        with self._lock:
            self.interrupted = True
            client = self.client if self.executing else None
        if client is not None:
            log.info('task %s: blocklisting copy client %s to stop it', self.task_id,
                     client.addr)
            try:
                self.adapter.blocklist(client)
            except LiveMigrateError as e:
                log.warning('task %s: cannot stop the copy: %s', self.task_id, e)
        self.worker.kick()

    def _client(self) -> Client:
        with self._lock:
            if self.client is None or self.client.closed:
                self.client = self.adapter.factory.take()
            return self.client

    def _drop_client(self) -> None:
        """Close our client: it may be blocklisted or otherwise broken."""
        with self._lock:
            client, self.client = self.client, None
        if client is not None:
            client.close()

    def _release_client(self) -> None:
        """Hand a healthy client back for the next task."""
        with self._lock:
            client, self.client = self.client, None
            healthy = not self.interrupted and not self.abandoned
        if client is not None:
            if healthy:
                self.adapter.factory.release(client)
            else:
                client.close()

    def _now(self) -> float:
        return self.worker.clock()

    def _check(self) -> None:
        if self.abandoned:
            raise Abandoned()

    def _move(self, state: State, persist: bool = True, wait: bool = False,
              **changes: object) -> Task:
        self._check()
        now = self._now()
        return self.worker.update(self.task_id, lambda t: t.moved_to(state, now, **changes),
                                  persist=persist, wait=wait)

    def _fail(self, why: str) -> None:
        log.error('task %s failed: %s', self.task_id, why)
        task = self._move(State.FAILED, error=why, blocked_reason=None, blocked_since=None,
                          cancel_requested=False)
        self.worker.progress.fail(task, why)

    def _set_hold(self, hold: Hold, recheck: Optional[float] = None) -> None:
        now = self._now()
        self.worker.update(self.task_id, lambda t: t.evolve(
            blocked_reason=str(hold), blocked_kind=hold.kind.value,
            blocked_since=t.blocked_since or now,
            next_retry=recheck if recheck is not None else t.next_retry), wait=False)

    def _mark(self, spec: ImageSpec, image_id: str, intent: Intent) -> None:
        """Make the step about to be taken durable in the image (one OSD
        write; see ``interface.Intent``).  A failure stops the step."""
        self._check()
        self.adapter.mark_intent(self._client(), spec, image_id, intent)

    def _detour(self, task: Task) -> bool:
        """Something the planner must look at before the next step."""
        return (task.cancel_requested or self.interrupted or self.abandoned
                or self.worker.stopping or self.worker.hold_reason(task) is not None)

    def _wait_busy(self, step: Callable[[Client], None]) -> None:
        """A finishing step, waiting out EBUSY like ``_abort``: the prepare or
        commit it finishes ran on a client killed with its mgr, whose watch
        on the image stays until the OSDs time it out (measured under load:
        up to a minute).  Any other error goes to the caller (the next pass
        observes again)."""
        deadline = self._now() + ABORT_BUSY_RETRY_SECONDS
        delay = 0.5
        while True:
            self._check()
            try:
                step(self._client())
                return
            except Transient as e:
                if e.errno != errno.EBUSY or self._now() >= deadline or self.worker.stopping:
                    raise
                self._drop_client()
                log.info('task %s: %s; retrying', self.task_id, e)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _abort(self, target: ImageSpec) -> None:
        """Abort, waiting out EBUSY from a dead client's lock."""
        deadline = self._now() + ABORT_BUSY_RETRY_SECONDS
        delay = 0.5
        while True:
            self._check()
            try:
                self.adapter.abort(self._client(), target)
                return
            except Transient as e:
                self._drop_client()
                if self._now() >= deadline or self.worker.stopping:
                    raise
                log.info('task %s: abort not possible yet (%s); retrying', self.task_id, e)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _main(self) -> None:
        raise NotImplementedError

    def _sweep_protect(self, task: Task, state: State, detail: str) -> None:
        raise NotImplementedError


class _CancelWins(Exception):
    """A cancel was accepted before the commit started."""
