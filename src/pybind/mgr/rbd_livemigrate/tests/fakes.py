"""
Fakes for the runner's tests: a librbd (``RbdPort``) holding one migration
a/img -> b/img in memory, moved along by the steps as librbd moves it, and
failing where librbd fails.  Opening an image answers what librbd's open
answers in each state the fake models (``FakeLibrbd.open_error``): ENOENT
where the image is not there; for a destination whose header says ABORTING
(an abort cut after its first writes) EROFS to an open for writing, while a
read-only open succeeds (measured by ``qa/standalone/rbd_livemigrate/
test_cut_abort.py`` on Pacific 16.2.15, Reef and Tentacle: read-only 0,
read-write EROFS);
``ro_refused`` makes the read-only open refuse too, for a release that
would.  Calls nobody expected raise (``RbdPort``'s NotImplementedError).
"""

import errno
from typing import Any, List, Optional, Tuple

from rbd_livemigrate.errors import LiveMigrateError, NotFound, Transient
from rbd_livemigrate.interface import (Client, ClientPool, End, HeaderType, ImageInfo, Intent,
                                       MigrationHeader, MigState, Observation, RbdPort,
                                       TrashSource, VerifyInputs)
from rbd_livemigrate.spec import ImageSpec

S, D = 'sid', 'did'

# where each end's name leads in each phase: (source, destination); 'plain'
# opens, 'aborting' opens read-only only (EROFS for writing), 'trash' and
# 'gone' are not found by name (ENOENT: a source in the trash is only
# reached by its id)
ENDS = {
    'not-prepared': ('plain', 'gone'),
    'half-prepared': ('trash', 'gone'),
    'prepared': ('trash', 'plain'),
    'executed': ('trash', 'plain'),
    'aborting': ('trash', 'aborting'),
    'half-aborted': ('aborting', 'gone'),
    'half-committed': ('trash', 'plain'),
    'commit-last-step': ('trash', 'plain'),
    'committed-unrecorded': ('gone', 'plain'),
    'committed': ('gone', 'plain'),
}


class FakeClient(Client):
    addr = '127.0.0.1:0/1'
    closed = False

    def close(self) -> None:
        self.closed = True


class FakePool(ClientPool):
    def take(self) -> Client:
        return FakeClient()

    def release(self, client: Client) -> None:
        pass


