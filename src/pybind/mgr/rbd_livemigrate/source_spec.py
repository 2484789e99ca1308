"""
Import source-specs: parsing, validation, credentials and redaction.

librbd (Pacific and later) imports an image from a *source-spec*, a JSON
object naming a format (``raw``, ``qcow``) and a stream (``file``, ``http``,
``s3``), given to ``migration_prepare_import``.  This module is pure: it
checks the spec's shape, moves s3 credentials out of it (into the mgr's
config-key store, which librbd reads through ``config://<key>``), and makes
the redacted form that ``ls``/``status``, the log and the progress bar show.
Probing the files and URLs the spec names is ``source_probe.py``'s job.
"""

import copy
import json
import struct
import urllib.parse
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from . import remote_spec
from .errors import InvalidArgument

FORMATS = ('raw', 'qcow')
STREAMS = ('file', 'http', 's3')
CREDENTIAL_FIELDS = ('access_key', 'secret_key')
CONFIG_PREFIX = 'config://'
REDACTED = '<redacted>'
# the module's store keys (``set_store``) for moved credentials; in the mon
# config-key store they sit under STORE_ROOT + key
STORE_ROOT = 'mgr/rbd_livemigrate/'
KEY_PREFIX = 'import/'
MAX_SPEC_BYTES = 16 * 1024
MAX_SNAPSHOTS = 256

_STREAM_KEYS = {
    'file': ('type', 'file_path'),
    'http': ('type', 'url'),
    's3': ('type', 'url', 'access_key', 'secret_key'),
}
_TOP_KEYS = ('type', 'stream', 'snapshots')
_SNAP_KEYS = ('type', 'name', 'stream')

QCOW_MAGIC = b'QFI\xfb'
QCOW_HEADER_BYTES = 32


class Stream(NamedTuple):
    """One stream of a spec: the head's, or a raw snapshot's."""
    label: str                    # 'head' or "snapshot 'name'"
    key: str                      # 'head' or 'snap<N>' (store keys)
    fmt: str                      # raw | qcow
    stream: Dict[str, Any]


def _fail(what: str) -> InvalidArgument:
    return InvalidArgument('invalid source-spec: {}: see "Import an image" in the '
                           'rbd_livemigrate module docs for the format'.format(what))


