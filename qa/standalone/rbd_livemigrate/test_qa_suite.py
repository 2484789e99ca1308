"""The QA pieces for teuthology, checked here: the rbd_livemigrate task's
logic and the workunit run against the session cluster, and the
qa/suites/rbd/livemigrate matrix composes (no cluster needed for that)."""

import contextlib
import importlib.util
import itertools
import os
import subprocess
import sys
import time
import types
import uuid
from typing import Any, Dict, Iterator, List, Set

import pytest
import yaml

from cluster import Cluster

HERE = os.path.dirname(os.path.abspath(__file__))
QA = os.path.dirname(os.path.dirname(HERE))
SUITE = os.path.join(QA, 'suites', 'rbd', 'livemigrate')
WORKUNIT = os.path.join(QA, 'workunits', 'rbd', 'test_rbd_livemigrate.sh')
sys.path.insert(0, os.path.join(QA, 'tasks'))

import rbd_livemigrate_local  # noqa: E402

lmtask = rbd_livemigrate_local.lmtask

# Tasks of teuthology itself (teuthology/task/) and of ceph's qa/tasks/ that a
# fragment may name without a file in this repository's qa/tasks/.
STANDARD_TASKS = {
    'install', 'ceph', 'cephadm', 'workunit', 'parallel', 'sequential', 'full_sequential',
    'exec', 'print', 'sleep', 'nop', 'loop', 'clock', 'internal', 'ansible', 'pexec',
    'ceph-fuse', 'rados', 'radosbench', 'rbd', 'rbd_fsx', 'qemu', 'thrashosds', 'mon_thrash',
    'ceph_manager', 'ceph_test_case', 'mgr', 'dump_stuck', 'selinux', 'kclient',
}
# tasks whose config lists other tasks (or names of top-level sections holding them)
COMPOSITE_TASKS = {'parallel', 'sequential', 'full_sequential'}
MiB = 1 << 20


# -------------------------------------------------------------------------------------
# the teuthology task's logic, run locally

def task_config(variant: str) -> Dict[str, Any]:
    config: Dict[str, Any] = {
        # 8 s a copy at 4 MiB/s: the workload starts before it ends, even under load
        'pool': 'a', 'dest_pool': 'b', 'images': 3, 'image_size': 32, 'snapshots': 1,
        'workload_images': 1, 'workload_io_total': 4, 'bandwidth_limit': '4M',
        'image_prefix': 'qa-' + uuid.uuid4().hex[:6], 'timeout': 120,
    }
    if variant == 'namespace-striping':
        config.update(dest_pool='c', dest_namespace='qa-ns', images=2, layout={
            'object_size': '1M', 'stripe_unit': '64K', 'stripe_count': 2,
            'features': 'layering,exclusive-lock,object-map,fast-diff'})
    return config


def check_cleaned_up(cluster: Cluster, config: Dict[str, Any]) -> None:
    """Images, and the namespace the task created, are gone."""
    for pool in ('a', 'b', 'c'):
        assert config['image_prefix'] not in cluster.rbd('ls', pool).stdout
    assert 'qa-ns' not in cluster.rbd('namespace', 'ls', 'c').stdout


def test_teuthology_task_logic(cluster: Cluster) -> None:
    """run_client through LocalRemote: layout change into a new namespace."""
    config = task_config('namespace-striping')
    t0 = time.monotonic()
    images = rbd_livemigrate_local.run_local(cluster.conf, config)
    print('task logic took {:.1f}s'.format(time.monotonic() - t0))
    assert len(images) == config['images']
    for img in images:
        assert img['final']['state'] == 'committed'
        if img['workload']:
            assert img['passes_during_copy'] >= 1, img
    check_cleaned_up(cluster, config)


class FakeCluster:
    """ctx.cluster: remotes {remote: [roles]} and only(role)."""

    def __init__(self, remotes: Dict[Any, List[str]]) -> None:
        self.remotes = remotes

    def only(self, role: str) -> 'FakeCluster':
        return FakeCluster({r: roles for r, roles in self.remotes.items() if role in roles})


@contextlib.contextmanager
def fake_parallel() -> Iterator[Any]:
    """teuthology.parallel.parallel: spawned calls run (here in order) when it exits."""
    calls: List[Any] = []
    yield types.SimpleNamespace(spawn=lambda f, *a, **k: calls.append((f, a, k)))
    for f, a, k in calls:
        f(*a, **k)


