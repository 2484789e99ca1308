"""
``Livemigrate``: drives ``ceph rbd livemigrate`` through the real ``ceph``
binary of a throwaway cluster (used by the pytest suite, the soak and the
benchmark; no pytest needed).
"""

import json
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from cluster import Cluster, wait_for

TERMINAL = ('committed', 'aborted', 'failed')
# commands whose plain reply is one human line: the tests read their record
WRITES = ('add', 'import', 'add-pool', 'cancel', 'commit', 'cutover', 'retry', 'pause',
          'resume', 'adopt', 'rm')


def json_args(args: Iterable[str]) -> List[str]:
    """``args`` of ``ceph rbd livemigrate``, asking a changing command for its
    record as JSON unless a format is given."""
    out = list(args)
    if out and out[0] in WRITES and not any(
            a in ('--format', '-f') or a.startswith('--format=') for a in out):
        out += ['--format', 'json']
    return out


class Livemigrate:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.conf = cluster.conf

    def run(self, *args: str, timeout: float = 120) -> Tuple[int, str, str]:
        p = self.cluster.ceph('rbd', 'livemigrate', *json_args(args), check=False,
                              timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def ok(self, *args: str) -> Any:
        rc, out, err = self.run(*args)
        assert rc == 0, 'ceph rbd livemigrate {} -> {}: {}'.format(' '.join(args), rc, err)
        return json.loads(out) if out.strip().startswith(('{', '[')) else out

    def add(self, *args: str) -> Dict[str, Any]:
        task = self.ok('add', *args)
        assert isinstance(task, dict) and task['id']
        return task

    def status(self, task_id: str) -> Dict[str, Any]:
        return self.ok('status', task_id, '--format', 'json')  # type: ignore[no-any-return]

    def ls(self) -> List[Dict[str, Any]]:
        return self.ok('ls', '--format', 'json')  # type: ignore[no-any-return]

    def wait(self, task_id: str, states: Iterable[str] = ('committed',),
             timeout: float = 180, pred: Optional[Callable[[Dict[str, Any]], bool]] = None
             ) -> Dict[str, Any]:
        states = tuple(states)
        last: Dict[str, Any] = {}

        def done() -> bool:
            nonlocal last
            last = self.status(task_id)
            if pred is not None:
                if pred(last):
                    return True
                if last['state'] in TERMINAL:
                    raise AssertionError('task {} ended {} ({}) before the awaited '
                                         'condition'.format(task_id, last['state'],
                                                            last.get('error')))
                return False
            if last['state'] in TERMINAL and last['state'] not in states:
                raise AssertionError('task {} ended {} ({}), wanted {}'.format(
                    task_id, last['state'], last.get('error'), states))
            return last['state'] in states
        wait_for(done, timeout, 'task {} to reach {}'.format(task_id, states or 'condition'))
        return last

    def set_option(self, name: str, value: str) -> None:
        self.cluster.ceph('config', 'set', 'mgr', 'mgr/rbd_livemigrate/{}'.format(name), value)

    def rm_option(self, name: str) -> None:
        """Back to the default.  Pacific's mgr never hears of ``ceph config rm``
        of a module option, so set the default value explicitly."""
        key = 'mgr/rbd_livemigrate/{}'.format(name)
        default = str(self.cluster.ceph_json('config', 'help', key).get('default', ''))
        if default == '' and name == 'maintenance_window':
            default = '00:00-24:00'            # always open, same as empty
        self.cluster.ceph('config', 'set', 'mgr', key, default)
