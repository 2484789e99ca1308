#!/usr/bin/python3
"""Which Ceph release a test cluster runs, and where its binaries come from.

The host's own Debian packages give one release (Debian 12 bookworm: Pacific 16.2,
Debian 13 trixie: Reef 18.2; forky, Debian testing, carries Tentacle 20.2).  Any other
release runs from a Debian root of its suite built with ``mmdebstrap`` from the mirror apt
already uses (forky with ``Acquire::Check-Valid-Until "false"``: the mirror's Release file
has been seen past its Valid-Until date), cached under ``LM_ROOT_CACHE``
(default ``/var/cache/rbd_livemigrate/roots``) as ``<cache>/<suite>``, built once, atomically
(into a temporary directory that is renamed when complete) and reused.

Commands run in such a root through :meth:`Runtime.wrap`: ``unshare --mount`` gives the
command a private mount namespace in which /proc, /sys, /dev, /tmp, the project tree and any
further directories are bind-mounted at the same paths inside the root, then the command
is chroot'ed there (in the caller's working directory when the root can see it).  The bind
mounts live and die with the processes that use them: nothing is mounted in the host's
namespace, so there is nothing to unmount when a cluster stops, and two clusters (or a build)
never fight over shared mounts.  A chroot'ed daemon is a normal host process: its pid,
``/proc/<pid>/cmdline`` and signals work from the host as for a host daemon.

Debian 13's (and forky's) ceph-mgr loads no Python module: ``mgr_util`` imports ``bcrypt``,
and their python3-bcrypt is built with PyO3, which refuses sub-interpreters.  Wherever the
mgr's bcrypt is such a build (detected by looking at the extension, not by version), a
cffi-based ``bcrypt==3.2.2`` wheel (abi3, for the root's own Python version) is unpacked next
to the release's files and linked as ``bcrypt`` into the mgr's module path (which comes first
on the mgr's ``sys.path``).  That is a workaround for the test harness only; it never ships
in the module.

CLI (root needed to build)::

    python3 qa/standalone/release_root.py [--release pacific|reef|tentacle]  # build, show
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Dict, Iterator, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# release -> the Debian suite whose own packages carry it
RELEASE_SUITES: Dict[str, str] = {'pacific': 'bookworm', 'reef': 'trixie',
                                  'tentacle': 'forky'}
RELEASES = tuple(RELEASE_SUITES)
HOST = 'host'
# /etc/debian_version major (or the codename of a testing system) -> its release
DEBIAN_RELEASES: Dict[str, str] = {'12': 'pacific', 'bookworm': 'pacific',
                                   '13': 'reef', 'trixie': 'reef',
                                   '14': 'tentacle', 'forky': 'tentacle'}
# apt options a suite's root needs.  forky is Debian testing: the mirror's Release file
# has been seen past its Valid-Until date (December 2026), which apt refuses by default.
# mmdebstrap writes these into the root's apt.conf.d, so later apt runs in it get them too.
SUITE_APT_OPTIONS: Dict[str, List[str]] = {'forky': ['Acquire::Check-Valid-Until "false"']}
# what a root holds (the dashboard is always there: roots are built once)
ROOT_PACKAGES = ['ceph-mon', 'ceph-mgr', 'ceph-osd', 'ceph-common', 'python3-rados',
                 'python3-rbd', 'ceph-mgr-dashboard']
CACHE_ENV = 'LM_ROOT_CACHE'
MIRROR_ENV = 'LM_DEBIAN_MIRROR'
DEFAULT_CACHE = '/var/cache/rbd_livemigrate/roots'
FALLBACK_MIRROR = 'http://deb.debian.org/debian'
# Written last into a finished root; a root without it (or with another format) is rebuilt.
STAMP = '.rbd_livemigrate-root.json'
ROOT_FORMAT = 1
MGR_DIR = '/usr/share/ceph/mgr'
# bcrypt workaround (see the module docstring)
BCRYPT_REQUIREMENT = 'bcrypt==3.2.2'
BCRYPT_DIR_IN_ROOT = '/opt/rbd_livemigrate/mgr-python'
# Always visible inside a root, at the same paths.  /tmp holds clusters and temp files.
SYSTEM_BINDS = ('/proc', '/sys', '/dev')
DEFAULT_BINDS = ('/tmp', REPO)

# The wrapper that runs one command in a root: $1 root, $2 number of bind dirs, the bind dirs,
# then the command.  The root is first bound onto itself so that / is a mount point inside
# (tools such as `unshare --propagation` need that, e.g. the harness itself run in a root).
# `unshare --root --wd` chroots *and* keeps the working directory.
_WRAP_SCRIPT = r'''set -e
r=$1; n=$2; shift 2
mount --bind "$r" "$r"
while [ "$n" -gt 0 ]; do
    if [ -d "$1" ]; then mkdir -p "$r$1"; mount --rbind "$1" "$r$1"; fi
    n=$((n - 1)); shift
done
w=$(pwd -P)
[ -d "$r$w" ] || w=/
exec unshare --root="$r" --wd="$w" -- "$@"
'''


class ReleaseError(Exception):
    """A release cannot be provided here (unknown release, build failed, no privileges)."""


# --------------------------------------------------------------------------------------------
# which release

def host_release() -> Optional[str]:
    """The release the host's own Debian packages give (from /etc/debian_version), or None."""
    try:
        with open('/etc/debian_version') as f:
            text = f.read().strip()
    except OSError:
        return None
    key = text.split('.')[0].split('/')[0]    # '12.11' -> '12', 'trixie/sid' -> 'trixie'
    return DEBIAN_RELEASES.get(key)


