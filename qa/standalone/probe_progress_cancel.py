#!/usr/bin/python3
"""
Does ``migration_execute`` stop when its progress callback returns a negative
errno?  (Pacific 16.2.15 and Reef 18.2.7: no, measured; the module stops a
copy by blocklisting its client.)  Runs inside the cluster's own release:

    /usr/bin/python3 qa/standalone/cluster.py start --dir /tmp/p1 --pools a,b --release reef
    /usr/bin/python3 qa/standalone/probe_progress_cancel.py --dir /tmp/p1
"""

import argparse
import os
import subprocess
import sys

PROBE = r'''
import errno, sys, time, rados, rbd
c = rados.Rados(conffile=sys.argv[1]); c.connect()
a, b = c.open_ioctx('a'), c.open_ioctx('b')
name = 'probe-%d' % int(time.time() * 1000)
rbd.RBD().create(a, name, 256 << 20)
with rbd.Image(a, name) as im:
    for off in range(0, 256 << 20, 4 << 20):
        im.write(b'x' * (4 << 20), off)
rbd.RBD().migration_prepare(a, name, b, name)
calls = [0]
def cb(offset, total):
    calls[0] += 1
    return -errno.ECANCELED if offset >= total // 4 else 0
try:
    rbd.RBD().migration_execute(b, name, on_progress=cb)
    result = 'ran to the end (callback return ignored)'
except rbd.Error as e:
    result = 'stopped: %s' % e
state = rbd.RBD().migration_status(b, name)['state']
rbd.RBD().migration_abort(b, name)
print('%s; %d callbacks; librbd state %d' % (result, calls[0], state))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--dir', required=True, help='a running cluster.py cluster with pools a, b')
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cluster import Cluster
    c = Cluster.attach(args.dir)
    p = subprocess.run(c.python_argv + ['-c', PROBE, os.path.join(args.dir, 'ceph.conf')],
                       capture_output=True, text=True)
    print('{}: {}'.format(c.release, (p.stdout or p.stderr).strip().splitlines()[-1]))
    return p.returncode


if __name__ == '__main__':
    sys.exit(main())
