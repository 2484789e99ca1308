"""
Probing the files and URLs an import's source-spec names, from the mgr.

The thin I/O side of ``source_spec``: each stream is opened the way librbd
will open it (the file by the mgr's own user, a URL with a short timeout
and a byte range, an s3 object signed as librbd signs it), so that ``import``
refuses at once, with an errno, what the copy would fail on later.  Sizes
come from the file, the ``Content-Length``/``Content-Range`` of the reply,
or a qcow header's virtual size.
"""

import base64
import email.utils
import errno
import hashlib
import hmac
import os
import pwd
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, Optional, Tuple

from .errors import LiveMigrateError, NotAuthorized, NotFound
from .source_spec import (CONFIG_PREFIX, QCOW_HEADER_BYTES, Stream, qcow_virtual_size,
                          redact_url)

PROBE_TIMEOUT_SECONDS = 5.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """librbd's http client treats any answer outside 2xx as an error (EIO)
    and follows no redirect: neither does the probe, so that it never
    reaches an address the import guard did not judge."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

ConfigGet = Callable[[str], Optional[str]]


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def probe_file(s: Stream) -> int:
    path = str(s.stream['file_path'])
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound("{} file '{}' does not exist on the mgr host: put it where the active "
                       'mgr can read it'.format(s.label, path))
    except PermissionError:
        raise NotAuthorized("{} file '{}' cannot be reached by the mgr (user {}): fix the "
                            "directories' permissions".format(s.label, path, _user()))
    if os.path.isdir(path):
        raise LiveMigrateError("{} file '{}' is a directory: name the image file".format(
            s.label, path), errno.EISDIR)
    try:
        with open(path, 'rb') as f:
            head = f.read(QCOW_HEADER_BYTES) if s.fmt == 'qcow' else b''
    except PermissionError:
        raise NotAuthorized("{} file '{}' is not readable by the mgr (user {}): make it "
                            'readable, e.g. chmod o+r'.format(s.label, path, _user()))
    except OSError as e:
        raise LiveMigrateError("{} file '{}' cannot be read: {}".format(
            s.label, path, e.strerror), e.errno or errno.EIO)
    if s.fmt == 'qcow':
        return qcow_virtual_size(head)
    return int(st.st_size)


def _s3_headers(method: str, url: str, stream: Dict[str, str],
                config_get: ConfigGet) -> Dict[str, str]:
    """AWS signature v2, as librbd's S3Stream signs (date, resource path)."""
    keys = []
    for f in ('access_key', 'secret_key'):
        value = stream[f]
        if value.startswith(CONFIG_PREFIX):
            got = config_get(value[len(CONFIG_PREFIX):])
            if got is None:
                raise NotFound('s3 {} refers to config-key {!r}, which is not set: set it '
                               'with ceph config-key set'.format(f, value[len(CONFIG_PREFIX):]))
            value = got
        keys.append(value)
    date = email.utils.formatdate(usegmt=True)
    path = urllib.parse.urlsplit(url).path or '/'
    to_sign = '{}\n\n\n{}\n{}'.format(method, date, path)
    sig = base64.b64encode(hmac.new(keys[1].encode(), to_sign.encode(),
                                    hashlib.sha1).digest()).decode()
    return {'Date': date, 'Authorization': 'AWS {}:{}'.format(keys[0], sig)}


def _request(s: Stream, method: str, byte_range: Optional[Tuple[int, int]],
             config_get: ConfigGet, timeout: float) -> Tuple[int, Dict[str, str], bytes]:
    url = str(s.stream['url'])
    shown = redact_url(url)
    headers: Dict[str, str] = {}
    if byte_range is not None:
        headers['Range'] = 'bytes={}-{}'.format(*byte_range)
    if s.stream.get('type') == 's3':
        headers.update(_s3_headers(method, url, s.stream, config_get))
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            body = resp.read(QCOW_HEADER_BYTES) if method == 'GET' else b''
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, body
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise NotFound('{} url {} answers 404 Not Found: check the url'.format(
                s.label, shown))
        if e.code in (401, 403):
            raise NotAuthorized('{} url {} answers {} {}: check the credentials'.format(
                s.label, shown, e.code, e.reason))
        if e.code in (405, 501) and method == 'HEAD':
            return e.code, {}, b''
        if 300 <= e.code < 400:
            raise LiveMigrateError('{} url {} answers {} {} (a redirect): librbd follows no '
                                   'redirect: give the final url'.format(
                                       s.label, shown, e.code, e.reason), errno.EINVAL)
        raise LiveMigrateError('{} url {} answers {} {}'.format(s.label, shown, e.code,
                                                                e.reason), errno.EIO)
    except urllib.error.URLError as e:
        raise _unreachable(s, shown, e.reason)
    except (socket.timeout, OSError) as e:
        raise _unreachable(s, shown, e)


def _unreachable(s: Stream, shown: str, reason: object) -> LiveMigrateError:
    if isinstance(reason, ConnectionRefusedError):
        err, why = errno.ECONNREFUSED, 'connection refused'
    elif isinstance(reason, (socket.timeout, TimeoutError)):
        err, why = errno.ETIMEDOUT, 'no answer within {:.0f}s'.format(PROBE_TIMEOUT_SECONDS)
    elif isinstance(reason, socket.gaierror):
        err, why = errno.EHOSTUNREACH, 'cannot resolve the host'
    elif isinstance(reason, OSError) and reason.errno:
        err, why = reason.errno, reason.strerror or str(reason)
    else:
        err, why = errno.EHOSTUNREACH, str(reason)
    return LiveMigrateError('{} url {} is unreachable from the mgr ({}): check the url and '
                            'that the mgr host can reach it'.format(s.label, shown, why), err)


def _total(headers: Dict[str, str]) -> Optional[int]:
    crange = headers.get('content-range', '')
    if '/' in crange and not crange.endswith('/*'):
        try:
            return int(crange.rsplit('/', 1)[1])
        except ValueError:
            return None
    return None


def probe_url(s: Stream, config_get: ConfigGet,
              timeout: float = PROBE_TIMEOUT_SECONDS) -> int:
    """The size behind a URL; librbd reads by byte range, so a range must work."""
    shown = redact_url(str(s.stream['url']))
    end = QCOW_HEADER_BYTES - 1 if s.fmt == 'qcow' else 0
    status, headers, body = _request(s, 'GET', (0, end), config_get, timeout)
    if status != 206:
        raise LiveMigrateError('{} url {} ignores byte ranges (answered {} to a Range '
                               'request): librbd reads by range; serve it from a server that '
                               'supports them'.format(s.label, shown, status), errno.EINVAL)
    if s.fmt == 'qcow':
        return qcow_virtual_size(body)
    total = _total(headers)
    if total is None:
        status, headers, _ = _request(s, 'HEAD', None, config_get, timeout)
        try:
            total = int(headers.get('content-length', ''))
        except ValueError:
            total = None
    if total is None:
        raise LiveMigrateError('{} url {} does not tell its size (no Content-Range total or '
                               'Content-Length)'.format(s.label, shown), errno.EINVAL)
    return total


def probe(s: Stream, config_get: ConfigGet) -> int:
    """The size of the image that stream ``s`` holds (raw: bytes; qcow: virtual)."""
    if s.stream.get('type') == 'file':
        return probe_file(s)
    return probe_url(s, config_get)
