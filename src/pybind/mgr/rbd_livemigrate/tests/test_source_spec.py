"""Import source-specs: shape checks, credentials moved out, redaction, qcow
headers, and probing files and URLs (a local HTTP server with byte ranges)."""

import errno
import http.server
import json
import os
import struct
import threading
from typing import Any, Dict, Iterator, Tuple

import pytest

from rbd_livemigrate import source_spec
from rbd_livemigrate.errors import LiveMigrateError
from rbd_livemigrate.source_probe import probe
from rbd_livemigrate.source_spec import (CONFIG_PREFIX, REDACTED, STORE_ROOT, import_view,
                                         move_credentials, parse, redact, streams, summary)

FILE = {'type': 'file', 'file_path': '/tmp/disk.raw'}
S3 = {'type': 's3', 'url': 'https://s3.example.com/bucket/disk.raw',
      'access_key': 'AKIDEXAMPLE', 'secret_key': 'wJalrXUtnFEMI/K7MDENG'}


def text(**spec: Any) -> str:
    return json.dumps(spec)


def errno_of(spec_text: str) -> Tuple[int, str]:
    with pytest.raises(LiveMigrateError) as e:
        parse(spec_text)
    return e.value.errno, str(e.value)


@pytest.mark.parametrize('spec_text,needle', [
    ('', 'no source-spec'),
    ('{not json', 'not JSON'),
    ('[1, 2]', 'not a JSON object'),
    (text(type='vmdk', stream=FILE), "format type 'vmdk'"),
    (text(type='native', pool_name='rbd', image_name='x'), 'ceph rbd livemigrate add'),
    (text(type='raw'), 'needs "stream"'),
    (text(type='raw', stream={'type': 'ftp', 'url': 'ftp://x/y'}), "stream type 'ftp'"),
    (text(type='raw', stream={'type': 'file'}), '"file_path"'),
    (text(type='raw', stream={'type': 'file', 'file_path': 'rel/path'}), 'absolute'),
    (text(type='raw', stream={'type': 'http', 'url': 'ftp://h/x'}), 'http:// or https://'),
    (text(type='raw', stream={'type': 'http', 'url': 'http://u:p@h/x'}), 'user credentials'),
    (text(type='raw', stream={'type': 'http', 'url': 'http:///x'}), 'no host'),
    (text(type='raw', stream={'type': 's3', 'url': 'http://h/b/k', 'access_key': 'a'}),
     '"secret_key"'),
    (text(type='raw', stream=FILE, extra=1), "unknown key(s) 'extra'"),
    (text(type='raw', stream=dict(FILE, path='/x')), "unknown key(s) 'path'"),
    (text(type='qcow', stream=FILE, snapshots=[]), 'only read for type raw'),
    (text(type='raw', stream=FILE, snapshots=[{'type': 'raw', 'name': 's'}]),
     'needs "stream"'),
    (text(type='raw', stream=FILE, snapshots=[{'type': 'raw', 'name': 's', 'stream': FILE},
                                              {'type': 'raw', 'name': 's', 'stream': FILE}]),
     'repeated'),
    (text(type='raw', stream=FILE, snapshots=[{'type': 'qcow', 'name': 's', 'stream': FILE}]),
     '"type": "raw"'),
])
def test_malformed_specs_are_einval(spec_text: str, needle: str) -> None:
    err, msg = errno_of(spec_text)
    assert err == errno.EINVAL
    assert needle in msg and '\n' not in msg


def test_good_specs_parse() -> None:
    spec = parse(text(type='raw', stream=FILE, snapshots=[
        {'type': 'raw', 'name': 'snap1', 'stream': FILE},
        {'type': 'raw', 'name': 'snap2', 'stream': dict(S3)}]))
    assert [s.label for s in streams(spec)] == ["snapshot 'snap1'", "snapshot 'snap2'", 'head']
    assert parse(text(type='qcow', stream={'type': 'http', 'url': 'http://h:8080/d.qcow2'}))


def test_credentials_move_to_the_store_and_leave_the_spec() -> None:
    spec = parse(text(type='raw', stream=dict(S3), snapshots=[
        {'type': 'raw', 'name': 's1', 'stream': dict(S3, access_key='config://my/key')}]))
    stored, secrets = move_credentials(spec, 'tid1')
    dumped = json.dumps(stored)
    assert 'AKIDEXAMPLE' not in dumped and 'wJalrXUtnFEMI' not in dumped
    assert secrets == {'import/tid1/head/access_key': 'AKIDEXAMPLE',
                       'import/tid1/head/secret_key': 'wJalrXUtnFEMI/K7MDENG',
                       'import/tid1/snap0/secret_key': 'wJalrXUtnFEMI/K7MDENG'}
    assert stored['stream']['access_key'] == (CONFIG_PREFIX + STORE_ROOT
                                              + 'import/tid1/head/access_key')
    # a reference the caller gave stays
    assert stored['snapshots'][0]['stream']['access_key'] == 'config://my/key'
    assert spec['stream']['access_key'] == 'AKIDEXAMPLE'        # the input is not changed
    assert source_spec.task_of_key('import/tid1/head/access_key') == 'tid1'
    assert source_spec.task_of_key('task/tid1') is None


