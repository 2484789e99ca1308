"""
Giving the memory the mgr process has freed back to the operating system.

The mgr is one process, and its C library allocator (glibc's, on the
distributions' builds) keeps what is freed for reuse.  Two things this
module does make that costly:

- ``ls --format json`` at 10,000 tasks is a 10 MB reply, which the mgr
  copies on its way out.  glibc serves an allocation that large with its
  own mapping and unmaps it on free, but then raises its threshold for
  that to the size freed (up to 32 MiB) and its trim threshold to twice
  that: later replies come from the arenas, and arena tops below 20 MB are
  never given back.
- Each copy runs on its own rados client (``rbd_adapter.ClientFactory``),
  whose threads spread allocations over every arena (up to 8 per core).

Measured on a 2,000-task batch at max_concurrent 8 with ``ls`` polled every
second: mgr RSS grew 136 MiB, and 77 MiB once the freed memory was trimmed.

``HeapKeeper`` trims after work (glibc's ``malloc_trim``): at most every
``RELEASE_BUSY_SECONDS`` while copies run, and once when they stop.  It
also holds glibc's threshold for a mapping of its own at ``MMAP_THRESHOLD``
(above librbd's copy buffers of one object, below a 10,000-task reply), so
large replies are unmapped when freed instead of raising the thresholds.
Both are process-wide; ``release_memory false`` stops the trims (the
threshold stays until the mgr restarts).  With tcmalloc nothing is tuned,
and a release asks it to return its free pages.
"""

import ctypes
import logging
import time
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3                # mallopt's parameter (malloc.h)
MMAP_THRESHOLD = 8 << 20             # allocations this large get their own mapping
RELEASE_BUSY_SECONDS = 20.0          # trim at most this often while work goes on
HEAP_CHECK_SECONDS = 2.0             # how often the scheduler asks whether one is due
SLOW_RELEASE_SECONDS = 0.05          # a release this slow is logged at info


class Allocator:
    """The process's allocator, reached through ctypes (None parts: absent)."""

    def __init__(self, lib: Any = None) -> None:
        self.mallopt: Optional[Callable[[int, int], int]] = None
        self.trim: Optional[Callable[[int], int]] = None
        self.release: Optional[Callable[[], None]] = None
        try:
            lib = lib if lib is not None else ctypes.CDLL(None)
        except OSError:
            return
        tc = getattr(lib, 'MallocExtension_ReleaseFreeMemory', None)
        if tc is not None:                      # tcmalloc: leave its tuning alone
            self.release = tc
            return
        self.mallopt = getattr(lib, 'mallopt', None)
        self.trim = getattr(lib, 'malloc_trim', None)

    @property
    def name(self) -> str:
        if self.release is not None:
            return 'tcmalloc'
        return 'glibc' if self.trim is not None else 'unknown'


class HeapKeeper:
    """Holds the mapping threshold and trims after work (see the module docstring)."""

    def __init__(self, allocator: Allocator, activity: Callable[[], int],
                 busy: Callable[[], bool], clock: Callable[[], float] = time.monotonic) -> None:
        self.allocator = allocator
        self.activity = activity      # grows with work done (store writes, listings)
        self.busy = busy              # copies are running
        self.clock = clock
        self.enabled = False
        self.tuned = False
        self.last_release = clock()
        self.last_activity = activity()
        self.releases = 0

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        if enabled and not self.tuned and self.allocator.mallopt is not None:
            # a fixed threshold also stops glibc raising it (and the trim
            # threshold) after each large free
            self.tuned = bool(self.allocator.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
            log.info('large allocations (>= %d bytes) mapped on their own: %s',
                     MMAP_THRESHOLD, self.tuned)

    def due(self, now: float) -> bool:
        """Work was done since the last release, and it has stopped or the
        last release is ``RELEASE_BUSY_SECONDS`` old."""
        if not self.enabled or self.activity() == self.last_activity:
            return False
        return not self.busy() or now - self.last_release >= RELEASE_BUSY_SECONDS

    def tick(self) -> None:
        """Called by the scheduler's chores; releases when ``due``."""
        now = self.clock()
        if not self.due(now):
            return
        self.last_activity = self.activity()
        self.last_release = now
        self.release()

    def release(self) -> None:
        a = self.allocator
        t0 = self.clock()
        if a.trim is not None:
            a.trim(0)
        elif a.release is not None:
            a.release()
        else:
            return
        self.releases += 1
        took = self.clock() - t0
        (log.info if took >= SLOW_RELEASE_SECONDS else log.debug)(
            'freed memory given back (%s) in %.3fs', a.name, took)
