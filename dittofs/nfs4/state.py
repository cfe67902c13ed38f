"""NFSv4.1 client, session, open and lock state (RFC 8881 sections 2.10, 8 and 9), sans-IO.

One :class:`StateTable` per server process holds every client (EXCHANGE_ID),
its sessions (CREATE_SESSION) with their slot tables, and the open and lock
state of its files.  Nothing here touches a store or the network: the
service asks and is answered, and time comes from the ``clock`` it is given,
so tests drive leases with a fake clock.

- **Leases.** Every SEQUENCE renews its client's lease.  A client whose lease
  has run out keeps its state until another client needs it (a conflicting
  OPEN or LOCK): then all of that client's state goes, and its next call
  learns that its session is gone.  Clients that are long expired are
  dropped whenever a new client arrives, so memory stays bounded.
- **Identifiers.** Client ids, session ids and stateids carry the server
  instance's ``boot`` number, so those of an earlier instance are recognised
  as stale, not mistaken for others.
- **Limits.** At most :data:`MAX_CLIENTS` clients, :data:`MAX_SESSIONS`
  sessions each, :data:`MAX_SLOTS` slots a session, and
  :data:`MAX_STATES` opens and lock states in all: past them a request is
  NFS4ERR_RESOURCE, never an unbounded table.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable, Iterator

import attrs

from dittofs.errors import NFSError
from dittofs.nfs4.args import ChannelAttrs, StateId
from dittofs.nfs4.const import OPEN4_SHARE_ACCESS_WRITE, LockType, Stat4
from dittofs.nfs4.errors import NFS4Error
from dittofs.vocabulary import Status

MAX_CLIENTS = 4096
MAX_SESSIONS = 16
MAX_SLOTS = 64
MAX_STATES = 100_000
#: Bytes of kept COMPOUND replies, every slot of every session together.
MAX_CACHED_BYTES = 64 * 1024 * 1024
#: Separate ranges one lock owner may hold on one file.
MAX_RANGES = 1024
#: A lock range reaching the end of any file.
END = 2**64 - 1
ALL_ONES = 2**64 - 1
#: A client expired this many leases ago is dropped when a new one arrives.
FORGET_AFTER_LEASES = 4

#: ``(export id, file id)``: the file an open or a lock is on.
FileKey = tuple[int, int]
#: ``(client id, opaque owner)``: an open owner or a lock owner.
Owner = tuple[int, bytes]

ANONYMOUS = StateId(0, bytes(12))
READ_BYPASS = StateId(0xFFFFFFFF, b"\xff" * 12)
CURRENT = StateId(1, bytes(12))


@attrs.define(eq=False)
class Slot:
    """One slot of a session's table: the last sequence id and its reply, if kept."""

    seqid: int = 0
    #: The whole COMPOUND reply of ``seqid``, when the client asked it to be kept.
    reply: list[bytes] | None = None
    #: True while the request of ``seqid`` runs (a retry then waits: DELAY).
    busy: bool = False


@attrs.define(eq=False)
class Session:
    """A session (section 2.10): its id, client, slot table and channels."""

    sessionid: bytes
    client: Client
    fore: ChannelAttrs
    back: ChannelAttrs
    slots: list[Slot]
    back_channel: bool


@attrs.define(eq=False)
class Client:
    """A client known by EXCHANGE_ID: confirmed once it creates its first session."""

    clientid: int
    owner: bytes
    verifier: bytes
    renewed: float
    confirmed: bool = False
    #: The sequence of CREATE_SESSION (``eir_sequenceid``) and the last one's reply.
    create_seq: int = 1
    create_reply: Session | None = None
    sessions: dict[bytes, Session] = attrs.field(factory=dict)
    reclaim_complete: bool = False
    states: set[bytes] = attrs.field(factory=set)


@attrs.define(eq=False)
class OpenState:
    """An open: one open owner's access to one file, and its share reservation."""

    other: bytes
    seqid: int
    owner: Owner
    file: FileKey
    access: int
    deny: int
    locks: set[bytes] = attrs.field(factory=set)


@attrs.define(eq=False)
class LockState:
    """One lock owner's byte-range locks on one file: ``(first, last, type)`` each."""

    other: bytes
    seqid: int
    owner: Owner
    file: FileKey
    open: OpenState
    ranges: list[tuple[int, int, LockType]] = attrs.field(factory=list)


@attrs.frozen
class Denied:
    """A conflicting lock, as LOCK4denied reports it."""

    offset: int
    length: int
    type: LockType
    owner: Owner


State = OpenState | LockState


