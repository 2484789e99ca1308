"""
rbd_livemigrate: RBD live migration as a managed service in ceph-mgr.

Commands, options and lifecycle only; each command is one call into
``commands.Commands``.
"""

import enum
import errno
import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

import mgr_module
from mgr_module import MgrModule, NotifyType, Option

from .commands import Commands
from .compat import (ClientRegistry, command_decorators, cross_cluster_import,
                     cross_cluster_refusal)
from .errors import LiveMigrateError, NotAuthorized, handle_errors
from .formatting import reply
from .health import HealthChecks, full_pools, health_block, pool_full_raised, pool_holds
from .heap import HEAP_CHECK_SECONDS, Allocator, HeapKeeper
from .hold import Hold, HoldKind
from .import_guard import ImportGuard
from .import_policy import Endpoints, Policy, cluster_endpoints, parse_dirs, parse_networks
from .importer import SWEEP_SECONDS, Importer, config_key_getter
from .pipeline import Runner
from .preflight import PoolInfo, pools_from_maps
from .progress import ProgressReporter
from .rbd_adapter import Adapter, ClientFactory
from .rbd_remote import RemoteClient, connect_check
from .remote_sources import RemoteSources, spec_of
from .remotes import ConfFiles, RemoteRegistry
from .request import MAX_BANDWIDTH_BYTES, request_of
from .scheduler import Options, Worker
from .spec import ImageSpec
from .store import TaskStore
from .views import remotes_reply
from .window import in_window, parse_window

ORPHAN_SCAN_SECONDS = 300.0
# option bounds: the mon checks a module option's range only when it has both
DAY = 86400
WEEK = 7 * DAY


class ReplyFormat(str, enum.Enum):
    """--format of every command (the CLI shows the choices)."""
    plain = 'plain'
    json = 'json'
    json_pretty = 'json-pretty'
    yaml = 'yaml'


class VerifyChoice(str, enum.Enum):
    """--verify: what is compared before commit."""
    full = 'full'
    auto = 'auto'
    off = 'off'


def _text(value: Optional[str]) -> Optional[str]:
    """An enum argument's plain value (mgr_module hands the member)."""
    return None if value is None else str(getattr(value, 'value', value))


DEFAULT_HEALTH_PAUSE = ('OSD_FULL,OSD_NEARFULL,OSD_BACKFILLFULL,POOL_FULL,PG_AVAILABILITY,'
                        'HEALTH_ERR')
# this module's command decorators, in the form the running mgr takes (compat.py)
CLI = command_decorators(mgr_module)


