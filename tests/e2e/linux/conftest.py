"""Register the ``linux_guest`` marker (the project's pyproject is not this suite's to edit)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Declare ``linux_guest``, so ``-m linux_guest`` selects these tests under strict markers."""
    config.addinivalue_line(
        "markers",
        "linux_guest: boots a QEMU guest whose Linux kernel NFS client mounts DittoFS (minutes)",
    )
