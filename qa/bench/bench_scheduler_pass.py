#!/usr/bin/env python3
"""
The README's "scheduler pass with 10,000 queued tasks" figure: one pass of
the module's scheduler (``Worker.tick``, what ``serve`` runs every 50 ms)
over a table of ``--tasks`` queued tasks, ``--running`` of them holding a
slot (runners that never end), the rest waiting.  No cluster: the module's
own scheduler code with an in-memory store and a clock advanced 50 ms a
pass (so the once-a-second housekeeping and health run in 1 pass of 20, as
in the mgr).  Prints the settings, then the median, p95 and max of a pass.

    python3 qa/bench/bench_scheduler_pass.py [--tasks 10000] [--running 4] [--passes 2000]
"""

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'src', 'pybind', 'mgr'))
os.environ.setdefault('UNITTEST', '1')          # the package without the mgr

from rbd_livemigrate.progress import ProgressReporter  # noqa: E402
from rbd_livemigrate.scheduler import Options, RunnerHandle, Worker  # noqa: E402
from rbd_livemigrate.store import TaskStore  # noqa: E402
from rbd_livemigrate.task import Task  # noqa: E402

NOW = 1_700_000_000.0


class Held(RunnerHandle):
    """A runner that holds its slot for the whole run."""

    def __init__(self, worker: Worker, task_id: str) -> None:
        self.task_id = task_id

    def start(self) -> None:
        pass


def memory_store() -> TaskStore:
    kv: Dict[str, str] = {}

    def set_key(k: str, v: Optional[str]) -> None:
        if v is None:
            kv.pop(k, None)
        else:
            kv[k] = v
    return TaskStore(lambda p: {k: v for k, v in kv.items() if k.startswith(p)}, set_key)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().split('\n\n')[0])
    ap.add_argument('--tasks', type=int, default=10000)
    ap.add_argument('--running', type=int, default=4, help='max_concurrent (slots held)')
    ap.add_argument('--passes', type=int, default=2000)
    args = ap.parse_args()
    clock = [NOW]
    w = Worker(memory_store(), ProgressReporter(lambda *a, **k: None), Held,
               lambda checks: None, lambda: None, clock=lambda: clock[0])
    w.load()
    w.options = Options(max_concurrent=args.running)
    for i in range(args.tasks):
        w.put(Task(id='t{:05d}'.format(i), source='a/img{}'.format(i),
                   destination='b/img{}'.format(i), created=NOW + i), wait=False)
    w.tick()                                     # the first pass starts the runners
    assert len(w.runners) == args.running, len(w.runners)
    took: List[float] = []
    for _ in range(args.passes):
        clock[0] += 0.05
        t0 = time.perf_counter()
        w.tick()
        took.append((time.perf_counter() - t0) * 1000.0)
    took.sort()
    res: Dict[str, Any] = {
        'command': 'python3 qa/bench/bench_scheduler_pass.py --tasks {} --running {} '
                   '--passes {}'.format(args.tasks, args.running, args.passes),
        'python': platform.python_version(),
        'median_ms': round(statistics.median(took), 3),
        'p95_ms': round(took[int(len(took) * 0.95) - 1], 3),
        'max_ms': round(took[-1], 3),
    }
    for k, v in res.items():
        print('{:10s} {}'.format(k, v))
    return 0


if __name__ == '__main__':
    sys.exit(main())
