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
import uuid
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, FrozenSet, List, Optional

from .errors import LiveMigrateError, WrongState

TASK_VERSION = 1


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
    def active(self) -> bool:
        """A step that is under way (counts against concurrency limits)."""
        return self in (State.PREPARING, State.EXECUTING, State.COMMITTING, State.ABORTING)


# Edges back to queued exist for a migration librbd reports broken (aborted
# to start over); edges forward from queued for one librbd already holds
# (a crash between a step and saving its result, or a retry).
_TRANSITIONS: Dict[State, FrozenSet[State]] = {
    State.QUEUED: frozenset({State.PREPARING, State.ABORTING, State.ABORTED, State.FAILED,
                             State.PREPARED, State.EXECUTED, State.COMMITTED}),
    State.PREPARING: frozenset({State.PREPARED, State.QUEUED, State.FAILED, State.ABORTING,
                                State.EXECUTED, State.COMMITTED}),
    State.PREPARED: frozenset({State.EXECUTING, State.EXECUTED, State.ABORTING, State.FAILED,
                               State.COMMITTED, State.QUEUED}),
    State.EXECUTING: frozenset({State.EXECUTED, State.PREPARED, State.ABORTING, State.FAILED,
                                State.COMMITTED, State.QUEUED}),
    State.EXECUTED: frozenset({State.COMMITTING, State.COMMITTED, State.ABORTING,
                               State.FAILED, State.QUEUED}),
    State.COMMITTING: frozenset({State.COMMITTED, State.EXECUTED, State.FAILED}),
    State.COMMITTED: frozenset(),
    State.ABORTING: frozenset({State.ABORTED, State.FAILED}),
    State.ABORTED: frozenset(),
    State.FAILED: frozenset({State.QUEUED, State.PREPARED, State.EXECUTED, State.ABORTING,
                             State.ABORTED, State.COMMITTED}),
}


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


@dataclass(frozen=True)
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
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Task:
    id: str
    source: str
    destination: str
    state: State = State.QUEUED
    layout: Layout = field(default_factory=Layout)
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
    blocked_since: Optional[float] = None
    attempts: int = 0
    next_retry: Optional[float] = None
    last_progress_at: Optional[float] = None
    created: float = 0.0
    started: Optional[float] = None
    finished: Optional[float] = None
    adopted: bool = False
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
            changes.setdefault('blocked_since', None)
            changes.setdefault('next_retry', None)
            if new == State.COMMITTED:
                changes.setdefault('progress', 1.0)
                changes.setdefault('error', None)
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
        return self.state.terminal or self.state == State.FAILED

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

    def to_json(self) -> Dict[str, Any]:
        # shallow on purpose: asdict() deep-copies and dominated ls of 10,000 tasks
        d = {name: getattr(self, name) for name in _TASK_FIELDS}
        d['state'] = self.state.value
        d['layout'] = self.layout.to_json()
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
        if version > TASK_VERSION:
            raise CorruptRecord('task record version {} is newer than this module '
                                'understands ({})'.format(version, TASK_VERSION))
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        try:
            kw['state'] = State(kw.get('state'))
            kw['layout'] = Layout.from_json(kw.get('layout') or {})
            task = cls(**kw)
        except (TypeError, ValueError) as e:
            raise CorruptRecord('task record is malformed: {}'.format(e))
        if not task.id or not task.source or not task.destination:
            raise CorruptRecord('task record lacks id, source or destination')
        return task

    @classmethod
    def loads(cls, text: str) -> 'Task':
        try:
            d = json.loads(text)
        except ValueError as e:
            raise CorruptRecord('task record is not JSON: {}'.format(e))
        return cls.from_json(d)

    # -- presentation --------------------------------------------------

    def eta_seconds(self) -> Optional[float]:
        if self.state != State.EXECUTING or not self.rate_bytes_per_sec or not self.size_bytes:
            return None
        left = max(0, self.size_bytes - self.bytes_copied)
        return round(left / self.rate_bytes_per_sec, 1)

    def view(self) -> Dict[str, Any]:
        """What ``ls``/``status`` show: the record with ISO 8601 timestamps."""
        d = self.to_json()
        del d['version']
        for k in ('created', 'started', 'finished', 'blocked_since', 'next_retry',
                  'last_progress_at'):
            d[k] = isoformat(d[k])
        d['progress'] = round(self.progress, 4)
        d['eta_seconds'] = self.eta_seconds()
        return d


_TASK_FIELDS = tuple(f.name for f in fields(Task))
