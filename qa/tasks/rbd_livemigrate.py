"""
Live-migrate RBD images with the rbd_livemigrate mgr module while clients
write to the destinations.

The logic lives in plain functions that take a ``remote`` (anything with
teuthology's ``remote.run(args=[...], stdout=..., wait=..., check_status=...)``),
so it also runs without teuthology: see ``qa/tasks/rbd_livemigrate_local.py``.
"""
import contextlib
import io
import json
import logging
import shlex
import time

try:
    from teuthology import misc as teuthology
    from teuthology.exceptions import CommandFailedError
    from teuthology.orchestra.run import Raw
except ImportError:         # a local run (rbd_livemigrate_local.py): no teuthology
    teuthology = None

    class CommandFailedError(Exception):
        def __init__(self, command, exitstatus, node=None, label=None):
            super().__init__('Command failed on {} with status {}: {!r}'.format(
                node, exitstatus, command))
            self.command = command
            self.exitstatus = exitstatus
            self.node = node
            self.label = label

    class Raw(object):
        """An argument passed to the shell unquoted (teuthology.orchestra.run.Raw)."""

        def __init__(self, value):
            self.value = value

        def __repr__(self):
            return 'Raw({!r})'.format(self.value)

log = logging.getLogger(__name__)

MiB = 1 << 20
LIVE = ('queued', 'preparing', 'prepared', 'executing', 'executed', 'committing', 'aborting')
TERMINAL = ('committed', 'aborted', 'failed')
# from these states on, clients may use the destination (doc/mgr/rbd_livemigrate.rst)
DEST_USABLE = ('prepared', 'executing', 'executed', 'committing', 'committed')
LAYOUT_OPTIONS = ('object_size', 'stripe_unit', 'stripe_count', 'features', 'data_pool')

DEFAULTS = {
    'pool': 'rbd',
    'namespace': '',
    'dest_pool': 'rbd_livemigrate',
    'dest_namespace': '',
    'images': 3,
    'image_size': 64,           # MiB
    'snapshots': 1,
    'workload_images': 1,
    'workload_io_total': 16,    # MiB, written from offset 0 of the destination
    'workload_io_size': '64K',
    'layout': {},
    'bandwidth_limit': '16M',
    'image_prefix': 'lm',
    'timeout': 900,
    # fail if a workloaded copy ended before its first workload pass
    'require_overlap': True,
}


# ---- running commands ------------------------------------------------------------

class Shell(object):
    """Runs commands on one remote; ``prefix`` goes before every ceph/rbd command
    (teuthology: adjust-ulimits ceph-coverage ...)."""

    def __init__(self, remote, prefix=(), cluster='ceph'):
        self.remote = remote
        self.prefix = list(prefix)
        self.cluster_args = [] if cluster == 'ceph' else ['--cluster', cluster]

    def run(self, args, check=True, wait=True):
        out, err = io.StringIO(), io.StringIO()
        proc = self.remote.run(args=list(args), stdout=out, stderr=err, check_status=check,
                               wait=wait)
        return proc, out, err

    def out(self, args, check=True):
        """stdout of a command (raises CommandFailedError if check and it fails)."""
        proc, out, _ = self.run(args, check=check)
        return out.getvalue()

    def ok(self, args):
        """True if the command exits 0."""
        proc, _, _ = self.run(args, check=False)
        return proc.exitstatus == 0

    def ceph(self, *args, **kw):
        return self.out(self.prefix + ['ceph'] + self.cluster_args + list(args), **kw)

    def rbd(self, *args, **kw):
        return self.out(self.prefix + ['rbd'] + self.cluster_args + list(args), **kw)

    def rbd_ok(self, *args):
        return self.ok(self.prefix + ['rbd'] + self.cluster_args + list(args))

    def pipeline(self, *commands):
        """stdout of ``cmd1 | cmd2 | ...`` under bash -o pipefail."""
        text = ' | '.join(' '.join(shlex.quote(a) for a in c) for c in commands)
        return self.out(['bash', '-o', 'pipefail', '-c', text])

    def ceph_args(self, *args):
        return self.prefix + ['ceph'] + self.cluster_args + list(args)

    def rbd_args(self, *args):
        return self.prefix + ['rbd'] + self.cluster_args + list(args)


