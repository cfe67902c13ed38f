"""PostgreSQL going away and coming back: clients hear JUKEBOX (retry later), never IO.

The store talks to the real local PostgreSQL through a loopback TCP proxy
that the test can cut (closing every connection and refusing new ones) and
restore, which is what a database restart or a network partition looks like
from the gateway.
"""

from __future__ import annotations

import time

from twisted.trial.unittest import SynchronousTestCase

from dittofs.errors import NFSError
from dittofs.stores.metadata import sql as sql_metadata
from dittofs.vocabulary import Status
from tests.proxy import CuttableProxy
from tests.unit import backends


class PostgresOutageTests(SynchronousTestCase):
    """A gateway rides out a database outage without answering NFS3ERR_IO."""

    def setUp(self) -> None:
        super().setUp()
        self.proxy = CuttableProxy(5432)
        self.addCleanup(self.proxy.cut)
        self.store = backends.postgres_store(self, host=f"127.0.0.1 port={self.proxy.port}")
        self.successResultOf(self.store.open())
        self.addCleanup(self.store.close)
        self.root = self.successResultOf(self.store.root())

    def assertJukebox(self) -> None:
        failure = self.failureResultOf(self.store.getattr(self.root.fileid), NFSError)
        self.assertEqual(failure.value.status, Status.JUKEBOX)

    def test_outage_is_jukebox_then_recovers(self) -> None:
        """While the database is unreachable calls get JUKEBOX; once it is back they work again."""
        self.proxy.cut()
        self.assertJukebox()
        # Within the back-off the store does not even try the database.
        self.assertJukebox()
        self.flushLoggedErrors()
        self.proxy.restore()
        time.sleep(sql_metadata.MIN_BACKOFF * 2)
        attributes = self.successResultOf(self.store.getattr(self.root.fileid))
        self.assertEqual(attributes.fileid, self.root.fileid)

    def test_backoff_grows_and_is_bounded(self) -> None:
        """Failures double the back-off up to a maximum, so a dead database is not hammered."""
        self.proxy.cut()
        backoffs = []
        for _ in range(8):
            self.store._retry_at = 0.0  # let each call reach the (unreachable) database
            self.assertJukebox()
            backoffs.append(self.store._backoff)
        self.flushLoggedErrors()
        self.assertEqual(backoffs[:3], [0.1, 0.2, 0.4])
        self.assertEqual(backoffs[-1], sql_metadata.MAX_BACKOFF)