def check_release(release: str) -> str:
    if release not in RELEASE_SUITES:
        raise ReleaseError(f"unknown release {release!r} (known: {', '.join(RELEASES)})")
    return release


# --------------------------------------------------------------------------------------------
# small helpers

def cache_dir() -> str:
    """Where roots are kept: $LM_ROOT_CACHE, else /var/cache/... (or ~/.cache/... if that
    is not writable for us)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return os.path.abspath(env)
    if os.geteuid() == 0 or os.access(os.path.dirname(os.path.dirname(DEFAULT_CACHE)),
                                      os.W_OK):
        return DEFAULT_CACHE
    return os.path.join(os.path.expanduser('~'), '.cache', 'rbd_livemigrate', 'roots')


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip('/') + '/')


def normalise_binds(paths: Sequence[str]) -> List[str]:
    """Absolute real paths, without duplicates and without paths inside another one."""
    out: List[str] = []
    for p in sorted({os.path.realpath(p) for p in paths if p}, key=len):
        if p == '/':
            raise ReleaseError('refusing to bind-mount / into a root')
        if not any(_under(p, q) for q in out):
            out.append(p)
    return out


def mounts_below(path: str) -> List[str]:
    """Mount points at or below ``path`` in our mount namespace (deepest first)."""
    path = os.path.realpath(path)
    found = []
    try:
        with open('/proc/self/mountinfo') as f:
            for line in f:
                point = line.split()[4].encode().decode('unicode_escape')
                if _under(point, path):
                    found.append(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


def unmount_below(path: str) -> None:
    """Lazily unmount whatever is mounted at or below ``path`` (leftovers of a killed build or
    of a manual ``mount --rbind``); raise if something stays mounted."""
    for point in mounts_below(path):
        subprocess.run(['umount', '--recursive', '--lazy', point], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
    left = mounts_below(path)
    if left:
        raise ReleaseError(f"still mounted below {path}: {', '.join(left)}")


def safe_rmtree(path: str) -> None:
    """rmtree that never descends into a mount (a bound /tmp or /dev would be wiped)."""
    if not os.path.lexists(path):
        return
    unmount_below(path)
    shutil.rmtree(path)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(path, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sudo() -> List[str]:
    return [] if os.geteuid() == 0 else ['sudo']


def apt_install(packages: Sequence[str], quiet: bool) -> None:
    """apt-get update + install on the host (as the harness installs Ceph)."""
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    out = subprocess.DEVNULL if quiet else None
    if not quiet:
        print(f"installing {' '.join(packages)} on the host", flush=True)
    subprocess.run(_sudo() + ['apt-get', 'update'], check=True, env=env, stdout=out)
    subprocess.run(_sudo() + ['apt-get', 'install', '-y', *packages], check=True, env=env,
                   stdout=out)


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the mirror apt already uses

def _host_codename() -> str:
    try:
        with open('/etc/os-release') as f:
            for line in f:
                if line.startswith('VERSION_CODENAME='):
                    return line.split('=', 1)[1].strip().strip('"')
    except OSError:
        pass
    return ''


def _apt_entries() -> List[Dict[str, List[str]]]:
    """Every enabled apt source as {'types': [...], 'uris': [...], 'suites': [...]}, in the
    order apt reads them (sources.list, then sources.list.d/*.list and *.sources)."""
    entries: List[Dict[str, List[str]]] = []
    one_line = ['/etc/apt/sources.list'] + sorted(glob.glob('/etc/apt/sources.list.d/*.list'))
    for path in one_line:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r'\[[^\]]*\]', ' ', line.split('#', 1)[0]).split()    # no [opts]
            if len(words) >= 3:
                entries.append({'types': [words[0]], 'uris': [words[1]], 'suites': [words[2]]})
    for path in sorted(glob.glob('/etc/apt/sources.list.d/*.sources')):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for para in re.split(r'\n\s*\n', text):
            fields: Dict[str, str] = {}
            key = ''
            for line in para.splitlines():
                if line.startswith('#') or not line.strip():
                    continue
                if line[0] in ' \t' and key:
                    fields[key] += ' ' + line.strip()
                elif ':' in line:
                    key, value = line.split(':', 1)
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if fields.get('enabled', 'yes').lower() == 'no':
                continue
            entries.append({k: fields.get(k, '').split() for k in ('types', 'uris', 'suites')})
    return entries


def debian_mirror() -> str:
    """The Debian mirror apt already uses: the first 'deb' source serving the host's own
    suite (so not -security, not third-party); $LM_DEBIAN_MIRROR overrides."""
    env = os.environ.get(MIRROR_ENV)
    if env:
        return env
    codename = _host_codename()
    for e in _apt_entries():
        if 'deb' in e['types'] and codename and codename in e['suites'] and e['uris']:
            return e['uris'][0]
    return FALLBACK_MIRROR


# --------------------------------------------------------------------------------------------
# the bcrypt workaround

def bcrypt_needs_shim(sysroot: str) -> bool:
    """True if the Debian python3-bcrypt in ``sysroot`` is a PyO3 build (which refuses the
    mgr's sub-interpreters).  PyO3 embeds its name in every extension it builds."""
    for so in glob.glob(os.path.join(sysroot, 'usr/lib/python3/dist-packages/bcrypt/*.so')):
        with open(so, 'rb') as f:
            if b'PyO3' in f.read():
                return True
    return False


def _python_version(sysroot: str) -> str:
    """'3.13' for the /usr/bin/python3 of ``sysroot`` (from its symlink, nothing is run)."""
    target = os.readlink(os.path.join(sysroot, 'usr/bin/python3'))
    m = re.fullmatch(r'(?:.*/)?python(\d+\.\d+)', target)
    if not m:
        raise ReleaseError(f'cannot tell the python version of {sysroot}/usr/bin/python3 '
                           f'(-> {target})')
    return m.group(1)


