"""The operator doc's examples, run on a real cluster: every
``$ ceph rbd livemigrate ...`` example below is taken from
doc/mgr/rbd_livemigrate.rst with the reply printed under it, the same
command runs here in the state the doc describes, and the reply must have
the documented shape (ids, sizes and times are the doc's only free parts;
``...`` stands for what the doc leaves out).  A reply or message changed
without its doc fails here."""

import os
import re
from typing import Dict, Iterator, List

import pytest

from cluster import Cluster, wait_for
from conftest import Livemigrate, rbdtools

MiB = 1 << 20
DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'doc', 'mgr',
                   'rbd_livemigrate.rst')
PROMPT = '$ ceph rbd livemigrate '


def doc_examples() -> Dict[str, List[str]]:
    """command (after ``ceph rbd livemigrate``) -> the reply lines the doc shows."""
    with open(DOC) as f:
        lines = f.read().splitlines()
    out: Dict[str, List[str]] = {}
    for i, line in enumerate(lines):
        text = line.strip()
        if not text.startswith(PROMPT):
            continue
        reply = []
        for nxt in lines[i + 1:]:
            t = nxt.strip()
            if not t or t.startswith('$') or not nxt.startswith('  '):
                break
            reply.append(t)
        out.setdefault(text[len(PROMPT):], reply)
    return out


EXAMPLES = doc_examples()


def shape(lines: List[str]) -> 're.Pattern[str]':
    """A documented reply as a pattern: ids, client addresses, numbers and
    ``...`` are free; names and words are not."""
    free = (('\x00A', r'[0-9a-f.:\[\]]+:\d+/\d+', r'\d+\.\d+\.\d+\.\d+:\d+/\d+'),
            ('\x00B', r'batch-[0-9a-f]{8}', r'batch-[0-9a-f]{8}'),
            ('\x00I', r'[0-9a-f]{12}', r'(?<![0-9a-z])[0-9a-f]{12}(?![0-9a-z])'),
            ('\x00N', r'\d+(?:\.\d+)?', r'(?<![a-z0-9])\d+(?:\.\d+)?'))
    parts = []
    for line in lines:
        for token, _, find in free:
            line = re.sub(find, token, line)
        p = re.escape(line).replace(re.escape('...'), '.*')
        for token, pattern, _ in free:
            p = p.replace(re.escape(token), pattern)
        # a task the doc shows "starting" may have started by the time it answers
        tail = re.escape(': starting')
        if p.endswith(tail):
            p = p[:-len(tail)] + r': (?:starting|running: ceph rbd livemigrate status ' \
                r'[0-9a-f]{12})'
        parts.append(p)
    return re.compile(r'\s*'.join(parts), re.S)


def check(lm: Livemigrate, doc_command: str, *real_args: str) -> str:
    """Run ``real_args`` (the doc's command with this run's ids) and match the
    reply (stdout, or the error line) against the doc's."""
    assert doc_command in EXAMPLES, 'the doc no longer shows: ' + doc_command
    want = EXAMPLES[doc_command]
    assert want, 'the doc shows no reply for: ' + doc_command
    rc, out, err = lm.run(*real_args)
    got = (out if rc == 0 else err).strip()
    assert shape(want).fullmatch(got), '\n{}\ndoc: {}\ngot: {}'.format(
        doc_command, '\n     '.join(want), got)
    return got


def task_id(reply: str) -> str:
    m = re.match(r'task ([0-9a-f]{12}):', reply)
    assert m, reply
    return m.group(1)


@pytest.fixture(scope='module')
def pools(cluster: Cluster) -> Iterator[None]:
    """The doc's pools, rbd and fast, with copies slow enough to be seen."""
    for pool in ('rbd', 'fast'):
        cluster.create_pool(pool)
    lm = Livemigrate(cluster)
    lm.set_option('bandwidth_limit_bytes', str(MiB))
    yield
    lm.rm_option('bandwidth_limit_bytes')