def _keys(obj: Dict[str, Any], allowed: Tuple[str, ...], where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise _fail('unknown key(s) {} in {} (known: {})'.format(
            ', '.join(repr(k) for k in unknown), where, ', '.join(allowed)))


def _string(obj: Dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _fail('{} needs "{}" (a non-empty string)'.format(where, key))
    return value


def check_url(url: str, where: str) -> None:
    """http/https only, a host, and no credentials in it."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port       # raises on a bad port
    except ValueError as e:
        raise _fail('{} has a malformed url ({})'.format(where, e))
    if parts.scheme not in ('http', 'https'):
        raise _fail('{} url must start with http:// or https:// (got {!r})'.format(
            where, parts.scheme + ':' if parts.scheme else redact_url(url)))
    if not parts.hostname:
        raise _fail('{} url has no host'.format(where))
    if parts.username is not None or parts.password is not None:
        raise _fail('{} url carries user credentials: give none in the url (for s3 use '
                    'access_key and secret_key)'.format(where))


def _check_stream(stream: Any, where: str) -> Dict[str, Any]:
    if not isinstance(stream, dict):
        raise _fail('{} needs "stream" (an object)'.format(where))
    kind = stream.get('type')
    if kind not in STREAMS:
        raise _fail('{} stream type {!r} is not supported: use one of {}'.format(
            where, kind, ', '.join(STREAMS)))
    where = '{} {} stream'.format(where, kind)
    _keys(stream, _STREAM_KEYS[kind], where)
    if kind == 'file':
        path = _string(stream, 'file_path', where)
        if not path.startswith('/'):
            raise _fail('{} file_path must be absolute (the mgr reads it; got {!r})'.format(
                where, path))
    else:
        check_url(_string(stream, 'url', where), where)
    if kind == 's3':
        for f in CREDENTIAL_FIELDS:
            value = _string(stream, f, where)
            if value.startswith(CONFIG_PREFIX) and len(value) == len(CONFIG_PREFIX):
                raise _fail('{} {} names no config-key after config://'.format(where, f))
    return stream


def parse(text: str) -> Dict[str, Any]:
    """The source-spec in ``text`` (the ``-i`` file), checked; raises EINVAL."""
    if not text or not text.strip():
        raise InvalidArgument('no source-spec: give the JSON file with -i <file>')
    if len(text.encode('utf-8', 'replace')) > MAX_SPEC_BYTES:
        raise _fail('larger than {} bytes'.format(MAX_SPEC_BYTES))
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise _fail('not JSON ({})'.format(e))
    return check(spec)


def check(spec: Any) -> Dict[str, Any]:
    if not isinstance(spec, dict):
        raise _fail('not a JSON object')
    fmt = spec.get('type')
    if fmt == 'native':
        raise _fail('type "native" (an image of a Ceph cluster) is not imported through the '
                    'queue: use "ceph rbd livemigrate add" for an image of this cluster')
    if fmt not in FORMATS:
        raise _fail('format type {!r} is not supported: use one of {}'.format(
            fmt, ', '.join(FORMATS)))
    _keys(spec, _TOP_KEYS, 'the spec')
    _check_stream(spec.get('stream'), 'the')
    snaps = spec.get('snapshots')
    if snaps is not None:
        if fmt != 'raw':
            raise _fail('"snapshots" are only read for type raw (qcow carries its own)')
        if not isinstance(snaps, list) or len(snaps) > MAX_SNAPSHOTS:
            raise _fail('"snapshots" must be a list of at most {} objects'.format(
                MAX_SNAPSHOTS))
        names = set()
        for i, snap in enumerate(snaps):
            where = 'snapshot #{}'.format(i + 1)
            if not isinstance(snap, dict):
                raise _fail('{} is not an object'.format(where))
            _keys(snap, _SNAP_KEYS, where)
            if snap.get('type') != 'raw':
                raise _fail('{} needs "type": "raw"'.format(where))
            name = _string(snap, 'name', where)
            if name in names or '@' in name or '/' in name:
                raise _fail('{} name {!r} is repeated or contains @ or /'.format(where, name))
            names.add(name)
            _check_stream(snap.get('stream'), "snapshot '{}'".format(name))
    return spec


def streams(spec: Dict[str, Any]) -> List[Stream]:
    """Every stream of a checked spec: the snapshots' (oldest first), then the head's."""
    out = [Stream("snapshot '{}'".format(s['name']), 'snap{}'.format(i), 'raw', s['stream'])
           for i, s in enumerate(spec.get('snapshots') or [])]
    out.append(Stream('head', 'head', spec['type'], spec['stream']))
    return out


def dumps(spec: Dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(',', ':'))


def same(a: str, b: str) -> bool:
    """Do two spec texts say the same (librbd re-serialises what it stores)?"""
    try:
        return bool(json.loads(a) == json.loads(b))
    except (TypeError, ValueError):
        return False


# -- credentials ----------------------------------------------------------

def store_key(task_id: str, stream_key: str, field: str) -> str:
    """The module store key (``set_store``) of a moved credential."""
    return '{}{}/{}/{}'.format(KEY_PREFIX, task_id, stream_key, field)


def task_of_key(key: str) -> Optional[str]:
    """The task id a credential store key belongs to (None: not one)."""
    if not key.startswith(KEY_PREFIX):
        return None
    rest = key[len(KEY_PREFIX):].split('/')
    return rest[0] if len(rest) == 3 and rest[0] else None


def move_credentials(spec: Dict[str, Any], task_id: str
                     ) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """(the spec to store, {store key: secret}): literal s3 credentials are
    replaced by ``config://`` references to the store keys that will hold
    them; references the caller gave are kept as they are."""
    stored = copy.deepcopy(spec)
    secrets: Dict[str, str] = {}
    for s in streams(stored):
        stream = s.stream
        if stream.get('type') != 's3':
            continue
        for f in CREDENTIAL_FIELDS:
            value = stream[f]
            if value.startswith(CONFIG_PREFIX):
                continue
            key = store_key(task_id, s.key, f)
            secrets[key] = value
            stream[f] = CONFIG_PREFIX + STORE_ROOT + key
    return stored, secrets


def has_literal_credentials(spec: Dict[str, Any]) -> bool:
    return any(s.stream.get('type') == 's3' and not s.stream[f].startswith(CONFIG_PREFIX)
               for s in streams(spec) for f in CREDENTIAL_FIELDS)


# -- redaction ------------------------------------------------------------

def redact_url(url: str) -> str:
    """A URL without user info, query or fragment (presigned URLs sign there)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ''
        if ':' in host:
            host = '[{}]'.format(host)
        port = parts.port
    except ValueError:
        return REDACTED
    netloc = host + (':{}'.format(port) if port is not None else '')
    if parts.username is not None:
        netloc = REDACTED + '@' + netloc
    tail = '?' + REDACTED if parts.query else ''
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, '', '')) + tail


