"""
The migration task: a record and its state machine.

A task is a frozen dataclass.  Every change makes a new record
(``Task.evolve``); a state change goes through ``Task.moved_to``, which
refuses transitions the machine does not have.  Nothing here touches the
cluster, so the whole machine is unit-tested without one.

    queued -> preparing -> prepared -> executing -> executed
           -> committing -> committed
    any live state -> aborting -> aborted        (cancel: abort is revert)
    any live state -> failed -> queued            (retry)
"""

import datetime
import enum
import json
import re
import typing
import uuid
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Dict, FrozenSet, List, Optional

from .errors import LiveMigrateError, WrongState
from .spec import ImageSpec, validate_name

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


class CorruptRecord(LiveMigrateError):
    pass


# -- loading a stored record ---------------------------------------------
#
# Every stored field is checked against its dataclass annotation, so a field
# added to Task or Layout is checked with no edit here.  Numbers must be
# finite and non-negative (sizes, counts, epoch timestamps) unless
# _SIGNED_FIELDS names them; integers fit in 64 bits and floats stay within
# what ``isoformat`` can show.  A value that does not fit makes the whole
# record corrupt: the store skips it and raises RBD_LIVEMIGRATE_BAD_RECORD.

_MAX_INT = 2 ** 63 - 1
_MAX_FLOAT = 253402300799.0        # 9999-12-31T23:59:59Z, the last second datetime can show
_SIGNED_FIELDS = frozenset({'priority'})
_UNIONS = (typing.Union, type(int | None))
_TASK_ID_RE = re.compile(r'[0-9a-zA-Z_-]+')
_SHOW_CHARS = 60

_Convert = typing.Callable[[Any], Any]


class _Mismatch(Exception):
    """A stored value that does not fit its field (the caller words the message)."""


def _check_task_id(value: str) -> None:
    if not _TASK_ID_RE.fullmatch(value):
        raise _Mismatch()


def _check_batch_id(value: Optional[str]) -> None:
    if value is not None and not re.fullmatch(r'batch-[0-9a-f]{8}', value):
        raise _Mismatch()


def _check_import_spec(value: Optional[str]) -> None:
    if value is not None:
        from .source_spec import check
        try:
            check(json.loads(value))
        except ValueError:
            raise _Mismatch()


def _check_pool_name(value: Optional[str]) -> None:
    if value is not None:
        validate_name('data pool', value)


# path -> (what the message says is expected, check of the typed value), for
# fields a type alone does not cover; a check raises _Mismatch or InvalidArgument
_FIELD_CHECKS: Dict[str, typing.Tuple[str, typing.Callable[[Any], object]]] = {
    'id': ('non-empty string of 0-9, a-z, A-Z, _ and -', _check_task_id),
    'source': ('image spec pool[/namespace]/image', ImageSpec.parse),
    'destination': ('image spec pool[/namespace]/image', ImageSpec.parse),
    'layout.data_pool': ('null or pool name', _check_pool_name),
    'batch_id': ('null or batch-<8 hex digits>', _check_batch_id),
    'import_spec': ('null or a source-spec JSON object', _check_import_spec),
}


