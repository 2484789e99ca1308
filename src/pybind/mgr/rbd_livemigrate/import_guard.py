"""
The gate every import passes, at ``import`` and again just before librbd
opens its streams (prepare, execute): the thin I/O side of ``import_policy``.

It resolves what a spec names the way librbd will (a path with its symlinks
and ``..`` followed, a URL's host through the resolver), asks
``import_policy`` about each result, and gives back the spec with every file
path replaced by the path it resolved to, so that librbd opens the file that
was judged, not a link that may be swapped later.
"""

import copy
import errno
import ipaddress
import json
import os
import socket
import stat
import urllib.parse
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from . import source_spec
from .errors import NotAuthorized, NotFound, Transient
from .import_policy import (Endpoints, IPAddress, Policy, config_refs, judge_address,
                            judge_config_key, judge_file_kind, judge_file_place, plain)
from .spec import ImageSpec


class FileLook(NamedTuple):
    regular: bool
    links: int


def look_file(label: str, real: str) -> FileLook:
    """What the resolved path ``real`` is (no link is followed any more)."""
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        raise NotFound("{} file '{}' does not exist on the mgr host: put it where the active "
                       'mgr can read it'.format(label, real))
    except OSError as e:
        raise NotAuthorized("{} file '{}' cannot be looked at by the mgr ({}): fix the "
                            "directories' permissions".format(label, real, e.strerror))
    return FileLook(stat.S_ISREG(st.st_mode), int(st.st_nlink))


def resolve(label: str, host: str, port: int) -> List[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise Transient('{} url host {!r} cannot be resolved from the mgr ({}): check '
                        'the url'.format(label, host, e), errno.EHOSTUNREACH)
    out: List[IPAddress] = []
    for info in infos:
        try:
            out.append(plain(ipaddress.ip_address(str(info[4][0]).split('%', 1)[0])))
        except ValueError:
            continue
    if not out:
        raise Transient('{} url host {!r} resolves to no address'.format(label, host),
                        errno.EHOSTUNREACH)
    return out


def url_host_port(url: str) -> Optional[tuple]:
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == 'https' else 80)


class ImportGuard:
    def __init__(self, policy: Callable[[], Policy], endpoints: Callable[[], Endpoints],
                 look: Callable[[str, str], FileLook] = look_file,
                 resolver: Callable[[str, str, int], List[IPAddress]] = resolve,
                 realpath: Callable[[str], str] = os.path.realpath) -> None:
        self.policy = policy
        self.endpoints = endpoints
        self.look = look
        self.resolver = resolver
        self.realpath = realpath

    def check(self, spec: Dict[str, Any], dest: ImageSpec,
              task_id: Optional[str] = None) -> Dict[str, Any]:
        """The spec as librbd may get it (file paths resolved); raises a
        one-line LiveMigrateError for anything it may not reach.  ``task_id``:
        a stored spec, whose own credential keys are allowed."""
        policy = self.policy()
        policy = policy._replace(file_dirs=tuple(self.realpath(d) for d in policy.file_dirs))
        for where, key in config_refs(spec):
            judge_config_key(where, key, dest, policy, task_id)
        out = copy.deepcopy(spec)
        cluster: Optional[Endpoints] = None
        for s in source_spec.streams(out):
            if s.stream.get('type') == 'file':
                given = str(s.stream['file_path'])
                real = self.realpath(given)
                judge_file_place(s.label, given, real, policy.file_dirs)
                found = self.look(s.label, real)
                judge_file_kind(s.label, real, found.regular, found.links)
                s.stream['file_path'] = real
                continue
            hp = url_host_port(str(s.stream.get('url', '')))
            if hp is None:
                continue            # source_spec refused it already
            host, port = hp
            if cluster is None:
                cluster = self.endpoints()
            for addr in self.resolver(s.label, host, port):
                judge_address(s.label, host, addr, port, policy, cluster)
        return out

    def check_text(self, text: str, dest: ImageSpec, task_id: str) -> None:
        """Judge a stored spec again (DNS and links can change since import)."""
        self.check(json.loads(text), dest, task_id)
