"""The pure parts import without librados/librbd: only rbd_adapter (and
module.py, which wires it in) may touch them."""

import os
import subprocess
import sys

PURE = ('planner', 'interface', 'hold', 'commands', 'preflight', 'pipeline', 'scheduler',
        'task', 'store', 'health', 'window', 'spec', 'formatting', 'progress', 'errors')


def test_pure_modules_do_not_load_librbd() -> None:
    code = ('import sys\n'
            'sys.modules["rados"] = None\n'        # any import of them raises ImportError
            'sys.modules["rbd"] = None\n'
            + ''.join('import rbd_livemigrate.{}\n'.format(m) for m in PURE)
            + 'assert "rbd_livemigrate.rbd_adapter" not in sys.modules\n')
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, UNITTEST='1', PYTHONPATH=os.path.join(here, '..', '..'))
    p = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_nothing_below_the_scheduler_imports_it() -> None:
    """The runner and the commands reach the scheduler through narrow doors
    (``runctx.RunContext``, ``handles.SchedulerHandle``): only the module,
    which wires them, imports ``scheduler``."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
    offenders = []
    for name in sorted(os.listdir(here)):
        if not name.endswith('.py') or name in ('scheduler.py', 'module.py'):
            continue
        with open(os.path.join(here, name)) as f:
            for line in f:
                if line.startswith(('from .scheduler import', 'from . import scheduler',
                                    'import rbd_livemigrate.scheduler')):
                    offenders.append('{}: {}'.format(name, line.strip()))
    assert offenders == []


def test_the_new_pure_parts_load_without_librbd() -> None:
    code = ('import sys\n'
            'sys.modules["rados"] = None\n'
            'sys.modules["rbd"] = None\n'
            + ''.join('import rbd_livemigrate.{}\n'.format(m) for m in (
                'options', 'runctx', 'verify', 'rbd_decode', 'batches', 'importer', 'adding',
                'orphans', 'views', 'access', 'handles', 'records', 'request', 'runner_base',
                'cutover', 'copying', 'verifying', 'remote_spec')))
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, UNITTEST='1', PYTHONPATH=os.path.join(here, '..', '..'))
    p = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
