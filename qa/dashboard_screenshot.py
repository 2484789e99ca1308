#!/usr/bin/python3
"""
Screenshot of the Ceph dashboard showing a live migration's progress bar.

Boots a throwaway cluster (qa/standalone/cluster.py) with the dashboard and
rbd_livemigrate, starts a throttled migration, logs in to the dashboard with
headless Chromium, opens "Tasks and Notifications" (the running task's
progress bar) and saves a PNG; then stops the cluster.

    /usr/bin/python3 qa/dashboard_screenshot.py [PNG] [--dir DIR] [--keep]

PNG defaults to /tmp/rbd_livemigrate-dashboard.png.  Installs
ceph-mgr-dashboard and chromium with apt-get when they are missing.

Chromium's ``--screenshot`` mode cannot log in (the dashboard keeps its session
in localStorage and an HttpOnly cookie), so Chromium runs with the same
headless flags plus ``--remote-debugging-pipe``: the DevTools protocol over
fds 3/4, NUL-separated JSON, stdlib only.  It fills in the login form, clicks
the bell and captures the page with ``Page.captureScreenshot``.

Also the library the dashboard test uses: :func:`enable_dashboard`,
:class:`DashboardClient`.
"""

import argparse
import base64
import fcntl
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, 'standalone'))

from cluster import Cluster, install, pick_port, wait_for  # noqa: E402

API_ACCEPT = 'application/vnd.ceph.api.v1.0+json'
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--window-size=1400,900']
WIDTH, HEIGHT = 1400, 900


# ---- dashboard ------------------------------------------------------------------------

def enable_dashboard(c: Cluster, user: str, password: str, timeout: float = 120) -> str:
    """Serve the dashboard over plain HTTP on 127.0.0.1 and add an administrator.

    Every mgr gets a port of its own (``mgr/dashboard/<id>/server_port``): a standby
    mgr's dashboard binds its port too (to redirect to the active one), so one
    shared port on one host fails with "Port N not free".  Enabling the module
    makes the mgrs respawn; returns the active mgr's URL once it answers.
    """
    install(dashboard=True, quiet=True)
    c.ceph('config', 'set', 'mgr', 'mgr/dashboard/ssl', 'false')
    c.ceph('config', 'set', 'mgr', 'mgr/dashboard/server_addr', '127.0.0.1')
    ports: List[int] = []
    for mgr_id in c.mgr_ids:
        port = pick_port()
        while port in ports:
            port = pick_port()
        ports.append(port)
        c.ceph('config', 'set', 'mgr', 'mgr/dashboard/{}/server_port'.format(mgr_id),
               str(port))
    c.ceph('mgr', 'module', 'enable', 'dashboard')
    c.wait_module_ready(timeout=timeout)

    url = ''

    def serving() -> bool:
        nonlocal url
        services = c.ceph_json('mgr', 'services') or {}
        url = services.get('dashboard', '')
        if not url:
            return False
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False
    try:
        wait_for(serving, timeout, 'the dashboard to serve HTTP', interval=1)
    except TimeoutError as e:
        raise RuntimeError('{}; ceph health detail: {}'.format(
            e, c.ceph('health', 'detail', check=False).stdout.strip())) from None
    with tempfile.NamedTemporaryFile('w', dir=c.dir, suffix='.pw') as f:
        f.write(password)
        f.flush()
        wait_for(lambda: c.ceph('dashboard', 'ac-user-create', user, '-i', f.name,
                                'administrator').returncode == 0,
                 timeout, 'ceph dashboard ac-user-create', interval=1)
    return url.rstrip('/')


class DashboardClient:
    """The dashboard's REST API with urllib: POST /api/auth, then Bearer token."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip('/')
        self.user = user
        self.password = password
        self.token = ''

    def request(self, method: str, path: str, body: Optional[Any] = None,
                auth: bool = True) -> Tuple[int, Any]:
        headers = {'Accept': API_ACCEPT, 'Content-Type': 'application/json'}
        if auth and self.token:
            # (an empty "Bearer " makes Pacific's dashboard answer 500, not 401)
            headers['Authorization'] = 'Bearer ' + self.token
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers=headers,
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read().decode()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors='replace')
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text

    def login(self) -> Dict[str, Any]:
        status, body = self.request('POST', '/api/auth',
                                    {'username': self.user, 'password': self.password},
                                    auth=False)
        if status not in (200, 201) or not isinstance(body, dict) or 'token' not in body:
            raise RuntimeError('dashboard login failed: {} {}'.format(status, body))
        self.token = body['token']
        return body

    def summary(self) -> Dict[str, Any]:
        status, body = self.request('GET', '/api/summary')
        if status != 200:
            raise RuntimeError('GET /api/summary: {} {}'.format(status, body))
        return body  # type: ignore[no-any-return]


def migration_tasks(summary: Dict[str, Any], source: str) -> List[Dict[str, Any]]:
    """executing_tasks entries of the module's progress event for ``source``."""
    return [t for t in summary.get('executing_tasks', [])
            if t.get('name', '').startswith('progress/Live-migrating RBD image')
            and (t.get('metadata') or {}).get('origin') == 'rbd_livemigrate'
            and (t.get('metadata') or {}).get('source') == source]


