"""
A batch: the tasks one ``add-pool`` makes, followed as one thing.

``add-pool`` returns at once with a batch; the images are listed and
preflighted in the background (``expanding``), each becoming a task that
carries the batch's id, or a refusal kept in the batch with its errno and
reason.  The batch's progress is its tasks' (``summary``); ``status``,
``pause``, ``resume`` and ``cancel`` take a batch id.  A batch is a plain
record like a task, stored under its own key; only the first refusals are
kept (``MAX_REFUSED``), with a count of them all, so the record stays small
whatever the pool's size.
"""

import enum
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, List, Optional

from .records import Mismatch, Schema, dumps, from_json, parse_text, versioned
from .task import State, isoformat

BATCH_VERSION = 1
MAX_REFUSED = 100
_ID_RE = re.compile(r'^batch-[0-9a-f]{8}$')


class BatchState(str, enum.Enum):
    EXPANDING = 'expanding'     # listing and preflighting the images
    EXPANDED = 'expanded'       # every image is a task or a refusal
    CANCELLED = 'cancelled'     # cancelled: no more tasks; its tasks cancelled

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Batch:
    id: str
    source: str                  # pool spec
    destination: str             # pool spec
    pattern: Optional[str] = None
    request: Dict[str, Any] = field(default_factory=dict)   # the add options, as given
    # the caller's rights when it ran add-pool: 'pool' or 'pool/namespace'
    # entries, or '*' for every pool (images are added later, without it)
    allowed: List[str] = field(default_factory=list)
    state: BatchState = BatchState.EXPANDING
    paused: bool = False
    images: int = 0              # images matched so far (all once expanded)
    refused: List[Dict[str, Any]] = field(default_factory=list)  # the first MAX_REFUSED
    refused_count: int = 0
    # tasks that left the history (max_history), by their final state: the
    # batch still counts them
    pruned: Dict[str, int] = field(default_factory=dict)
    created: float = 0.0
    expanded: Optional[float] = None
    version: int = BATCH_VERSION

    @staticmethod
    def new_id() -> str:
        return 'batch-' + uuid.uuid4().hex[:8]

    @staticmethod
    def is_id(text: str) -> bool:
        return bool(_ID_RE.match(text))

    def evolve(self, **changes: Any) -> 'Batch':
        return replace(self, **changes)

    def with_pruned(self, states: Iterable[str]) -> 'Batch':
        pruned = dict(self.pruned)
        for st in states:
            pruned[st] = pruned.get(st, 0) + 1
        return replace(self, pruned=pruned)

    def with_refusal(self, spec: str, err: int, message: str) -> 'Batch':
        refused = self.refused
        if len(refused) < MAX_REFUSED:
            refused = refused + [{'source': spec, 'errno': -abs(err), 'message': message}]
        return replace(self, refused=refused, refused_count=self.refused_count + 1)

    # -- persistence ---------------------------------------------------

    def to_json(self) -> Dict[str, Any]:
        d = {k: getattr(self, k) for k in _FIELDS}
        d['state'] = self.state.value
        return d

    def dumps(self) -> str:
        return dumps(self.to_json())

    @classmethod
    def loads(cls, text: str) -> 'Batch':
        d = versioned(parse_text(text, 'batch'), 'batch', BATCH_VERSION)
        # every field type-checked (records.py); a key it does not have is refused
        batch: Batch = from_json(cls, d, _SCHEMA)
        return batch

    # -- presentation --------------------------------------------------

    def summary_of(self, by_state: Dict[str, int]) -> Dict[str, Any]:
        """The batch as ``status`` shows it, from its tasks in the table
        counted by state (the table keeps these counts: no walk over them)."""
        counts: Dict[str, int] = dict(self.pruned)
        live = 0
        for state, n in by_state.items():
            if n <= 0:
                continue
            counts[state] = counts.get(state, 0) + n
            live += 0 if State(state).done else n
        queued = sum(counts.values())
        committed = counts.get(State.COMMITTED.value, 0)
        total = queued if self.state != BatchState.EXPANDING else max(queued, self.images)
        # the share migrated: a cancelled or failed image is not (it is counted
        # in by_state, never as done)
        done = committed
        d = self.to_json()
        del d['version']
        del d['allowed']
        d['created'] = isoformat(self.created)
        d['expanded'] = isoformat(self.expanded)
        d.update(tasks=queued, live=live, committed=committed, by_state=counts,
                 progress=round(done / total, 4) if total else (
                     0.0 if self.state == BatchState.EXPANDING else 1.0),
                 finished=self.state != BatchState.EXPANDING and live == 0)
        return d


def _check_id(value: str) -> None:
    if not Batch.is_id(value):
        raise Mismatch()


_SCHEMA = Schema('batch', checks={'id': ('batch-<8 hex digits>', _check_id)}, strict=True)
_FIELDS = tuple(f for f in Batch.__dataclass_fields__)
