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
