"""
The options of ``add``, ``import`` and ``add-pool``: as typed by the CLI
(``AddRequest``, built by keyword in ``module.py``; a batch keeps it), and
checked and typed once (``Request``, from ``parse``).
"""

import enum
from dataclasses import dataclass
from typing import Any, List, Mapping, NamedTuple, Optional

from .errors import InvalidArgument
from .preflight import MIN_BANDWIDTH_BYTES, validate_layout
from .spec import Layout, parse_bytes
from .task import VerifyMode

MAX_PRIORITY = 1000
# 1 TiB/s: faster than any cluster copies one image; more is a typo (10P)
MAX_BANDWIDTH_BYTES = 1 << 40


class AddRequest(NamedTuple):
    """The options of add and add-pool, as typed."""
    object_size: Optional[str] = None
    stripe_unit: Optional[str] = None
    stripe_count: Optional[int] = None
    features: Optional[str] = None
    data_pool: Optional[str] = None
    flatten: bool = False
    manual_commit: bool = False
    allow_descendants: bool = False
    priority: int = 0
    bandwidth_limit: Optional[str] = None
    dry_run: bool = False
    manual_cutover: bool = False
    verify: Optional[str] = None


def request_of(args: Mapping[str, Any]) -> AddRequest:
    """The request in a command handler's arguments (``locals()`` of add,
    import or add-pool), by keyword; a choice (``--verify``) as its value.
    An option the command does not have keeps its default."""
    def plain(value: Any) -> Any:
        return value.value if isinstance(value, enum.Enum) else value
    return AddRequest(**{k: plain(args[k]) for k in AddRequest._fields if k in args})


@dataclass(frozen=True)
class Request:
    """A request checked and typed: the layout, the bandwidth limit in
    bytes/s and the verify mode, with the options as given (``given``:
    what a batch stores, and what ``add`` compares when asked again)."""
    given: AddRequest
    layout: Layout
    bandwidth_limit: Optional[int]
    verify: VerifyMode

    @property
    def dry_run(self) -> bool:
        return self.given.dry_run

    @property
    def manual_commit(self) -> bool:
        return self.given.manual_commit

    @property
    def manual_cutover(self) -> bool:
        return self.given.manual_cutover

    @property
    def allow_descendants(self) -> bool:
        return self.given.allow_descendants

    @property
    def priority(self) -> int:
        return self.given.priority


def parse(given: AddRequest, verify_default: str) -> Request:
    """Check every option at once (EINVAL naming the first wrong one): the
    layout, then priority and bandwidth limit, then the verify mode."""
    layout = build_layout(given)
    limit = bandwidth_limit(given)
    return Request(given, layout, limit, verify_mode(given.verify, verify_default))


def build_layout(req: AddRequest) -> Layout:
    feats: Optional[List[str]] = None
    if req.features is not None:
        feats = sorted({f.strip() for f in req.features.split(',') if f.strip()})
        if not feats:
            raise InvalidArgument('--features is empty: give a comma list such as '
                                  'layering,exclusive-lock')
    layout = Layout(object_size=parse_bytes('object size', req.object_size),
                    stripe_unit=parse_bytes('stripe unit', req.stripe_unit),
                    stripe_count=req.stripe_count, features=feats,
                    data_pool=req.data_pool, flatten=bool(req.flatten))
    validate_layout(layout)
    return layout


def bandwidth_limit(req: AddRequest) -> Optional[int]:
    """Check the priority; the bandwidth limit in bytes/s."""
    if not -MAX_PRIORITY <= req.priority <= MAX_PRIORITY:
        raise InvalidArgument('priority {} is out of range: use -{} to {}'.format(
            req.priority, MAX_PRIORITY, MAX_PRIORITY))
    limit = parse_bytes('bandwidth limit', req.bandwidth_limit, MAX_BANDWIDTH_BYTES)
    if limit and limit < MIN_BANDWIDTH_BYTES:
        raise InvalidArgument('bandwidth limit {} B/s is below the floor of 1M/s, at which a '
                              '100 GiB image already takes over a day: give at least 1M, '
                              'or 0 for no limit'.format(limit))
    return limit


def verify_mode(given: Optional[str], default: str) -> VerifyMode:
    """``--verify``, else the ``verify_default`` option."""
    text = given if given is not None else default
    try:
        return VerifyMode(text.strip().lower())
    except ValueError:
        raise InvalidArgument('verify mode {!r} is not one of full, auto, off'.format(text))
