"""A differential, model-based test of POSIX semantics through NFSv3 (issue 12).

The same random operations go to a directory on the host's own filesystem
(the reference) and, through anfs, to DittoFS; every result and errno must
agree.  :mod:`.reference` runs the local side, :mod:`.remote` the NFS side,
:mod:`.machine` draws the operations and compares.
"""
