"""The ``twistd dittofs`` dropin; ``dittofs.tap`` is imported only when it runs."""

from twisted.application.service import ServiceMaker

dittofs = ServiceMaker(
    "DittoFS",
    "dittofs.tap",
    "An NFSv3 server with pluggable metadata and content stores",
    "dittofs",
)
