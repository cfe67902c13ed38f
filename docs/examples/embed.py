"""Embed DittoFS in another Twisted program: an NFS export beside your own services.

Run it with ``python docs/examples/embed.py PORT`` and mount
``127.0.0.1:/export`` with ``port=PORT,mountport=PORT``.  The NFS service is
an ordinary ``IService``: here it shares one reactor with a small TCP echo
service on the next port.
"""

from __future__ import annotations

import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import endpoints, task
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from dittofs.tap import Options, makeService


class Echo(Protocol):
    """The rest of your program (here, an echo server)."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


def main(reactor: object, port: str) -> Deferred[None]:
    options = Options()
    options.parseOptions(
        [
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--metadata",
            "memory",
            "--content",
            "memory",
        ]
    )
    application = MultiService()
    makeService(options, reactor).setServiceParent(application)
    echo = endpoints.serverFromString(reactor, f"tcp:{int(port) + 1}:interface=127.0.0.1")
    StreamServerEndpointService(echo, Factory.forProtocol(Echo)).setServiceParent(application)
    application.startService()
    reactor.addSystemEventTrigger("before", "shutdown", application.stopService)  # type: ignore[attr-defined]
    return Deferred()  # run until stopped (Ctrl-C or SIGTERM)


if __name__ == "__main__":
    task.react(main, sys.argv[1:2] or ["12049"])
