"""Tests for the ``twistd dittofs`` dropin (``twisted/plugins/dittofs_plugin.py``).

If the dropin is not found, or does not provide ``IServiceMaker``, ``twistd
dittofs`` simply does not exist for the user.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dittofs import tap


def dittofs_makers() -> list[IServiceMaker]:
    """Every service maker whose tapname is ``dittofs``."""
    return [maker for maker in getPlugins(IServiceMaker) if maker.tapname == "dittofs"]


class PluginTests(SynchronousTestCase):
    """The dropin is discoverable and wires ``twistd dittofs`` to :mod:`dittofs.tap`."""

    def test_discovered_once(self) -> None:
        """Exactly one plugin answers to ``twistd dittofs``."""
        self.assertEqual(len(dittofs_makers()), 1)

    def test_provides_iservicemaker(self) -> None:
        """The plugin fully provides IServiceMaker, as twistd requires."""
        (maker,) = dittofs_makers()
        self.assertTrue(verifyObject(IServiceMaker, maker))
        self.assertTrue(maker.description)
        self.assertTrue(maker.name)

    def test_points_at_tap_module(self) -> None:
        """The plugin's options and makeService are those of :mod:`dittofs.tap`."""
        (maker,) = dittofs_makers()
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)

    def test_discovery_does_not_import_tap(self) -> None:
        """Listing plugins (``twistd --help``) does not import the server itself.

        Run in a fresh interpreter, because this test process has imported it.
        """
        script = (
            "import sys\n"
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "names = [m.tapname for m in getPlugins(IServiceMaker)]\n"
            "assert 'dittofs' in names, names\n"
            "print('dittofs.tap' in sys.modules)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "False")


class StoreFactoryPluginTests(SynchronousTestCase):
    """DittoFS's own stores are found the way a third party's are: as IStoreFactory plugins."""

    def test_every_shipped_store_is_found(self) -> None:
        """Each scheme DittoFS ships is answered by a plugin that fully provides IStoreFactory."""
        from dittofs.interfaces import IStoreFactory
        from dittofs.stores import installed

        expected = {
            "metadata": {"memory", "sqlite", "postgresql", "postgres", "redis", "rediss"},
            "content": {"memory", "fs", "s3"},
        }
        for role, schemes in expected.items():
            found = installed(role)
            self.assertLessEqual(schemes, set(found))
            for scheme in schemes:
                factory = found[scheme]
                self.assertTrue(verifyObject(IStoreFactory, factory))
                self.assertEqual(factory.role, role)
                self.assertIn(scheme, factory.schemes)
                self.assertTrue(factory.usage.startswith(factory.schemes[0]))

    def test_unknown_scheme_lists_what_is_installed(self) -> None:
        """A specification no plugin answers is one line that lists the installed choices."""
        from dittofs.stores import StoreSpecError, check_spec, choices

        with self.assertRaises(StoreSpecError) as caught:
            check_spec("metadata", "floppy:/dev/fd0")
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertIn("'floppy:/dev/fd0'", message)
        self.assertIn(choices("metadata"), message)
        self.assertIn("sqlite[:PATH]", choices("metadata"))
