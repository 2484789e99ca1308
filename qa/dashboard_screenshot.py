#!/usr/bin/python3
"""
Screenshot of the Ceph dashboard showing a live migration's progress bar.

Boots a throwaway cluster (qa/standalone/cluster.py) with the dashboard and
rbd_livemigrate, starts a throttled migration, logs in to the dashboard with
headless Chromium, opens "Tasks and Notifications" (the running task's
progress bar) and saves a PNG; then stops the cluster.

    /usr/bin/python3 qa/dashboard_screenshot.py [PNG] [--release pacific|reef|tentacle]
        [--dir DIR] [--keep]

PNG defaults to /tmp/rbd_livemigrate-dashboard.png.  Installs
ceph-mgr-dashboard, and Debian's chromium, chromium-driver and
python3-selenium, with apt-get when they are missing.

The browser is Debian's /usr/bin/chromium driven by Selenium through Debian's
/usr/bin/chromedriver; both paths are given explicitly and SE_OFFLINE is set,
so Selenium never downloads a browser or a driver of its own.

Also the library the dashboard test uses: :func:`enable_dashboard`,
:class:`DashboardClient`, :func:`migration_tasks`, :func:`take_screenshot`.
"""

import argparse
import importlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, 'standalone'))

from cluster import Cluster, install, pick_port, wait_for  # noqa: E402

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

# the dashboard's REST API wants a versioned Accept header; 1.0 is every endpoint's
# default, and a 415 "Incorrect version: endpoint is 'X.Y'" names the one it wants instead
API_ACCEPT = 'application/vnd.ceph.api.v{}+json'
API_VERSION_WANTED = re.compile(r"endpoint is '(\d+\.\d+)'")

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
BROWSER_PACKAGES = ['chromium', 'chromium-driver', 'python3-selenium']
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--window-size=1400,900']
SIDEBAR = 'cd-notifications-sidebar'


# ---- dashboard ------------------------------------------------------------------------