def test_redaction_hides_secrets_and_url_signatures() -> None:
    spec = parse(text(type='raw', stream=dict(
        S3, url='https://s3.example.com/b/k?X-Amz-Signature=abc&X-Amz-Credential=def')))
    shown = json.dumps(redact(spec))
    for secret in ('AKIDEXAMPLE', 'wJalrXUtnFEMI', 'abc', 'def'):
        assert secret not in shown
    assert REDACTED in shown and 'https://s3.example.com/b/k' in shown
    v = import_view({'import_spec': source_spec.dumps(spec), 'source': 'b/x'})
    assert 'import_spec' not in v and v['source'].startswith('import: raw s3 https://')
    assert 'AKIDEXAMPLE' not in json.dumps(v) and 'abc' not in json.dumps(v)
    assert summary('not json') == 'a source-spec'


def qcow_header(size: int, version: int = 3) -> bytes:
    return b'QFI\xfb' + struct.pack('>IQIIQ', version, 0, 0, 16, size)


def test_qcow_virtual_size() -> None:
    assert source_spec.qcow_virtual_size(qcow_header(5 << 30)) == 5 << 30
    with pytest.raises(LiveMigrateError) as e:
        source_spec.qcow_virtual_size(b'\0' * 32)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(LiveMigrateError):
        source_spec.qcow_virtual_size(qcow_header(1, version=9))


# -- probing ----------------------------------------------------------------

def _stream(spec: Dict[str, Any]) -> source_spec.Stream:
    return streams(parse(json.dumps(spec)))[-1]


def no_config(key: str) -> None:
    return None


def test_probe_file(tmp_path: Any) -> None:
    f = tmp_path / 'disk.raw'
    f.write_bytes(b'x' * 12345)
    assert probe(_stream({'type': 'raw', 'stream': {'type': 'file', 'file_path': str(f)}}),
                 no_config) == 12345
    q = tmp_path / 'disk.qcow2'
    q.write_bytes(qcow_header(1 << 30) + b'\0' * 100)
    assert probe(_stream({'type': 'qcow', 'stream': {'type': 'file', 'file_path': str(q)}}),
                 no_config) == 1 << 30
    for path, err in ((str(tmp_path / 'missing'), errno.ENOENT), (str(tmp_path), errno.EISDIR),
                      (str(f), errno.EINVAL)):
        fmt = 'qcow' if path == str(f) else 'raw'
        with pytest.raises(LiveMigrateError) as e:
            probe(_stream({'type': fmt, 'stream': {'type': 'file', 'file_path': path}}),
                  no_config)
        assert e.value.errno == err, str(e.value)
    if os.geteuid() != 0:
        f.chmod(0)
        with pytest.raises(LiveMigrateError) as e:
            probe(_stream({'type': 'raw', 'stream': {'type': 'file', 'file_path': str(f)}}),
                  no_config)
        assert e.value.errno == errno.EACCES


DATA = bytes(range(256)) * 40


class RangeHandler(http.server.BaseHTTPRequestHandler):
    ranges = True

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.do_GET(body=False)

    def do_GET(self, body: bool = True) -> None:
        if self.path == '/missing':
            self.send_error(404)
            return
        data = qcow_header(7 << 20) if self.path.endswith('.qcow2') else DATA
        rng = self.headers.get('Range')
        if rng and self.ranges:
            a, b = (int(x) for x in rng.split('=')[1].split('-'))
            part = data[a:b + 1]
            self.send_response(206)
            self.send_header('Content-Range', 'bytes {}-{}/{}'.format(a, b, len(data)))
        else:
            part = data
            self.send_response(200)
        self.send_header('Content-Length', str(len(part)))
        self.end_headers()
        if body:
            self.wfile.write(part)


@pytest.fixture
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), RangeHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield 'http://127.0.0.1:{}'.format(srv.server_address[1])
    srv.shutdown()
    RangeHandler.ranges = True


def http_spec(fmt: str, url: str) -> source_spec.Stream:
    return _stream({'type': fmt, 'stream': {'type': 'http', 'url': url}})


def test_probe_http(server: str) -> None:
    assert probe(http_spec('raw', server + '/disk.raw'), no_config) == len(DATA)
    assert probe(http_spec('qcow', server + '/disk.qcow2'), no_config) == 7 << 20
    with pytest.raises(LiveMigrateError) as e:
        probe(http_spec('raw', server + '/missing'), no_config)
    assert e.value.errno == errno.ENOENT and '404' in str(e.value)
    RangeHandler.ranges = False
    with pytest.raises(LiveMigrateError) as e:
        probe(http_spec('raw', server + '/disk.raw'), no_config)
    assert e.value.errno == errno.EINVAL and 'byte ranges' in str(e.value)


def test_probe_unreachable() -> None:
    import socket
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()                   # nothing listens there now
    with pytest.raises(LiveMigrateError) as e:
        probe(http_spec('raw', 'http://127.0.0.1:{}/x'.format(port)), no_config)
    assert e.value.errno == errno.ECONNREFUSED and 'unreachable' in str(e.value)


def test_probe_s3_signs_and_resolves_config_refs(server: str) -> None:
    seen: Dict[str, str] = {}

    class Signed(RangeHandler):
        def do_GET(self, body: bool = True) -> None:
            seen['auth'] = self.headers.get('Authorization') or ''
            super().do_GET(body)
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Signed)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = 'http://127.0.0.1:{}/bucket/disk.raw'.format(srv.server_address[1])
        st = _stream({'type': 'raw', 'stream': {'type': 's3', 'url': url,
                                                'access_key': 'config://k/a',
                                                'secret_key': 'config://k/s'}})
        assert probe(st, {'k/a': 'AK', 'k/s': 'SK'}.get) == len(DATA)
        assert seen['auth'].startswith('AWS AK:')
        with pytest.raises(LiveMigrateError) as e:
            probe(st, no_config)
        assert e.value.errno == errno.ENOENT and 'config-key' in str(e.value)
    finally:
        srv.shutdown()
