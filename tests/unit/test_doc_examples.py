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
    """Import an example by file name (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CompressedStoreTests(ContentStoreConformance, SynchronousTestCase):
    """The example content store of docs/examples/compressed_store.py keeps the whole contract."""

    def make_store(self) -> IContentStore:
        """A fresh example store."""
        store: IContentStore = load("compressed_store").CompressedMemoryContentStore()
        return store
