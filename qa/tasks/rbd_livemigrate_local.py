#!/usr/bin/python3
"""
Run the rbd_livemigrate teuthology task's logic on this host, without
teuthology: ``LocalRemote`` stands in for a teuthology remote and runs each
command with bash, against the cluster ``CEPH_CONF`` (or ``--conf``) names.

    python3 qa/tasks/rbd_livemigrate_local.py --conf /tmp/c1/ceph.conf \\
        [--config '{"pool": "a", "dest_pool": "b", "images": 2}'] [--role client.0]

``--config`` takes the task's YAML/JSON config (a string or @file).  Exit 0
when every migration committed and verified.
"""
import argparse
import importlib.util
import io
import json
import logging
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load_task_module():
    """qa/tasks/rbd_livemigrate.py, imported under a name that cannot collide with
    the mgr module package (also called rbd_livemigrate)."""
    name = 'qa_tasks_rbd_livemigrate'
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name,
                                                  os.path.join(HERE, 'rbd_livemigrate.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


lmtask = load_task_module()
log = logging.getLogger('rbd_livemigrate_local')


def quote(args):
    """teuthology.orchestra.run.quote: Raw arguments verbatim, the rest shell-quoted."""
    if isinstance(args, str):
        return args
    return ' '.join(a.value if isinstance(a, lmtask.Raw) else shlex.quote(str(a))
                    for a in args)


class LocalProcess(object):
    """The parts of teuthology's RemoteProcess the task uses."""

    def __init__(self, popen, command, stdout, stderr, check_status, node):
        self.popen = popen
        self.command = command
        self.stdout = stdout
        self.stderr = stderr
        self.check_status = check_status
        self.node = node
        self.exitstatus = self.returncode = None

    @property
    def finished(self):
        return self.popen.poll() is not None

    def poll(self):
        return self.returncode if self.finished else None

    def wait(self):
        out, err = self.popen.communicate()
        for text, stream, name in ((out, self.stdout, 'out'), (err, self.stderr, 'err')):
            if stream is not None and hasattr(stream, 'write'):
                stream.write(text)
                if hasattr(stream, 'seek'):
                    stream.seek(0)
            elif text.strip():
                log.debug('%s: %s', name, text.rstrip())
        self.exitstatus = self.returncode = self.popen.returncode
        if self.check_status and self.exitstatus != 0:
            raise lmtask.CommandFailedError(
                command='{} (stderr: {})'.format(self.command, err.strip()[-500:]),
                exitstatus=self.exitstatus, node=self.node)
        return self.exitstatus


class LocalRemote(object):
    """A teuthology remote that is this host: ``run(args=[...])`` runs bash -c."""

    def __init__(self, env=None, name='localhost'):
        self.env = dict(os.environ if env is None else env)
        self.name = self.shortname = self.hostname = name

    def run(self, args, stdin=None, stdout=None, stderr=None, check_status=True, wait=True,
            label=None, timeout=None, logger=None, **_):
        command = quote(args)
        log.info('Running: %s', command)
        popen = subprocess.Popen(['bash', '-c', command], env=self.env, text=True,
                                 stdin=subprocess.PIPE if stdin is not None
                                 else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if stdin is not None:
            data = stdin if isinstance(stdin, str) else stdin.read()
            popen.stdin.write(data)
            popen.stdin.close()
            popen.stdin = None
        proc = LocalProcess(popen, command, stdout, stderr, check_status, self.name)
        if wait:
            proc.wait()
        return proc

    def sh(self, script, **kwargs):
        out = io.StringIO()
        self.run(args=script, stdout=out, **kwargs)
        return out.getvalue()


def run_local(conf, config, role='client.0'):
    """Run the task logic for one client against the cluster of ``conf``.

    Returns the images it migrated (dicts with source, dest, task, final
    status).  Raises on any failure, after cleaning up.
    """
    env = dict(os.environ, CEPH_CONF=conf)
    t0 = time.monotonic()
    images = lmtask.run_client(LocalRemote(env), role, config)
    log.info('rbd_livemigrate task logic passed in %.1fs', time.monotonic() - t0)
    return images


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--conf', default=os.environ.get('CEPH_CONF'),
                        help='ceph.conf of the cluster (default: $CEPH_CONF)')
    parser.add_argument('--config', default='{}',
                        help='task config as YAML/JSON, or @FILE')
    parser.add_argument('--role', default='client.0')
    parser.add_argument('-v', '--verbose', action='store_true')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(name)s %(message)s')
    if not args.conf:
        parser.error('give --conf or set CEPH_CONF')
    text = args.config
    if text.startswith('@'):
        with open(text[1:]) as f:
            text = f.read()
    try:
        import yaml
        config = yaml.safe_load(text) or {}
    except ImportError:
        config = json.loads(text)
    images = run_local(os.path.abspath(args.conf), config, args.role)
    for img in images:
        print('{source} -> {dest}: {state} (task {task}{w})'.format(
            state=img['final']['state'], w=', with workload' if img['workload'] else '',
            **img))
    return 0


if __name__ == '__main__':
    sys.exit(main())
