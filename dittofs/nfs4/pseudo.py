"""The NFSv4 pseudo file system (RFC 8881 section 7): a read-only tree joining the exports.

A v4 client mounts the server's root and walks to an export by LOOKUP, so
the server shows the directories above each export path: for exports
``/data`` and ``/archive/2024``, the root holds ``data`` (the export's own
root directory) and ``archive``, which holds ``2024``.  An export at ``/``
is the root itself, with no pseudo directories at all.

Pseudo directories have handles of their own (format 2, which no v3 handle
has, so NFSv3 answers BADHANDLE for them) and file system id ``(0, 0)``;
each export is its own file system, ``(export id, 0)``, so the client sees a
mount point where the tree enters an export.
"""

from __future__ import annotations

import struct
import time

import attrs

from dittofs.errors import NFSError
from dittofs.exports import Export, ExportTable
from dittofs.model import Attributes
from dittofs.vocabulary import FileType, Status

PSEUDO_HANDLE_VERSION = 2
_LAYOUT = struct.Struct(">BBHQI")
#: The pseudo file system's ``fsid``.
PSEUDO_FSID = (0, 0)


@attrs.define(eq=False)
class Node:
    """A directory of the pseudo file system."""

    index: int
    path: bytes
    parent: Node | None
    children: dict[bytes, Node | Export] = attrs.field(factory=dict)

    @property
    def handle(self) -> bytes:
        """This directory's file handle."""
        return _LAYOUT.pack(PSEUDO_HANDLE_VERSION, 0, 0, self.index, 0)


class PseudoFS:
    """The pseudo directories above the exports of an :class:`ExportTable`."""

    def __init__(self, exports: ExportTable) -> None:
        self._born = time.time_ns()
        self.root_export = exports.by_path(b"/")
        self.root = Node(1, b"/", None)
        self._nodes = {1: self.root}
        for export in sorted(exports, key=lambda e: e.path):
            if export.path == b"/":
                continue
            names = [name for name in export.path.split(b"/") if name]
            node = self.root
            for name in names[:-1]:
                child = node.children.get(name)
                if isinstance(child, Export):
                    # An export below another: reached through the outer one, not here.
                    break
                if child is None:
                    child = Node(len(self._nodes) + 1, node.path.rstrip(b"/") + b"/" + name, node)
                    self._nodes[child.index] = child
                    node.children[name] = child
                node = child
            else:
                node.children.setdefault(names[-1], export)
        #: Where each export's root sits: the pseudo directory holding it.
        self.mounted_on: dict[int, tuple[Node, bytes]] = {}
        for node in self._nodes.values():
            for name, child in node.children.items():
                if isinstance(child, Export):
                    self.mounted_on[child.export_id] = (node, name)

    @staticmethod
    def is_pseudo(fh: bytes) -> bool:
        """Whether *fh* is a pseudo directory's handle (by its format byte)."""
        return len(fh) == _LAYOUT.size and fh[0] == PSEUDO_HANDLE_VERSION

    def node(self, fh: bytes) -> Node:
        """The pseudo directory of a handle; BADHANDLE for one never issued, STALE for one gone."""
        version, flags, zero, index, generation = _LAYOUT.unpack(fh)
        if version != PSEUDO_HANDLE_VERSION or flags or zero or generation:
            raise NFSError(Status.BADHANDLE, "not a pseudo file system handle")
        node = self._nodes.get(index)
        if node is None:
            raise NFSError(Status.STALE, "no such pseudo directory (the exports changed)")
        return node

    def attributes(self, node: Node) -> Attributes:
        """A pseudo directory's attributes: read-only for all, owned by root."""
        return Attributes(
            fileid=node.index,
            generation=0,
            type=FileType.DIR,
            mode=0o555,
            nlink=2 + sum(1 for c in node.children.values() if isinstance(c, Node)),
            uid=0,
            gid=0,
            size=4096,
            used=4096,
            rdev=(0, 0),
            atime=self._born,
            mtime=self._born,
            ctime=self._born,
        )