def spec(pool, namespace, image):
    return '/'.join(p for p in (pool, namespace, image) if p)


# ---- pools and images ------------------------------------------------------------

def ensure_pool(sh, pool, namespace):
    """Create (and rbd-init) ``pool`` and ``namespace`` if missing; what we created."""
    created = []
    if pool not in sh.ceph('osd', 'pool', 'ls').split():
        sh.ceph('osd', 'pool', 'create', pool, '8')
        sh.rbd('pool', 'init', pool)
        created.append(('pool', pool))
    if namespace and namespace not in [
            n['name'] for n in json.loads(sh.rbd('namespace', 'ls', pool, '--format', 'json')
                                          or '[]')]:
        sh.rbd('namespace', 'create', spec(pool, namespace, ''))
        created.append(('namespace', spec(pool, namespace, '')))
    return created


def drop_created(sh, created):
    for kind, name in reversed(created):
        try:
            if kind == 'namespace':
                sh.rbd('namespace', 'rm', name)
            else:
                sh.ceph('osd', 'pool', 'rm', name, name, '--yes-i-really-really-mean-it')
        except CommandFailedError as e:
            log.warning('could not remove %s %s: %s', kind, name, e)


def make_image(sh, image_spec, size_mb, snapshots):
    """An image of random data and ``snapshots`` snapshots, each followed by
    rbd bench writes so that the head and every snapshot differ.

    ``rbd bench`` alone writes one constant byte, so an object copied to the
    wrong offset would keep the checksum; random data from ``rbd import``
    does not.
    """
    sh.pipeline(['head', '-c', '{}M'.format(size_mb), '/dev/urandom'],
                sh.rbd_args('import', '--no-progress', '-', image_spec))
    for i in range(snapshots):
        sh.rbd('snap', 'create', '--no-progress', '{}@snap{}'.format(image_spec, i + 1))
        sh.rbd('bench', '--io-type', 'write', '--io-pattern', 'rand', '--io-size', '64K',
               '--io-total', '{}M'.format(max(1, size_mb // 8)), image_spec)


def snapshots_of(sh, image_spec):
    return [s['name'] for s in json.loads(
        sh.rbd('snap', 'ls', '--format', 'json', image_spec) or '[]')]


def md5(sh, image_spec, snap=None, skip=0):
    """md5 of the image (or a snapshot), from byte ``skip`` to the end."""
    export = sh.rbd_args('export', '--no-progress', image_spec, '-')
    if snap:
        export[-2:-2] = ['--snap', snap]
    cmds = [export]
    if skip:
        cmds.append(['tail', '-c', '+{}'.format(skip + 1)])
    cmds.append(['md5sum'])
    return sh.pipeline(*cmds).split()[0]


def checksums(sh, image_spec, skip=0):
    """{'HEAD': md5, '<snap>': md5, ...}; HEAD from byte ``skip`` on."""
    sums = {'HEAD': md5(sh, image_spec, skip=skip)}
    for snap in snapshots_of(sh, image_spec):
        sums[snap] = md5(sh, image_spec, snap=snap)
    return sums


def image_info(sh, image_spec):
    return json.loads(sh.rbd('info', '--format', 'json', image_spec))


def remove_image(sh, image_spec):
    if not sh.rbd_ok('info', image_spec):
        return
    sh.rbd('snap', 'purge', '--no-progress', image_spec, check=False)
    sh.rbd('rm', '--no-progress', image_spec, check=False)


# ---- the module --------------------------------------------------------------------

def lm(sh, *args, **kw):
    return sh.ceph('rbd', 'livemigrate', *args, **kw)


def add_migration(sh, source, dest, layout, bandwidth_limit):
    args = ['add', source]
    if dest != source:
        args.append(dest)
    for key in LAYOUT_OPTIONS:
        if layout.get(key) is not None:
            args += ['--' + key.replace('_', '-'), str(layout[key])]
    if bandwidth_limit:
        args += ['--bandwidth-limit', str(bandwidth_limit)]
    task = json.loads(lm(sh, *args, '--format', 'json'))
    log.info('added %s: %s -> %s', task['id'], source, dest)
    return task['id']


def status(sh, task_id):
    return json.loads(lm(sh, 'status', task_id, '--format', 'json'))


def wait_for_state(sh, task_id, states, timeout, interval=0.5):
    """Poll until the task is in one of ``states``; fail at once if it ends elsewhere."""
    deadline = time.time() + timeout
    while True:
        t = status(sh, task_id)
        if t['state'] in states:
            return t
        if t['state'] in TERMINAL:
            raise RuntimeError('task {} ({} -> {}) ended {}: {}'.format(
                task_id, t['source'], t['destination'], t['state'], t.get('error')))
        if time.time() > deadline:
            raise RuntimeError('task {} still {} after {}s (wanted {})'.format(
                task_id, t['state'], timeout, '/'.join(states)))
        time.sleep(interval)


def cancel_live(sh, task_ids):
    try:
        tasks = json.loads(lm(sh, 'ls', '--format', 'json'))
    except (CommandFailedError, ValueError) as e:
        log.warning('cannot list tasks for cleanup: %s', e)
        return
    cancelled = []
    for t in tasks:
        if t.get('id') in task_ids and t['state'] in LIVE:
            log.info('cancelling %s (%s)', t['id'], t['state'])
            lm(sh, 'cancel', t['id'], check=False)
            cancelled.append(t['id'])
    # cancel returns at once: let the aborts end before the images go
    for task_id in cancelled:
        try:
            wait_for_state(sh, task_id, TERMINAL, timeout=120)
        except (RuntimeError, CommandFailedError, ValueError) as e:
            log.warning('task %s: %s', task_id, e)


# ---- one client ----------------------------------------------------------------

def check_layout(info, layout):
    """Compare ``rbd info --format json`` with the requested layout."""
    problems = []
    if layout.get('object_size'):
        want = _bytes(layout['object_size'])
        if 1 << info['order'] != want:
            problems.append('object size {} != {}'.format(1 << info['order'], want))
    if layout.get('stripe_unit') and info.get('stripe_unit') != _bytes(layout['stripe_unit']):
        problems.append('stripe unit {} != {}'.format(info.get('stripe_unit'),
                                                      layout['stripe_unit']))
    if layout.get('stripe_count') and info.get('stripe_count') != int(layout['stripe_count']):
        problems.append('stripe count {} != {}'.format(info.get('stripe_count'),
                                                       layout['stripe_count']))
    if layout.get('data_pool') and info.get('data_pool') != layout['data_pool']:
        problems.append('data pool {} != {}'.format(info.get('data_pool'), layout['data_pool']))
    if layout.get('features'):
        want = set(str(layout['features']).split(','))
        have = set(info['features']) - {'migrating'}
        if int(layout.get('stripe_count') or 1) > 1:
            have.discard('striping')        # librbd adds it for fancy striping
        if want != have:
            problems.append('features {} != {}'.format(sorted(have), sorted(want)))
    return problems


def _bytes(text):
    """'64K' -> 65536 (K/M/G, optionally followed by 'iB' or 'B')."""
    t = str(text).strip().upper()
    for suffix in ('IB', 'B'):
        if t.endswith(suffix) and len(t) > len(suffix) and not t[:-len(suffix)].isdigit():
            t = t[:-len(suffix)]
            break
    shift = {'K': 10, 'M': 20, 'G': 30}.get(t[-1:], 0)
    try:
        return int(t[:-1] if shift else t) << shift
    except ValueError:
        raise ValueError('rbd_livemigrate: not a size: {!r}'.format(text))


def validate_config(config):
    """The task's config merged over DEFAULTS; ValueError for what cannot work.

    Needs no cluster (the suite test calls it on every composed job)."""
    cfg = dict(DEFAULTS)
    cfg.update(config or {})
    unknown = set(cfg) - set(DEFAULTS) - {'cluster', 'clients'}
    if unknown:
        raise ValueError('rbd_livemigrate: unknown option(s) {}'.format(sorted(unknown)))
    layout = cfg['layout'] or {}
    if not isinstance(layout, dict) or set(layout) - set(LAYOUT_OPTIONS):
        raise ValueError('rbd_livemigrate: layout takes {}, got {}'.format(
            ', '.join(LAYOUT_OPTIONS), layout))
    for key in ('object_size', 'stripe_unit'):
        if layout.get(key) is not None:
            _bytes(layout[key])
    in_place = (cfg['dest_pool'], cfg['dest_namespace']) == (cfg['pool'], cfg['namespace'])
    if in_place and not layout:
        raise ValueError('rbd_livemigrate: the destination is the source; give a layout')
    for key in ('images', 'image_size', 'snapshots', 'workload_images', 'workload_io_total',
                'timeout'):
        if int(cfg[key]) < 0:
            raise ValueError('rbd_livemigrate: {} must not be negative'.format(key))
    if int(cfg['workload_images']) > int(cfg['images']):
        raise ValueError('rbd_livemigrate: workload_images > images')
    if int(cfg['workload_images']) and not 0 < int(cfg['workload_io_total']) < int(
            cfg['image_size']):
        raise ValueError('rbd_livemigrate: workload_io_total must be between 0 and '
                         'image_size (MiB)')
    cfg['layout'] = dict(layout)
    return cfg


class ClientRun(object):
    """What the task does for one client role: :meth:`run` migrates and verifies,
    :meth:`cleanup` removes what run made (safe after a failure at any point)."""

    def __init__(self, remote, role, config, prefix=()):
        self.cfg = cfg = validate_config(config)
        self.role = role
        self.sh = Shell(remote, prefix, cfg.get('cluster', 'ceph'))
        self.layout = cfg['layout']
        self.in_place = (cfg['dest_pool'], cfg['dest_namespace']) == (cfg['pool'],
                                                                      cfg['namespace'])
        self.size_mb = int(cfg['image_size'])
        self.workload_mb = int(cfg['workload_io_total'])
        tag = '{}-{}'.format(cfg['image_prefix'], role.replace('.', '-'))
        self.images = []
        for i in range(int(cfg['images'])):
            name = '{}-{}'.format(tag, i)
            self.images.append({
                'name': name, 'workload': i < int(cfg['workload_images']),
                'size': self.size_mb * MiB,
                'source': spec(cfg['pool'], cfg['namespace'], name),
                'dest': spec(cfg['dest_pool'], cfg['dest_namespace'], name)})
        self.created = []
        self.task_ids = []
        self.workloads = []

    def run(self):
        sh, cfg, images = self.sh, self.cfg, self.images
        lm(sh, 'ls')        # the module answers (fails clearly if it is not enabled)
        self.created += ensure_pool(sh, cfg['pool'], cfg['namespace'])
        self.created += ensure_pool(sh, cfg['dest_pool'], cfg['dest_namespace'])

        log.info('%s: writing %d image(s) of %d MiB', self.role, len(images), self.size_mb)
        for img in images:
            if sh.rbd_ok('info', img['source']) or sh.rbd_ok('info', img['dest']):
                raise RuntimeError('{} or {} exists already: remove it or set '
                                   'image_prefix'.format(img['source'], img['dest']))
            img['created'] = True
            make_image(sh, img['source'], self.size_mb, int(cfg['snapshots']))
            img['before'] = checksums(sh, img['source'])
            img['before_tail'] = md5(sh, img['source'], skip=self.workload_mb * MiB)

        for img in images:
            img['task'] = add_migration(sh, img['source'], img['dest'], self.layout,
                                        cfg['bandwidth_limit'])
            self.task_ids.append(img['task'])

        # I/O on the destination once clients may use it (after prepare), in passes
        # over the same region until every workloaded copy is done
        loaded = [img for img in images if img['workload']]
        run_workload(sh, self.role, loaded, cfg, self.workloads)
        for img in loaded:
            if cfg['require_overlap'] and img['passes_during_copy'] == 0:
                raise AssertionError(
                    '{}: the copy ended before the workload started; lower '
                    'bandwidth_limit or raise image_size'.format(img['dest']))

        for img in images:
            img['final'] = wait_for_state(sh, img['task'], ('committed',), cfg['timeout'])
        verify(sh, images, self.layout, self.in_place, self.workload_mb)
        return images

    def cleanup(self):
        sh = self.sh
        for img, proc, err in self.workloads:
            try:
                proc.wait()
            except Exception as e:
                log.warning('workload on %s: %s', img['dest'], e)
        self.workloads = []
        cancel_live(sh, self.task_ids)
        for img in self.images:
            if not img.get('created'):
                continue            # never touch images this task did not make
            remove_image(sh, img['dest'])
            if not self.in_place:
                remove_image(sh, img['source'])
        drop_created(sh, self.created)
        self.created = []


def run_client(remote, role, config, prefix=()):
    """Run and clean up for one client role (the local runner's entry point)."""
    client = ClientRun(remote, role, config, prefix)
    try:
        return client.run()
    finally:
        client.cleanup()


def run_workload(sh, role, loaded, cfg, workloads):
    """Passes of rbd bench over [0, workload_io_total) of each destination that
    clients may use (prepared onwards), all such images at once, until every
    copy is past executing and each destination had at least one pass."""
    deadline = time.time() + cfg['timeout']
    for img in loaded:
        img['passes_during_copy'] = img['workload_passes'] = 0
    while True:
        states = {}
        for img in loaded:
            t = status(sh, img['task'])
            if t['state'] in ('aborted', 'failed'):
                raise RuntimeError('task {} ({} -> {}) ended {}: {}'.format(
                    img['task'], t['source'], t['destination'], t['state'], t.get('error')))
            states[img['dest']] = t['state']
        usable = [img for img in loaded if states[img['dest']] in DEST_USABLE]
        if len(usable) == len(loaded) and all(
                img['workload_passes'] and states[img['dest']] not in ('prepared', 'executing')
                for img in loaded):
            return
        if time.time() > deadline:
            raise RuntimeError('workload: copies not done after {}s: {}'.format(
                cfg['timeout'], states))
        for img in usable:
            if states[img['dest']] in ('prepared', 'executing'):
                img['passes_during_copy'] += 1
            proc, _, err = sh.run(sh.rbd_args(
                'bench', '--io-type', 'write', '--io-size', str(cfg['workload_io_size']),
                '--io-threads', '1', '--io-total', '{}M'.format(cfg['workload_io_total']),
                img['dest']), wait=False)
            workloads.append((img, proc, err))
        while workloads:
            img, proc, err = workloads.pop()
            proc.wait()
            img['workload_passes'] += 1
        if usable:
            log.info('%s: workload pass on %s', role, ', '.join(
                '{} ({})'.format(img['dest'], states[img['dest']]) for img in usable))
        else:
            time.sleep(0.5)


def verify(sh, images, layout, in_place, workload_mb):
    problems = []
    for img in images:
        src, dst = img['source'], img['dest']
        if not in_place and sh.rbd_ok('info', src):
            problems.append('{}: the source still exists'.format(src))
        status_out = json.loads(sh.rbd('status', '--format', 'json', dst))
        if 'migration' in status_out:
            problems.append('{}: still migrating: {}'.format(dst, status_out['migration']))
        info = image_info(sh, dst)
        problems += ['{}: {}'.format(dst, p) for p in check_layout(info, layout)]
        if info['size'] != img['size']:
            problems.append('{}: size {} != {}'.format(dst, info['size'], img['size']))
        after = checksums(sh, dst)
        if img['workload']:
            # the workload rewrote [0, workload_io_total) of the head: the rest and
            # every snapshot must be the source's
            snaps_before = {k: v for k, v in img['before'].items() if k != 'HEAD'}
            snaps_after = {k: v for k, v in after.items() if k != 'HEAD'}
            if snaps_after != snaps_before:
                problems.append('{}: snapshots differ: {} != {}'.format(
                    dst, snaps_after, snaps_before))
            tail = md5(sh, dst, skip=workload_mb * MiB)
            if tail != img['before_tail']:
                problems.append('{}: bytes past the workload differ'.format(dst))
            if after['HEAD'] == img['before']['HEAD']:
                problems.append('{}: the workload changed nothing'.format(dst))
        elif after != img['before']:
            problems.append('{}: checksums {} != source {}'.format(dst, after, img['before']))
        log.info('%s: verified (task %s, %s)', dst, img['task'],
                 'workload' if img['workload'] else 'identical')
    if problems:
        raise AssertionError('rbd_livemigrate: ' + '; '.join(problems))


# ---- teuthology entry point ------------------------------------------------------

@contextlib.contextmanager
def task(ctx, config):
    """
    Live-migrate RBD images with ``ceph rbd livemigrate`` while a workload
    writes to some of the destinations.

    For each client: write ``images`` images of random data with
    ``snapshots`` snapshots, record their checksums, add one migration per
    image, start ``rbd bench`` on the destination of the first
    ``workload_images`` images as soon as the task is prepared (clients may use
    the destination from then on), wait for every task to be committed and
    verify: images without a workload are identical (head and snapshots),
    images with one keep their snapshots and every byte past the workload.
    The images stay until the task's context exits (after the tasks that
    follow it); then live tasks are cancelled and the images, pools and
    namespaces the task created are removed, also after a failure.

    For example::

        tasks:
        - install:
        - ceph:
        - exec:
            mon.a:
              - ceph mgr module enable rbd_livemigrate
        - rbd_livemigrate:
            clients: [client.0]
            pool: rbd
            dest_pool: rbd_livemigrate    # created if missing
            dest_namespace: ns1           # created if missing
            images: 3
            image_size: 64                # MiB
            snapshots: 1
            workload_images: 1
            workload_io_total: 16         # MiB, from offset 0
            bandwidth_limit: 16M          # keeps each copy long enough to overlap I/O
            layout:                       # options of ceph rbd livemigrate add
              object_size: 1M
              stripe_unit: 64K
              stripe_count: 4
              features: layering,exclusive-lock,object-map,fast-diff
              data_pool: datapool
            timeout: 900

    With ``dest_pool``/``dest_namespace`` equal to ``pool``/``namespace`` the
    images are migrated in place to the new ``layout``.
    """
    if config is None:
        config = {}
    assert isinstance(config, dict), 'rbd_livemigrate: config must be a dict'
    overrides = ctx.config.get('overrides', {}).get('rbd_livemigrate', {})
    teuthology.deep_merge(config, overrides)
    clients = config.get('clients') or [
        'client.{}'.format(i) for i in teuthology.all_roles_of_type(ctx.cluster, 'client')]
    testdir = teuthology.get_testdir(ctx)
    prefix = ['adjust-ulimits', 'ceph-coverage', '{}/archive/coverage'.format(testdir)]
    per_client = {k: v for k, v in config.items() if k != 'clients'}

    from teuthology.parallel import parallel
    runs = [ClientRun(next(iter(ctx.cluster.only(role).remotes.keys())), role, per_client,
                      prefix) for role in clients]
    try:
        with parallel() as p:
            for r in runs:
                p.spawn(r.run)
        yield
    finally:
        log.info('rbd_livemigrate: cleaning up')
        for r in runs:
            r.cleanup()
