"""DittoFS: a userspace NFSv3 server on Twisted with pluggable metadata and content stores."""

__version__ = "0.1.0"
