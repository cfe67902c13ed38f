"""DittoFS: a userspace NFSv3 server on Twisted with pluggable metadata and content stores."""

from importlib.metadata import PackageNotFoundError, version

try:
    #: The installed distribution's version: pyproject.toml is its one source.
    __version__ = version("dittofs")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
