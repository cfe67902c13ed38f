"""Remembered label lookups count into the same series as ``labels()`` would."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dittofs.metrics import Metrics


class LabelledTests(SynchronousTestCase):
    """``Metrics.labelled`` is ``labels()`` made once per series."""

    def test_same_series_as_labels(self) -> None:
        """Increments through labelled() and labels() land in one sample; other labels apart."""
        metrics = Metrics()
        first = metrics.labelled(metrics.nfs_replies, "READ", "OK")
        self.assertIs(metrics.labelled(metrics.nfs_replies, "READ", "OK"), first)
        first.inc()
        metrics.nfs_replies.labels("READ", "OK").inc()
        metrics.labelled(metrics.nfs_replies, "READ", "JUKEBOX").inc()
        metrics.labelled(metrics.calls, "nfs", "READ").inc(5)
        sample = metrics.registry.get_sample_value
        self.assertEqual(
            sample("dittofs_nfs_replies_total", {"procedure": "READ", "status": "OK"}), 2.0
        )
        self.assertEqual(
            sample("dittofs_nfs_replies_total", {"procedure": "READ", "status": "JUKEBOX"}), 1.0
        )
        self.assertEqual(
            sample("dittofs_rpc_calls_total", {"program": "nfs", "procedure": "READ"}), 5.0
        )

    def test_registries_are_separate(self) -> None:
        """Two Metrics (two servers in one process) never share a remembered series."""
        one, two = Metrics(), Metrics()
        one.labelled(one.rpc_replies, "SUCCESS").inc()
        two.labelled(two.rpc_replies, "SUCCESS")
        self.assertEqual(
            two.registry.get_sample_value("dittofs_rpc_replies_total", {"status": "SUCCESS"}), 0.0
        )
