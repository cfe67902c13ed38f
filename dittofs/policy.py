"""Who may use an export, and as whom: client lists, squashing, read-only, secure ports.

An :class:`AccessPolicy` belongs to one export.  It is consulted at MNT and
again on every NFS call (through the export id inside the file handle), so a
handle that leaks to a client outside the list is refused.  The defaults are
the safe ones: loopback clients only, root squashed to the anonymous user.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Iterable

import attrs

from dittofs.access import ANONYMOUS_GID, ANONYMOUS_UID
from dittofs.rpc.message import AuthFlavor, Credentials

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Ports below this need privileges to bind; "secure" exports demand one.
PRIVILEGED_PORT_LIMIT = 1024

#: The flavours every export serves, in the order offered (MNT's list, NFSv4.1's
#: SECINFO): AUTH_SYS first, so clients choose it; AUTH_NONE callers act as the
#: anonymous user (:meth:`AccessPolicy.identity`).
FLAVOURS = (AuthFlavor.AUTH_SYS, AuthFlavor.AUTH_NONE)

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class Squash(enum.Enum):
    """Which callers lose their identity (as in ``exports(5)``)."""

    ROOT = "root_squash"
    ALL = "all_squash"
    NONE = "no_root_squash"


def parse_clients(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse addresses and CIDRs (IPv4 and IPv6); ValueError names the bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR") from None
    return tuple(networks)


@functools.lru_cache(maxsize=4096)
def _host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse a client address once (it is asked on every call of every connection)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def _admitted(clients: tuple[IPNetwork, ...], host: str) -> bool:
    """Whether *host* is in one of *clients*, decided once per pair: asked on every call."""
    address = _host_address(host)
    return address is not None and any(address in network for network in clients)


@attrs.frozen
class AccessPolicy:
    """The access rules of one export."""

    clients: tuple[IPNetwork, ...] = LOOPBACK
    read_only: bool = False
    squash: Squash = Squash.ROOT
    anonuid: int = ANONYMOUS_UID
    anongid: int = ANONYMOUS_GID
    secure: bool = False

    def admits(self, host: str, port: int) -> bool:
        """May a client at *host*:*port* use this export?"""
        if self.secure and not 0 < port < PRIVILEGED_PORT_LIMIT:
            return False
        return _admitted(self.clients, host)

    def identity(self, credentials: Credentials) -> Credentials:
        """The identity the caller acts as on this export, after squashing.

        AUTH_NONE callers are always the anonymous user.
        """
        if credentials.uid is None or credentials.gid is None or self.squash == Squash.ALL:
            return Credentials(
                AuthFlavor.AUTH_NONE, self.anonuid, self.anongid, (), credentials.machine_name
            )
        if self.squash == Squash.ROOT and (
            credentials.uid == 0 or credentials.gid == 0 or 0 in credentials.gids
        ):
            uid = self.anonuid if credentials.uid == 0 else credentials.uid
            gid = self.anongid if credentials.gid == 0 else credentials.gid
            gids = tuple(self.anongid if g == 0 else g for g in credentials.gids)
            return attrs.evolve(credentials, uid=uid, gid=gid, gids=gids)
        return credentials