class Module(MgrModule):
    NOTIFY_TYPES: List[NotifyType] = []
    CLICommand = CLI.registry           # where the mgr finds our commands (Tentacle)
    MODULE_OPTIONS = [
        Option('max_concurrent', type='int', default=2, min=1, max=64, runtime=True,
               desc='migrations in prepare, execute or commit at once'),
        Option('max_concurrent_per_pool', type='int', default=0, min=0, max=64, runtime=True,
               desc='migrations at once touching one pool (source or destination); 0: no limit'),
        Option('max_history', type='int', default=100, min=0, max=10000, runtime=True,
               desc='finished tasks kept for ls/status'),
        Option('stall_warn_seconds', type='int', default=600, min=0, max=WEEK, runtime=True,
               desc='raise RBD_LIVEMIGRATE_STALLED after this long without copy progress'),
        Option('blocked_warn_seconds', type='int', default=300, min=0, max=WEEK, runtime=True,
               desc='raise RBD_LIVEMIGRATE_BLOCKED after a task waited this long'),
        Option('retry_max_attempts', type='int', default=5, min=1, max=100, runtime=True,
               desc='attempts before a task with transient errors fails'),
        Option('retry_backoff_seconds', type='int', default=10, min=0, max=DAY, runtime=True,
               desc='first retry delay; doubles each attempt'),
        Option('retry_backoff_max_seconds', type='int', default=600, min=0, max=WEEK,
               runtime=True,
               desc='longest retry delay'),
        Option('blocked_recheck_seconds', type='int', default=5, min=1, max=3600, runtime=True,
               desc='how often a blocked task (watchers) checks again'),
        Option('bandwidth_limit_bytes', type='size', default=0, min=0, max=MAX_BANDWIDTH_BYTES,
               runtime=True,
               desc='default copy rate limit per task in bytes per second; 0: unlimited'),
        Option('total_bandwidth_limit_bytes', type='size', default=0, min=0,
               max=MAX_BANDWIDTH_BYTES, runtime=True,
               desc='copy rate limit shared by all running tasks, bytes per second; '
                    '0: unlimited'),
        Option('maintenance_window', type='str', default='', runtime=True,
               desc='when prepare/execute may run: HH:MM-HH:MM[,...] in UTC; empty: always'),
        Option('health_pause_checks', type='str', default=DEFAULT_HEALTH_PAUSE, runtime=True,
               desc='health check codes (and HEALTH_ERR) that pause the queue; empty: never'),
        Option('verify_default', type='str', default='auto', enum_allowed=['full', 'auto', 'off'],
               runtime=True,
               desc='what add compares before commit without --verify: full (every snapshot '
                    'and the head), auto (the head unless clients wrote to it), off'),
        Option('import_file_dirs', type='str', default='', runtime=True,
               desc='comma list of directories on the mgr hosts whose files imports may read '
                    '(symlinks resolved); empty: no file import'),
        Option('import_allowed_networks', type='str', default='', runtime=True,
               desc='comma list of networks (CIDR) that import URLs may reach besides public '
                    'addresses: loopback, private and link-local ones, and hosts of this '
                    "cluster's daemons, are refused unless listed here"),
        Option('import_credential_prefix', type='str', default='', runtime=True,
               desc='config-key prefix an admin sets aside for import credentials: a '
                    'source-spec may name config://<prefix><pool>[/<namespace>]/<name> for its '
                    'destination; empty: no config:// reference is accepted'),
        Option('release_memory', type='bool', default=True, runtime=True,
               desc='give memory the mgr process freed back to the OS after migrations and '
                    'listings, and map large buffers on their own (process-wide)'),
        Option('remote_op_timeout_seconds', type='int', default=60, min=0, max=3600,
               runtime=False,
               desc='bound on each mon/OSD operation on a remote cluster (0: none, librbd '
                    'then waits for a stopped remote); written into the remote conf'),
        Option('remote_conf_dir', type='str', default='', runtime=False,
               desc='absolute directory for the conf and keyring files of remote clusters '
                    '(default: <run_dir>/rbd_livemigrate); clients that open a destination '
                    'before commit need the same files at the same path'),
    ]

    if TYPE_CHECKING:
        max_concurrent: int
        max_concurrent_per_pool: int
        max_history: int
        stall_warn_seconds: int
        blocked_warn_seconds: int
        retry_max_attempts: int
        retry_backoff_seconds: int
        retry_backoff_max_seconds: int
        blocked_recheck_seconds: int
        bandwidth_limit_bytes: int
        total_bandwidth_limit_bytes: int
        maintenance_window: str
        health_pause_checks: str
        verify_default: str
        import_file_dirs: str
        import_allowed_networks: str
        import_credential_prefix: str
        release_memory: bool
        remote_op_timeout_seconds: int
        remote_conf_dir: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        registry = ClientRegistry(self._ceph_register_client, self._ceph_unregister_client)
        self.factory = ClientFactory(
            name='mgr.{}'.format(self.get_mgr_id()),
            conf={'mon_host': str(self.get_ceph_option('mon_host') or ''),
                  'keyring': str(self.get_ceph_option('keyring') or '')},
            context=self.get_context(),
            register=registry.register,
            unregister=registry.unregister)
        self.adapter = Adapter(self.factory)
        guard = ImportGuard(self.import_policy, self.cluster_endpoints)
        self._cross_cluster: Optional[bool] = None
        conf_dir = (self.get_module_option('remote_conf_dir')
                    or os.path.join(str(self.get_ceph_option('run_dir')), 'rbd_livemigrate'))
        self.remotes = RemoteSources(
            RemoteRegistry(self.get_store_prefix, self.set_store,
                           connect_check=connect_check,
                           supported=self.cross_cluster_supported,
                           refusal=cross_cluster_refusal,
                           local_fsid=lambda: str(self.get('mon_map')['fsid'])),
            ConfFiles(str(conf_dir), int(str(self.get_module_option('remote_op_timeout_seconds')))),
            client_for=lambda r, key: RemoteClient(r.name, r.mon_host, r.client_name, key),
            live_specs=lambda: [(t.id, t.import_spec) for t in self.worker.all()
                                if not t.terminal])
        self.worker = Worker(
            store=TaskStore(self.get_store_prefix, self.set_store),
            progress=ProgressReporter(self.remote),
            runner_factory=lambda w, task_id: Runner(w, task_id, self.adapter, self.pools,
                                                     import_gate=guard.check_text,
                                                     remote=self.remotes),
            set_health=self.set_health,
            cluster_block=self.cluster_block,
            pool_holds=self.pool_holds,
            blocklisted=self.blocklisted,
            on_blocklist=self.factory.discard_idle,
            watchers=self.source_watchers,
            write_behind=True)
        # the worker is the task table and, through a narrow handle, the scheduler
        self.commands = Commands(table=self.worker, scheduler=self.worker,
                                 adapter=self.adapter, pools=self.pools,
                                 authorized=self.authorized, unscoped=self.unscoped,
                                 clock=time.time)
        c = self.commands
        self.importer = Importer(table=self.worker, scheduler=self.worker, adapter=self.adapter,
                                 access=c.access, adder=c.adder, views=c.views, clock=time.time,
                                 set_store=self.set_store,
                                 get_store_prefix=self.get_store_prefix,
                                 config_get=config_key_getter(self.mon_command), guard=guard,
                                 remotes=self.remotes)
        c.batches.remotes = self.remotes
        c.batches.add_remote = self.importer.add_remote
        self.heap = HeapKeeper(Allocator(),
                               activity=lambda: self.worker.writes + self.commands.listings,
                               busy=lambda: bool(self.worker.runners))
        self.config_notify()

    # -- lifecycle -----------------------------------------------------

    def config_notify(self) -> None:
        for opt in self.MODULE_OPTIONS:
            setattr(self, opt['name'], self.get_module_option(opt['name']))
        self.worker.options = Options(**{
            k: getattr(self, k) for k in Options.__dataclass_fields__})
        self.heap.set_enabled(bool(self.release_memory))
        self.worker.kick()

    def serve(self) -> None:
        self.worker.load()
        self.commands.batches.resume()
        try:
            self.commands.orphans.scan()
        except Exception:
            self.log.exception('orphan scan failed')
        self.worker.add_chore(ORPHAN_SCAN_SECONDS, self.commands.orphans.scan)
        self.worker.add_chore(SWEEP_SECONDS, self.importer.sweep)
        try:
            self.remotes.start()       # sweep a killed mgr's files, rewrite live ones
        except Exception:
            self.log.exception('remote conf dir')
        self.worker.add_chore(SWEEP_SECONDS, lambda: None if self.remotes.tidy() else None)
        self.worker.add_chore(HEAP_CHECK_SECONDS, self.tidy)
        self.worker.serve()

    def tidy(self) -> None:
        """Nothing left to run: close the idle copy clients (a few MiB
        each; the next copy connects again); then give freed memory back."""
        if not self.worker.runners and not self.worker.live:
            self.factory.discard_idle()
        self.heap.tick()

    def shutdown(self) -> None:
        self.worker.shutdown()
        self.adapter.shutdown()
        super().shutdown()

    # -- what the worker asks of the mgr -------------------------------

    def pools(self) -> Dict[str, PoolInfo]:
        return pools_from_maps(self.get('osd_map'), self.get('df'))

    def import_policy(self) -> Policy:
        """What the admin lets imports reach (module options; EINVAL if malformed)."""
        return Policy(parse_dirs(self.import_file_dirs),
                      parse_networks(self.import_allowed_networks),
                      self.import_credential_prefix or '')

    def cross_cluster_supported(self) -> bool:
        """Does this mgr's librbd import from another cluster?  Probed once
        (``compat.cross_cluster_import``: nothing is created)."""
        if self._cross_cluster is None:
            pool = next(iter(sorted(self.pools())), None)  # any pool: the spec fails first
            if pool is None:
                return False                    # asked again once a pool exists
            self._cross_cluster = self.adapter.probe_prepare_import(pool, cross_cluster_import)
        return self._cross_cluster

    def source_watchers(self, spec: str) -> List[str]:
        """The clients of a waiting task's source: a remote task's are those
        of its image in the other cluster."""
        for t in self.worker.naming(spec):
            if not t.terminal and spec_of(t.import_spec) is not None:
                return self.remotes.watchers(t.import_spec)
        return self.adapter.watchers(ImageSpec.parse(spec))

    def cluster_endpoints(self) -> Endpoints:
        return cluster_endpoints(self.get('mon_map'), self.get('osd_map'), self.get('mgr_map'))

    def set_health(self, checks: HealthChecks) -> None:
        self.set_health_checks(checks)

    def blocklisted(self) -> Set[str]:
        osd_map = self.get('osd_map')
        return set(osd_map.get('blocklist', osd_map.get('blacklist', {})))

    def cluster_block(self) -> Optional[Hold]:
        """Why no new prepare/execute may start now: window or cluster health."""
        try:
            window = parse_window(self.maintenance_window)
        except LiveMigrateError as e:
            return Hold(HoldKind.WINDOW_INVALID, str(e))
        if not in_window(window, time.time()):
            return Hold(HoldKind.WINDOW_CLOSED, 'outside the maintenance window {} (UTC)'.format(
                self.maintenance_window))
        health = self.get('health')
        per_pool = (pool_full_raised(health, self.health_pause_checks)
                    and bool(full_pools(self.get('osd_map'))))
        reason = health_block(health, self.health_pause_checks, per_pool)
        return None if reason is None else Hold(HoldKind.CLUSTER_HEALTH, reason)

    def pool_holds(self) -> Dict[str, Hold]:
        """Pools whose tasks hold (POOL_FULL of that pool); the rest go on.
        The OSD map is read only while POOL_FULL is raised."""
        health = self.get('health')
        if not pool_full_raised(health, self.health_pause_checks):
            return {}
        why = pool_holds(health, self.health_pause_checks, full_pools(self.get('osd_map')))
        return {p: Hold(HoldKind.CLUSTER_HEALTH, r) for p, r in why.items()}

    def authorized(self, pool: str, namespace: str) -> bool:
        return bool(self.is_authorized({'pool': pool, 'namespace': namespace}))

    def operator_only(self, what: str) -> None:
        """EACCES for a caller whose mgr caps are limited to pools."""
        if not self.unscoped():
            raise NotAuthorized('{} needs mgr caps on every pool (not limited with '
                                'pool=...): ask an operator'.format(what))

    def unscoped(self) -> bool:
        """No pool constraint limits the caller: a grant with ``pool=...``
        requires that argument, so only unconstrained grants match ``{}``."""
        return bool(self.is_authorized({}))

    # -- commands ------------------------------------------------------

    def _handle_command(self, inbuf: str, cmd: Dict[str, Any]) -> Any:
        """mgr_module casts the arguments before a handler runs: a value that
        does not cast (a raw command sending ``"priority": "high"``) is one
        EINVAL line, not the framework's traceback."""
        for key, choices in (('format', ReplyFormat), ('verify', VerifyChoice)):
            value = cmd.get(key)
            if value is not None and value not in {c.value for c in choices}:
                return (-errno.EINVAL, '', 'invalid {} {!r}: use one of {}'.format(
                    key, value, ', '.join(c.value for c in choices)))
        try:
            return super()._handle_command(inbuf, cmd)
        except (ValueError, TypeError) as e:
            return (-errno.EINVAL, '', 'invalid argument for {}: {}'.format(
                cmd.get('prefix', '?'), e))

    @CLI.write('rbd livemigrate add')
    @handle_errors
    def add(self, source_spec: str, dest_spec: Optional[str] = None,
            object_size: Optional[str] = None, stripe_unit: Optional[str] = None,
            stripe_count: Optional[int] = None, features: Optional[str] = None,
            data_pool: Optional[str] = None, flatten: bool = False,
            manual_commit: bool = False, allow_descendants: bool = False,
            priority: int = 0, bandwidth_limit: Optional[str] = None,
            dry_run: bool = False, manual_cutover: bool = False,
            verify: Optional[VerifyChoice] = None,
            format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """Live-migrate an RBD image (spec: pool[/namespace]/image, or remote:pool[/namespace]/image[@snap] from a registered remote) to dest_spec or, without it, to a new layout in place; priority -1000..1000, bandwidth_limit bytes/s with K/M/G/T (0: none)"""  # noqa: E501
        # the request is the handler's own arguments, by name (request.request_of;
        # tests/test_spec.py checks add, import and add-pool declare every option)
        req = request_of(locals())
        remote = self.remotes.image_source(source_spec)   # EOPNOTSUPP without support
        if remote is not None:
            return reply(self.importer.add_remote(remote, dest_spec, req), _text(format))
        return reply(self.commands.add(source_spec, dest_spec, req), _text(format))

    @CLI.write('rbd livemigrate import')
    @handle_errors
    def import_image(self, dest_spec: str, object_size: Optional[str] = None,
                     stripe_unit: Optional[str] = None, stripe_count: Optional[int] = None,
                     features: Optional[str] = None, data_pool: Optional[str] = None,
                     manual_commit: bool = False, priority: int = 0,
                     bandwidth_limit: Optional[str] = None, dry_run: bool = False,
                     format: Optional[ReplyFormat] = ReplyFormat.plain,
                     inbuf: Optional[str] = None) -> Any:
        """Import an image into dest_spec from the source-spec JSON given with -i <source-spec.json> (raw or qcow over file, http or s3); priority -1000..1000, bandwidth_limit bytes/s"""  # noqa: E501
        return reply(self.importer.add(dest_spec, inbuf, request_of(locals())), _text(format))

    @CLI.write('rbd livemigrate add-pool')
    @handle_errors
    def add_pool(self, source_pool_spec: str, dest_pool_spec: str,
                 pattern: Optional[str] = None,
                 object_size: Optional[str] = None, stripe_unit: Optional[str] = None,
                 stripe_count: Optional[int] = None, features: Optional[str] = None,
                 data_pool: Optional[str] = None, flatten: bool = False,
                 manual_commit: bool = False, allow_descendants: bool = False,
                 priority: int = 0, bandwidth_limit: Optional[str] = None,
                 dry_run: bool = False, manual_cutover: bool = False,
                 verify: Optional[VerifyChoice] = None,
                 format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """Live-migrate every image of a pool[/namespace] (or remote:pool[/namespace] of a registered remote, or those matching --pattern GLOB) to another, as one batch (returns at once)"""  # noqa: E501
        req = request_of(locals())
        remote = self.remotes.pool_source(source_pool_spec)   # EOPNOTSUPP without support
        if remote is not None:
            return reply(self.commands.batches.add_remote_pool(remote, dest_pool_spec, pattern,
                                                               req), _text(format))
        return reply(self.commands.add_pool(source_pool_spec, dest_pool_spec, pattern, req),
                     _text(format))

    @CLI.read('rbd livemigrate ls')
    @handle_errors
    def ls(self, format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """List migration tasks (oldest first) and migrations that have no task"""
        return self.commands.ls(_text(format))

    @CLI.read('rbd livemigrate status')
    @handle_errors
    def status(self, task_or_image: str,
               format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """Show one task (by task id or image spec) or a batch (by batch id)"""
        return self.commands.status(task_or_image, _text(format))

    @CLI.write('rbd livemigrate cancel')
    @handle_errors
    def cancel(self, task_id: str,
               format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """Cancel a task (dequeue it, or abort its migration and restore the source) or every task of a batch"""  # noqa: E501
        return reply(self.commands.cancel(task_id), _text(format))

    @CLI.write('rbd livemigrate commit')
    @handle_errors
    def commit(self, task_id: str,
               format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """Commit a --manual-commit task that is executed"""
        return reply(self.commands.commit(task_id), _text(format))

    @CLI.write('rbd livemigrate cutover')
    @handle_errors
    def cutover(self, task_id: str,
                format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """Prepare a queued task now (its clients must have closed the source); returns the task with cutover_ms, or EBUSY naming the clients"""  # noqa: E501
        return reply(self.commands.cutover(task_id), _text(format))

    @CLI.write('rbd livemigrate retry')
    @handle_errors
    def retry(self, task_id: str,
              format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """Queue a failed task again"""
        return reply(self.commands.retry(task_id), _text(format))

    @CLI.write('rbd livemigrate pause')
    @handle_errors
    def pause(self, task_id: Optional[str] = None,
              format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """Pause one task or batch, or the whole queue without an id"""
        return reply(self.commands.pause(task_id, True), _text(format))

    @CLI.write('rbd livemigrate resume')
    @handle_errors
    def resume(self, task_id: Optional[str] = None,
               format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """Resume one task or batch, or the whole queue without an id"""
        return reply(self.commands.pause(task_id, False), _text(format))

    @CLI.write('rbd livemigrate rm')
    @handle_errors
    def rm(self, task_id: Optional[str] = None, finished: bool = False,
           format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """Remove a committed or aborted task, a finished batch, or every finished task (--finished) from the history"""  # noqa: E501
        return reply(self.commands.forget(task_id, finished), _text(format))

    @CLI.write('rbd livemigrate adopt')
    @handle_errors
    def adopt(self, image_spec: str,
              format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """Make a task of a migration (its target image spec) that no task knows"""
        return reply(self.commands.adopt(image_spec), _text(format))

    @CLI.write('rbd livemigrate remote add')
    @handle_errors
    def remote_add(self, remote_name: str, mon_host: str, client_name: Optional[str] = None,
                   format: Optional[ReplyFormat] = ReplyFormat.plain,
                   inbuf: Optional[str] = None) -> Any:
        """Register another cluster to move images from: remote add <name> <mon_host> [--client-name client.X] -i <keyring> (checked by connecting)"""  # noqa: E501
        # the keyring comes as inbuf (-i), never as an argument: the audit logs never see it
        self.operator_only('registering a remote cluster')
        return remotes_reply(self.remotes.add_remote(remote_name, mon_host, client_name, inbuf),
                             _text(format))

    @CLI.read('rbd livemigrate remote ls')
    @handle_errors
    def remote_ls(self, format: Optional[ReplyFormat] = ReplyFormat.plain) -> Any:
        """List registered remote clusters (never their keys)"""
        return remotes_reply(self.remotes.ls(), _text(format))

    @CLI.write('rbd livemigrate remote rm')
    @handle_errors
    def remote_rm(self, remote_name: str) -> Any:
        """Forget a remote cluster (EBUSY while a task uses it)"""
        self.operator_only('removing a remote cluster')
        self.remotes.rm(remote_name)
        return 0, '', ''