def _show(value: Any) -> str:
    """A stored value for a one-line message: its JSON, cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    text = ' '.join(text.splitlines())
    return text if len(text) <= _SHOW_CHARS else text[:_SHOW_CHARS - 3] + '...'


def _no_check(hint: Any) -> TypeError:
    return TypeError('no check for a stored field of type {!r}'.format(hint))


def _type_name(hint: Any, signed: bool) -> str:
    """What a field of annotation ``hint`` holds, in JSON terms."""
    origin = typing.get_origin(hint)
    if origin in _UNIONS:
        return ' or '.join(_type_name(a, signed) for a in typing.get_args(hint))
    if origin is list:
        return 'list of {}'.format(_type_name(typing.get_args(hint)[0], signed))
    if hint is type(None):
        return 'null'
    if not isinstance(hint, type):
        raise _no_check(hint)
    if issubclass(hint, enum.Enum):
        return 'one of {}'.format('|'.join(str(m.value) for m in hint))
    if issubclass(hint, bool):
        return 'boolean'
    if issubclass(hint, int):
        return 'integer from {} to 2^63-1'.format('-2^63' if signed else 0)
    if issubclass(hint, float):
        return 'number from {} to {:.0f}'.format(
            '-{:.0f}'.format(_MAX_FLOAT) if signed else 0, _MAX_FLOAT)
    if issubclass(hint, str):
        return 'string'
    if hasattr(hint, '__dataclass_fields__'):
        return 'object'
    raise _no_check(hint)


def _converter(hint: Any, path: str, signed: bool) -> _Convert:
    """A function from a stored value to what a field of annotation ``hint`` holds.

    It raises _Mismatch for a value that does not fit; building it raises
    TypeError for an annotation with no check here (a test covers every field).
    """
    origin = typing.get_origin(hint)
    if origin in _UNIONS:
        options = [_converter(a, path, signed) for a in typing.get_args(hint)]

        def union(value: Any) -> Any:
            for convert in options:
                try:
                    return convert(value)
                except _Mismatch:
                    pass
            raise _Mismatch()
        return union
    if origin is list:
        item = _converter(typing.get_args(hint)[0], path, signed)

        def list_of(value: Any) -> Any:
            if not isinstance(value, list):
                raise _Mismatch()
            return [item(v) for v in value]
        return list_of
    if hint is type(None):
        def null(value: Any) -> Any:
            if value is not None:
                raise _Mismatch()
            return None
        return null
    if not isinstance(hint, type):
        raise _no_check(hint)
    if issubclass(hint, enum.Enum):
        # keyed by type too: 1 == True, and an int enum must not take a bool
        members = {(type(m.value), m.value): m for m in hint}

        def member(value: Any) -> Any:
            try:
                return members[(type(value), value)]
            except (KeyError, TypeError):   # TypeError: a list or an object
                raise _Mismatch()
        return member
    if issubclass(hint, bool):
        def boolean(value: Any) -> Any:
            if not isinstance(value, bool):
                raise _Mismatch()
            return value
        return boolean
    if issubclass(hint, (int, float)):
        # a bool is an int: refused; an int is a fine float, a float no int
        accept = int if issubclass(hint, int) else (int, float)
        high = _MAX_INT if issubclass(hint, int) else _MAX_FLOAT
        low = -high if signed else 0
        kind = hint

        def number(value: Any) -> Any:
            if (isinstance(value, bool) or not isinstance(value, accept)
                    or not low <= value <= high):   # NaN compares false: refused too
                raise _Mismatch()
            return kind(value)
        return number
    if issubclass(hint, str):
        def string(value: Any) -> Any:
            if not isinstance(value, str):
                raise _Mismatch()
            return value
        return string
    if hasattr(hint, '__dataclass_fields__'):
        cls = hint

        def record(value: Any) -> Any:
            if not isinstance(value, dict):
                raise _Mismatch()
            return _record_from_json(cls, value, path + '.')
        return record
    raise _no_check(hint)


class _FieldPlan(typing.NamedTuple):
    name: str
    path: str
    required: bool
    convert: _Convert
    check: Optional[typing.Callable[[Any], object]]
    hint: Any
    signed: bool


# plans by (class, prefix): get_type_hints alone costs more than loading a record
_PLANS: Dict[typing.Tuple[type, str], typing.List[_FieldPlan]] = {}


def _plan(cls: Any, prefix: str) -> typing.List[_FieldPlan]:
    plan = _PLANS.get((cls, prefix))
    if plan is None:
        hints = typing.get_type_hints(cls)
        plan = []
        for f in fields(cls):
            if not f.init:
                continue
            path = prefix + f.name
            signed = path in _SIGNED_FIELDS
            plan.append(_FieldPlan(
                f.name, path, f.default is MISSING and f.default_factory is MISSING,
                _converter(hints[f.name], path, signed), _FIELD_CHECKS.get(path, ('', None))[1],
                hints[f.name], signed))
        _PLANS[(cls, prefix)] = plan
    return plan


def _record_from_json(cls: Any, d: Dict[str, Any], prefix: str) -> Any:
    """The dataclass ``cls`` from the stored ``d``, every field type-checked.

    Keys ``cls`` does not have are ignored (``version`` guards what a newer
    module wrote); missing ones take the dataclass default, so older records
    load.  ``prefix`` places the record within the task in messages.
    """
    kw: Dict[str, Any] = {}
    for p in _plan(cls, prefix):
        if p.name not in d:
            if p.required:
                raise CorruptRecord('task record field {} is missing'.format(p.path))
            continue
        value = d[p.name]
        try:
            kw[p.name] = p.convert(value)
            if p.check is not None:
                p.check(kw[p.name])
        except CorruptRecord:
            raise                       # a field of a nested record, already worded
        except (_Mismatch, LiveMigrateError):
            expected = _FIELD_CHECKS.get(p.path, ('', None))[0]
            raise CorruptRecord('task record field {}: expected {}, got {}'.format(
                p.path, expected or _type_name(p.hint, p.signed), _show(value)))
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:    # a __post_init__ that refuses the values
        raise CorruptRecord('task record {}is malformed: {}'.format(
            'field {} '.format(prefix[:-1]) if prefix else '', ' '.join(str(e).splitlines())))


@dataclass(frozen=True, slots=True)
class Layout:
    """The on-disk layout options of ``rbd migration prepare``."""
    object_size: Optional[int] = None
    stripe_unit: Optional[int] = None
    stripe_count: Optional[int] = None
    features: Optional[List[str]] = None
    data_pool: Optional[str] = None
    flatten: bool = False

    def to_json(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) not in (None, False)}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> 'Layout':
        if not isinstance(d, dict):
            raise CorruptRecord('task record field layout: expected object, got {}'.format(
                _show(d)))
        if not d:
            return PLAIN_LAYOUT         # most tasks: one shared record (frozen)
        layout: Layout = _record_from_json(cls, d, 'layout.')
        return layout


PLAIN_LAYOUT = Layout()


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
        return json.dumps(self.to_json(), sort_keys=True, separators=(',', ':'))

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> 'Task':
        if not isinstance(d, dict):
            raise CorruptRecord('task record is not a JSON object')
        version = d.get('version')
        if not isinstance(version, int):
            raise CorruptRecord('task record has no version')
        newest = IMPORT_TASK_VERSION if d.get('import_spec') is not None else TASK_VERSION
        if version > newest:
            raise CorruptRecord('task record version {} is newer than this module '
                                'understands ({})'.format(version, newest))
        # every field type-checked (a bool version too), id and specs parsed
        task: Task = _record_from_json(cls, d, '')
        return task

    @classmethod
    def loads(cls, text: str) -> 'Task':
        try:
            d = json.loads(text)
        except ValueError as e:
            raise CorruptRecord('task record is not JSON: {}'.format(e))
        return cls.from_json(d)

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
