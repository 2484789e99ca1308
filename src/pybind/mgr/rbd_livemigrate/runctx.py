"""
The narrow door between the scheduler and one task's runner.

A runner (``pipeline.Runner``) reads and changes its own task in the task
table, waits, asks whether it must hold and at what rate it may copy, and
draws its progress; that is all it needs of the scheduler, as
``RunContext``.  ``scheduler.Worker`` satisfies it structurally, so
nothing below the scheduler imports it, and a test can hand in a stub.
The scheduler, in turn, sees a runner only as a ``RunnerHandle``.
"""

from typing import Callable, Optional, Protocol

from .hold import Hold
from .interface import ImageInfo
from .options import Options
from .progress import ProgressReporter
from .task import Task


class RunnerHandle:
    """What the worker needs of a running task (see pipeline.Runner)."""
    task_id: str

    def client_addr(self) -> Optional[str]:
        """The address of the rados client this runner copies with, if any."""
        return None

    def abandon(self) -> None:
        """Detach from a copy stuck in librbd: the thread may never return."""

    def start(self) -> None:
        raise NotImplementedError

    def protect_ahead(self) -> None:
        """Take the task's protective snapshot while the clients still hold
        its source (called on a thread of its own, the runner not started)."""

    def interrupt(self) -> None:
        """Make a running copy stop now (cancel, shutdown)."""
        raise NotImplementedError

    def join(self, timeout: float) -> None:
        raise NotImplementedError


class RunContext(Protocol):
    """What a runner may do to the scheduler and the task table."""

    clock: Callable[[], float]
    stopping: bool                        # the module is shutting down
    options: Options
    progress: ProgressReporter

    # -- its task's record
    def get(self, task_id: str) -> Task:
        """The current record (raises if it is gone)."""

    def find(self, task_id: str) -> Optional[Task]:
        """The current record, None if it is gone."""

    def update(self, task_id: str, fn: Callable[[Task], Task], persist: bool = True,
               wait: bool = True) -> Task:
        """Apply ``fn`` to the current record; stored unless not ``persist``."""

    def stored(self, task_id: str) -> bool:
        """Has a record of the task ever been written?"""

    def take_seen(self, task_id: str) -> Optional[ImageInfo]:
        """The add's look at the source, once."""

    def wait_for(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``pred`` holds (a record change wakes it), or time out."""

    # -- the scheduler's say
    def hold_reason(self, task: Task) -> Optional[Hold]:
        """Why new work or a running copy of ``task`` must hold now."""

    def bandwidth_limit(self, task: Task) -> int:
        """Bytes per second ``task`` may copy at now; 0: unlimited."""

    def kick(self) -> None:
        """Make the scheduler pass run now."""

    def runner_done(self, runner: RunnerHandle) -> None:
        """This runner's thread ends."""
