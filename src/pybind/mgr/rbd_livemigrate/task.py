"""
The migration task: a record and its state machine.

A task is a frozen dataclass.  Every change makes a new record
(``Task.evolve``); a state change goes through ``Task.moved_to``, which
refuses transitions the machine does not have.  Nothing here touches the
cluster, so the whole machine is unit-tested without one.  A stored record
is read by ``records.py`` (every field checked against its annotation; the
few checks a type does not make are ``TASK_SCHEMA``); the layout a task
gives its destination is ``spec.Layout``.

    queued -> preparing -> prepared -> executing -> executed
           -> committing -> committed
    any live state -> aborting -> aborted        (cancel: abort is revert)
    any live state -> failed -> queued            (retry)
"""

import datetime
import enum
import json
import re
import uuid
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, FrozenSet, List, Optional

from .errors import WrongState
from .records import CorruptRecord, Mismatch, Schema, from_json, parse_text, versioned
from .records import dumps as record_text
# Layout lives with the specs (spec.py); here for the modules that import it from the task
from .spec import LAYOUT_CHECKS, PLAIN_LAYOUT, ImageSpec, Layout

__all__ = ['CorruptRecord', 'Layout', 'PLAIN_LAYOUT']

TASK_VERSION = 1
# an import's record says 2: a module that predates imports refuses it (and
# raises RBD_LIVEMIGRATE_BAD_RECORD) instead of reading an in-place migration
IMPORT_TASK_VERSION = 2


class State(str, enum.Enum):
    QUEUED = 'queued'
    PREPARING = 'preparing'
    PREPARED = 'prepared'
    EXECUTING = 'executing'
    EXECUTED = 'executed'
    COMMITTING = 'committing'
    COMMITTED = 'committed'
    ABORTING = 'aborting'
    ABORTED = 'aborted'
    FAILED = 'failed'

    def __str__(self) -> str:
        return self.value

    @property
    def terminal(self) -> bool:
        return self in (State.COMMITTED, State.ABORTED)

    @property
    def done(self) -> bool:
        """Nothing more will happen without an operator (history entries)."""
        return self.terminal or self == State.FAILED

    @property
    def active(self) -> bool:
        """A step that is under way (counts against concurrency limits)."""
        return self in (State.PREPARING, State.EXECUTING, State.COMMITTING, State.ABORTING)


# The record catches up to what the image headers show after a crash, a
# failover or an operator's own step: every live state may move to any
# stable state, to aborting, or to committing (a commit found under way).
# The two copy-free steps are entered only from the state before them.  A
# commit under way can only finish or fail; an abort under way can only
# finish, fail, or find that the commit had won.
_LIVE = (State.QUEUED, State.PREPARING, State.PREPARED, State.EXECUTING, State.EXECUTED,
         State.FAILED)
_CATCH_UP = frozenset({State.QUEUED, State.PREPARED, State.EXECUTED, State.COMMITTING,
                       State.COMMITTED, State.ABORTING, State.ABORTED, State.FAILED})
_TRANSITIONS: Dict[State, FrozenSet[State]] = {s: _CATCH_UP for s in _LIVE}
_TRANSITIONS[State.QUEUED] = _CATCH_UP | {State.PREPARING}
_TRANSITIONS[State.PREPARED] = _CATCH_UP | {State.EXECUTING}
_TRANSITIONS.update({
    State.COMMITTING: frozenset({State.COMMITTED, State.EXECUTED, State.FAILED}),
    State.ABORTING: frozenset({State.ABORTED, State.FAILED, State.COMMITTING,
                               State.COMMITTED}),
    State.COMMITTED: frozenset(),
    State.ABORTED: frozenset(),
})


