"""
What to compare before commit: ``plan_comparison``, a pure function.

While a migration is executed the source still exists (in its pool's
trash, read-only since prepare) next to the destination, so the copy can
be proved before commit deletes the source.  The comparison reads both
through librbd, byte for byte: measured on Pacific and Reef, a destination
object rewritten or removed behind librbd's back (``rados put``/``rm``,
which carry no snapshot context) changes that object in every snapshot
too, and no diff (list-snaps or fast-diff) shows it; only the bytes do.

Just before prepare the module takes a snapshot of the source (the
*protective snapshot*, ``protect_name``).  librbd copies it like any other,
so on the destination it holds exactly what was copied, whatever clients
write to the head afterwards; and librbd's fast-diff from it on the
destination shows exactly the objects clients wrote since prepare (deep
copy keeps the clone layout, and writes behind librbd's back do not touch
the object map).  So:

- ``full``: every user snapshot, and the head (a client's write since
  prepare is a difference: for migrations whose clients do not write);
- ``auto``: every user snapshot, and the head when no client wrote to the
  destination; when one did, the protective snapshot stands in for the
  head ("the head as of prepare") and the note says so;
- without a protective snapshot (adopted migrations, a source at its
  snapshot limit) ``auto`` compares the snapshots only, and says so.

The protective snapshot is also the way back: librbd's abort copies what
clients wrote to the destination back into the source, and a destination
damaged behind librbd's back is not repaired by it; when no client wrote,
a cancel rolls the source back to the protective snapshot after the
abort, which gives the source exactly as it was before prepare.
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple

# HEAD and the comparison's mechanics live beside ``RbdPort.compare``, which uses them
from .interface import HEAD, first_difference, merge_extents, mismatch_line  # noqa: F401
from .task import VerifyMode

PROTECT_PREFIX = 'rbd_livemigrate-'


def protect_name(task_id: str) -> str:
    """The protective snapshot of a task (stable: a crash finds it again)."""
    return PROTECT_PREFIX + task_id


class Pair(NamedTuple):
    """One comparison: the source at ``src_snap`` against the destination at
    ``dst_snap`` (None: the head)."""
    label: str
    src_snap: Optional[str]
    dst_snap: Optional[str]


class ComparisonPlan(NamedTuple):
    pairs: List[Pair]
    note: Optional[str] = None            # what is not compared, and why
    mismatch: Optional[str] = None        # a difference found without reading


Snaps = Sequence[Tuple[str, int]]         # user snapshots (name, size), oldest first


def plan_comparison(mode: VerifyMode, src_snaps: Snaps, dst_snaps: Snaps,
                    protect: Optional[str], client_writes: Optional[int],
                    unused: bool = False) -> ComparisonPlan:
    """The comparisons ``mode`` asks for.  ``src_snaps``/``dst_snaps`` are the
    user snapshots of each side with the protective one (``protect``, None:
    there is none) left out; ``client_writes`` is how many destination
    objects clients wrote since prepare (None: unknown).  ``unused``: there
    is no protective snapshot because the task is a batch's whose source no
    client held, and no client has the destination open: the head is
    compared (for ``auto`` as for ``full``)."""
    src = [(n, s) for n, s in src_snaps if n != protect]
    dst = dict((n, s) for n, s in dst_snaps if n != protect)
    notes: List[str] = []
    # a snapshot only the destination has was taken there after prepare
    # (prepare copies every snapshot): a client's, not part of the copy
    extra = [n for n in dst if n not in dict(src)]
    if extra:
        notes.append('snapshot(s) {} taken on the destination since prepare: not '
                     'compared'.format(', '.join(extra)))
    missing = [n for n, _ in src if n not in dst]
    if missing and mode == VerifyMode.FULL:
        return ComparisonPlan([], mismatch='snapshot {} is missing on the destination'.format(
            missing[0]))
    if missing:
        notes.append('snapshot(s) {} removed from the destination since prepare: not '
                     'compared'.format(', '.join(missing)))
    src = [(n, s) for n, s in src if n in dst]
    for name, size in src:
        if size != dst[name]:
            return ComparisonPlan([], mismatch='snapshot {} is {} bytes on the source and {} '
                                  'on the destination'.format(name, size, dst[name]))
    pairs = [Pair(name, name, name) for name, _ in src]
    if mode == VerifyMode.FULL:
        return _planned(pairs + [Pair(HEAD, None, None)], notes)
    if protect is None and unused:
        # a batch's task whose source no client held takes no snapshot (an
        # OSDMap change each): its destination has no client either
        return _planned(pairs + [Pair(HEAD, None, None)], notes + [
            'no protective snapshot (a batch task whose source no client held); no client '
            'has the destination open: the head is compared'])
    if protect is None:
        return _planned(pairs, notes + [
            'head not compared: no protective snapshot (an adopted migration, or the source '
            'was at its snapshot limit) to tell client writes from damage; use --verify full '
            'for migrations whose clients do not write'])
    if client_writes == 0:
        return _planned(pairs + [Pair(HEAD, None, None)], notes)
    how = ('{} object(s)'.format(client_writes) if client_writes is not None
           else 'an unknown number of objects (no fast-diff on the destination)')
    return _planned(pairs + [Pair('{} as of prepare'.format(HEAD), None, protect)], notes + [
        'head not compared: clients wrote {} of the destination since prepare; the head as '
        'it was copied (snapshot {}) was compared instead'.format(how, protect)])


def explain_mismatch(mode: VerifyMode, label: str, text: str,
                     client_writes: Optional[int]) -> str:
    """A difference found, worded so that a client's write to the live
    destination is not taken for corruption: only a full comparison of the
    head can see such writes, and it says so when clients wrote."""
    if mode != VerifyMode.FULL or label != HEAD or client_writes == 0:
        return text
    how = ('clients wrote {} object(s) of the destination since prepare'.format(client_writes)
           if client_writes is not None else
           'clients may have written to the destination since prepare (not known without '
           'fast-diff)')
    return ('{}: {}, so this may be their writes rather than damage (--verify auto compares '
            'the head as it was copied instead)'.format(text, how))


def _planned(pairs: List[Pair], notes: List[str]) -> ComparisonPlan:
    return ComparisonPlan(pairs, '; '.join(notes) if notes else None)


def rollback_safe(client_writes: Optional[int]) -> bool:
    """Rolling the source back to the protective snapshot after an abort
    loses nothing: no client wrote to the destination since prepare."""
    return client_writes == 0
