"""
The narrow door from the commands to the scheduler.

The commands and the importer read and change tasks in the task table
(``table.TaskTable``); of the scheduler they need only this: wake it, stop
a running copy, and say why a task runs or waits.  ``scheduler.Worker``
satisfies ``SchedulerHandle`` structurally (``module.py`` wires it in), so
nothing below the scheduler imports it, and a test can hand in a stub.
"""

from typing import Dict, List, Optional, Protocol, Set, Tuple

from .hold import Hold
from .task import Task


class Defaults(Protocol):
    """The module options a command reads."""

    @property
    def verify_default(self) -> str:
        """``add`` without ``--verify``: full, auto or off."""


class Bars(Protocol):
    """The progress bars (``progress.ProgressReporter``)."""

    def forget(self, task: Task) -> None:
        """Take a task's bar away (the task leaves the history)."""


class SchedulerHandle(Protocol):
    @property
    def options(self) -> Defaults:
        """The module options as the scheduler last took them."""

    @property
    def progress(self) -> Bars:
        """The progress bars the scheduler draws."""

    @property
    def current_block(self) -> Optional[Hold]:
        """Why no new work starts now (window, health, queue paused), if so."""

    def kick(self) -> None:
        """Make the scheduler pass run now."""

    def interrupt(self, task_id: str) -> None:
        """Make the task's running step stop now (cancel)."""

    def run_state(self) -> Tuple[Set[str], Dict[str, str]]:
        """Ids with a runner, and why each waiting task waits (last pass)."""

    def snapshot(self) -> Tuple[List[Task], Set[str], Dict[str, str]]:
        """Every task (oldest first) with the run state, read at one moment."""

    def why(self, task: Task, running: Set[str], waiting: Dict[str, str]) -> Optional[str]:
        """Why ``task`` has no runner (None: it has one, or nothing to do)."""