def _pip() -> List[str]:
    for argv in (['/usr/bin/python3', '-m', 'pip'], [sys.executable, '-m', 'pip']):
        if subprocess.run(argv + ['--version'], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0:
            return argv
    apt_install(['python3-pip'], quiet=True)
    return ['/usr/bin/python3', '-m', 'pip']


def fetch_bcrypt(dest: str, python_version: str) -> None:
    """Unpack the cffi-based bcrypt wheel into ``dest`` (which then holds ``bcrypt/``).

    Only bcrypt itself: its dependency cffi comes from Debian (python3-cffi-backend)."""
    machine = platform.machine()
    with tempfile.TemporaryDirectory(prefix='lm-bcrypt-') as tmp:
        argv = _pip() + ['download', '--quiet', '--no-deps', '--only-binary', ':all:',
                         '--platform', f'manylinux2014_{machine}',
                         '--python-version', python_version, '--dest', tmp,
                         BCRYPT_REQUIREMENT]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wheels = glob.glob(os.path.join(tmp, 'bcrypt-*.whl'))
        if p.returncode != 0 or len(wheels) != 1:
            raise ReleaseError(f"{' '.join(argv)} failed: {p.stdout.strip()}")
        os.makedirs(dest, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as z:
            z.extractall(dest)


# --------------------------------------------------------------------------------------------
# where a release runs

class Runtime:
    """Where a release's binaries run: the host (``root`` None) or a chroot'ed Debian root.

    ``mgr_dir`` and ``bcrypt_dir`` are paths as the release's processes see them;
    :meth:`host_path` turns them into paths the host can read.
    """

    def __init__(self, release: str, root: Optional[str]) -> None:
        # 'host': the host's own packages on a host that is neither Debian 12 nor 13
        self.release = release if release == HOST and root is None else check_release(release)
        self.suite = RELEASE_SUITES.get(release) or _host_codename() or 'unknown'
        self.root = root
        self.mgr_dir = MGR_DIR
        self.bcrypt_dir: Optional[str] = None

    @property
    def chrooted(self) -> bool:
        return self.root is not None

    def host_path(self, path: str) -> str:
        """A path as the release's processes see it -> the same file seen from the host."""
        return path if self.root is None else self.root + path

    def wrap(self, argv: Sequence[str], binds: Sequence[str] = ()) -> List[str]:
        """``argv`` as a command line that runs it under this release.

        On the host: unchanged.  In a root: a private mount namespace with /proc, /sys, /dev,
        /tmp, the project tree and ``binds`` bind-mounted at their own paths, then chroot.
        The resulting process (same pid) is the command itself: signals reach it directly.
        """
        if self.root is None:
            return list(argv)
        dirs = list(SYSTEM_BINDS) + normalise_binds(list(DEFAULT_BINDS) + list(binds))
        return (['unshare', '--mount', '--propagation', 'private', '--', '/bin/sh', '-c',
                 _WRAP_SCRIPT, 'lm-chroot', self.root, str(len(dirs))] + dirs + list(argv))

    def which(self, binary: str) -> str:
        """Absolute path (as the release sees it) of ``binary``, or the bare name."""
        if self.root is None:
            return shutil.which(binary) or binary
        for d in ('/usr/bin', '/usr/sbin', '/bin', '/sbin'):
            if os.path.isfile(self.root + os.path.join(d, binary)):
                return os.path.join(d, binary)
        return binary

    def ensure(self, quiet: bool = False) -> 'Runtime':
        """Make the release runnable: build the root if needed, find the bcrypt workaround.

        The host's own packages are installed by the caller (cluster.install)."""
        if self.root is not None:
            build_root(self.suite, self.root, quiet)
            stamp = read_stamp(self.root) or {}
            shim = stamp.get('bcrypt_dir')
            self.bcrypt_dir = shim if isinstance(shim, str) else None
        else:
            self.bcrypt_dir = host_bcrypt_shim(quiet)
        return self

    def describe(self) -> str:
        where = 'host packages' if self.root is None else f'root {self.root}'
        shim = f', bcrypt from {self.bcrypt_dir}' if self.bcrypt_dir else ''
        return f'{self.release} ({self.suite}) from {where}{shim}'


def runtime(release: Optional[str] = None, root: Optional[str] = None) -> Runtime:
    """The Runtime for ``release`` (None: the host's), not yet built (see Runtime.ensure).

    ``root``: use that root directory for a release the host does not carry (e.g. the one
    a running cluster recorded) instead of the cache's.  On a host that is neither Debian
    12 nor 13 the default is the host's own packages, whatever they are, as release 'host'.
    """
    host = host_release()
    if release is None or release == HOST:
        return Runtime(host or HOST, None)
    check_release(release)
    if release == host:
        return Runtime(release, None)
    return Runtime(release, root or os.path.join(cache_dir(), RELEASE_SUITES[release]))


# --------------------------------------------------------------------------------------------
# building a root

def read_stamp(root: str) -> Optional[Dict[str, object]]:
    try:
        with open(os.path.join(root, STAMP)) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get('format') != ROOT_FORMAT:
        return None
    if sorted(stamp.get('packages', [])) != sorted(ROOT_PACKAGES):
        return None
    return stamp


def build_root(suite: str, root: str, quiet: bool = False) -> None:
    """Build ``root`` (a Debian ``suite`` with the Ceph packages) unless a complete one is
    there.  Concurrent callers wait for one build (a lock file beside the root)."""
    if read_stamp(root) is not None:
        return
    if os.geteuid() != 0:
        raise ReleaseError(f'building and running the {suite} root needs root (mmdebstrap, '
                           f'mount, chroot); run as root')
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    with _locked(os.path.join(parent, f'.{os.path.basename(root)}.lock')):
        if read_stamp(root) is not None:
            return
        # leftovers of builds that were killed (we hold the lock, so nobody builds now)
        for old in glob.glob(os.path.join(parent, f'.{os.path.basename(root)}.*-*')):
            safe_rmtree(old)
        if shutil.which('mmdebstrap') is None:
            apt_install(['mmdebstrap'], quiet)
        tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(root)}.build-', dir=parent)
        try:
            _mmdebstrap(suite, tmp, quiet)
            _finish_root(suite, tmp, quiet)
            if os.path.lexists(root):    # incomplete or outdated: replace it
                old = tempfile.mkdtemp(prefix=f'.{os.path.basename(root)}.old-', dir=parent)
                os.rename(root, os.path.join(old, 'root'))
                os.rename(tmp, root)
                safe_rmtree(old)
            else:
                os.rename(tmp, root)
        except BaseException:
            safe_rmtree(tmp)
            raise


def _mmdebstrap(suite: str, target: str, quiet: bool) -> None:
    mirror = debian_mirror()
    argv = ['mmdebstrap', '--variant=apt', '--include=' + ','.join(ROOT_PACKAGES),
            # a root only runs tests: no manuals, translations or docs
            '--dpkgopt=path-exclude=/usr/share/man/*',
            '--dpkgopt=path-exclude=/usr/share/locale/*',
            '--dpkgopt=path-exclude=/usr/share/doc/*',
            '--dpkgopt=path-include=/usr/share/doc/*/copyright',
            *('--aptopt=' + o for o in SUITE_APT_OPTIONS.get(suite, [])),
            suite, target, mirror]
    _note(f'building a Debian {suite} root for the Ceph tests in {target} from {mirror} '
          f'(once; about a minute)')
    t0 = time.monotonic()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, text=True,
                       stdout=subprocess.PIPE if quiet else None,
                       stderr=subprocess.STDOUT if quiet else None)
    if p.returncode != 0:
        out = '\n'.join((p.stdout or '').splitlines()[-30:])
        raise ReleaseError(f"{' '.join(shlex.quote(a) for a in argv)} failed "
                           f"(exit {p.returncode})" + (f':\n{out}' if out else ''))
    os.chmod(target, 0o755)
    _note(f'mmdebstrap {suite}: {time.monotonic() - t0:.0f} s')


