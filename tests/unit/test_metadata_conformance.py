"""Every metadata store against the shared conformance suite, :mod:`dittofs.testing.conformance`."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dittofs.interfaces import IMetadataStore
from dittofs.stores.metadata.memory import MemoryMetadataStore
from dittofs.testing import TickingClock
from dittofs.testing.conformance import MetadataStoreConformance


class MemoryMetadataStoreTests(MetadataStoreConformance, SynchronousTestCase):
    """The in-memory metadata store keeps the whole metadata contract."""

    def make_store(self) -> IMetadataStore:
        """A fresh store whose clock ticks on every reading, so time comparisons are strict."""
        return MemoryMetadataStore(clock=TickingClock())


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