def _redact_stream(stream: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(stream)
    if isinstance(out.get('url'), str):
        out['url'] = redact_url(out['url'])
    for f in CREDENTIAL_FIELDS:
        value = out.get(f)
        if isinstance(value, str) and not value.startswith(CONFIG_PREFIX):
            out[f] = REDACTED
    return out


def redact(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The spec as shown: literal credentials and URL secrets replaced."""
    out = dict(spec)
    if isinstance(out.get('stream'), dict):
        out['stream'] = _redact_stream(out['stream'])
    if isinstance(out.get('snapshots'), list):
        out['snapshots'] = [dict(s, stream=_redact_stream(s['stream']))
                            if isinstance(s, dict) and isinstance(s.get('stream'), dict)
                            else s for s in out['snapshots']]
    return out


def redact_text(text: Optional[str]) -> Optional[Dict[str, Any]]:
    if text is None:
        return None
    try:
        spec = json.loads(text)
    except ValueError:
        return {'type': '?'}
    return redact(spec) if isinstance(spec, dict) else {'type': '?'}


def import_view(v: Dict[str, Any]) -> Dict[str, Any]:
    """How ls/status show a task record of an import: the spec redacted
    under ``import``, and ``source`` naming what is imported."""
    text = v.pop('import_spec', None)
    if text is None:
        return v
    v['import'] = redact_text(text)
    v['source'] = 'import: {}'.format(summary(text))
    return v


def location(stream: Dict[str, Any]) -> str:
    if stream.get('type') == 'file':
        return str(stream.get('file_path'))
    return redact_url(str(stream.get('url', '')))


def summary(text: Optional[str]) -> str:
    """One line naming what is imported, never a secret: 'raw file /tmp/x (+2 snapshots)'."""
    try:
        spec = json.loads(text or '')
        if remote_spec.is_remote_spec(spec):        # another cluster's image (issue 27)
            return 'remote image {}'.format(remote_spec.summary(spec))
        stream = spec['stream']
        snaps = len(spec.get('snapshots') or [])
        return '{} {} {}{}'.format(spec['type'], stream['type'], location(stream),
                                   ' (+{} snapshot{})'.format(snaps, 's' if snaps > 1 else '')
                                   if snaps else '')
    except (TypeError, ValueError, KeyError):
        return 'a source-spec'


# -- qcow -----------------------------------------------------------------

def qcow_virtual_size(header: bytes) -> int:
    """The virtual size in a qcow (v1) or qcow2 header: both keep it as a
    big-endian u64 at offset 24."""
    if len(header) < QCOW_HEADER_BYTES or header[:4] != QCOW_MAGIC:
        raise InvalidArgument('the source is not a qcow image (no QFI\\xfb magic): check '
                              '"type" in the source-spec')
    (version,) = struct.unpack_from('>I', header, 4)
    if version not in (1, 2, 3):
        raise InvalidArgument('unknown qcow version {}: librbd reads qcow 1, 2 and 3'.format(
            version))
    (size,) = struct.unpack_from('>Q', header, 24)
    return int(size)