def _run_in(root: str, argv: Sequence[str]) -> 'subprocess.CompletedProcess[str]':
    """Run a command chroot'ed in a root that is being built (no /tmp or project binds)."""
    wrapped = (['unshare', '--mount', '--propagation', 'private', '--', '/bin/sh', '-c',
                _WRAP_SCRIPT, 'lm-chroot', root, str(len(SYSTEM_BINDS))]
               + list(SYSTEM_BINDS) + list(argv))
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    return subprocess.run(wrapped, stdin=subprocess.DEVNULL, text=True, env=env, cwd='/',
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


_BCRYPT_CHECK = '''
import sys
sys.path.insert(0, sys.argv[1])
import bcrypt
assert bcrypt.__file__.startswith(sys.argv[1]), bcrypt.__file__
assert bcrypt.checkpw(b'pw', bcrypt.hashpw(b'pw', bcrypt.gensalt(4)))
print(bcrypt.__version__, bcrypt.__file__)
'''


def _finish_root(suite: str, root: str, quiet: bool) -> None:
    """The bcrypt workaround if the root's bcrypt needs it, then the stamp."""
    stamp: Dict[str, object] = {'format': ROOT_FORMAT, 'suite': suite,
                                'packages': ROOT_PACKAGES, 'mirror': debian_mirror(),
                                'built': time.strftime('%Y-%m-%dT%H:%M:%S%z')}
    if bcrypt_needs_shim(root):
        install_bcrypt_shim(root, BCRYPT_DIR_IN_ROOT, quiet)
        stamp['bcrypt_dir'] = BCRYPT_DIR_IN_ROOT
    with open(os.path.join(root, 'etc', 'debian_version')) as f:
        stamp['debian_version'] = f.read().strip()
    with open(os.path.join(root, STAMP), 'w') as f:
        json.dump(stamp, f, indent=1)
        f.write('\n')


def install_bcrypt_shim(root: str, shim_dir: str, quiet: bool) -> None:
    """Unpack the cffi bcrypt into ``root``+``shim_dir``, make sure its cffi backend is there
    (Debian's python3-cffi-backend), and check it works with the root's python."""
    fetch_bcrypt(root + shim_dir, _python_version(root))
    check = ['/usr/bin/python3', '-c', _BCRYPT_CHECK, shim_dir]
    p = _run_in(root, check)
    if p.returncode != 0 and '_cffi_backend' in p.stdout:
        if not quiet:
            _note('installing python3-cffi-backend into the root for the bcrypt workaround')
        _install_in_root(root, ['python3-cffi-backend'])
        p = _run_in(root, check)
    if p.returncode != 0:
        raise ReleaseError(f'the bcrypt workaround does not import in {root}:\n{p.stdout}')


def _install_in_root(root: str, packages: Sequence[str]) -> None:
    resolv = os.path.join(root, 'etc', 'resolv.conf')
    created = not os.path.lexists(resolv)
    if created:
        shutil.copyfile('/etc/resolv.conf', resolv)
    try:
        for argv in (['apt-get', 'update'], ['apt-get', 'install', '-y', *packages],
                     ['apt-get', 'clean']):
            p = _run_in(root, argv)
            if p.returncode != 0:
                raise ReleaseError(f"{' '.join(argv)} in {root} failed:\n{p.stdout[-3000:]}")
    finally:
        if created:
            os.unlink(resolv)


def host_bcrypt_shim(quiet: bool = False) -> Optional[str]:
    """For the host's own mgr (Debian 13): the bcrypt workaround, if its bcrypt needs it,
    kept in the cache (``<cache>/host-mgr-python-<python version>``), built once."""
    if not bcrypt_needs_shim('/'):
        return None
    version = _python_version('/')
    dest = os.path.join(cache_dir(), f'host-mgr-python-{version}')
    if os.path.isdir(os.path.join(dest, 'bcrypt')):
        return dest
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    with _locked(os.path.join(parent, '.host-mgr-python.lock')):
        if os.path.isdir(os.path.join(dest, 'bcrypt')):
            return dest
        tmp = tempfile.mkdtemp(prefix='.host-mgr-python.build-', dir=parent)
        try:
            fetch_bcrypt(tmp, version)
            p = subprocess.run(['/usr/bin/python3', '-c', _BCRYPT_CHECK, tmp],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode != 0 and '_cffi_backend' in p.stdout:
                apt_install(['python3-cffi-backend'], quiet)
                p = subprocess.run(['/usr/bin/python3', '-c', _BCRYPT_CHECK, tmp],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode != 0:
                raise ReleaseError(f'the bcrypt workaround does not import:\n{p.stdout}')
            os.chmod(tmp, 0o755)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


# --------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--release', choices=RELEASES, default=None,
                        help=f'default: the host\'s own ({host_release()})')
    args = parser.parse_args(argv)
    try:
        t0 = time.monotonic()
        rt = runtime(args.release).ensure()
        print(f'{rt.describe()} (ready in {time.monotonic() - t0:.1f} s)')
    except (ReleaseError, OSError, subprocess.CalledProcessError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
