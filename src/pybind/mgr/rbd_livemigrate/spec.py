"""
Parsing of image and pool specs and of size arguments, and the layout a
migration gives its destination.

Everything a user types is validated here, before any librbd call.
"""

import re
from dataclasses import dataclass, fields
from typing import Any, Dict, List, NamedTuple, Optional

from .errors import InvalidArgument
from .records import CorruptRecord, Schema, from_json, show

# librbd limits names only loosely; we refuse what would be ambiguous in a
# spec or unprintable in a table: '/', '@', whitespace and control chars.
_NAME_RE = re.compile(r'^[^/@\s\x00-\x1f\x7f]+$')
MAX_NAME_LEN = 250


def validate_name(kind: str, value: str) -> str:
    if not value:
        raise InvalidArgument('{} name is empty'.format(kind))
    if len(value) > MAX_NAME_LEN:
        raise InvalidArgument('{} name is longer than {} characters'.format(kind, MAX_NAME_LEN))
    if not _NAME_RE.match(value) or not value.isprintable():
        raise InvalidArgument(
            "{} name {!r} has a character that is not allowed ('/', '@', "
            'whitespace or a control character)'.format(kind, value))
    if value in ('.', '..'):
        raise InvalidArgument('{} name {!r} is not allowed'.format(kind, value))
    return value


class PoolSpec(NamedTuple):
    pool: str
    namespace: str = ''

    def __str__(self) -> str:
        return '{}/{}'.format(self.pool, self.namespace) if self.namespace else self.pool

    @classmethod
    def parse(cls, text: str) -> 'PoolSpec':
        if not isinstance(text, str) or not text:
            raise InvalidArgument('empty pool spec: expected pool[/namespace]')
        parts = text.split('/')
        if len(parts) > 2:
            raise InvalidArgument(
                'malformed pool spec {!r}: expected pool[/namespace]'.format(text))
        pool = validate_name('pool', parts[0])
        namespace = validate_name('namespace', parts[1]) if len(parts) == 2 else ''
        return cls(pool, namespace)


class ImageSpec(NamedTuple):
    pool: str
    namespace: str
    image: str

    def __str__(self) -> str:
        if self.namespace:
            return '{}/{}/{}'.format(self.pool, self.namespace, self.image)
        return '{}/{}'.format(self.pool, self.image)

    @property
    def pool_spec(self) -> PoolSpec:
        return PoolSpec(self.pool, self.namespace)

    @classmethod
    def parse(cls, text: str) -> 'ImageSpec':
        if not isinstance(text, str) or not text:
            raise InvalidArgument('empty image spec: expected pool[/namespace]/image')
        if '@' in text:
            raise InvalidArgument(
                'image spec {!r} names a snapshot: migrate the image, its snapshots '
                'come with it'.format(text))
        parts = text.split('/')
        if len(parts) == 2:
            pool, image = parts
            namespace = ''
        elif len(parts) == 3:
            pool, namespace, image = parts
            validate_name('namespace', namespace)
        else:
            raise InvalidArgument(
                'malformed image spec {!r}: expected pool[/namespace]/image'.format(text))
        return cls(validate_name('pool', pool), namespace, validate_name('image', image))


_SIZE_RE = re.compile(r'^\s*(\d+)\s*([KMGTP]?)(i?B?)?\s*$', re.IGNORECASE)
_UNITS = {'': 0, 'K': 10, 'M': 20, 'G': 30, 'T': 40, 'P': 50}


def parse_bytes(kind: str, text: Optional[str], maximum: int = 1 << 60) -> Optional[int]:
    """'4M', '4MiB', '4194304' -> 4194304; None stays None."""
    if text is None:
        return None
    m = _SIZE_RE.match(str(text))
    if not m:
        raise InvalidArgument(
            '{} {!r} is not a size: use bytes or a K/M/G suffix, e.g. 4M'.format(kind, text))
    value = int(m.group(1)) << _UNITS[m.group(2).upper()]
    if value > maximum:
        raise InvalidArgument('{} {!r} is too large (at most {} bytes)'.format(
            kind, text, maximum))
    return value


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _check_pool_name(value: Optional[str]) -> None:
    if value is not None:
        validate_name('data pool', value)


# a stored layout's fields a type alone does not cover, by path in a task record
LAYOUT_CHECKS = {'layout.data_pool': ('null or pool name', _check_pool_name)}
_LAYOUT_SCHEMA = Schema('task', checks=LAYOUT_CHECKS)


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
        """A task record's ``layout`` (the task's own load checks it as a
        field of the task)."""
        if not isinstance(d, dict):
            raise CorruptRecord('task record field layout: expected object, got {}'.format(
                show(d)))
        if not d:
            return PLAIN_LAYOUT         # most tasks: one shared record (frozen)
        layout: Layout = from_json(cls, d, _LAYOUT_SCHEMA, 'layout.')
        return layout


PLAIN_LAYOUT = Layout()