def test_add_and_pause(cluster: Cluster, lm: Livemigrate, pools: None) -> None:
    rbdtools.create_image(cluster.conf, 'rbd/vm1', 16 * MiB, seed='vm1')
    got = check(lm, 'add rbd/vm1 fast/vm1 --manual-commit',
                'add', 'rbd/vm1', 'fast/vm1', '--manual-commit', '--format', 'plain')
    tid = task_id(got)
    lm.wait(tid, pred=lambda t: t['state'] == 'executing')
    check(lm, 'pause 3f9a61c2b1d0', 'pause', tid, '--format', 'plain')
    lm.ok('cancel', tid)


def test_errors_as_documented(cluster: Cluster, lm: Livemigrate, pools: None) -> None:
    rbdtools.create_image(cluster.conf, 'rbd/vm2', 4 * MiB, seed='vm2')
    cluster.rbd('snap', 'create', 'rbd/vm2@s')
    cluster.rbd('snap', 'protect', 'rbd/vm2@s')
    cluster.rbd('clone', 'rbd/vm2@s', 'rbd/child1')
    check(lm, 'add rbd/vm2 fast/vm2', 'add', 'rbd/vm2', 'fast/vm2')
    check(lm, 'status 000000000000', 'status', '000000000000')
    rbdtools.create_image(cluster.conf, 'rbd/vm3', 64 * MiB, seed='vm3')     # 64 s at 1M/s
    tid = lm.add('rbd/vm3', 'fast/vm3')['id']
    check(lm, 'commit 06fae042ed07', 'commit', tid)
    lm.ok('cancel', tid)


def test_add_pool_and_rm(cluster: Cluster, lm: Livemigrate, pools: None) -> None:
    for i in range(2):
        rbdtools.create_image(cluster.conf, 'rbd/web{}'.format(i), 4 * MiB, seed=str(i))
    lm.set_option('bandwidth_limit_bytes', '0')
    try:
        got = check(lm, "add-pool rbd fast --pattern 'web*' --priority -5",
                    'add-pool', 'rbd', 'fast', '--pattern', 'web*', '--priority', '-5',
                    '--format', 'plain')
        batch = re.search(r'batch-[0-9a-f]{8}', got)
        assert batch
        wait_for(lambda: lm.ok('status', batch.group(0), '--format', 'json')['finished'],
                 120, 'the batch')
    finally:
        lm.set_option('bandwidth_limit_bytes', str(MiB))
    check(lm, 'rm --finished', 'rm', '--finished', '--format', 'plain')


def test_cutover_as_documented(cluster: Cluster, lm: Livemigrate, pools: None) -> None:
    rbdtools.create_image(cluster.conf, 'rbd/vm8', 16 * MiB, seed='vm8')
    th, release = rbdtools.holder(cluster.conf, 'rbd/vm8')
    try:
        tid = lm.add('rbd/vm8', 'fast/vm8', '--manual-cutover')['id']
        rc, out, err = lm.run('cutover', tid)
        doc = [line for line in EXAMPLES['cutover 5b0d6f3a21c9'] if line.startswith('Error')]
        assert doc and shape(doc).fullmatch(err.strip()), (doc, err)
    finally:
        release.set()
        th.join()
    rc, out, err = lm.run('cutover', tid, '--format', 'plain')
    assert rc == 0, err
    doc = ['task 5b0d6f3a21c9: executing rbd/vm8 -> fast/vm8: cut over in 61 ms']
    assert doc[0] in open(DOC).read()
    assert shape(doc).fullmatch(out.strip().replace('prepared', 'executing')), out
    lm.ok('cancel', tid)


def test_adopt_as_documented(cluster: Cluster, lm: Livemigrate, pools: None) -> None:
    rbdtools.create_image(cluster.conf, 'rbd/vm7', 4 * MiB, seed='vm7')
    cluster.rbd('migration', 'prepare', 'rbd/vm7', 'fast/vm7')
    got = check(lm, 'adopt fast/vm7', 'adopt', 'fast/vm7', '--format', 'plain')
    lm.wait(task_id(got))
