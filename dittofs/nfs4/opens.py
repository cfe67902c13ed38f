"""NFSv4.1 opens, share reservations and byte-range locks (RFC 8881 sections 9, 18.2,
18.10-18.12, 18.16, 18.18, 18.38, 18.48): the operations that make or use state."""

from __future__ import annotations

import time
from typing import Any

import attrs

from dittofs import filesystem as fs
from dittofs.access import EXECUTE, READ, WRITE, require
from dittofs.errors import NFSError
from dittofs.exports import Export
from dittofs.model import Attributes, SetAttributes, WccAttributes
from dittofs.nfs4 import args as a
from dittofs.nfs4.compound import CompoundState
from dittofs.nfs4.const import (
    EXCLUSIVE4,
    EXCLUSIVE4_1,
    GUARDED4,
    OPEN4_RESULT_LOCKTYPE_POSIX,
    OPEN4_SHARE_ACCESS_MASK,
    OPEN4_SHARE_ACCESS_READ,
    OPEN4_SHARE_ACCESS_WRITE,
    OPEN_DELEGATE_NONE,
    UNCHECKED4,
    Attr,
    Claim,
    LockType,
    Stat4,
)
from dittofs.nfs4.errors import NFS4Error
from dittofs.nfs4.fattr import (
    EXCLUSIVE_CREATE_ATTRS,
    SETTABLE,
    decode_settable,
    encode_bitmap,
)
from dittofs.nfs4.files import FileOperations, check_component, encode_change_info, encode_stateid
from dittofs.nfs4.state import (
    LockState,
    OpenState,
    lock_range,
)
from dittofs.rpc.message import Credentials
from dittofs.rpc.xdr import XdrWriter
from dittofs.vocabulary import CreateMode, FileType, Status


