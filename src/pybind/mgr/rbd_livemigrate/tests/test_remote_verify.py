"""Verify before commit for an image imported from another cluster (issue
27): the remote image at the spec's snapshot against the destination's head
(its HEAD may have moved), each remote snapshot against its copy; a file or
URL import is not read twice."""

import json
from typing import Any, List, Optional, Tuple

from rbd_livemigrate.interface import HEAD, SourceReader
from rbd_livemigrate.planner import Act, Phase, Verdict, plan_import
from rbd_livemigrate.spec import ImageSpec
from rbd_livemigrate.task import State, Task, VerifyMode, VerifyResult

from test_remote_wiring import SNAP, FakeRemoteImport, remote_task, run, world


class Verifying(FakeRemoteImport):
    """A destination whose copies of the remote snapshots are all there."""

    def __init__(self, writes: Optional[int] = 0,
                 difference: Optional[Tuple[str, int, str]] = None) -> None:
        super().__init__()
        self.writes = writes
        self.difference = difference
        self.dest_snaps: List[Tuple[str, int]] = []
        self.pairs: List[Tuple[str, Optional[str], Optional[str]]] = []
        self.opened_at: List[Optional[str]] = []

    def dest_inputs(self, dest: ImageSpec, protect: str
                    ) -> Tuple[List[Tuple[str, int]], Optional[int]]:
        self.calls.append('client writes since ' + protect)
        return list(self.dest_snaps), self.writes

    def compare_with(self, client: Any, reader: SourceReader, dest: ImageSpec,
                     pairs: List[Any], on_progress: Any) -> Optional[Tuple[str, int, str]]:
        self.calls.append('compare')
        for p in pairs:
            self.pairs.append((p.label, p.src_snap, p.dst_snap))
            reader.open(p.src_snap)
        on_progress(1, 1)
        return self.difference


def test_the_planner_verifies_a_remote_import_only() -> None:
    executed = Verdict(Phase.EXECUTED, '')
    remote = Task(id='t1', source='b/x', destination='b/x', created=1.0, verify=VerifyMode.AUTO,
                  import_spec=json.dumps({'type': 'native', 'cluster_name': '/r/east',
                                          'pool_name': 'rbd', 'image_name': 'x',
                                          'snap_name': 's'}))
    assert plan_import(remote, executed).act == Act.VERIFY
    assert plan_import(remote.evolve(verify=VerifyMode.OFF), executed).act == Act.COMMIT
    stream = remote.evolve(import_spec=json.dumps(
        {'type': 'raw', 'stream': {'type': 'file', 'file_path': '/x'}}))
    assert plan_import(stream, executed).act == Act.COMMIT


def test_a_remote_import_compares_the_remote_snapshot_with_the_head(tmp_path: Any) -> None:
    w = world(tmp_path)
    w.images[('rbd', '', 'vm1')].snaps = ['s0', 's1']
    fake = Verifying()
    fake.dest_snaps = [('s0', 1), ('s1', 1)]
    t = run(w, fake, remote_task(w, 'east:rbd/vm1@s1', verify=VerifyMode.AUTO))
    assert t.state == State.COMMITTED, t.error
    # s0 against its copy; the destination's head against the remote at s1, never
    # the remote's HEAD (None), which may have moved since
    assert fake.pairs == [('s0', 's0', 's0'), (HEAD, 's1', None)]
    assert 'open vm1@None' not in w.log
    assert fake.calls.index('compare') < fake.calls.index('commit')
    v = t.verification
    assert v is not None and v.result == VerifyResult.PASSED and v.compared == ['s0', HEAD]


def test_the_modules_snapshot_stands_for_the_head_when_clients_wrote(tmp_path: Any) -> None:
    w = world(tmp_path)
    fake = Verifying(writes=3)
    fake.dest_snaps = [(SNAP, 1)]
    t = run(w, fake, remote_task(w, verify=VerifyMode.AUTO))
    assert t.state == State.COMMITTED, t.error
    assert 'client writes since ' + SNAP in fake.calls
    assert fake.pairs == [(HEAD + ' as of prepare', SNAP, SNAP)]
    assert t.verification is not None and t.verification.client_writes == 3
    assert w.images[('rbd', '', 'vm2')].snaps == []         # still removed at the end


def test_a_difference_fails_the_task_and_commits_nothing(tmp_path: Any) -> None:
    w = world(tmp_path)
    fake = Verifying(difference=(HEAD, 4096, 'HEAD differs at offset 4096 (object 0)'))
    fake.dest_snaps = [(SNAP, 1)]
    t = run(w, fake, remote_task(w, verify=VerifyMode.AUTO))
    assert t.state == State.FAILED and 'commit' not in fake.calls
    assert 'HEAD differs at offset 4096' in (t.error or '')
    assert 'cancel removes the destination' in (t.error or '')
    assert t.verification is not None and t.verification.result == VerifyResult.MISMATCH
    # the snapshot stays until the task ends: a retry compares against it again
    assert w.images[('rbd', '', 'vm2')].snaps == [SNAP]


def test_a_snapshot_missing_on_the_destination_is_a_difference_in_full(tmp_path: Any) -> None:
    w = world(tmp_path)
    w.images[('rbd', '', 'vm1')].snaps = ['s0', 's1']
    fake = Verifying()
    fake.dest_snaps = [('s1', 1)]
    t = run(w, fake, remote_task(w, 'east:rbd/vm1@s1', verify=VerifyMode.FULL))
    assert t.state == State.FAILED and 'snapshot s0 is missing' in (t.error or '')
    assert 'compare' not in fake.calls and 'commit' not in fake.calls