def can_move(old: State, new: State) -> bool:
    return new == old or new in _TRANSITIONS[old]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def isoformat(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    dt = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return dt.strftime('%Y-%m-%dT%H:%M:%S.%fZ')


# -- loading a stored record (records.py does the typing) ----------------

_TASK_ID_RE = re.compile(r'[0-9a-zA-Z_-]+')


def _check_task_id(value: str) -> None:
    if not _TASK_ID_RE.fullmatch(value):
        raise Mismatch()


def _check_batch_id(value: Optional[str]) -> None:
    if value is not None and not re.fullmatch(r'batch-[0-9a-f]{8}', value):
        raise Mismatch()


def _check_import_spec(value: Optional[str]) -> None:
    if value is not None:
        from .remote_spec import is_remote_spec
        from .source_spec import check
        try:
            spec = json.loads(value)
            if is_remote_spec(spec):
                _check_remote_spec(spec)     # another cluster's image (issue 27)
            else:
                check(spec)
        except ValueError:
            raise Mismatch()


def _check_remote_spec(spec: Dict[str, Any]) -> None:
    """A remote task's spec is exactly what remote_spec.build_source_spec
    makes from its own fields (so never a key or a mon_host)."""
    from .errors import LiveMigrateError
    from .remote_spec import build_source_spec
    try:
        conf_dir, remote = str(spec['cluster_name']).rsplit('/', 1)
        built = build_source_spec(conf_dir or '/', remote, spec['client_name'],
                                  spec['pool_name'], spec.get('pool_namespace', ''),
                                  spec['image_name'], spec['snap_name'])
    except (KeyError, TypeError, ValueError, LiveMigrateError):
        raise Mismatch()
    if built != spec:
        raise Mismatch()


# a task's fields a type alone does not cover (its layout's too)
TASK_SCHEMA = Schema('task', checks=dict(LAYOUT_CHECKS, **{
    'id': ('non-empty string of 0-9, a-z, A-Z, _ and -', _check_task_id),
    'source': ('image spec pool[/namespace]/image', ImageSpec.parse),
    'destination': ('image spec pool[/namespace]/image', ImageSpec.parse),
    'batch_id': ('null or batch-<8 hex digits>', _check_batch_id),
    'import_spec': ('null or a source-spec JSON object', _check_import_spec),
}), signed=frozenset({'priority'}))


class VerifyMode(str, enum.Enum):
    """What is compared before commit (``add --verify``)."""
    FULL = 'full'      # every snapshot and the head
    AUTO = 'auto'      # every snapshot; the head unless a client wrote to it
    OFF = 'off'

    def __str__(self) -> str:
        return self.value


class VerifyResult(str, enum.Enum):
    RUNNING = 'running'
    PASSED = 'passed'
    MISMATCH = 'mismatch'

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Verification:
    """The comparison of source and destination before commit, as ``status``
    shows it: what was compared, how much, how long, and the result."""
    mode: VerifyMode
    result: VerifyResult
    dest_image_id: Optional[str] = None     # the destination it is about
    compared: List[str] = field(default_factory=list)   # snapshots, then HEAD
    note: Optional[str] = None              # what was not compared, and why
    mismatch: Optional[str] = None          # the first difference
    bytes_compared: int = 0
    bytes_total: int = 0
    started: float = 0.0
    seconds: float = 0.0
    client_writes: Optional[int] = None     # objects clients wrote since prepare


# slots: 10,000 records are held at once (about 40% smaller than with a __dict__)
@dataclass(frozen=True, slots=True)
class Task:
    id: str
    source: str
    destination: str
    state: State = State.QUEUED
    layout: Layout = PLAIN_LAYOUT
    manual_commit: bool = False
    allow_descendants: bool = False
    priority: int = 0
    bandwidth_limit_bytes: Optional[int] = None
    paused: bool = False
    cancel_requested: bool = False
    commit_requested: bool = False
    source_image_id: Optional[str] = None
    dest_image_id: Optional[str] = None
    size_bytes: Optional[int] = None
    progress: float = 0.0
    bytes_copied: int = 0
    rate_bytes_per_sec: Optional[float] = None
    error: Optional[str] = None
    blocked_reason: Optional[str] = None
    blocked_kind: Optional[str] = None
    blocked_since: Optional[float] = None
    attempts: int = 0
    next_retry: Optional[float] = None
    last_progress_at: Optional[float] = None
    created: float = 0.0
    started: Optional[float] = None
    finished: Optional[float] = None
    adopted: bool = False
    batch_id: Optional[str] = None           # the add-pool batch that made it
    # cutover: prepare only on ``ceph rbd livemigrate cutover`` (requested);
    # when the module last saw the source without clients, and how long
    # from then until prepare was done
    manual_cutover: bool = False
    cutover_requested: bool = False
    clients_gone_at: Optional[float] = None
    cutover_ms: Optional[float] = None
    # verify before commit: the mode, the snapshot taken on the source just
    # before prepare (the way back after a bad copy), whether the cancel
    # under way rolls the source back to it, and the last verification
    verify: VerifyMode = VerifyMode.OFF
    protect_snap: Optional[str] = None
    rollback_source: bool = False
    verification: Optional[Verification] = None
    execute_seconds: Optional[float] = None
    # an import (``ceph rbd livemigrate import``): the source-spec given to
    # librbd, credentials moved out (source_spec.py); source == destination
    import_spec: Optional[str] = None
    # who asked: the rights the caller proved when it added the task (the
    # mgr's module interface names no entity; the audit log does)
    added_by: Optional[str] = None
    version: int = TASK_VERSION

    # -- construction --------------------------------------------------

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex[:12]

    # -- state machine -------------------------------------------------

    def evolve(self, **changes: Any) -> 'Task':
        return replace(self, **changes)

    def moved_to(self, new: State, now: float, **changes: Any) -> 'Task':
        """The record after a transition to ``new``; refuses a missing edge."""
        if not can_move(self.state, new):
            raise WrongState('task {} cannot go from {} to {}'.format(self.id, self.state, new))
        if new == State.PREPARING and self.started is None:
            changes.setdefault('started', now)
        if new.terminal:
            changes.setdefault('finished', now)
            changes.setdefault('blocked_reason', None)
            changes.setdefault('blocked_kind', None)
            changes.setdefault('blocked_since', None)
            changes.setdefault('next_retry', None)
            if new == State.COMMITTED:
                changes.setdefault('progress', 1.0)
                changes.setdefault('error', None)
            if new == State.ABORTED:
                # nothing was migrated: no bar left at the last copy's share
                changes.setdefault('progress', 0.0)
                changes.setdefault('rate_bytes_per_sec', None)
        if new == State.FAILED:
            changes.setdefault('finished', now)
        if new == State.QUEUED:
            changes.setdefault('finished', None)
        return replace(self, state=State(new), **changes)

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @property
    def done(self) -> bool:
        """Nothing more will happen without an operator (history entries)."""
        return self.state.done

    @property
    def awaiting_cutover(self) -> bool:
        """Added with --manual-cutover, not prepared, no cutover asked for yet."""
        return (self.manual_cutover and not self.cutover_requested and not self.cancel_requested
                and self.state in (State.QUEUED, State.PREPARING))

    @property
    def needs_worker(self) -> bool:
        """The worker has something to do for this task."""
        if self.state.terminal:
            return False
        if self.cancel_requested:
            return True
        if self.state == State.FAILED:
            return False
        if self.state == State.EXECUTED and self.manual_commit and not self.commit_requested:
            return False
        return True

    # -- persistence ---------------------------------------------------

    @property
    def verified(self) -> bool:
        """Nothing (more) to compare before commit."""
        v = self.verification
        return self.verify == VerifyMode.OFF or (
            v is not None and v.result == VerifyResult.PASSED
            and v.dest_image_id == self.dest_image_id)

    def to_json(self) -> Dict[str, Any]:
        # shallow on purpose: asdict() deep-copies and dominated ls of 10,000 tasks
        d = {name: getattr(self, name) for name in _TASK_FIELDS}
        d['state'] = self.state.value
        d['layout'] = self.layout.to_json()
        d['verify'] = self.verify.value
        if self.verification is not None:
            d['verification'] = verification_json(self.verification)
        return d

    def dumps(self) -> str:
        return record_text(self.to_json())

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> 'Task':
        newest = (IMPORT_TASK_VERSION if isinstance(d, dict) and d.get('import_spec') is not None
                  else TASK_VERSION)
        # every field type-checked (a bool version too), id and specs parsed
        task: Task = from_json(cls, versioned(d, 'task', newest), TASK_SCHEMA)
        return task

    @classmethod
    def loads(cls, text: str) -> 'Task':
        return cls.from_json(parse_text(text, 'task'))

    # -- presentation --------------------------------------------------

    @property
    def moving(self) -> bool:
        """A copy that runs now: not paused, held, or being cancelled."""
        return (self.state == State.EXECUTING and not self.paused and not self.cancel_requested
                and self.blocked_kind is None)

    def eta_seconds(self) -> Optional[float]:
        if not self.moving or not self.rate_bytes_per_sec or not self.size_bytes:
            return None
        left = max(0, self.size_bytes - self.bytes_copied)
        return round(left / self.rate_bytes_per_sec, 1)

    def view(self) -> Dict[str, Any]:
        """What ``ls``/``status`` show: the record with ISO 8601 timestamps."""
        d = self.to_json()
        del d['version']
        for k in ('created', 'started', 'finished', 'blocked_since', 'next_retry',
                  'last_progress_at', 'clients_gone_at'):
            d[k] = isoformat(d[k])
        if self.verification is not None:
            d['verification'] = dict(d['verification'],
                                     started=isoformat(self.verification.started),
                                     seconds=round(self.verification.seconds, 2))
        d['progress'] = round(self.progress, 4)
        d['eta_seconds'] = self.eta_seconds()
        if not self.moving:
            d['rate_bytes_per_sec'] = None      # the last rate is not what happens now
        return d


_TASK_FIELDS = tuple(f.name for f in fields(Task))


def verification_json(v: Verification) -> Dict[str, Any]:
    d = {f.name: getattr(v, f.name) for f in fields(v)}
    d['mode'] = v.mode.value
    d['result'] = v.result.value
    d['compared'] = list(v.compared)
    return d
