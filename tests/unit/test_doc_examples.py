"""The programs in docs/examples run as the documentation says."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

from dittofs.interfaces import IContentStore
from dittofs.testing.conformance import ContentStoreConformance

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def load(name: str) -> ModuleType:
    """Import an example by its path below docs/examples, without ``.py`` (docs/ is no package)."""
    spec = importlib.util.spec_from_file_location(Path(name).name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CompressedStoreTests(ContentStoreConformance, SynchronousTestCase):
    """The example store, docs/examples/compressed-store/compressed_store.py, keeps the contract."""

    def make_store(self) -> IContentStore:
        """A fresh example store."""
        module = load("compressed-store/compressed_store")
        store: IContentStore = module.CompressedMemoryContentStore()
        return store
