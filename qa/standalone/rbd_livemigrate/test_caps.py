"""Caps: reads need 'r', changes need 'w'; pool-scoped callers act only on
the pools (and namespaces) their mgr caps name, as rbd_support checks them."""

import os
from typing import Tuple

import pytest

from cluster import Cluster
from conftest import Livemigrate, rbdtools
from lmcli import json_args

MiB = 1 << 20


def make_user(cluster: Cluster, name: str, *caps: str) -> str:
    keyring = os.path.join(cluster.dir, '{}.keyring'.format(name))
    cluster.ceph('auth', 'rm', name, check=False)
    out = cluster.ceph('auth', 'get-or-create', name, *caps).stdout
    with open(keyring, 'w') as f:
        f.write(out)
    return keyring


def as_user(cluster: Cluster, name: str, keyring: str, *args: str) -> Tuple[int, str, str]:
    # the release's own ceph CLI: the key the release made may be a type the host's cannot read
    p = cluster.command('ceph', '--name', name, '--keyring', keyring, 'rbd', 'livemigrate',
                        *json_args(args), check=False, timeout=60)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope='module')
def reader(cluster: Cluster) -> str:
    return make_user(cluster, 'client.lm-reader', 'mon', 'allow r', 'mgr', 'allow r',
                     'osd', 'allow r')


@pytest.fixture(scope='module')
def pool_a(cluster: Cluster) -> str:
    return make_user(cluster, 'client.lm-pool-a', 'mon', 'allow r',
                     'mgr', 'allow module rbd_livemigrate with pool=a rw',
                     'osd', 'profile rbd pool=a')


@pytest.mark.parametrize('args', [
    ['add', 'a/{n}', 'b/{n}'], ['add-pool', 'a', 'b'], ['cancel', 'x'], ['commit', 'x'],
    ['pause'], ['resume'], ['retry', 'x'], ['adopt', 'b/{n}'],
])
def test_read_only_caller_cannot_change(cluster: Cluster, lm: Livemigrate, reader: str,
                                        name: str, args: list) -> None:
    src = 'a/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    count = len(lm.ls())
    rc, out, err = as_user(cluster, 'client.lm-reader', reader,
                           *[a.format(n=name) for a in args])
    assert rc == 13, (rc, err)
    assert len(lm.ls()) == count
    assert rbdtools.image_exists(cluster.conf, src)


def test_read_only_caller_can_read(cluster: Cluster, lm: Livemigrate, reader: str) -> None:
    rc, out, err = as_user(cluster, 'client.lm-reader', reader, 'ls', '--format', 'json')
    assert rc == 0, err
    rc, out, err = as_user(cluster, 'client.lm-reader', reader, 'ls')
    assert rc == 0 and 'STATE' in out


def test_pool_scoped_caller(cluster: Cluster, lm: Livemigrate, pool_a: str, name: str) -> None:
    src = 'a/' + name
    rbdtools.create_image(cluster.conf, src, 4 * MiB, seed=name)
    before = rbdtools.checksums(cluster.conf, src)
    # another pool: refused, nothing changes
    rc, out, err = as_user(cluster, 'client.lm-pool-a', pool_a, 'add', src, 'b/' + name)
    assert rc == 13, (rc, err)
    assert "'b'" in err and '\n' not in err.strip()
    assert rbdtools.image_exists(cluster.conf, src)
    # within its pool: a layout change is allowed
    rc, out, err = as_user(cluster, 'client.lm-pool-a', pool_a, 'add', src, 'a/{}-new'.format(
        name), '--object-size', '1M')
    assert rc == 0, err
    task_id = lm.ok('status', 'a/{}-new'.format(name), '--format', 'json')['id']
    lm.wait(task_id)
    assert rbdtools.checksums(cluster.conf, 'a/{}-new'.format(name)) == before
    # a task in pool b is not its to cancel
    other = 'a/{}-b'.format(name)
    rbdtools.create_image(cluster.conf, other, 4 * MiB, seed=name)
    lm.ok('pause')
    try:
        t = lm.add(other, 'b/{}-b'.format(name))
        rc, out, err = as_user(cluster, 'client.lm-pool-a', pool_a, 'cancel', t['id'])
        assert rc == 13, err
    finally:
        lm.ok('resume')
    lm.wait(t['id'])
