"""The bad-input matrix: every row is one command line a user could type,
run through the real ``ceph`` CLI against the real mgr, and the errno it
must fail with.  The test prints the matrix (input -> expected, got, the
message), and checks that every refusal is one line, that nothing was
queued and that no image changed.

``{n}`` is an existing 8 MiB image in pool a (written, with a snapshot);
pool ``plain`` exists without the rbd application; ``ns1`` is a namespace
of pool a.
"""

import errno
import json
import os
from typing import Any, Dict, List, Tuple

import pytest

from cluster import Cluster
from conftest import Livemigrate, rbdtools

MiB = 1 << 20
HUGE = '9' * 40
# refused by the ceph CLI's own parser (with its usage text), before the mgr
CLI_PARSER = ('invalid chars', "doesn't represent an int", 'Invalid command')
E = errno

MATRIX: List[Tuple[List[str], int]] = [
    # image specs
    (['add', '', 'b/x'], E.EINVAL),
    (['add', 'noslash', 'b/x'], E.EINVAL),
    (['add', 'a/', 'b/x'], E.EINVAL),
    (['add', '/{n}', 'b/x'], E.EINVAL),
    (['add', 'a/ns1/x/y', 'b/x'], E.EINVAL),
    (['add', 'a//{n}', 'b/x'], E.EINVAL),
    (['add', 'a/{n}@snap1', 'b/x'], E.EINVAL),
    (['add', 'a/{n}', 'b/x@snap'], E.EINVAL),
    (['add', 'a/{n}', 'b/..'], E.EINVAL),
    (['add', 'a/{n}', 'b/' + 'x' * 300], E.EINVAL),
    (['add', 'a/{n}', 'b/new\nline'], E.EINVAL),
    (['add', 'a/{n}', 'b/tab\there'], E.EINVAL),
    (['add', 'a/{n}', 'b/with space'], E.EINVAL),
    (['add', 'a/$(touch /tmp/lm-pwned)', 'b/x'], E.EINVAL),   # '/' inside: malformed
    (['add', 'a/`id`;rm -rf ~', 'b/x'], E.EINVAL),          # whitespace
    (['add', 'a/`id`;$(reboot)|&>', 'b/x'], E.ENOENT),      # a legal name, no image
    (['add', "a/'; DROP TABLE tasks; --", 'b/x'], E.EINVAL),
    (['add', "a/';DROP-TABLE\"tasks", 'b/x'], E.ENOENT),
    (['add', 'a/ünïcødé-☃', 'b/x'], E.EINVAL),          # the ceph CLI refuses non-ASCII
    (['add', 'nosuchpool/{n}', 'b/x'], E.ENOENT),
    (['add', 'a/nosuchimage', 'b/x'], E.ENOENT),
    (['add', 'a/{n}', 'nosuchpool/{n}'], E.ENOENT),
    (['add', 'a/{n}', 'a/nosuchns/{n}'], E.ENOENT),
    (['add', 'a/{n}', 'plain/{n}'], E.EINVAL),           # not an rbd pool
    (['add', 'a/{n}', 'a/{n}'], E.EINVAL),               # nothing to migrate
    (['add', 'a/{n}', 'a/{n}-kid'], E.EEXIST),           # destination exists
    # layout options
    (['add', 'a/{n}', 'b/x', '--object-size', '3M'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--object-size', '0'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--object-size', '1G'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--object-size', '-4M'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--object-size', 'four'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--object-size', HUGE], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--stripe-unit', '1000'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--stripe-unit', '8M'], E.EINVAL),   # > the source's 4M objects
    (['add', 'a/{n}', 'b/x', '--object-size', '1M', '--stripe-unit', '2M'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--stripe-count', '0'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--stripe-count', '-1'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--stripe-count', HUGE], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--stripe-count', 'two'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--features', 'bogus'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--features', ','], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--features', 'layering,journaling'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--features', 'layering,object-map'], E.EINVAL),
    (['add', 'a/{n}-kid', 'b/x', '--features', 'exclusive-lock'], E.EINVAL),  # a clone
    (['add', 'a/{n}', 'b/x', '--data-pool', 'nosuchpool'], E.ENOENT),
    (['add', 'a/{n}', 'b/x', '--data-pool', 'b/ns'], E.EINVAL),
    # scheduling options
    (['add', 'a/{n}', 'b/x', '--priority', '1001'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--priority', '-' + HUGE], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--priority', 'high'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--bandwidth-limit', '1'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--bandwidth-limit', '1023K'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--bandwidth-limit', '-5'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--bandwidth-limit', '1Z'], E.EINVAL),
    (['add', 'a/{n}', 'b/x', '--bandwidth-limit', HUGE + 'T'], E.EINVAL),
    (['add', 'a/{n}', '--object-size', '1M', '--dry-run', '--priority', '5000'], E.EINVAL),
    (['add', 'a/{n}'], E.EINVAL),                        # in place without a layout
    # a parent of a clone
    (['add', 'a/{n}', 'b/x'], E.EBUSY),
    # add-pool
    (['add-pool', 'nosuchpool', 'b'], E.ENOENT),
    (['add-pool', 'a/x/y', 'b'], E.EINVAL),
    (['add-pool', 'a', ''], E.EINVAL),
    (['add-pool', 'a', 'b', '--object-size', '5M'], E.EINVAL),
    (['add-pool', 'a', 'b', '--bandwidth-limit', '10'], E.EINVAL),
    # refused at once, never a batch that fails later (issue 25)
    (['add-pool', 'a', 'nopool'], E.ENOENT),
    (['add-pool', 'a', 'a'], E.EINVAL),                  # changes nothing
    (['add-pool', 'a/nons', 'b'], E.ENOENT),
    (['add-pool', 'a', 'b/nons'], E.ENOENT),
    (['add-pool', 'a', 'b', '--data-pool', 'nopool'], E.ENOENT),
    (['add', 'a/{n}', 'b/x', '--bandwidth-limit', '10P'], E.EINVAL),
    # task ids and specs of the other commands
    (['status', 'nosuchtask'], E.ENOENT),
    (['status', ''], E.ENOENT),
    (['status', 'a/nosuchimage'], E.ENOENT),
    (['status', 'a/b/c/d'], E.EINVAL),
    (['status', '../../etc/passwd'], E.EINVAL),
    (['cancel', 'nosuchtask'], E.ENOENT),
    (['cancel', HUGE], E.ENOENT),
    (['commit', 'nosuchtask'], E.ENOENT),
    (['retry', 'nosuchtask'], E.ENOENT),
    (['pause', 'nosuchtask'], E.ENOENT),
    (['resume', '$(reboot)'], E.ENOENT),
    (['adopt', 'a/{n}'], E.ENOENT),                      # not a migration
    (['adopt', 'a/{n}@s'], E.EINVAL),
    (['adopt', 'nosuchpool/x'], E.ENOENT),
    # formats
    (['ls', '--format', 'xml'], E.EINVAL),
    (['ls', '--format', 'xml-pretty'], E.EINVAL),
    (['status', 'nosuchtask', '--format', 'xml'], E.EINVAL),
]

# sent as raw mgr commands (as the dashboard or a script would), past the
# ceph CLI's parser: what the module itself does with such values
RAW: List[Tuple[Dict[str, Any], int]] = [
    ({'prefix': 'rbd livemigrate add', 'source_spec': 'a/ünïcødé-☃', 'dest_spec': 'b/x'},
     E.ENOENT),
    ({'prefix': 'rbd livemigrate add', 'source_spec': 'a/{n}', 'dest_spec': 'b/\u202eevil'},
     E.EINVAL),                                          # right-to-left override
    ({'prefix': 'rbd livemigrate add', 'source_spec': 'a/{n}', 'dest_spec': 'b/x\x07y'},
     E.EINVAL),
    ({'prefix': 'rbd livemigrate add', 'source_spec': 'a/{n}', 'dest_spec': 'b/x',
      'stripe_count': 10 ** 40}, E.EINVAL),
    ({'prefix': 'rbd livemigrate add', 'source_spec': 'a/{n}', 'dest_spec': 'b/x',
      'priority': 10 ** 40}, E.EINVAL),
    ({'prefix': 'rbd livemigrate add', 'source_spec': 'a/{n}', 'dest_spec': 'b/x',
      'priority': 'high'}, E.EINVAL),
    ({'prefix': 'rbd livemigrate add', 'source_spec': 'a/{n}', 'dest_spec': 'b/x',
      'bandwidth_limit': '1e9'}, E.EINVAL),
    ({'prefix': 'rbd livemigrate add', 'source_spec': ['a/{n}'], 'dest_spec': 'b/x'},
     E.ENOENT),                                          # cast to "['a/..']": no such pool
    ({'prefix': 'rbd livemigrate add', 'source_spec': 'a/{n}', 'dest_spec': 'b/x',
      'stripe_count': 'many'}, E.EINVAL),
    ({'prefix': 'rbd livemigrate status', 'task_or_image': '\x1b[31mred'}, E.ENOENT),
    ({'prefix': 'rbd livemigrate ls', 'format': 'xml'}, E.EINVAL),
    ({'prefix': 'rbd livemigrate add', 'source_spec': 'a/{n}', 'dest_spec': 'b/x',
      'verify': 'sometimes'}, E.EINVAL),
]


# imports that would make the mgr read past the caller's rights (issue 20), at
# the options' defaults: no directory, no network, no credential prefix
# allowed; {keyring} is the active mgr's keyring, {mon} the monitor's port
def _http(url: str) -> Dict[str, Any]:
    return {'type': 'raw', 'stream': {'type': 'http', 'url': url}}


def _s3(url: str, access: str) -> Dict[str, Any]:
    return {'type': 'raw', 'stream': {'type': 's3', 'url': url, 'access_key': access,
                                      'secret_key': 'x'}}


IMPORTS: List[Tuple[Dict[str, Any], int]] = [
    ({'type': 'raw', 'stream': {'type': 'file', 'file_path': '{keyring}'}}, E.EACCES),
    ({'type': 'raw', 'stream': {'type': 'file', 'file_path': '/etc/ceph/ceph.conf'}}, E.EACCES),
    ({'type': 'raw', 'stream': {'type': 'file', 'file_path': '/tmp/../etc/passwd'}}, E.EACCES),
    ({'type': 'raw', 'stream': {'type': 'file', 'file_path': '/dev/zero'}}, E.EACCES),
    (_http('http://127.0.0.1:{mon}/'), E.EACCES),
    (_http('http://localhost/'), E.EACCES),
    (_http('http://[::1]/'), E.EACCES),
    (_http('http://0.0.0.0/'), E.EACCES),
    (_http('http://127.0.0.2/'), E.EACCES),
    (_http('http://169.254.169.254/latest/meta-data/'), E.EACCES),
    (_s3('http://127.0.0.1/bucket/key', 'AKIA'), E.EACCES),
    (_s3('http://192.0.2.1/bucket/key', 'config://mgr/dashboard/key'), E.EACCES),
    (_s3('http://192.0.2.1/bucket/key', 'config://secret/db-password'), E.EACCES),
    (_s3('http://192.0.2.1/bucket/key', 'config://mgr/rbd_livemigrate/import/0123/head/x'),
     E.EACCES),
]


def raw_command(cluster: Cluster, cmd: Dict[str, Any], name: str) -> Tuple[int, str]:
    def fill(v: Any) -> Any:
        return v.format(n=name) if isinstance(v, str) else (
            [fill(x) for x in v] if isinstance(v, list) else v)
    cmd = {k: fill(v) for k, v in cmd.items()}
    with rbdtools.connect(cluster.conf) as c:
        ret, out, err = c.mgr_command(json.dumps(cmd), b'', timeout=60)
    return -ret, err


def test_bad_input_matrix(cluster: Cluster, lm: Livemigrate, name: str,
                          capsys: pytest.CaptureFixture) -> None:
    src = 'a/' + name
    rbdtools.create_image(cluster.conf, src, 8 * MiB, written=8 * MiB, seed=name)
    cluster.rbd('snap', 'create', src + '@s')
    cluster.rbd('snap', 'protect', src + '@s')
    cluster.rbd('clone', src + '@s', src + '-kid')
    before = {s: rbdtools.checksums(cluster.conf, s) for s in (src, src + '-kid')}
    tasks = sorted(t['id'] for t in lm.ls() if t['id'])
    rows = []
    wrong = []
    assert len({tuple(r[0]) for r in MATRIX}) == len(MATRIX) >= 40
    assert not os.path.exists('/tmp/lm-pwned')
    for args, want in MATRIX:
        argv = [a.format(n=name) for a in args]
        rc, out, err = lm.run(*argv)
        line = err.strip()
        rows.append((' '.join(repr(a) if (not a or set(a) & set(' \t\n$`;\'')) else a
                              for a in argv), want, rc, line.splitlines()[0] if line else ''))
        by_cli = any(m in line for m in CLI_PARSER)
        if rc != want or not line or ('\n' in line and not by_cli) or 'Traceback' in line:
            wrong.append(rows[-1])
    for cmd, want in RAW:
        rc, err = raw_command(cluster, cmd, name)
        line = err.strip()
        rows.append(('(raw) ' + json.dumps({k: v for k, v in cmd.items() if k != 'prefix'},
                                           ensure_ascii=False)[:60], want, rc, line))
        if (rc != want or not line or '\n' in line or 'Traceback' in line
                or any(ord(ch) < 32 or ord(ch) == 0x7f for ch in line)):
            wrong.append(rows[-1])
    spec_path = os.path.join(cluster.dir, 'bad-import.json')
    keyring = os.path.join(cluster.data_dir('mgr.' + cluster.mgr_ids[0]), 'keyring')
    for spec, want in IMPORTS:
        text = json.dumps(spec).replace('{keyring}', keyring).replace('{mon}',
                                                                      str(cluster.port))
        with open(spec_path, 'w') as f:
            f.write(text)
        rc, out, err = lm.run('import', 'b/x', '-i', spec_path)
        line = err.strip()
        rows.append(('(import) ' + text[text.index('"stream"') + 10:][:60], want, rc, line))
        if rc != want or not line or '\n' in line or 'Traceback' in line:
            wrong.append(rows[-1])
    with capsys.disabled():
        print('\n{:<72} {:>9} {:>9}  {}'.format('input', 'expected', 'got', 'message'))
        for inp, want, rc, msg in rows:
            print('{:<72} {:>9} {:>9}  {}'.format(
                inp[:72].replace(name, '{n}'), errno.errorcode.get(want, want),
                errno.errorcode.get(rc, rc), msg[:100]))
    assert not wrong, json.dumps(wrong, indent=1)
    assert sorted(t['id'] for t in lm.ls() if t['id']) == tasks
    for s, sums in before.items():
        assert rbdtools.checksums(cluster.conf, s) == sums
    assert not rbdtools.image_exists(cluster.conf, 'b/x')
    assert not os.path.exists('/tmp/lm-pwned')
    assert 'batch ' not in lm.ok('ls')          # no refused add-pool left a batch


@pytest.mark.parametrize('option,value', [('blocked_recheck_seconds', '0'),
                                          ('stall_warn_seconds', '-1'),
                                          ('bandwidth_limit_bytes', '10P'),
                                          ('max_concurrent', '0')])
def test_option_out_of_range_is_refused(cluster: Cluster, option: str, value: str) -> None:
    p = cluster.ceph('config', 'set', 'mgr', 'mgr/rbd_livemigrate/' + option, value,
                     check=False)
    assert p.returncode == E.EINVAL, (option, value, p.stderr)
    assert value not in cluster.ceph('config', 'get', 'mgr',
                                     'mgr/rbd_livemigrate/' + option).stdout.split()
