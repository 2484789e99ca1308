"""
Loading a stored record: typed JSON into a frozen dataclass.

Every stored field is checked against its dataclass annotation, so a field
added to a record (``Task``, ``Layout``, ``Batch``) is checked with no edit
here.  Numbers must be finite and non-negative (sizes, counts, epoch
timestamps) unless the record's ``Schema`` names them signed; integers fit
in 64 bits and floats stay within what ``isoformat`` can show.  A value that
does not fit makes the whole record corrupt: the store skips it and raises
RBD_LIVEMIGRATE_BAD_RECORD.  Nothing here knows a task or a batch: their
modules give the schema (what the record is called, the checks a type alone
does not make).
"""

import enum
import json
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Tuple

from .errors import LiveMigrateError

_MAX_INT = 2 ** 63 - 1
MAX_FLOAT = 253402300799.0         # 9999-12-31T23:59:59Z, the last second datetime can show
_UNIONS = (typing.Union, type(int | None))
_SHOW_CHARS = 60

Convert = Callable[[Any], Any]
# a field's path -> (what the message says is expected, check of the typed
# value); a check raises Mismatch or InvalidArgument
Checks = Mapping[str, Tuple[str, Callable[[Any], object]]]


class CorruptRecord(LiveMigrateError):
    pass


class Mismatch(Exception):
    """A stored value that does not fit its field (the decoder words the message)."""


@dataclass(frozen=True, eq=False)
class Schema:
    """How one kind of record is read: its name in messages, the checks
    by field path (``layout.data_pool``), the numbers that may be negative,
    and whether keys the record does not have are refused."""
    what: str
    checks: Checks = field(default_factory=dict)
    signed: FrozenSet[str] = frozenset()
    strict: bool = False


