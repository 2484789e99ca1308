#!/usr/bin/python3
"""
Soak: kill -9 the active mgr at a random moment of a live migration, start
it again, and check that the task completes by itself with identical data
(head and every snapshot).  Prints a summary table.

    /usr/bin/python3 qa/soak/soak_mgr_kill.py --iterations 50
"""

import argparse
import datetime
import collections
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'standalone'))

from cluster import Cluster  # noqa: E402
import rbdtools  # noqa: E402

from lmcli import Livemigrate  # noqa: E402

MiB = 1 << 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--iterations', type=int, default=50)
    ap.add_argument('--size-mb', type=int, default=32)
    ap.add_argument('--seed', type=int, default=None)
    ap.add_argument('--dir', default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    base = args.dir or tempfile.mkdtemp(prefix='lm-soak-', dir='/tmp')
    c = Cluster(dir=base, osds=2, mgrs=2, osd_bytes=3 << 30, pools=['a', 'b'])
    c.start()
    lm = Livemigrate(c)
    lm.set_option('retry_backoff_seconds', '1')
    phases: Dict[str, int] = collections.Counter()
    lost: List[str] = []
    stuck: List[str] = []
    leftovers: List[str] = []
    unreachable: List[str] = []
    recovery: List[float] = []
    after_commit = 0
    ready: List[float] = []
    try:
        for i in range(args.iterations):
            name = 'soak-{}'.format(i)
            src, dst = 'a/' + name, 'b/' + name
            rbdtools.create_image(c.conf, src, args.size_mb * MiB, seed=name, snaps=1)
            before = rbdtools.checksums(c.conf, src)
            rate = rng.choice([8, 16, 32])
            task = lm.add(src, dst, '--bandwidth-limit', '{}M'.format(rate))
            time.sleep(rng.uniform(0.0, args.size_mb / rate + 0.5))
            phase = lm.status(task['id'])['state']
            active = c.active_mgr()
            t0 = time.monotonic()
            killed_at = time.time()
            c.kill_mgr(active)
            c.start_mgr(active)
            c.wait_module_ready(timeout=120)
            ready.append(time.monotonic() - t0)
            try:
                done = lm.wait(task['id'], ('committed',), timeout=300)
            except (AssertionError, TimeoutError) as e:
                phases[phase] += 1
                stuck.append('{}: {}'.format(task['id'], e))
                continue
            if finished_before(done, killed_at):
                # the kill landed after the commit: it tested nothing of the
                # migration's recovery, so it is not counted as a kill in it
                phase = 'after-commit'
                after_commit += 1
            else:
                recovery.append(time.monotonic() - t0)
            phases[phase] += 1
            try:
                if rbdtools.checksums(c.conf, dst) != before:     # opens dst by name
                    lost.append(dst)
            except Exception as e:
                unreachable.append('{}: {}'.format(dst, e))
                continue
            if rbdtools.image_exists(c.conf, src):
                unreachable.append('{}: the source name still exists'.format(src))
            trash = rbdtools.trash_names(c.conf, 'a') + rbdtools.trash_names(c.conf, 'b')
            if trash:
                leftovers.append('{}: trash holds {}'.format(name, trash))
            rbdtools_rm(c, dst)
            print('iteration {:3d}: killed in {:12s} module back in {:5.1f}s, {}'.format(
                i + 1, phase, ready[-1], 'committed before the kill (not counted)'
                if phase == 'after-commit' else
                'committed {:5.1f}s after the kill'.format(recovery[-1])), flush=True)
    finally:
        c.stop(purge=not (lost or stuck or leftovers or unreachable))
    print()
    print('| iterations | kills before commit | phases hit | lost images | stuck tasks '
          '| trash leftovers | unreachable | mean module-back (s) '
          '| mean kill-to-committed (s) |')
    print('|---|---|---|---|---|---|---|---|---|')
    print('| {} | {} | {} | {} | {} | {} | {} | {:.1f} | {:.1f} |'.format(
        args.iterations, args.iterations - after_commit,
        ', '.join('{} {}'.format(k, v) for k, v in sorted(phases.items())),
        len(lost), len(stuck), len(leftovers), len(unreachable),
        statistics.mean(ready) if ready else 0,
        statistics.mean(recovery) if recovery else 0))
    for x in lost + stuck + leftovers + unreachable:
        print('  ', x)
    return 1 if lost or stuck or leftovers or unreachable else 0


def finished_before(task: Dict[str, Any], when: float) -> bool:
    """The task's record says it ended (committed) before ``when`` (epoch)."""
    finished = task.get('finished')
    if not finished:
        return False
    return datetime.datetime.fromisoformat(str(finished)).timestamp() <= when


def rbdtools_rm(c: Cluster, spec: str) -> None:
    c.rbd('snap', 'purge', spec)
    c.rbd('rm', spec)


if __name__ == '__main__':
    sys.exit(main())
