"""Every metadata store against the shared conformance suite, :mod:`dittofs.testing.conformance`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from dittofs.errors import NFSError
from dittofs.interfaces import IMetadataStore
from dittofs.stores.metadata.memory import MemoryMetadataStore
from dittofs.testing import TickingClock
from dittofs.testing.conformance import BlockMapConformance, MetadataStoreConformance
from dittofs.vocabulary import Status

T = TypeVar("T")


class MemoryMetadataStoreTests(MetadataStoreConformance, SynchronousTestCase):
    """The in-memory metadata store keeps the whole metadata contract."""

    def make_store(self) -> IMetadataStore:
        """A fresh store whose clock ticks on every reading, so time comparisons are strict."""
        return MemoryMetadataStore(clock=TickingClock())


class MemoryBlockMapTests(BlockMapConformance, SynchronousTestCase):
    """The in-memory metadata store keeps the block map contract."""

    def make_store(self) -> MemoryMetadataStore:
        """A fresh store."""
        return MemoryMetadataStore()


class MemoryMetadataStoreSpecificTests(SynchronousTestCase):
    """Behaviour of the memory store beyond the shared contract."""

    def test_generation_differs_between_instances(self) -> None:
        """A restarted (new) memory store gives old handles a different generation.

        Its file ids start again from 1, so only the generation keeps a handle
        from before the restart from naming an unrelated file.
        """
        generations = {
            self.successResultOf(MemoryMetadataStore().root()).generation for _ in range(8)
        }
        self.assertGreater(len(generations), 1)

    def test_root_owner(self) -> None:
        """The root belongs to the configured uid, so a non-root server can own its export."""
        root = self.successResultOf(MemoryMetadataStore(root_uid=1234).root())
        self.assertEqual((root.uid, root.gid), (1234, 1234))


class DisciplinedTransaction:
    """A namespace transaction that fails the test when the namespace breaks its disciplines.

    :mod:`dittofs.stores.metadata.namespace` promises every backend two
    things: all checks come before the first write (the memory store cannot
    roll back), and after the first write only inodes already read are read
    again (Redis can read nothing new once ``MULTI`` has begun).
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.wrote = False
        self._seen: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        """lock and lock_namespace pass through."""
        return getattr(self._inner, name)

    def _reading(self, what: str, fileid: int | None = None) -> None:
        if self.wrote and (fileid is None or fileid not in self._seen):
            raise AssertionError(f"the namespace reads {what} after its first write")

    def read(self, fileid: int) -> Any:
        """An inode; a new one only before any write."""
        self._reading(f"inode {fileid}", fileid)
        self._seen.add(fileid)
        return self._inner.read(fileid)

    def find(self, directory: int, name: bytes) -> Any:
        """An entry, only before any write."""
        self._reading(f"entry {name!r} of {directory}")
        found = self._inner.find(directory, name)
        if found is not None:
            self._seen.add(found.fileid)
        return found

    def is_empty(self, directory: int) -> bool:
        """Emptiness, only before any write."""
        self._reading(f"the emptiness of {directory}")
        return bool(self._inner.is_empty(directory))

    def verifier(self, fileid: int) -> bytes:
        """A verifier of an inode read before."""
        self._reading(f"the verifier of {fileid}", fileid)
        return bytes(self._inner.verifier(fileid))

    def target(self, fileid: int) -> bytes:
        """A symlink target of an inode read before."""
        self._reading(f"the target of {fileid}", fileid)
        return bytes(self._inner.target(fileid))

    def insert(self, *args: Any) -> int:
        """A write; the new inode counts as read."""
        self.wrote = True
        fileid = int(self._inner.insert(*args))
        self._seen.add(fileid)
        return fileid

    def write(self, fileid: int, **fields: int) -> None:
        """A write."""
        self.wrote = True
        self._inner.write(fileid, **fields)

    def add_entry(self, *args: Any) -> None:
        """A write."""
        self.wrote = True
        self._inner.add_entry(*args)

    def drop_entry(self, *args: Any) -> None:
        """A write."""
        self.wrote = True
        self._inner.drop_entry(*args)

    def delete(self, fileid: int) -> None:
        """A write."""
        self.wrote = True
        self._inner.delete(fileid)

    def journal_orphan(self, fileid: int) -> None:
        """A write."""
        self.wrote = True
        self._inner.journal_orphan(fileid)


class DisciplinedMemoryMetadataStore(MemoryMetadataStore):
    """The memory store, running every namespace operation through a DisciplinedTransaction."""

    def _in_transaction(self, operation: Callable[..., T], *args: Any) -> Deferred[T]:
        disciplined = DisciplinedTransaction(self._tx)
        try:
            return succeed(operation(disciplined, *args))
        except NFSError as error:
            if disciplined.wrote:
                raise AssertionError(f"refused with {error} after writing") from error
            return fail()


class NamespaceDisciplineTests(MetadataStoreConformance, SynchronousTestCase):
    """The whole contract again, with every namespace step checked for its two disciplines."""

    def make_store(self) -> IMetadataStore:
        """A memory store whose transactions watch the namespace."""
        return DisciplinedMemoryMetadataStore(clock=TickingClock())

    def test_the_discipline_is_watched(self) -> None:
        """A read of a new inode after a write, or a refusal after one, fails the test."""
        transaction = DisciplinedTransaction(self.store._tx)
        root = self.resolve(self.store.root()).fileid
        transaction.read(root)
        transaction.write(root, mtime=1)
        transaction.read(root)
        self.assertRaises(AssertionError, transaction.read, root + 1000)
        self.assertRaises(AssertionError, transaction.find, root, b"x")

        def refuses_late(tx: Any) -> None:
            tx.write(root, mtime=2)
            raise NFSError(Status.EXIST)

        self.assertRaises(AssertionError, self.store._in_transaction, refuses_late)
