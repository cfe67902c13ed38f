"""docs/monitoring.md lists every metric DittoFS exports, with its type, and no other.

The names and types come from the registry itself (a fresh
:class:`~dittofs.metrics.Metrics` with the cache collector), so a metric
added, renamed or retyped without its line in the table fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest
from twisted.trial.unittest import SynchronousTestCase

from dittofs.exports import ExportTable
from dittofs.metrics import Metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"
#: One row of the metrics table: `name` | type | ...
ROW = re.compile(r"^\| `(dittofs_[a-z0-9_]+)` \| (counter|gauge|histogram) \|", re.MULTILINE)


def exported() -> dict[str, str]:
    """Each dittofs_ metric as a scraper sees it, and its type."""
    metrics = Metrics()
    metrics.watch_caches(ExportTable([]))
    text = generate_latest(metrics.registry).decode()
    return {
        name: kind
        for name, kind in re.findall(r"^# TYPE (dittofs_\w+) (\w+)$", text, re.MULTILINE)
        if not name.endswith("_created")  # the client's creation timestamps, documented as such
    }


class MonitoringDocTests(SynchronousTestCase):
    """The table in docs/monitoring.md and the registry agree, name by name."""

    def test_table_matches_the_registry(self) -> None:
        """Same names, same types."""
        documented = dict(ROW.findall(DOC.read_text()))
        self.assertGreater(len(documented), 15)
        self.assertEqual(documented, exported())
