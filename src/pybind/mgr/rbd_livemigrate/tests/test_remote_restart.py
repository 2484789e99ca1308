"""A remote task across a mgr restart (issue 27; seen on two Tentacle
clusters, qa/standalone/rbd_livemigrate/test_remote_faults.py): its stored
record loads again, and the files of the remotes live tasks use are never
removed by the start's sweep (clients opening a destination read them)."""

import json
import os
from typing import Any, Dict, List

import pytest

from rbd_livemigrate import remote_spec
from rbd_livemigrate.records import CorruptRecord
from rbd_livemigrate.remote_spec import RemoteImageSpec
from rbd_livemigrate.remotes import ConfFiles, Remote
from rbd_livemigrate.task import Task

from test_remote_sources import World, world  # noqa: F401  (the fixture)
from test_remotes import KEY
from test_task import record


def remote_spec_of(**changes: Any) -> Dict[str, Any]:
    spec = remote_spec.build_source_spec('/run/ceph/rbd_livemigrate', 'east', 'client.lm',
                                         'rbd', 'ns', 'vm1', 'rbd_livemigrate-t1')
    spec.update(changes)
    return spec


def test_remote_task_record_loads_again() -> None:
    spec = json.dumps(remote_spec_of(), sort_keys=True)
    t = Task.from_json(record(import_spec=spec))
    assert t.import_spec == spec
    assert Task.loads(json.dumps(t.to_json())).import_spec == spec


@pytest.mark.parametrize('changes', [
    {'key': KEY},
    {'mon_host': 'v2:10.0.0.1:3300'},
    {'cluster_name': 'east'},                 # not a path: the local cluster's conf
    {'cluster_name': '/run/ceph/e st'},
    {'client_name': 'lm'},
    {'snap_name': ''},
    {'image_name': None},
])
def test_remote_task_record_refused_when_not_ours(changes: Dict[str, Any]) -> None:
    with pytest.raises(CorruptRecord):
        Task.from_json(record(import_spec=json.dumps(remote_spec_of(**changes))))


def test_remote_task_record_missing_field_refused() -> None:
    spec = remote_spec_of()
    del spec['snap_name']
    with pytest.raises(CorruptRecord):
        Task.from_json(record(import_spec=json.dumps(spec)))


def test_sweep_keeps_what_is_named(tmp_path: Any) -> None:
    files = ConfFiles(str(tmp_path / 'remotes'))
    os.makedirs(files.dir)
    for n in ('east.conf', 'east.keyring', 'west.conf', 'west.keyring', 'east.conf.9.tmp',
              'README'):
        (tmp_path / 'remotes' / n).write_text('x')
    assert files.sweep(keep={'east'}) == ['east.conf.9.tmp', 'west.conf', 'west.keyring']
    assert sorted(os.listdir(files.dir)) == ['README', 'east.conf', 'east.keyring']
    assert files.sweep() == ['east.conf', 'east.keyring']


def test_start_never_removes_a_live_remote_file(world: World,  # noqa: F811
                                                monkeypatch: Any) -> None:
    """A client opening the destination while the mgr starts reads the files
    the killed mgr left: start() rewrites them in place, never unlinks them."""
    spec = world.rs.spec_for(RemoteImageSpec.parse('east:rbd/vm1@s1'), 't1')
    world.tasks['t1'] = json.dumps(spec)
    world.files.write(world.registry.get('east'), world.registry.key('east'))
    west = Remote('west', 'v2:10.0.0.2:3300', 'client.lm', '', 0.0)
    world.files.write(west, KEY)        # no task uses it: a killed mgr's leftover
    unlinked: List[str] = []
    real = os.unlink

    def unlink(path: str) -> None:
        unlinked.append(os.path.basename(path))
        real(path)
    monkeypatch.setattr(os, 'unlink', unlink)
    world.rs.start()
    assert sorted(unlinked) == ['west.conf', 'west.keyring']
    assert world.files.present() == {'east'}


def test_after_end_removes_the_files_of_the_ending_task(world: World  # noqa: F811
                                                        ) -> None:
    """The runner ends a task (after_end) before it records the end: the
    task is still live in the table then, and its files go all the same,
    unless another live task uses the same remote."""
    specs = {t: json.dumps(world.rs.spec_for(RemoteImageSpec.parse(src), t))
             for t, src in (('t1', 'east:rbd/vm1@s1'), ('t2', 'east:rbd/vm2'))}
    world.tasks.update(specs)
    for t in specs:
        world.rs.before_prepare(t, specs[t])
    world.rs.after_end('t1', specs['t1'], lambda snap: None)
    assert world.files.present() == {'east'}            # t2 still needs them
    del world.tasks['t1']                               # its end recorded
    world.rs.after_end('t2', specs['t2'], lambda snap: None)
    assert world.files.present() == set()
