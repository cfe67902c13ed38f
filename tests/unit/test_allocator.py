"""Large buffers go back to the operating system once freed (see dittofs.allocator).

Each case runs in a fresh interpreter, because the allocator's settings are
process-wide: 64 MiB of 1 MiB buffers are made, small objects are allocated
after them, the buffers are freed, and the resident set is compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from dittofs import allocator

PROBE = textwrap.dedent(
    """
    import os, re, sys
    from dittofs.allocator import return_large_buffers

    def rss_kib():
        return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))

    if sys.argv[1] == "fixed":
        assert return_large_buffers()
    first = os.urandom(1 << 20)
    del first  # glibc raises its threshold when a mapped buffer is freed
    before = rss_kib()
    buffers = [os.urandom(1 << 20) for _ in range(64)]
    pinned = [os.urandom(2048) for _ in range(64)]  # allocated above the buffers
    del buffers
    print(rss_kib() - before)
    """
)


def retained_kib(mode: str) -> int:
    """KiB still resident after 64 MiB of 1 MiB buffers were freed, in a new interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return int(result.stdout)


class ReturnLargeBuffersTests(SynchronousTestCase):
    """glibc keeps freed 1 MiB buffers by default; with the fixed threshold it returns them."""

    def test_freed_buffers_stay_resident_by_default(self) -> None:
        """Without the setting, most of the 64 MiB stays resident (what the fix is for)."""
        self.assertGreater(retained_kib("default"), 32 * 1024)

    def test_freed_buffers_are_returned_with_the_fixed_threshold(self) -> None:
        """With it, less than 4 MiB of the 64 MiB stays resident."""
        self.assertLess(retained_kib("fixed"), 4 * 1024)

    def test_operator_setting_wins(self) -> None:
        """A threshold chosen with MALLOC_MMAP_THRESHOLD_ is left as it is."""
        self.patch(os, "environ", {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
        self.assertFalse(allocator.return_large_buffers())