class FakeLibrbd(RbdPort):
    """One migration a/img -> b/img, as librbd would hold it."""

    def __init__(self, phase: str) -> None:
        self.factory = FakePool()
        self.phase = phase          # not-prepared, executed, half-committed, aborting, ...
        self.calls: List[str] = []
        self.on_observe: Optional[Any] = None
        self.did = D                # the destination id librbd gave the migration
        self.clones: List[str] = []  # clones of the destination (list_descendants)
        self.marks: List[Tuple[int, str, str, Intent]] = []
        self.ro_refused = False     # a destination under abort refuses read-only opens too

    def observe(self, source: ImageSpec, dest: ImageSpec, source_id: Optional[str],
                dest_id: Optional[str]) -> Observation:
        if self.on_observe is not None:
            self.on_observe()
        p = self.phase
        D = self.did

        def sh(st: MigState) -> MigrationHeader:
            return MigrationHeader(HeaderType.SRC, 2, '', 'img', D, st)

        def dh(st: MigState) -> MigrationHeader:
            return MigrationHeader(HeaderType.DST, 1, '', 'img', S, st)
        trashed = TrashSource.MIGRATION
        if p == 'not-prepared':
            return Observation(End(S, S, True, None, None, 1), End(None, None, pool_id=2))
        if p in ('prepared', 'executed', 'aborting'):
            st = {'prepared': MigState.PREPARED, 'executed': MigState.EXECUTED,
                  'aborting': MigState.ABORTING}[p]
            return Observation(End(S, None, True, sh(st), trashed, 1),
                               End(D, D, True, dh(st), None, 2))
        if p == 'half-prepared':
            return Observation(End(S, None, True, sh(MigState.PREPARING), trashed, 1),
                               End(D, None, False, None, None, 2))
        if p == 'half-committed':
            return Observation(End(S, None, True, sh(MigState.EXECUTED), trashed, 1),
                               End(D, D, True, None, None, 2))
        if p == 'half-aborted':            # the source back under its name, still aborting
            return Observation(End(S, S, True, sh(MigState.ABORTING), None, 1),
                               End(D, None, False, None, None, 2))
        if p in ('commit-last-step', 'committed-unrecorded'):
            # both headers gone; the destination known only by what the
            # adapter reads: the recorded id, else the intent key it carries
            gone = End(S, None, False, None, trashed if p == 'commit-last-step' else None, 1)
            if dest_id is None:
                found = [m[3] for m in self.marks if m[1] == 'a/img' and m[3].step == 'prepare']
                if found and found[-1].names_source(source_id):
                    return Observation(gone, End(D, D, True, None, None, 2, found[-1]))
                return Observation(gone, End(None, D, pool_id=2))
            return Observation(gone, End(D, D, True, None, None, 2))
        assert p == 'committed', p
        return Observation(End(S, None, False, None, None, 1), End(D, D, True, None, None, 2))

    def open_error(self, spec: ImageSpec, write: bool,
                   what: str) -> Optional[LiveMigrateError]:
        """What librbd's open of ``spec`` (a/img: the source's name, b/img:
        the destination's), for writing or read-only, raises now, as
        ``rbd_adapter.translate`` types it; None when it opens."""
        where = ENDS[self.phase][0 if spec.pool == 'a' else 1]
        if where in ('trash', 'gone'):
            return NotFound('{}: [errno 2] No such file or directory'.format(what))
        if where == 'aborting' and (write or self.ro_refused):
            return Transient('{}: [errno 30] migration is being aborted'.format(what),
                             errno.EROFS)
        return None

    def opened(self, spec: ImageSpec, write: bool, what: str) -> None:
        e = self.open_error(spec, write, what)
        if e is not None:
            self.calls.append('{}: {}'.format(what, errno.errorcode[e.errno]))
            raise e

    # the steps move the fake along as librbd would
    def image_info(self, spec: ImageSpec, with_used: bool = True) -> ImageInfo:
        return ImageInfo(S, 1 << 20, 4 << 20, 4 << 20, 1, 1, -1, [], [], [], 1 << 20, False,
                         False)

    def namespace_exists(self, pool: str, namespace: str) -> bool:
        return True

    def image_exists(self, spec: ImageSpec) -> bool:
        return False

    def trashed_source(self, spec: ImageSpec) -> Optional[str]:
        return None

    def descendants(self, spec: ImageSpec) -> List[str]:
        self.calls.append('list clones')
        return list(self.clones)

    def image_id(self, spec: ImageSpec) -> Optional[str]:
        return None if self.phase == 'not-prepared' else self.did

    def prepare(self, client: Client, source: ImageSpec, dest: ImageSpec, layout: Any,
                info: ImageInfo) -> None:
        self.calls.append('prepare')
        self.phase = 'prepared'

    def execute(self, client: Client, dest: ImageSpec, on_progress: Any = None) -> None:
        self.opened(dest, True, 'execute')
        self.calls.append('execute')
        self.phase = 'executed'

    def commit(self, client: Client, dest: ImageSpec, on_progress: Any = None) -> None:
        self.opened(dest, True, 'commit')
        self.calls.append('commit')
        self.phase = 'committed'

    def abort(self, client: Client, spec: ImageSpec, on_progress: Any = None) -> None:
        if self.phase == 'half-aborted':
            # only the source's header is left: librbd's own abort fails ENOENT
            # (measured, doc/dev: finish_abort does that last write)
            self.calls.append('abort via {}: ENOENT'.format(spec))
            raise NotFound('abort failed: [errno 2] No such file or directory')
        self.calls.append('abort via ' + str(spec))
        self.phase = 'not-prepared'

    def finish_commit(self, client: Client, source: ImageSpec, source_id: str,
                      dest: ImageSpec, header: Optional[MigrationHeader]) -> None:
        self.calls.append('finish commit of ' + source_id)
        self.phase = 'committed-unrecorded' if self.phase == 'commit-last-step' else 'committed'

    def finish_abort(self, client: Client, source: ImageSpec, source_id: str,
                     header: Optional[MigrationHeader]) -> None:
        self.calls.append('finish abort of ' + source_id)
        self.phase = 'not-prepared'

    def flatten(self, client: Client, dest: ImageSpec) -> bool:
        self.opened(dest, True, 'flatten')
        self.calls.append('flatten')
        return False

    def mark_intent(self, client: Client, spec: ImageSpec, image_id: str,
                    intent: Intent) -> None:
        # kept apart from ``calls``: (steps done before it, spec, image id, intent)
        self.marks.append((len(self.calls), str(spec), image_id, intent))


class VerifyingLibrbd(FakeLibrbd):
    """FakeLibrbd with the protective snapshot and the comparison: each
    opens its image as librbd would (``opened``)."""

    def __init__(self, phase: str, writes: Optional[int] = 0,
                 difference: Optional[Tuple[str, int, str]] = None) -> None:
        super().__init__(phase)
        self.writes = writes
        self.difference = difference
        self.snaps: List[str] = []

    def protect_source(self, client: Any, source: Any, name: str,
                       clients: bool = False) -> bool:
        self.opened(source, True, 'snap')
        self.calls.append('snap ' + name)
        self.snaps.append(name)
        return True

    def unprotect(self, client: Any, spec: Any, name: str, rollback: bool) -> bool:
        e = self.open_error(spec, True, 'remove snap')
        if isinstance(e, NotFound):
            return False                # the adapter's answer for an image not there
        self.opened(spec, True, 'remove snap')
        self.calls.append('{}remove snap of {}'.format('rollback, ' if rollback else '', spec))
        return True

    def client_writes(self, dest: Any, protect: str) -> Optional[int]:
        self.opened(dest, False, 'client writes')
        return self.writes

    def verify_inputs(self, source: Any, source_id: str, dest: Any,
                      protect: Optional[str]) -> VerifyInputs:
        self.opened(dest, False, 'verify inputs')
        return VerifyInputs([('s1', 1)] + [(n, 1) for n in self.snaps],
                            [('s1', 1)] + [(n, 1) for n in self.snaps],
                            None if protect is None else self.writes)

    def compare(self, client: Any, source: Any, source_id: str, dest: Any, pairs: List[Any],
                on_progress: Any) -> Optional[Tuple[str, int, str]]:
        self.opened(dest, False, 'compare')
        self.calls.append('compare ' + ','.join(p.label for p in pairs))
        on_progress(5, 10)
        on_progress(10, 10)
        return self.difference