def test_teuthology_entry_point(cluster: Cluster, monkeypatch: pytest.MonkeyPatch,
                                tmp_path: Any) -> None:
    """task(ctx, config) itself, with stand-ins for the teuthology modules it imports
    and for the adjust-ulimits/ceph-coverage wrappers teuthology puts on remotes:
    overrides are merged, the images stay until the context exits, then go."""
    misc = types.SimpleNamespace(
        deep_merge=deep_merge, get_testdir=lambda ctx: str(tmp_path),
        all_roles_of_type=lambda c, t: [r.split('.', 1)[1] for roles in c.remotes.values()
                                        for r in roles if r.startswith(t + '.')])
    fakes = {
        'teuthology': types.SimpleNamespace(misc=misc),
        'teuthology.misc': misc,
        'teuthology.exceptions': types.SimpleNamespace(
            CommandFailedError=lmtask.CommandFailedError),
        'teuthology.orchestra': types.SimpleNamespace(),
        'teuthology.orchestra.run': types.SimpleNamespace(Raw=lmtask.Raw),
        'teuthology.parallel': types.SimpleNamespace(parallel=fake_parallel),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(
        'qa_tasks_rbd_livemigrate_teuthology', os.path.join(QA, 'tasks', 'rbd_livemigrate.py'))
    task_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(task_module)  # type: ignore[union-attr]
    assert task_module.teuthology is misc

    bindir = tmp_path / 'bin'
    bindir.mkdir()
    (bindir / 'adjust-ulimits').write_text('#!/bin/sh\nexec "$@"\n')
    (bindir / 'ceph-coverage').write_text('#!/bin/sh\nshift\nexec "$@"\n')
    for f in bindir.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, CEPH_CONF=cluster.conf,
               PATH='{}:{}'.format(bindir, os.environ['PATH']))
    remote = rbd_livemigrate_local.LocalRemote(env)
    config = task_config('pool')
    overrides = {'images': config.pop('images'), 'image_prefix': config['image_prefix']}
    ctx = types.SimpleNamespace(config={'overrides': {'rbd_livemigrate': overrides}},
                                cluster=FakeCluster({remote: ['mon.a', 'client.0']}))
    t0 = time.monotonic()
    with task_module.task(ctx, config):
        listed = cluster.rbd('ls', 'b').stdout.split()
        assert sorted(n for n in listed if n.startswith(config['image_prefix'])) == [
            '{}-client-0-{}'.format(config['image_prefix'], i)
            for i in range(overrides['images'])]
    print('teuthology entry point took {:.1f}s'.format(time.monotonic() - t0))
    check_cleaned_up(cluster, config)


def test_teuthology_task_fails_clearly(cluster: Cluster) -> None:
    """A config error is caught before anything is created."""
    with pytest.raises(ValueError, match='give a layout'):
        rbd_livemigrate_local.run_local(cluster.conf, {'pool': 'a', 'dest_pool': 'a'})
    with pytest.raises(ValueError, match='unknown option'):
        rbd_livemigrate_local.run_local(cluster.conf, {'pool': 'a', 'imagez': 2})


# -------------------------------------------------------------------------------------
# the workunit

