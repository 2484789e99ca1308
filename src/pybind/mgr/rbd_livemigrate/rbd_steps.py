"""
The adapter's migration steps: librbd's calls, and the finishing of the
steps a crash cut short.

``Steps`` is the writing half of ``rbd_adapter.Adapter``.  Each step runs on
the client it is given (a copy on its own client, which ``blocklist`` can
stop).  librbd's ``migration_prepare/execute/commit/abort`` do the work;
where an interrupted step leaves a state librbd itself cannot leave
(``finish_commit``, ``finish_abort``, ``restore_source``, ``discard_dest``,
the snapshot trash an abort left), the same ``rbd`` object class calls
librbd would have made are made here, each checked right before.
"""

import logging
from typing import Any, Callable, Dict, List, Optional

import rados
import rbd

from .compat import prepare_takes_flatten
from .errors import InvalidArgument, NotFound, Transient
from .interface import (FEATURES, HeaderType, ImageInfo, Intent, MigrationHeader, MigState,
                        ProgressCallback, TrashSource, prepare_args)
from .interface import Client as ClientBase
from .rbd_clients import (ALL_ERRORS, RADOS_ERRORS, RBD_ERRORS, open_image, open_ioctx)
from .rbd_decode import (SNAP_NAMESPACE_TRASH, dir_add_image_arg, encode_str, header_oid,
                         id_oid, object_map_oid, snap_id_arg)
from .rbd_objects import (dir_lookup, header_exists, read_header, read_intent, remove_intent,
                          snapshot_ids, snapshot_record, trash_source, write_intent)
from .spec import ImageSpec, Layout

log = logging.getLogger(__name__)


def feature_mask(names: List[str]) -> int:
    mask = 0
    for n in names:
        if n not in FEATURES:
            raise InvalidArgument('unknown feature {!r}: use a comma list of {}'.format(
                n, ', '.join(sorted(FEATURES))))
        mask |= FEATURES[n]
    return mask


