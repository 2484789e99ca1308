"""
Typed errors for rbd_livemigrate.

Every error the module reports to a user carries an errno and a one-line
message that says what to do.  ``handle_errors`` turns them into a
``(-errno, '', message)`` command result; anything else is logged with its
traceback and reported as a one-line EIO.
"""

import errno
import functools
import inspect
import logging
from typing import Any, Callable, Tuple, TypeVar

log = logging.getLogger(__name__)

CommandResult = Tuple[int, str, str]
F = TypeVar('F', bound=Callable[..., Any])


class LiveMigrateError(Exception):
    """Base class: ``errno`` is positive, ``str(e)`` is the one-line message."""

    errno = errno.EIO

    def __init__(self, message: str, err: int = 0) -> None:
        super().__init__(message)
        if err:
            self.errno = abs(err)

    def to_result(self) -> CommandResult:
        return -self.errno, '', str(self)


class InvalidArgument(LiveMigrateError):
    errno = errno.EINVAL


class NotFound(LiveMigrateError):
    errno = errno.ENOENT


class AlreadyExists(LiveMigrateError):
    errno = errno.EEXIST


class Busy(LiveMigrateError):
    errno = errno.EBUSY


class NoSpace(LiveMigrateError):
    errno = errno.ENOSPC


class NotAuthorized(LiveMigrateError):
    errno = errno.EACCES


class WrongState(LiveMigrateError):
    """A command that the task's current state does not allow."""
    errno = errno.EINVAL


class Blocked(LiveMigrateError):
    """A preflight finding; ``wait`` means the task can wait for it to clear."""

    def __init__(self, message: str, err: int, wait: bool = False) -> None:
        super().__init__(message, err)
        self.wait = wait


class Transient(LiveMigrateError):
    """An error that a later retry may not hit (EBUSY, ETIMEDOUT, ESHUTDOWN...)."""
    errno = errno.EAGAIN


class TryAgain(Transient):
    """The module itself is not ready (loading, reconnecting): EAGAIN."""
    errno = errno.EAGAIN


def handle_errors(func: F) -> F:
    """Turn typed errors into command results; never show a traceback."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LiveMigrateError as e:
            return e.to_result()
        except Exception as e:  # pragma: no cover - logged, never shown raw
            log.exception('unexpected error in %s', func.__name__)
            return (-errno.EIO, '',
                    'internal error: {}: {} (see the mgr log)'.format(type(e).__name__, e))
    # CLICommand reads the parameters from the signature: keep the original's
    wrapper.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


class Interrupted(Transient):
    """Work stopped on purpose (a cancel, a shutdown): the planner looks again."""
    errno = errno.EINTR