def enable_dashboard(c: Cluster, user: str, password: str, timeout: float = 120) -> str:
    """Serve the dashboard over plain HTTP on 127.0.0.1 and add an administrator.

    Every mgr gets a port of its own (``mgr/dashboard/<id>/server_port``): a standby
    mgr's dashboard binds its port too (to redirect to the active one), so one
    shared port on one host fails with "Port N not free".  Enabling the module
    makes the mgrs respawn; returns the active mgr's URL once it answers (https
    if a release ignores ``ssl=false``: the helpers accept its self-signed
    certificate).
    """
    install(dashboard=True, quiet=True, release=c.release)
    c.ceph('config', 'set', 'mgr', 'mgr/dashboard/ssl', 'false')
    c.ceph('config', 'set', 'mgr', 'mgr/dashboard/server_addr', '127.0.0.1')
    ports: List[int] = []
    for mgr_id in c.mgr_ids:
        port = pick_port()
        while port in ports:
            port = pick_port()
        ports.append(port)
        for key in ('server_port', 'ssl_server_port'):
            c.ceph('config', 'set', 'mgr', 'mgr/dashboard/{}/{}'.format(mgr_id, key),
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
            with urllib.request.urlopen(url, timeout=5, context=_tls(url)) as r:
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


def _tls(url: str) -> Optional[ssl.SSLContext]:
    """A context accepting the dashboard's self-signed certificate (https only)."""
    return ssl._create_unverified_context() if url.startswith('https:') else None


class DashboardClient:
    """The dashboard's REST API with urllib: POST /api/auth, then Bearer token.

    Sends each path the API version it last asked for (1.0 until a 415 names another)."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip('/')
        self.user = user
        self.password = password
        self.token = ''
        self.versions: Dict[str, str] = {}

    def request(self, method: str, path: str, body: Optional[Any] = None,
                auth: bool = True) -> Tuple[int, Any]:
        status, answer = self._send(method, path, body, auth)
        wanted = API_VERSION_WANTED.search(str(answer)) if status == 415 else None
        if wanted and wanted.group(1) != self.versions.get(path):
            self.versions[path] = wanted.group(1)
            status, answer = self._send(method, path, body, auth)
        return status, answer

    def _send(self, method: str, path: str, body: Optional[Any],
              auth: bool) -> Tuple[int, Any]:
        headers = {'Accept': API_ACCEPT.format(self.versions.get(path, '1.0')),
                   'Content-Type': 'application/json'}
        if auth and self.token:
            # (an empty "Bearer " makes Pacific's dashboard answer 500, not 401)
            headers['Authorization'] = 'Bearer ' + self.token
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers=headers,
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=30, context=_tls(self.url)) as r:
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


# ---- the browser: Debian's chromium through Selenium ----------------------------------

def ensure_browser() -> None:
    """apt-get install chromium, chromium-driver and python3-selenium if any is missing."""
    if (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)
            and importlib.util.find_spec('selenium') is not None):
        return
    sudo = [] if os.geteuid() == 0 else ['sudo']
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    print('installing ' + ' '.join(BROWSER_PACKAGES), flush=True)
    subprocess.run(sudo + ['apt-get', 'update'], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run(sudo + ['apt-get', 'install', '-y'] + BROWSER_PACKAGES, check=True,
                   env=env, stdout=subprocess.DEVNULL)
    importlib.invalidate_caches()


def chromium(profile: str) -> 'WebDriver':
    """Headless Debian chromium with a fresh profile, through Debian's chromedriver."""
    os.environ['SE_OFFLINE'] = 'true'       # never let selenium-manager fetch anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.accept_insecure_certs = True
    for flag in CHROMIUM_FLAGS + ['--user-data-dir=' + profile]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def running_task(browser: 'WebDriver', expect: str) -> Optional['WebElement']:
    """The notification sidebar's entry (the progress bar's card body) for a running task
    whose text holds ``expect``, once the bar is visible and the sidebar has slid fully
    into the window."""
    from selenium.webdriver.common.by import By
    for bar in browser.find_elements(By.CSS_SELECTOR, SIDEBAR + ' .progress-bar'):
        task = bar.find_element(By.XPATH, 'ancestor::div[contains(@class, "card-body")][1]')
        if bar.is_displayed() and expect in task.text and browser.execute_script(
                'return arguments[0].getBoundingClientRect().right <= window.innerWidth',
                task):
            return task
    return None


def take_screenshot(url: str, user: str, password: str, png: str, expect: str,
                    timeout: float = 90) -> Dict[str, str]:
    """Log in, open Tasks and Notifications, wait for the progress bar of a running task
    whose text holds ``expect`` and save the window as ``png``.  Returns what the DOM
    showed: the task's ``text`` and the bar's ``style`` (e.g. 'width: 37%;')."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.wait import WebDriverWait
    profile = tempfile.mkdtemp(prefix='lm-chromium-')
    browser = chromium(profile)
    try:
        wait = WebDriverWait(browser, timeout, ignored_exceptions=[
            StaleElementReferenceException])
        browser.get(url + '/#/login')
        wait.until(EC.visibility_of_element_located((By.ID, 'username'))).send_keys(user)
        browser.find_element(By.ID, 'password').send_keys(password, Keys.ENTER)
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, 'cd-notifications a'))
                   ).click()
        task = wait.until(lambda b: running_task(b, expect), 'no running task ' + expect)
        text, style = browser.execute_script(    # in one go: Angular re-renders every 5 s
            'return [arguments[0].innerText, arguments[1].getAttribute("style")]',
            task, task.find_element(By.CSS_SELECTOR, '.progress-bar'))
        shown_in_dom = {'text': text, 'style': style or ''}
        # Tentacle's overview pops error toasts over the sidebar on a cluster like ours (its
        # Prometheus queries answer 404, /api/mgr/module/cephadm 500 without cephadm); they
        # are the page's, not the migration's: take them off right before the picture
        shown_in_dom['toasts_removed'] = str(browser.execute_script(
            "var t = document.querySelectorAll('.toast-container .ngx-toastr');"
            "t.forEach(function (e) { e.remove(); }); return t.length;"))
        browser.save_screenshot(png)
        return shown_in_dom
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


# ---- the whole run --------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split('\n')[0])
    parser.add_argument('png', nargs='?', default='/tmp/rbd_livemigrate-dashboard.png')
    parser.add_argument('--release', help='pacific, reef or tentacle (default: the host\'s own)')
    parser.add_argument('--dir', help='cluster directory (default: a new /tmp/lm-dash-*)')
    parser.add_argument('--keep', action='store_true', help='leave the cluster running')
    parser.add_argument('--size-mb', type=int, default=64)
    parser.add_argument('--bandwidth-limit', default='2M')
    args = parser.parse_args(argv)

    ensure_browser()
    directory = args.dir or tempfile.mkdtemp(prefix='lm-dash-', dir='/tmp')
    c = Cluster(directory, osds=1, mgrs=1, osd_bytes=1 << 30, pools=['a', 'b'],
                release=args.release)
    user, password = 'lmadmin', 'Lm-' + secrets.token_urlsafe(12) + '-9'
    t0 = time.monotonic()
    try:
        c.start()
        url = enable_dashboard(c, user, password)
        print('{} dashboard at {} ({:.0f}s)'.format(c.release, url, time.monotonic() - t0),
              flush=True)
        c.command('sh', '-c', 'head -c {}M /dev/urandom | rbd import --no-progress - a/vm-disk'
                  .format(args.size_mb))
        task = json.loads(c.ceph('rbd', 'livemigrate', 'add', 'a/vm-disk', 'b/vm-disk',
                                 '--bandwidth-limit', args.bandwidth_limit,
                                 '--format', 'json').stdout)
        print('migration {} started ({} MiB at {}/s)'.format(
            task['id'], args.size_mb, args.bandwidth_limit), flush=True)
        # a bar with something in it: wait for a quarter of the copy
        wait_for(lambda: json.loads(c.ceph('rbd', 'livemigrate', 'status', task['id'],
                                           '--format', 'json').stdout)['progress'] >= 0.25,
                 120, 'the copy to reach 25%', interval=0.5)
        bar = take_screenshot(url, user, password, args.png, 'a/vm-disk')
        status = json.loads(c.ceph('rbd', 'livemigrate', 'status', task['id'],
                                   '--format', 'json').stdout)
        print('bar {} ({!r}); task {} at {:.0%}'.format(
            bar['style'], ' | '.join(filter(None, bar['text'].splitlines())), status['state'],
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