class Steps:
    """librbd's migration steps, and the finishing of interrupted ones."""

    # -- prepare -------------------------------------------------------

    def prepare(self, client: ClientBase, source: ImageSpec, dest: ImageSpec, layout: Layout,
                info: ImageInfo) -> None:
        args = prepare_args(layout, info)
        kwargs: Dict[str, Any] = {}
        if args.features is not None:
            kwargs['features'] = args.features
        if args.order is not None:
            kwargs['order'] = args.order
        if args.stripe_unit is not None:
            kwargs['stripe_unit'] = args.stripe_unit
            kwargs['stripe_count'] = args.stripe_count
        if args.data_pool is not None:
            # Pacific's binding passes data_pool straight to C: it wants bytes
            kwargs['data_pool'] = args.data_pool.encode()
        if args.flatten and prepare_takes_flatten(rbd.RBD.migration_prepare):
            kwargs['flatten'] = True          # Squid and later; else flatten() after commit
        with open_ioctx(client, source) as src_io, \
                open_ioctx(client, dest, 'prepare failed', RBD_ERRORS) as dst_io:
            rbd.RBD().migration_prepare(src_io, source.image, dst_io, dest.image, **kwargs)

    def prepare_import(self, client: ClientBase, source_spec: str, dest: ImageSpec,
                       layout: Layout) -> None:
        """``migration_prepare_import``: a new image with the layout asked
        (librbd's defaults for the rest; its object size is its stripe unit)."""
        kwargs: Dict[str, Any] = {}
        if layout.features is not None:
            kwargs['features'] = feature_mask(layout.features)
        if layout.object_size is not None:
            kwargs['order'] = layout.object_size.bit_length() - 1
        if layout.stripe_unit is not None or layout.stripe_count is not None:
            kwargs['stripe_unit'] = layout.stripe_unit or layout.object_size or (1 << 22)
            kwargs['stripe_count'] = layout.stripe_count or 1
        if layout.data_pool is not None:
            kwargs['data_pool'] = layout.data_pool.encode()
        with open_ioctx(client, dest, 'import prepare failed', RBD_ERRORS) as io:
            rbd.RBD().migration_prepare_import(source_spec, io, dest.image, **kwargs)

    # -- execute, commit, abort ----------------------------------------

    def _run(self, client: ClientBase, dest: ImageSpec, what: str,
             call: Callable[..., Any], on_progress: Optional[ProgressCallback]) -> None:
        def cb(offset: int, total: int) -> int:
            if on_progress is not None:
                on_progress(offset, total)
            return 0
        with open_ioctx(client, dest, '{} failed'.format(what), RBD_ERRORS) as io:
            call(io, dest.image, on_progress=cb)

    def execute(self, client: ClientBase, dest: ImageSpec,
                on_progress: Optional[ProgressCallback] = None) -> None:
        self._run(client, dest, 'execute', rbd.RBD().migration_execute, on_progress)

    def commit(self, client: ClientBase, dest: ImageSpec,
               on_progress: Optional[ProgressCallback] = None) -> None:
        self._run(client, dest, 'commit', rbd.RBD().migration_commit, on_progress)

    def abort(self, client: ClientBase, spec: ImageSpec,
              on_progress: Optional[ProgressCallback] = None) -> None:
        try:
            self._run(client, spec, 'abort', rbd.RBD().migration_abort, on_progress)
        except NotFound:
            # an abort cut while it removed the destination's snapshots leaves
            # one in the snapshot trash, and every later abort fails ENOENT on it
            if not self._purge_trashed_snaps(client, spec):
                raise
            self._run(client, spec, 'abort', rbd.RBD().migration_abort, on_progress)

    def _purge_trashed_snaps(self, client: ClientBase, spec: ImageSpec) -> int:
        """Finish the snapshot removals an interrupted abort left half done.

        librbd removes a snapshot by moving it to the snapshot trash
        namespace first, then dropping its object map, its RADOS snapshot
        id and its record.  Cut in between, the snapshot stays in the trash
        namespace and a new ``migration_abort`` asks to remove it by its
        user name, which fails ENOENT (Pacific, Reef).  The destination of
        an abort cannot be opened (EROFS) to remove it by id, so do those
        three steps here, only for trashed snapshots without clones, only
        on the destination of a migration being aborted.
        """
        purged = 0
        what = "cannot clean the snapshots of '{}'".format(spec)
        with open_ioctx(client, spec, what, RADOS_ERRORS) as io:
            image_id = dir_lookup(io, spec.image)
            if image_id is None:
                return 0
            header = read_header(io, image_id)
            if header is None or header.kind != HeaderType.DST or \
                    header.state != MigState.ABORTING:
                return 0
            oid = header_oid(image_id)
            for snap_id in snapshot_ids(io, oid):
                ns_type, children = snapshot_record(io, oid, snap_id)
                if ns_type != SNAP_NAMESPACE_TRASH or children:
                    continue
                log.warning("removing snapshot %d of '%s' (id %s) left in the snapshot trash by "
                            'an interrupted abort', snap_id, spec, image_id)
                try:
                    io.remove_object(object_map_oid(image_id, snap_id))
                except rados.ObjectNotFound:
                    pass
                try:
                    io.remove_self_managed_snap(snap_id)
                except rados.ObjectNotFound:
                    pass
                io.execute(oid, 'rbd', 'snapshot_remove', snap_id_arg(snap_id))
                purged += 1
        return purged

    # -- steps a crash cut short ---------------------------------------

    def finish_commit(self, client: ClientBase, source: ImageSpec, source_id: str,
                      dest: ImageSpec, header: Optional[MigrationHeader]) -> None:
        """Remove a source that an interrupted ``migration_commit`` left behind.

        librbd's commit removes the destination's migration header first,
        then the source's snapshots, the source and its trash entry, then
        re-enables mirroring on the destination.  Cut after the first step,
        the source stays in its pool's trash with its own migration header,
        and no public librbd call removes it: ``trash_remove`` opens the
        image read-write and librbd refuses that (EROFS) while a source
        header exists.  So clear that header with the ``rbd`` object class
        method ``migration_remove`` (what librbd itself calls), remove the
        snapshots commit had not reached, then the trash entry.
        """
        what = "cannot finish removing source '{}' (id {})".format(source, source_id)
        with open_ioctx(client, source, what, ALL_ERRORS) as io:
            if header_exists(io, source_id):
                if read_header(io, source_id) is not None:
                    io.execute(header_oid(source_id), 'rbd', 'migration_remove', b'')
                with rbd.Image(io, image_id=source_id) as image:
                    _remove_user_snaps(image)
            try:
                rbd.RBD().trash_remove(io, source_id, force=True)
            except rbd.ImageNotFound:
                pass
        if header is not None and header.mirroring:
            self._enable_mirroring(client, dest, header.mirror_image_mode)

    def finish_abort(self, client: ClientBase, source: ImageSpec, source_id: str,
                     header: Optional[MigrationHeader]) -> None:
        """Finish an abort cut at its last step.

        librbd's abort marks both headers aborting, removes the destination,
        puts the source back under its name (the trash entry goes last),
        re-enables mirroring, and only then removes the source's migration
        header.  Cut after the source is back, a new ``migration_abort``
        fails ENOENT (it looks for the trash entry) and the source cannot be
        opened (EROFS: it still has its header).  What is left is that last
        write, ``migration_remove``: checked right before that the source is
        named again, out of the trash and still marked aborting.
        """
        what = "cannot finish the abort of '{}' (id {})".format(source, source_id)
        with open_ioctx(client, source, what, RADOS_ERRORS) as io:
            h = read_header(io, source_id)
            if h is None:
                return                                    # done meanwhile
            if (h.kind != HeaderType.SRC or h.state != MigState.ABORTING
                    or dir_lookup(io, source.image) != source_id
                    or trash_source(io, source_id) is not None):
                raise Transient("'{}' (id {}) changed while its abort was being finished; "
                                'looking again'.format(source, source_id))
            log.warning("finishing an interrupted abort: removing the migration header of "
                        "'%s' (id %s)", source, source_id)
            io.execute(header_oid(source_id), 'rbd', 'migration_remove', b'')
        if header is not None and header.mirroring:
            self._enable_mirroring(client, source, header.mirror_image_mode)

    def restore_source(self, client: ClientBase, source: ImageSpec, source_id: str) -> None:
        """Put back a source a prepare moved to the trash before it wrote the
        source's migration header.

        Nothing of the migration exists yet, but librbd cannot restore the
        image: ``migration_abort`` finds no migration (EINVAL) and
        ``trash_restore`` refuses entries whose source is MIGRATION.  Do
        what ``trash_restore`` does, with the same ``rbd`` object class
        calls: the id object, the directory entry, then drop the trash
        entry.  Checked right before: still in the trash as a migration
        source, no migration header, and the name still free.
        """
        what = "cannot restore '{}' (id {}) from the trash".format(source, source_id)
        with open_ioctx(client, source, what, RADOS_ERRORS) as io:
            named = dir_lookup(io, source.image)
            if (trash_source(io, source_id) != TrashSource.MIGRATION
                    or not header_exists(io, source_id)
                    or read_header(io, source_id) is not None
                    or named not in (None, source_id)):
                raise Transient("'{}' (id {}) changed while being restored; looking "
                                'again'.format(source, source_id))
            log.warning("restoring '%s' (id %s) from the trash: a prepare was cut before it "
                        'wrote the migration header', source, source_id)
            with rados.WriteOpCtx() as op:          # as librbd: create, then set_id
                op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                op.execute('rbd', 'set_id', encode_str(source_id))
                try:
                    io.operate_write_op(op, id_oid(source.image))
                except rados.ObjectExists:
                    pass
            if named is None:       # the trash move may have stopped before unlinking
                io.execute('rbd_directory', 'rbd', 'dir_add_image',
                           dir_add_image_arg(source.image, source_id))
            io.execute('rbd_trash', 'rbd', 'trash_remove', encode_str(source_id))

    def discard_dest(self, client: ClientBase, dest: ImageSpec, dest_id: str) -> None:
        """Remove the destination of a prepare cut before it wrote the
        destination's migration header.

        librbd's abort cannot undo that state: through either name it fails
        EINVAL (the destination has no header), and in place EEXIST (the
        destination took the name).  The image holds only what prepare
        copied (the snapshots, not yet the data, which execute copies), so
        remove it, checked by id right before, then abort through the
        source.
        """
        what = "cannot remove the half-created destination '{}'".format(dest)
        with open_ioctx(client, dest, what, ALL_ERRORS) as io:
            try:
                if dir_lookup(io, dest.image) != dest_id or \
                        read_header(io, dest_id) is not None:
                    raise Transient("'{}' changed while being cleaned up; looking again".format(
                        dest))
                if header_exists(io, dest_id):
                    with rbd.Image(io, dest.image) as image:
                        if image.id() != dest_id:
                            raise Transient("'{}' is no longer id {}; looking again".format(
                                dest, dest_id))
                        _remove_user_snaps(image)
                # without a header object, librbd's remove drops the id object and
                # the directory entry create had written
                log.warning("removing '%s' (id %s): created by a prepare cut short",
                            dest, dest_id)
                rbd.RBD().remove(io, dest.image)
            except rbd.ImageNotFound:
                pass

    def _enable_mirroring(self, client: ClientBase, dest: ImageSpec, mode: int) -> None:
        """What commit's last step does when the source was mirrored."""
        with open_ioctx(client, dest) as io:
            try:
                with rbd.Image(io, dest.image) as image:
                    image.mirror_image_enable(mode)
            except rbd.InvalidArgument:
                pass                                  # already enabled (pool mode)
            except rbd.Error as e:
                log.warning("cannot re-enable mirroring on '%s': %s", dest, e)

    # -- the intent key ------------------------------------------------

    def mark_intent(self, client: ClientBase, spec: ImageSpec, image_id: str,
                    intent: Intent) -> None:
        """``rbd image-meta set`` of the intent key (``rbd_objects.write_intent``)."""
        what = "cannot mark '{}' (id {}) before the {}".format(spec, image_id, intent.step)
        with open_ioctx(client, spec, what, RADOS_ERRORS) as io:
            write_intent(io, image_id, intent)

    def clear_intent(self, client: ClientBase, spec: ImageSpec, image_id: str,
                     task_id: str) -> bool:
        what = "cannot clear the mark on '{}' (id {})".format(spec, image_id)
        with open_ioctx(client, spec, what, RADOS_ERRORS) as io:
            try:
                intent = read_intent(io, image_id)
                if intent is None or intent.task_id != task_id:
                    return False
                remove_intent(io, image_id)
                return True
            except rados.ObjectNotFound:
                return False

    # -- after commit --------------------------------------------------

    def flatten(self, client: ClientBase, dest: ImageSpec) -> bool:
        """Flatten a committed clone (``--flatten``); False if it has no parent."""
        with open_image(client, dest, "flatten of '{}' failed".format(dest)) as image:
            try:
                image.parent_id()
            except rbd.ImageNotFound:
                return False
            image.flatten()
            return True


def _remove_user_snaps(image: 'rbd.Image') -> None:
    """Remove every user snapshot of ``image``, unprotecting it first."""
    for snap in image.list_snaps():
        if snap.get('namespace', 0) != 0:     # trash/group snapshots
            continue
        if image.is_protected_snap(snap['name']):
            image.unprotect_snap(snap['name'])
        image.remove_snap(snap['name'])
