"""Benchmarks: DittoFS against nfs-ganesha on loopback (``python benchmarks/run``)."""
