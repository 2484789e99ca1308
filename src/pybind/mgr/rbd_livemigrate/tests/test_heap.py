"""
Giving freed memory back: the keeper trims only after work, at most once a
interval while copies run and once when they stop, and holds the mapping
threshold once; nothing is done when turned off or with no known allocator.
"""

from typing import Any, List, Tuple

from rbd_livemigrate.heap import (M_MMAP_THRESHOLD, MMAP_THRESHOLD, RELEASE_BUSY_SECONDS,
                                  Allocator, HeapKeeper)


class Glibc:
    def __init__(self) -> None:
        self.calls: List[Tuple[str, Tuple[Any, ...]]] = []

    def mallopt(self, *a: Any) -> int:
        self.calls.append(('mallopt', a))
        return 1

    def malloc_trim(self, *a: Any) -> int:
        self.calls.append(('trim', a))
        return 1


class Tcmalloc:
    def __init__(self) -> None:
        self.calls: List[str] = []

    def MallocExtension_ReleaseFreeMemory(self) -> None:
        self.calls.append('release')

    def mallopt(self, *a: Any) -> int:
        raise AssertionError('tcmalloc is not tuned')


class Keeper:
    def __init__(self, lib: Any, enabled: bool = True) -> None:
        self.now = 1000.0
        self.work = 0
        self.copying = False
        self.k = HeapKeeper(Allocator(lib), lambda: self.work, lambda: self.copying,
                            clock=lambda: self.now)
        self.k.set_enabled(enabled)


def trims(lib: Glibc) -> int:
    return sum(1 for c in lib.calls if c[0] == 'trim')


def test_the_threshold_is_held_once_and_trims_follow_work() -> None:
    lib = Glibc()
    k = Keeper(lib)
    k.k.set_enabled(True)
    assert lib.calls == [('mallopt', (M_MMAP_THRESHOLD, MMAP_THRESHOLD))]
    k.k.tick()
    assert trims(lib) == 0                  # nothing done since: nothing to give back
    k.work = 3
    k.k.tick()
    assert trims(lib) == 1 and lib.calls[-1] == ('trim', (0,))
    k.k.tick()
    assert trims(lib) == 1


def test_while_copies_run_at_most_every_interval_then_once_when_they_stop() -> None:
    lib = Glibc()
    k = Keeper(lib)
    k.copying = True
    for _ in range(10):
        k.work += 1
        k.now += RELEASE_BUSY_SECONDS / 4
        k.k.tick()
    assert trims(lib) == 2
    k.copying = False
    k.work += 1
    k.k.tick()
    assert trims(lib) == 3
    k.k.tick()
    assert trims(lib) == 3


def test_turned_off_nothing_is_done() -> None:
    lib = Glibc()
    k = Keeper(lib, enabled=False)
    k.work = 5
    k.k.tick()
    assert lib.calls == []


def test_tcmalloc_is_asked_to_release_and_not_tuned() -> None:
    lib = Tcmalloc()
    k = Keeper(lib)
    assert k.k.allocator.name == 'tcmalloc' and not k.k.tuned
    k.work = 1
    k.k.tick()
    assert lib.calls == ['release']


def test_an_unknown_allocator_is_left_alone() -> None:
    k = Keeper(object())
    k.work = 1
    k.k.tick()
    assert k.k.allocator.name == 'unknown' and k.k.releases == 0 and not k.k.tuned


def test_this_processes_allocator_is_found() -> None:
    a = Allocator()
    assert a.name in ('glibc', 'tcmalloc', 'unknown')
    if a.trim is not None:
        assert a.trim(0) in (0, 1)