def test_workunit(cluster: Cluster) -> None:
    env = dict(os.environ, CEPH_CONF=cluster.conf, POOL='a', DEST_POOL='b')
    t0 = time.monotonic()
    p = subprocess.run(['bash', WORKUNIT], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    took = time.monotonic() - t0
    print('workunit took {:.1f}s'.format(took))
    assert p.returncode == 0, 'workunit exited {}:\n{}'.format(
        p.returncode, '\n'.join(p.stderr.splitlines()[-60:]))
    assert p.stdout.strip().splitlines()[-1] == 'OK'
    assert 'lmwu-' not in cluster.rbd('ls', 'a').stdout + cluster.rbd('ls', 'b').stdout


def test_workunit_is_executable() -> None:
    assert os.access(WORKUNIT, os.X_OK)
    with open(WORKUNIT) as f:
        text = f.read()
    assert text.startswith('#!/usr/bin/env bash\n')
    assert 'set -ex' in text and text.rstrip().endswith('echo OK')
    assert ' jq ' not in text


# -------------------------------------------------------------------------------------
# the suite composes

def deep_merge(a: Any, b: Any) -> Any:
    """teuthology.misc.deep_merge: dicts merge, lists concatenate, b wins otherwise."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, list):
        assert isinstance(b, list), (a, b)
        a.extend(b)
        return a
    if isinstance(a, dict):
        assert isinstance(b, dict), (a, b)
        for k, v in b.items():
            a[k] = deep_merge(a.get(k), v)
        return a
    return b


def facets(suite: str) -> List[List[str]]:
    """The choices of each facet of a ``%`` directory: one list per entry, in order.

    A directory is one facet whose choices are its YAML files (or, holding a ``+``,
    a single choice that concatenates them); a YAML file beside ``%`` is in every job.
    """
    assert os.path.exists(os.path.join(suite, '%')), 'no % in ' + suite
    out = []
    for entry in sorted(os.listdir(suite)):
        path = os.path.join(suite, entry)
        if entry == '%' or entry.startswith('.'):
            continue
        if os.path.isdir(path):
            names = sorted(os.listdir(path))
            assert '%' not in names, 'nested matrices are not handled: ' + path
            files = [os.path.join(path, n) for n in names if n.endswith('.yaml')]
            assert files, 'empty facet ' + path
            assert set(names) - {n for n in names if n.endswith('.yaml')} <= {'+'}, \
                'stray files in {}: {}'.format(path, names)
            out.append(['+'.join(files)] if '+' in names else files)
        else:
            assert entry.endswith('.yaml'), 'stray file ' + path
            out.append([path])
    return out


def load_job(choice: List[str]) -> Dict[str, Any]:
    job: Dict[str, Any] = {}
    for item in choice:
        for path in item.split('+'):
            with open(path) as f:
                fragment = yaml.safe_load(f) or {}
            assert isinstance(fragment, dict), path
            job = deep_merge(job, fragment)
    return job


def task_names(job: Dict[str, Any], entries: List[Any], seen: Set[str]) -> List[str]:
    """Every task a job runs, following parallel/sequential into named sections."""
    names: List[str] = []
    for entry in entries:
        if isinstance(entry, str):          # a top-level section holding tasks
            assert entry in job, 'parallel/sequential names missing section ' + entry
            assert entry not in seen, 'section {} used twice'.format(entry)
            seen.add(entry)
            section = job[entry]
            for key in ('sequential', 'parallel'):
                if isinstance(section, dict) and key in section:
                    names.append(key)
                    names += task_names(job, section[key], seen)
            continue
        assert isinstance(entry, dict) and len(entry) == 1, 'bad task entry {!r}'.format(entry)
        ((name, config),) = entry.items()
        names.append(name)
        if name in COMPOSITE_TASKS:
            names += task_names(job, config or [], seen)
    return names


def task_configs(entries: List[Any], name: str) -> List[Any]:
    return [e[name] for e in entries if isinstance(e, dict) and name in e]


def check_job(job: Dict[str, Any], label: str) -> None:
    roles = [r for node in job.get('roles', []) for r in node]
    assert roles, label + ': no roles'
    tasks = job.get('tasks') or []
    names = task_names(job, tasks, set())
    assert names[:2] == ['install', 'ceph'], '{}: starts with {}'.format(label, names[:2])
    for name in names:
        module = name.split('.')[0]
        assert name in STANDARD_TASKS or module in STANDARD_TASKS or os.path.exists(
            os.path.join(QA, 'tasks', module + '.py')), '{}: unknown task {}'.format(label, name)
    for cfg in task_configs(tasks, 'workunit'):
        for role, paths in cfg['clients'].items():
            assert role in roles or role == 'all', '{}: no role {}'.format(label, role)
            for p in paths:
                assert os.path.isfile(os.path.join(QA, 'workunits', p)), \
                    '{}: workunit {} not under qa/workunits'.format(label, p)
    for cfg in task_configs(tasks, 'exec'):
        for role in cfg:
            assert role in roles, '{}: exec on unknown role {}'.format(label, role)
    overrides = job.get('overrides', {}).get('rbd_livemigrate', {})
    lm = task_configs(tasks, 'rbd_livemigrate')
    assert lm, label + ': does not run the rbd_livemigrate task'
    for cfg in lm:
        merged = deep_merge(dict(cfg or {}), overrides)
        for role in merged.get('clients', []):
            assert role in roles, '{}: no role {}'.format(label, role)
        lmtask.validate_config(merged)          # raises on a bad combination
        if (merged.get('layout') or {}).get('data_pool'):
            pool = merged['layout']['data_pool']
            assert any(pool in cmd for e in task_configs(tasks, 'exec') for cmds in e.values()
                       for cmd in cmds), '{}: nothing creates data pool {}'.format(label, pool)


def test_suite_composes() -> None:
    parts = facets(SUITE)
    assert [os.path.basename(os.path.dirname(p[0].split('+')[0])) for p in parts] == [
        '1-base', '2-layouts', '3-workload', '4-workunit', '5-task']
    jobs = list(itertools.product(*parts))
    expected = 1
    for p in parts:
        expected *= len(p)
    assert len(jobs) == expected >= 10
    layouts = set()
    for choice in jobs:
        label = ' + '.join(os.path.relpath(c, SUITE) for c in choice)
        job = load_job(list(choice))
        check_job(job, label)
        layouts.add(os.path.basename(choice[1]))
    assert {'object-size.yaml', 'striping.yaml', 'features.yaml', 'namespace.yaml',
            'ec-data-pool.yaml'} <= layouts
    print('{} jobs compose'.format(len(jobs)))


def test_suite_check_catches_mistakes(tmp_path: Any) -> None:
    """The composition check is not vacuous: a missing workunit, an unknown task and
    a bad task option each fail it."""
    base = load_job([os.path.join(SUITE, '1-base', 'install.yaml'),
                     os.path.join(SUITE, '5-task', 'rbd_livemigrate.yaml')])
    check_job(base, 'base')
    for bad, match in (
            ({'tasks': [{'workunit': {'clients': {'client.0': ['rbd/nope.sh']}}}]},
             'not under qa/workunits'),
            ({'tasks': [{'no_such_task': {}}]}, 'unknown task'),
            ({'overrides': {'rbd_livemigrate': {'imagez': 1}}}, 'unknown option'),
            ({'tasks': [{'parallel': ['missing_section']}]}, 'missing section')):
        job = deep_merge(load_job([os.path.join(SUITE, '1-base', 'install.yaml'),
                                   os.path.join(SUITE, '5-task', 'rbd_livemigrate.yaml')]),
                         bad)
        with pytest.raises((AssertionError, ValueError), match=match):
            check_job(job, 'bad')