class StateOperations(FileOperations):
    """The operations over :class:`~dittofs.nfs4.state.StateTable`'s opens and locks."""

    # -- 18.16, 18.2, 18.18, 18.49: opens and delegations ----

    async def open(self, args: a.OpenArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.16: open (and perhaps create) a regular file, with a share reservation."""
        access = args.share_access & OPEN4_SHARE_ACCESS_MASK
        if not access or access & ~3 or args.share_deny & ~3:
            raise NFSError(Status.INVAL, "bad share access or deny")
        self._check_claim(args, c)
        attrset: list[int] = []
        truncate: int | None = None
        if args.claim in (Claim.FH, Claim.PREVIOUS):
            if args.create:
                raise NFSError(Status.INVAL, "only CLAIM_NULL can create")
            export, attributes = await self._open_target(c)
            cinfo = None
        else:
            check_component(args.name)
            export, directory = await self._resolve_dir(c, change=args.create)
            caller = self._caller(export, c)
            if args.create:
                created, attrset, truncate = await self._open_create(
                    export, directory, args, caller
                )
                attributes, cinfo = created.node, created.directory
                fresh = not created.existed
            else:
                require(directory, caller, EXECUTE)
                attributes = await export.metadata.lookup(directory.fileid, args.name)
                cinfo = WccAttributes(directory, directory)
                fresh = False
            _check_openable(attributes)
            if not fresh:
                _require_open(export, attributes, caller, access)
        if args.claim in (Claim.FH, Claim.PREVIOUS):
            _check_openable(attributes)
            _require_open(export, attributes, self._caller(export, c), access)
        caller = self._caller(export, c)
        if truncate is not None:
            # O_TRUNC: checked as SETATTR checks a size change, before anything changes.
            require(attributes, caller, WRITE, owner_override=True)
        key = (export.export_id, attributes.fileid)
        opened = self.state.open(args.owner, key, access, args.share_deny)
        if truncate is not None and truncate != attributes.size:
            # Only once the share reservations let this open in (section 18.16.4).
            changed = SetAttributes(size=truncate)
            wcc = await fs.setattr(export, attributes, changed, client_times=False, caller=caller)
            attributes = wcc.after
        self._set_current(c, export.handle(attributes))
        c.current_stateid = a.StateId(opened.seqid, opened.other)
        writer = XdrWriter()
        encode_stateid(writer, opened.seqid, opened.other)
        encode_change_info(writer, cinfo or WccAttributes(attributes, attributes))
        writer.uint(OPEN4_RESULT_LOCKTYPE_POSIX)
        encode_bitmap(writer, attrset)
        writer.uint(OPEN_DELEGATE_NONE)
        return writer

    def _check_claim(self, args: a.OpenArgs, c: CompoundState) -> None:
        """Whose open, and what it claims: a reclaim only in the grace period, a new
        open only after it, and never a delegation's claim (none are granted)."""
        client = self._session(c).client
        if args.owner[0] != client.clientid:
            raise NFS4Error(Stat4.STALE_CLIENTID, "open owner of another client")
        if args.claim == Claim.PREVIOUS:
            # A reclaim after a restart (section 8.4.2.1): the current handle is the file.
            self.state.check_reclaim(client)
            if args.delegate_type != OPEN_DELEGATE_NONE:
                raise NFS4Error(Stat4.RECLAIM_BAD, "no delegation was ever granted")
        elif args.claim in (Claim.NULL, Claim.FH):
            self.state.check_not_grace()
        else:
            raise NFSError(Status.NOTSUPP, "no delegations are granted")

    async def _open_target(self, c: CompoundState) -> tuple[Export, Attributes]:
        if self._pseudo(c) is not None:
            raise NFSError(Status.ISDIR)
        return await self._resolve(c)

    async def _open_create(
        self, export: Export, directory: Attributes, args: a.OpenArgs, caller: Credentials
    ) -> tuple[Any, list[int], int | None]:
        """Create the file an OPEN names: UNCHECKED, GUARDED or EXCLUSIVE (with a verifier).

        An UNCHECKED create's size is not applied here but returned, for the
        OPEN to apply once its permission and share reservation are checked:
        an existing file must not be cut by an open that is then refused.
        """
        if export.policy.read_only:
            raise NFSError(Status.ROFS)
        changes = SetAttributes()
        asked: frozenset[int] = frozenset()
        if args.attributes is not None:
            allowed = EXCLUSIVE_CREATE_ATTRS if args.how == EXCLUSIVE4_1 else SETTABLE
            changes, _ = decode_settable(args.attributes, time.time_ns(), allowed)
            asked = args.attributes.mask
        truncate = None
        if args.how == UNCHECKED4 and changes.size is not None:
            truncate, changes = changes.size, attrs.evolve(changes, size=None)
        how = {EXCLUSIVE4: CreateMode.EXCLUSIVE, EXCLUSIVE4_1: CreateMode.EXCLUSIVE}.get(
            args.how, CreateMode.GUARDED if args.how == GUARDED4 else CreateMode.UNCHECKED
        )
        created = await fs.make(
            export,
            directory,
            args.name,
            caller,
            file_type=FileType.REG,
            default_mode=0o644,
            attributes=changes,
            how=how,
            verifier=args.verifier if how == CreateMode.EXCLUSIVE else b"",
        )
        if created.existed:
            if created.node.type != FileType.REG:
                _check_openable(created.node)
            asked = frozenset({Attr.SIZE}) & asked if how == CreateMode.UNCHECKED else frozenset()
        return created, sorted(asked), truncate

    async def close(self, args: a.CloseArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.2: the open ends (with any locks its owner's lock owners hold)."""
        export, attributes = await self._resolve_file(c)
        opened = self._open_state(c, args.stateid, (export.export_id, attributes.fileid))
        self.state.close(opened)
        writer = XdrWriter()
        encode_stateid(writer, opened.seqid + 1, opened.other)
        c.current_stateid = a.StateId(opened.seqid + 1, opened.other)
        return writer

    async def open_downgrade(self, args: a.DowngradeArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.18: keep less of an open's access and deny."""
        export, attributes = await self._resolve_file(c)
        opened = self._open_state(c, args.stateid, (export.export_id, attributes.fileid))
        self.state.downgrade(opened, args.share_access & OPEN4_SHARE_ACCESS_MASK, args.share_deny)
        writer = XdrWriter()
        encode_stateid(writer, opened.seqid, opened.other)
        c.current_stateid = a.StateId(opened.seqid, opened.other)
        return writer

    def _open_state(self, c: CompoundState, stateid: a.StateId, key: tuple[int, int]) -> OpenState:
        state = self.state.find(self._stateid_of(c, stateid), key, self._clientid(c))
        if not isinstance(state, OpenState):
            raise NFS4Error(Stat4.BAD_STATEID, "not an open stateid")
        return state

    async def delegreturn(self, stateid: a.StateId, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.6: no delegation is ever granted, so none can be returned."""
        self._current(c)
        raise NFS4Error(Stat4.BAD_STATEID, "no delegations are granted")

    async def test_stateid(self, stateids: list[a.StateId], c: CompoundState) -> XdrWriter:
        """RFC 8881 18.48: the status of each stateid."""
        writer = XdrWriter()
        writer.uint(len(stateids))
        for stateid in stateids:
            writer.uint(self.state.test(stateid, self._clientid(c)))
        return writer

    async def free_stateid(self, stateid: a.StateId, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.38: forget a lock stateid that holds no locks."""
        self.state.free(self._stateid_of(c, stateid), self._clientid(c))
        return XdrWriter()

    # -- 18.10-18.12: byte-range locks ----

    async def lock(self, args: a.LockArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.10: take or change a byte-range lock; DENIED names the holder."""
        export, attributes = await self._resolve_file(c)
        key = (export.export_id, attributes.fileid)
        if args.reclaim:
            self.state.check_reclaim(self._session(c).client)
        else:
            self.state.check_not_grace()
        first, last = lock_range(args.offset, args.length)
        if args.new_owner:
            opened = self._open_state(c, args.stateid, key)
            if args.owner[0] != opened.owner[0]:
                raise NFS4Error(Stat4.BAD_STATEID, "lock owner of another client")
            locks = self.state.lock_state(opened, args.owner)
        else:
            found = self.state.find(self._stateid_of(c, args.stateid), key, self._clientid(c))
            if not isinstance(found, LockState):
                raise NFS4Error(Stat4.BAD_STATEID, "not a lock stateid")
            locks = found
        if args.type in (LockType.WRITE, LockType.WRITEW) and not (
            locks.open.access & OPEN4_SHARE_ACCESS_WRITE
        ):
            raise NFS4Error(Stat4.OPENMODE, "a write lock needs an open for writing")
        if args.type in (LockType.READ, LockType.READW) and not (
            locks.open.access & OPEN4_SHARE_ACCESS_READ
        ):
            raise NFS4Error(Stat4.OPENMODE, "a read lock needs an open for reading")
        self._refuse_conflict(key, locks.owner, first, last, args.type)
        self.state.apply_lock(locks, first, last, args.type)
        c.current_stateid = a.StateId(locks.seqid, locks.other)
        writer = XdrWriter()
        encode_stateid(writer, locks.seqid, locks.other)
        return writer

    def _refuse_conflict(
        self, key: tuple[int, int], owner: tuple[int, bytes], first: int, last: int, kind: LockType
    ) -> None:
        denied = self.state.conflict(key, owner, first, last, kind)
        if denied is None:
            return
        body = XdrWriter()
        body.uhyper(denied.offset)
        body.uhyper(denied.length)
        body.uint(denied.type)
        body.uhyper(denied.owner[0])
        body.opaque(denied.owner[1])
        raise NFS4Error(Stat4.DENIED, "a conflicting lock", body.getvalue())

    async def lockt(self, args: a.LocktArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.11: would this lock be granted?  DENIED names a holder if not."""
        self.state.check_not_grace()
        export, attributes = await self._resolve_file(c)
        first, last = lock_range(args.offset, args.length)
        self._refuse_conflict(
            (export.export_id, attributes.fileid), args.owner, first, last, args.type
        )
        return XdrWriter()

    async def locku(self, args: a.LockuArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.12: release a range of the owner's locks."""
        export, attributes = await self._resolve_file(c)
        found = self.state.find(
            self._stateid_of(c, args.stateid),
            (export.export_id, attributes.fileid),
            self._clientid(c),
        )
        if not isinstance(found, LockState):
            raise NFS4Error(Stat4.BAD_STATEID, "not a lock stateid")
        first, last = lock_range(args.offset, args.length)
        self.state.apply_lock(found, first, last, None)
        writer = XdrWriter()
        encode_stateid(writer, found.seqid, found.other)
        c.current_stateid = a.StateId(found.seqid, found.other)
        return writer


def _check_openable(attributes: Attributes) -> None:
    """OPEN opens regular files only (RFC 8881 section 18.16.3)."""
    if attributes.type == FileType.DIR:
        raise NFSError(Status.ISDIR)
    if attributes.type == FileType.LNK:
        raise NFS4Error(Stat4.SYMLINK)
    if attributes.type != FileType.REG:
        raise NFS4Error(Stat4.WRONG_TYPE)


def _require_open(export: Export, attributes: Attributes, caller: Credentials, access: int) -> None:
    """The permission an open for *access* needs (a file just created needs none)."""
    if access & OPEN4_SHARE_ACCESS_WRITE:
        if export.policy.read_only:
            raise NFSError(Status.ROFS)
        require(attributes, caller, WRITE)
    if access & OPEN4_SHARE_ACCESS_READ:
        require(attributes, caller, READ)