def show(value: Any) -> str:
    """A stored value for a one-line message: its JSON, cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    text = ' '.join(text.splitlines())
    return text if len(text) <= _SHOW_CHARS else text[:_SHOW_CHARS - 3] + '...'


def _no_check(hint: Any) -> TypeError:
    return TypeError('no check for a stored field of type {!r}'.format(hint))


def type_name(hint: Any, signed: bool) -> str:
    """What a field of annotation ``hint`` holds, in JSON terms."""
    origin = typing.get_origin(hint)
    if origin in _UNIONS:
        return ' or '.join(type_name(a, signed) for a in typing.get_args(hint))
    if origin is list:
        return 'list of {}'.format(type_name(typing.get_args(hint)[0], signed))
    if origin is dict:
        return 'object of {}'.format(type_name(typing.get_args(hint)[1], signed))
    if hint is Any:
        return 'any value'
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
            '-{:.0f}'.format(MAX_FLOAT) if signed else 0, MAX_FLOAT)
    if issubclass(hint, str):
        return 'string'
    if hasattr(hint, '__dataclass_fields__'):
        return 'object'
    raise _no_check(hint)


def _union(options: List[Convert]) -> Convert:
    def union(value: Any) -> Any:
        for convert in options:
            try:
                return convert(value)
            except Mismatch:
                pass
        raise Mismatch()
    return union


def _list_of(item: Convert) -> Convert:
    def list_of(value: Any) -> Any:
        if not isinstance(value, list):
            raise Mismatch()
        return [item(v) for v in value]
    return list_of


def _dict_of(item: Convert) -> Convert:
    def dict_of(value: Any) -> Any:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise Mismatch()
        return {k: item(v) for k, v in value.items()}
    return dict_of


def _any(value: Any) -> Any:
    return value


def _null(value: Any) -> Any:
    if value is not None:
        raise Mismatch()
    return None


def _enum(hint: Any) -> Convert:
    # keyed by type too: 1 == True, and an int enum must not take a bool
    members = {(type(m.value), m.value): m for m in hint}

    def member(value: Any) -> Any:
        try:
            return members[(type(value), value)]
        except (KeyError, TypeError):   # TypeError: a list or an object
            raise Mismatch()
    return member


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise Mismatch()
    return value


def _number(hint: Any, signed: bool) -> Convert:
    # a bool is an int: refused; an int is a fine float, a float no int
    accept = int if issubclass(hint, int) else (int, float)
    high = _MAX_INT if issubclass(hint, int) else MAX_FLOAT
    low = -high if signed else 0

    def number(value: Any) -> Any:
        if (isinstance(value, bool) or not isinstance(value, accept)
                or not low <= value <= high):   # NaN compares false: refused too
            raise Mismatch()
        return hint(value)
    return number


def _string(value: Any) -> Any:
    if not isinstance(value, str):
        raise Mismatch()
    return value


def _converter(hint: Any, path: str, schema: Schema) -> Convert:
    """A function from a stored value to what a field of annotation ``hint`` holds.

    It raises Mismatch for a value that does not fit; building it raises
    TypeError for an annotation with no check here (a test covers every field).
    """
    origin = typing.get_origin(hint)
    signed = path in schema.signed
    if origin in _UNIONS:
        return _union([_converter(a, path, schema) for a in typing.get_args(hint)])
    if origin is list:
        return _list_of(_converter(typing.get_args(hint)[0], path, schema))
    if origin is dict:
        return _dict_of(_converter(typing.get_args(hint)[1], path, schema))
    if hint is Any:
        return _any
    if hint is type(None):
        return _null
    if not isinstance(hint, type):
        raise _no_check(hint)
    if issubclass(hint, enum.Enum):
        return _enum(hint)
    if issubclass(hint, bool):
        return _boolean
    if issubclass(hint, (int, float)):
        return _number(hint, signed)
    if issubclass(hint, str):
        return _string
    if hasattr(hint, '__dataclass_fields__'):
        cls = hint

        def record(value: Any) -> Any:
            if not isinstance(value, dict):
                raise Mismatch()
            return from_json(cls, value, schema, path + '.')
        return record
    raise _no_check(hint)


class _FieldPlan(NamedTuple):
    name: str
    path: str
    required: bool
    convert: Convert
    check: Optional[Callable[[Any], object]]
    hint: Any
    signed: bool


# plans by (class, prefix, schema): get_type_hints alone costs more than loading a record
_PLANS: Dict[Tuple[type, str, Schema], List[_FieldPlan]] = {}


def _plan(cls: Any, prefix: str, schema: Schema) -> List[_FieldPlan]:
    plan = _PLANS.get((cls, prefix, schema))
    if plan is None:
        hints = typing.get_type_hints(cls)
        plan = []
        for f in fields(cls):
            if not f.init:
                continue
            path = prefix + f.name
            plan.append(_FieldPlan(
                f.name, path, f.default is MISSING and f.default_factory is MISSING,
                _converter(hints[f.name], path, schema),
                schema.checks.get(path, ('', None))[1], hints[f.name], path in schema.signed))
        _PLANS[(cls, prefix, schema)] = plan
    return plan


def from_json(cls: Any, d: Dict[str, Any], schema: Schema, prefix: str = '') -> Any:
    """The dataclass ``cls`` from the stored ``d``, every field type-checked.

    Keys ``cls`` does not have are ignored (``version`` guards what a newer
    module wrote) unless the schema is strict; missing ones take the
    dataclass default, so older records load.  ``prefix`` places a nested
    record within its parent in messages.
    """
    what = schema.what
    plan = _plan(cls, prefix, schema)
    if schema.strict:
        unknown = set(d) - {p.name for p in plan}
        if unknown:
            raise CorruptRecord('{} record has unknown field(s) {}'.format(
                what, sorted(unknown)))
    kw: Dict[str, Any] = {}
    for p in plan:
        if p.name not in d:
            if p.required:
                raise CorruptRecord('{} record field {} is missing'.format(what, p.path))
            continue
        value = d[p.name]
        try:
            kw[p.name] = p.convert(value)
            if p.check is not None:
                p.check(kw[p.name])
        except CorruptRecord:
            raise                       # a field of a nested record, already worded
        except (Mismatch, LiveMigrateError):
            expected = schema.checks.get(p.path, ('', None))[0]
            raise CorruptRecord('{} record field {}: expected {}, got {}'.format(
                what, p.path, expected or type_name(p.hint, p.signed), show(value)))
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:    # a __post_init__ that refuses the values
        raise CorruptRecord('{} record {}is malformed: {}'.format(
            what, 'field {} '.format(prefix[:-1]) if prefix else '',
            ' '.join(str(e).splitlines())))


def versioned(d: Any, what: str, newest: int) -> Dict[str, Any]:
    """``d`` if it is a record object whose version this module understands."""
    if not isinstance(d, dict):
        raise CorruptRecord('{} record is not a JSON object'.format(what))
    version = d.get('version')
    if not isinstance(version, int):
        raise CorruptRecord('{} record has no version'.format(what))
    if version > newest:
        raise CorruptRecord('{} record version {} is newer than this module '
                            'understands ({})'.format(what, version, newest))
    return d


def parse_text(text: str, what: str) -> Any:
    """A stored record's JSON."""
    try:
        return json.loads(text)
    except ValueError as e:
        raise CorruptRecord('{} record is not JSON: {}'.format(what, e))


def dumps(d: Dict[str, Any]) -> str:
    """A record's stored text (compact, keys sorted)."""
    return json.dumps(d, sort_keys=True, separators=(',', ':'))