def lock_range(offset: int, length: int) -> tuple[int, int]:
    """The first and last byte of a LOCK range; INVAL for an empty or overflowing one."""
    if length == 0:
        raise _inval("a lock of no bytes")
    if length == ALL_ONES:
        return offset, END
    last = offset + length - 1
    if last > END:
        raise _inval("offset + length overflows")
    return offset, last


def _inval(detail: str) -> NFSError:
    return NFSError(Status.INVAL, detail)


def _is_write(kind: LockType) -> bool:
    return kind in (LockType.WRITE, LockType.WRITEW)


class StateTable:
    """Every client, session and open and lock state of one server instance."""

    def __init__(
        self,
        lease_time: int,
        clock: Callable[[], float],
        boot: int | None = None,
        *,
        previous: frozenset[bytes] = frozenset(),
        recorded: Callable[[frozenset[bytes]], None] | None = None,
    ):
        """*previous* are the owners of the clients the last instance served (its
        record): they may reclaim during a grace period of one lease.  *recorded* is
        told the owners to record whenever they change (confirmed clients, and those
        of *previous* that have not finished reclaiming)."""
        self.lease_time = lease_time
        self._clock = clock
        #: Distinguishes this instance's ids from an earlier one's.
        self.boot = boot if boot is not None else struct.unpack(">I", os.urandom(4))[0]
        self._ids = itertools.count(1)
        self._clients: dict[int, Client] = {}
        self._by_owner: dict[bytes, Client] = {}
        self._sessions: dict[bytes, Session] = {}
        self._states: dict[bytes, State] = {}
        self._files: dict[FileKey, list[OpenState]] = {}
        #: Bytes of COMPOUND replies the slots keep, all sessions together.
        self.cached_bytes = 0
        self._reclaimable = set(previous)
        self._grace_until = clock() + lease_time if previous else 0.0
        self._recorded = recorded
        self._last_record = frozenset(previous)

    # -- the grace period (section 8.4.2) -----------------------------------------------------

    def in_grace(self) -> bool:
        """Whether clients of the last instance may still reclaim (and others must wait).

        One lease after the start, or as soon as every client of the last
        instance has said RECLAIM_COMPLETE.
        """
        if self._reclaimable and self._clock() < self._grace_until:
            return True
        self._reclaimable.clear()
        return False

    def check_reclaim(self, client: Client) -> None:
        """May *client* reclaim an open or a lock now?  NO_GRACE after the grace period,
        RECLAIM_BAD for a client the last instance did not serve or that said it was done."""
        if not self.in_grace():
            raise NFS4Error(Stat4.NO_GRACE, "the grace period is over (or there was none)")
        if client.owner not in self._reclaimable or client.reclaim_complete:
            raise NFS4Error(Stat4.RECLAIM_BAD, "this client has nothing to reclaim")

    def check_not_grace(self) -> None:
        """New opens and locks wait while earlier clients reclaim theirs (NFS4ERR_GRACE)."""
        if self.in_grace():
            raise NFS4Error(Stat4.GRACE, "clients of the last start are reclaiming")

    def reclaim_complete(self, client: Client) -> None:
        """RECLAIM_COMPLETE: *client* has reclaimed what it will."""
        if client.reclaim_complete:
            raise NFS4Error(Stat4.COMPLETE_ALREADY)
        client.reclaim_complete = True
        self._reclaimable.discard(client.owner)
        self._record()

    def _record(self) -> None:
        """Tell *recorded* the owners to remember, when they changed."""
        owners = frozenset(c.owner for c in self._clients.values() if c.confirmed)
        owners |= self._reclaimable
        if owners != self._last_record and self._recorded is not None:
            self._recorded(owners)
        self._last_record = owners

    # -- identifiers ----------------------------------------------------------------

    def _new_clientid(self) -> int:
        return self.boot << 32 | next(self._ids) & 0xFFFFFFFF

    def _new_other(self) -> bytes:
        """A stateid's ``other``: this instance's boot number, then 8 random bytes (so that
        one client cannot guess another's stateids, which are also checked to be its own)."""
        return struct.pack(">I", self.boot) + os.urandom(8)

    # -- clients (section 18.35) ---------------------------------------------------------

    def exchange_id(self, owner: bytes, verifier: bytes, update: bool) -> Client:
        """Find or make the client record of *owner* (RFC 8881 section 18.35.5).

        A confirmed client with the same verifier is the same incarnation: it
        is returned as it is.  A new verifier means the client restarted: a
        new unconfirmed record is made, and the old one (with its state) goes
        when the new one creates its first session.
        """
        now = self._clock()
        self._forget_expired(now)
        known = self._by_owner.get(owner)
        if known is not None and known.confirmed and known.verifier == verifier:
            return known
        if update:
            # An update of a record that does not exist, or of another incarnation.
            if known is None or not known.confirmed:
                raise NFSError(Status.NOENT, "no confirmed client record to update")
            raise NFS4Error(Stat4.NOT_SAME, "the client's verifier changed")
        if len(self._clients) >= MAX_CLIENTS:
            raise NFS4Error(Stat4.RESOURCE, "too many clients")
        if known is not None and not known.confirmed:
            self._drop_client(known)
        client = Client(self._new_clientid(), owner, verifier, now)
        self._clients[client.clientid] = client
        if known is None or not known.confirmed:
            self._by_owner[owner] = client
        return client

    def client(self, clientid: int) -> Client:
        """The client of *clientid*: STALE_CLIENTID for one this instance never made."""
        client = self._clients.get(clientid)
        if client is None:
            raise NFS4Error(Stat4.STALE_CLIENTID, f"client {clientid:#x}")
        return client

    def destroy_client(self, clientid: int) -> None:
        """DESTROY_CLIENTID (section 18.50): only a client with no sessions or state."""
        client = self.client(clientid)
        if client.sessions or client.states:
            raise NFS4Error(Stat4.CLIENTID_BUSY)
        self._drop_client(client)

    def _drop_client(self, client: Client) -> None:
        for session in list(client.sessions.values()):
            self._sessions.pop(session.sessionid, None)
            for slot in session.slots:
                self.keep_reply(slot, None)
        client.sessions.clear()
        for other in list(client.states):
            state = self._states.get(other)
            if isinstance(state, OpenState):
                self._drop_open(state)
            elif isinstance(state, LockState):
                self._drop_lock(state)
        client.states.clear()
        self._clients.pop(client.clientid, None)
        if self._by_owner.get(client.owner) is client:
            del self._by_owner[client.owner]
        self._record()

    def _expired(self, client: Client, now: float) -> bool:
        return now - client.renewed > self.lease_time

    def _forget_expired(self, now: float) -> None:
        limit = self.lease_time * FORGET_AFTER_LEASES
        for client in list(self._clients.values()):
            if now - client.renewed > (limit if client.confirmed else self.lease_time):
                self._drop_client(client)

    # -- sessions (sections 18.36, 18.37, 18.46) -----------------------------------------

    def create_session(
        self,
        clientid: int,
        sequence: int,
        fore: ChannelAttrs,
        back: ChannelAttrs,
        back_channel: bool,
    ) -> tuple[Session, bool]:
        """CREATE_SESSION: a new session, or the last one again for a retry.

        Returns the session and whether it is a replay.  The first session
        confirms the client, and drops an earlier incarnation of it.
        """
        client = self.client(clientid)
        if sequence == client.create_seq - 1 and client.create_reply is not None:
            return client.create_reply, True
        if sequence != client.create_seq:
            raise NFS4Error(Stat4.SEQ_MISORDERED, f"sequence {sequence}, not {client.create_seq}")
        if len(client.sessions) >= MAX_SESSIONS:
            raise NFS4Error(Stat4.RESOURCE, "too many sessions")
        if not client.confirmed:
            earlier = self._by_owner.get(client.owner)
            if earlier is not None and earlier is not client:
                self._drop_client(earlier)
            self._by_owner[client.owner] = client
            client.confirmed = True
            self._record()
        sessionid = struct.pack(">Q", clientid) + os.urandom(8)
        slots = [Slot() for _ in range(max(1, min(fore.max_requests, MAX_SLOTS)))]
        session = Session(sessionid, client, fore, back, slots, back_channel)
        client.sessions[sessionid] = session
        self._sessions[sessionid] = session
        client.create_seq += 1
        client.create_reply = session
        client.renewed = self._clock()
        return session, False

    def session(self, sessionid: bytes) -> Session:
        """The session of *sessionid*: BADSESSION for one that does not exist (any more)."""
        session = self._sessions.get(sessionid)
        if session is None:
            raise NFS4Error(Stat4.BADSESSION)
        return session

    def destroy_session(self, sessionid: bytes) -> None:
        """DESTROY_SESSION (section 18.37)."""
        session = self.session(sessionid)
        del self._sessions[sessionid]
        for slot in session.slots:
            self.keep_reply(slot, None)
        session.client.sessions.pop(sessionid, None)

    def keep_reply(self, slot: Slot, parts: list[bytes] | None) -> None:
        """Keep *parts* as *slot*'s reply, if the budget for kept replies allows it
        (:data:`MAX_CACHED_BYTES` in all); a retry of one not kept is RETRY_UNCACHED_REP."""
        if slot.reply is not None:
            self.cached_bytes -= sum(map(len, slot.reply))
        size = sum(map(len, parts)) if parts is not None else 0
        if parts is not None and self.cached_bytes + size <= MAX_CACHED_BYTES:
            slot.reply = parts
            self.cached_bytes += size
        else:
            slot.reply = None

    def renew(self, client: Client) -> None:
        """A SEQUENCE of *client* arrived: its lease starts again."""
        client.renewed = self._clock()

    # -- opens (sections 9.7, 18.16, 18.18, 18.2) ------------------------------------------

    def open(self, owner: Owner, file: FileKey, access: int, deny: int) -> OpenState:
        """Open *file* for *owner*, or widen the owner's open of it (an upgrade).

        SHARE_DENIED when another owner's open denies what is asked, or asks
        what is now to be denied.
        """
        client = self.client(owner[0])
        opens = self._files.get(file, [])
        for other in self._conflicting_opens(opens, owner, access, deny):
            raise NFS4Error(Stat4.SHARE_DENIED, f"open {other.other.hex()} conflicts")
        for state in opens:
            if state.owner == owner:
                state.access |= access
                state.deny |= deny
                state.seqid += 1
                return state
        self._room()
        state = OpenState(self._new_other(), 1, owner, file, access, deny)
        self._files.setdefault(file, []).append(state)
        self._states[state.other] = state
        client.states.add(state.other)
        return state

    def _conflicting_opens(
        self, opens: list[OpenState], owner: Owner, access: int, deny: int
    ) -> Iterator[OpenState]:
        for other in list(opens):
            if other.owner == owner:
                continue
            if access & other.deny or deny & other.access:
                holder = self._clients.get(other.owner[0])
                if holder is not None and self._expired(holder, self._clock()):
                    self._drop_client(holder)
                    continue
                yield other

    def downgrade(self, state: OpenState, access: int, deny: int) -> None:
        """OPEN_DOWNGRADE: keep only *access* and *deny*, which must be held already."""
        if access & ~state.access or deny & ~state.deny or not access:
            raise _inval("a downgrade may only drop access or deny bits")
        state.access, state.deny = access, deny
        state.seqid += 1

    def close(self, state: OpenState) -> None:
        """CLOSE: the open goes, with any locks taken under it."""
        self._drop_open(state)
        client = self._clients.get(state.owner[0])
        if client is not None:
            client.states.discard(state.other)

    def _drop_open(self, state: OpenState) -> None:
        for other in list(state.locks):
            lock = self._states.get(other)
            if isinstance(lock, LockState):
                self._drop_lock(lock)
        self._states.pop(state.other, None)
        opens = self._files.get(state.file)
        if opens is not None and state in opens:
            opens.remove(state)
            if not opens:
                del self._files[state.file]

    def _drop_lock(self, lock: LockState) -> None:
        self._states.pop(lock.other, None)
        lock.open.locks.discard(lock.other)
        client = self._clients.get(lock.owner[0])
        if client is not None:
            client.states.discard(lock.other)

    def _room(self) -> None:
        if len(self._states) >= MAX_STATES:
            raise NFS4Error(Stat4.RESOURCE, "too many opens and locks")

    # -- stateids (section 8.2) -----------------------------------------------------------

    def find(self, stateid: StateId, file: FileKey, clientid: int) -> State:
        """The open or lock state *stateid* names on *file* for the client *clientid*
        (seqid 0: whatever is current).  Another client's stateid is BAD_STATEID."""
        state = self._states.get(stateid.other)
        if state is not None and state.owner[0] != clientid:
            raise NFS4Error(Stat4.BAD_STATEID, "a stateid of another client")
        if state is None:
            if stateid.other[:4] != struct.pack(">I", self.boot):
                raise NFS4Error(Stat4.STALE_STATEID)
            raise NFS4Error(Stat4.BAD_STATEID)
        if state.file != file:
            raise NFS4Error(Stat4.BAD_STATEID, "stateid of another file")
        if stateid.seqid and stateid.seqid != state.seqid:
            raise NFS4Error(Stat4.OLD_STATEID if stateid.seqid < state.seqid else Stat4.BAD_STATEID)
        return state

    def test(self, stateid: StateId, clientid: int) -> Stat4 | Status:
        """TEST_STATEID's answer for one stateid of client *clientid* (section 18.48)."""
        state = self._states.get(stateid.other)
        if state is None or state.owner[0] != clientid:
            return Stat4.BAD_STATEID
        if stateid.seqid and stateid.seqid != state.seqid:
            return Stat4.OLD_STATEID if stateid.seqid < state.seqid else Stat4.BAD_STATEID
        return Status.OK

    def free(self, stateid: StateId, clientid: int) -> None:
        """FREE_STATEID (section 18.38): a lock state without locks; never an open."""
        state = self._states.get(stateid.other)
        if state is None or state.owner[0] != clientid:
            raise NFS4Error(Stat4.BAD_STATEID)
        if isinstance(state, OpenState) or state.ranges:
            raise NFS4Error(Stat4.LOCKS_HELD)
        self._drop_lock(state)

    def check_io(self, stateid: StateId, file: FileKey, write: bool, clientid: int) -> None:
        """May a READ or WRITE (or a size change) with *stateid* go ahead on *file*?

        The anonymous stateids pass unless a share reservation denies the
        access; a WRITE needs an open for writing (OPENMODE otherwise).
        """
        if stateid in (ANONYMOUS, READ_BYPASS):
            wanted = OPEN4_SHARE_ACCESS_WRITE if write else 1
            if stateid == ANONYMOUS or write:
                for other in self._conflicting_opens(
                    self._files.get(file, []), (0, b""), wanted, 0
                ):
                    raise NFS4Error(Stat4.LOCKED, f"open {other.other.hex()} denies it")
            return
        state = self.find(stateid, file, clientid)
        opened = state.open if isinstance(state, LockState) else state
        if write and not opened.access & OPEN4_SHARE_ACCESS_WRITE:
            raise NFS4Error(Stat4.OPENMODE)

    # -- byte-range locks (section 9, 18.10-18.12) ---------------------------------------------

    def lock_state(self, opened: OpenState, owner: Owner) -> LockState:
        """The lock state of *owner* on *opened*'s file, made on its first lock."""
        for other in opened.locks:
            state = self._states.get(other)
            if isinstance(state, LockState) and state.owner == owner:
                return state
        self._room()
        state = LockState(self._new_other(), 0, owner, opened.file, opened)
        self._states[state.other] = state
        opened.locks.add(state.other)
        client = self._clients.get(owner[0])
        if client is not None:
            client.states.add(state.other)
        return state

    def conflict(
        self, file: FileKey, owner: Owner, first: int, last: int, kind: LockType
    ) -> Denied | None:
        """The first lock of another owner on *file* that a *kind* lock of the range meets.

        A conflicting lock of a client whose lease ran out is not a conflict:
        that client's state goes (section 8.3).
        """
        while True:
            found = self._first_conflict(file, owner, first, last, kind)
            if found is None:
                return None
            holder = self._clients.get(found.owner[0])
            if holder is not None and self._expired(holder, self._clock()):
                self._drop_client(holder)
                continue
            return found

    def _first_conflict(
        self, file: FileKey, owner: Owner, first: int, last: int, kind: LockType
    ) -> Denied | None:
        for opened in self._files.get(file, []):
            for other in opened.locks:
                state = self._states.get(other)
                if not isinstance(state, LockState) or state.owner == owner:
                    continue
                for start, end, held in state.ranges:
                    if start <= last and first <= end and (_is_write(kind) or _is_write(held)):
                        length = ALL_ONES if end == END else end - start + 1
                        return Denied(start, length, held, state.owner)
        return None

    @staticmethod
    def apply_lock(state: LockState, first: int, last: int, kind: LockType | None) -> None:
        """Set *first*..*last* of *state*'s locks to *kind* (None: unlock), as POSIX does.

        A lock replaces what the owner held in the range (an upgrade or a
        downgrade, atomically); neighbouring ranges of one type merge.
        """
        kept: list[tuple[int, int, LockType]] = []
        for start, end, held in state.ranges:
            if end < first or start > last:
                kept.append((start, end, held))
                continue
            if start < first:
                kept.append((start, first - 1, held))
            if end > last:
                kept.append((last + 1, end, held))
        if kind is not None:
            plain = LockType.WRITE if _is_write(kind) else LockType.READ
            kept.append((first, last, plain))
        kept.sort()
        merged: list[tuple[int, int, LockType]] = []
        for start, end, held in kept:
            if merged and merged[-1][2] == held and merged[-1][1] + 1 >= start:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end), held)
            else:
                merged.append((start, end, held))
        if len(merged) > MAX_RANGES:
            raise NFS4Error(Stat4.RESOURCE, f"more than {MAX_RANGES} lock ranges on one file")
        state.ranges = merged
        state.seqid += 1