# ---- Chromium over the DevTools pipe -----------------------------------------------

class Chromium:
    """Headless Chromium driven through ``--remote-debugging-pipe``."""

    def __init__(self, binary: str = 'chromium', timeout: float = 30) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix='lm-chromium-')
        cmd_r, cmd_w = os.pipe()
        resp_r, resp_w = os.pipe()
        # move the child's ends above 2..4 so that dup2 into 3 and 4 cannot clobber them
        child_in = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(resp_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(cmd_r)
        os.close(resp_w)

        def fds_3_and_4() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)
        self.log = open(os.path.join(self.profile, 'chromium.log'), 'w')
        self.proc = subprocess.Popen(
            [binary] + CHROMIUM_FLAGS + ['--user-data-dir=' + self.profile,
                                         '--remote-debugging-pipe', 'about:blank'],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            preexec_fn=fds_3_and_4, close_fds=False)
        os.close(child_in)
        os.close(child_out)
        self.wfd, self.rfd = cmd_w, resp_r
        self.buf = b''
        self.next_id = 0
        self.session = ''

    def close(self) -> None:
        try:
            self.call('Browser.close', timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.wfd, self.rfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, params: Optional[Dict[str, Any]] = None,
             session: Optional[str] = None, timeout: Optional[float] = None) -> Dict[str, Any]:
        self.next_id += 1
        msg: Dict[str, Any] = {'id': self.next_id, 'method': method, 'params': params or {}}
        if session:
            msg['sessionId'] = session
        os.write(self.wfd, json.dumps(msg).encode() + b'\0')
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            while b'\0' in self.buf:
                raw, self.buf = self.buf.split(b'\0', 1)
                reply = json.loads(raw)
                if reply.get('id') == self.next_id:
                    if 'error' in reply:
                        raise RuntimeError('{}: {}'.format(method, reply['error']))
                    return reply.get('result', {})  # type: ignore[no-any-return]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('no answer to ' + method)
            ready, _, _ = select.select([self.rfd], [], [], left)
            if ready:
                chunk = os.read(self.rfd, 1 << 20)
                if not chunk:
                    raise RuntimeError('chromium exited (see {})'.format(self.log.name))
                self.buf += chunk

    def page(self, url: str) -> None:
        target = self.call('Target.createTarget', {'url': 'about:blank'})['targetId']
        self.session = self.call('Target.attachToTarget',
                                 {'targetId': target, 'flatten': True})['sessionId']
        self.call('Emulation.setDeviceMetricsOverride',
                  {'width': WIDTH, 'height': HEIGHT, 'deviceScaleFactor': 1, 'mobile': False},
                  self.session)
        self.call('Page.enable', session=self.session)
        self.call('Page.navigate', {'url': url}, self.session)

    def js(self, expression: str) -> Any:
        r = self.call('Runtime.evaluate', {'expression': expression, 'returnByValue': True,
                                           'awaitPromise': True}, self.session)
        if 'exceptionDetails' in r:
            raise RuntimeError('js failed: {}'.format(r['exceptionDetails']))
        return r.get('result', {}).get('value')

    def wait_js(self, expression: str, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError('timed out waiting for ' + what)
            time.sleep(0.25)

    def screenshot(self, path: str) -> None:
        data = self.call('Page.captureScreenshot', {'format': 'png'}, self.session)['data']
        with open(path, 'wb') as f:
            f.write(base64.b64decode(data))


LOGIN_JS = """(() => {
  const set = (id, value) => {
    const el = document.getElementById(id);
    el.value = value;
    el.dispatchEvent(new Event('input', {bubbles: true}));
  };
  set('username', %s);
  set('password', %s);
  document.querySelector('input[type=submit]').click();
  return true;
})()"""

BAR_JS = """(() => {
  const bar = document.querySelector('cd-notifications-sidebar ngb-progressbar .progress-bar');
  if (!bar) return null;
  const card = bar.closest('.card');
  return {width: bar.style.width, text: card ? card.innerText : ''};
})()"""


def take_screenshot(url: str, user: str, password: str, png: str, expect: str,
                    binary: str = 'chromium', timeout: float = 60) -> Dict[str, Any]:
    """Log in, open Tasks and Notifications, wait for a running task whose text holds
    ``expect`` and save the page as ``png``.  Returns what the bar showed."""
    browser = Chromium(binary)
    try:
        browser.page(url + '/#/login')
        browser.wait_js("document.getElementById('username') !== null", timeout,
                        'the login form')
        browser.js(LOGIN_JS % (json.dumps(user), json.dumps(password)))
        browser.wait_js("document.querySelector('cd-notifications a') !== null", timeout,
                        'the dashboard after login')
        browser.js("document.querySelector('cd-notifications a').click(), true")
        found = browser.wait_js(
            '(() => { const b = %s; return b && b.text.includes(%s) ? b : null; })()' % (
                BAR_JS, json.dumps(expect)), timeout, 'the migration progress bar')
        time.sleep(1.5)             # let the sidebar finish sliding in
        browser.screenshot(png)
        return found  # type: ignore[no-any-return]
    finally:
        browser.close()


# ---- the whole run --------------------------------------------------------------------

def ensure_chromium() -> str:
    binary = shutil.which('chromium')
    if binary:
        return binary
    sudo = [] if os.geteuid() == 0 else ['sudo']
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    print('installing chromium', flush=True)
    subprocess.run(sudo + ['apt-get', 'update'], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run(sudo + ['apt-get', 'install', '-y', 'chromium'], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    binary = shutil.which('chromium')
    if not binary:
        raise RuntimeError('chromium is still missing after apt-get install')
    return binary


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split('\n')[0])
    parser.add_argument('png', nargs='?', default='/tmp/rbd_livemigrate-dashboard.png')
    parser.add_argument('--dir', help='cluster directory (default: a new /tmp/lm-dash-*)')
    parser.add_argument('--keep', action='store_true', help='leave the cluster running')
    parser.add_argument('--size-mb', type=int, default=64)
    parser.add_argument('--bandwidth-limit', default='2M')
    args = parser.parse_args(argv)

    binary = ensure_chromium()
    install(dashboard=True)
    directory = args.dir or tempfile.mkdtemp(prefix='lm-dash-', dir='/tmp')
    c = Cluster(directory, osds=1, mgrs=1, osd_bytes=1 << 30, pools=['a', 'b'])
    user, password = 'lmadmin', 'Lm-' + secrets.token_urlsafe(12) + '-9'
    t0 = time.monotonic()
    try:
        c.start()
        url = enable_dashboard(c, user, password)
        print('dashboard at {} ({:.0f}s)'.format(url, time.monotonic() - t0), flush=True)
        subprocess.run('head -c {}M /dev/urandom | rbd import --no-progress - a/vm-disk'
                       .format(args.size_mb), shell=True, check=True, env=c.env)
        task = json.loads(c.ceph('rbd', 'livemigrate', 'add', 'a/vm-disk', 'b/vm-disk',
                                 '--bandwidth-limit', args.bandwidth_limit).stdout)
        print('migration {} started ({} MiB at {}/s)'.format(
            task['id'], args.size_mb, args.bandwidth_limit), flush=True)
        # a bar with something in it: wait for a quarter of the copy
        wait_for(lambda: json.loads(c.ceph('rbd', 'livemigrate', 'status', task['id'],
                                           '--format', 'json').stdout)['progress'] >= 0.25,
                 120, 'the copy to reach 25%', interval=0.5)
        bar = take_screenshot(url, user, password, args.png, 'a/vm-disk', binary)
        status = json.loads(c.ceph('rbd', 'livemigrate', 'status', task['id'],
                                   '--format', 'json').stdout)
        print('bar width {} ({!r}); task {} at {:.0%}'.format(
            bar['width'], bar['text'].replace('\n', ' | '), status['state'],
            status['progress']))
        print('saved', args.png)
        return 0
    finally:
        if args.keep:
            print('cluster kept: export CEPH_CONF={}'.format(c.conf))
        else:
            c.stop(purge=True)


if __name__ == '__main__':
    sys.exit(main())
