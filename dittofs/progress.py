"""Progress bars for the ``dittofs`` maintenance commands (``fsck``, ``gc``).

Both commands can run for minutes over a large filesystem, reading every
inode or every S3 object; a bar on stderr says they are moving and how far
they have to go, while their report stays alone on stdout.  The work itself
takes a :data:`Phases` (or a plain advance callback) and never imports tqdm,
so the server, which runs the same code, draws nothing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

#: Called with how many more items were done.
Advance = Callable[[int], None]
#: Given a phase's description, its total (``None`` when not known in advance)
#: and the unit counted, a context that yields the phase's :data:`Advance`.
Phases = Callable[[str, int | None, str], AbstractContextManager[Advance]]


@contextlib.contextmanager
def bar(description: str, total: int | None, unit: str, *, shown: bool = True) -> Iterator[Advance]:
    """Draw a tqdm bar on stderr for one phase (nothing when not *shown*); yield its advance."""
    from tqdm import tqdm

    with tqdm(
        total=total, desc=description, unit=unit, disable=not shown, file=sys.stderr
    ) as progress:
        yield progress.update


def unwatched(description: str, total: int | None, unit: str) -> AbstractContextManager[Advance]:
    """The :data:`Phases` of work nobody watches: each phase's advance does nothing."""
    return contextlib.nullcontext(_ignore)


def _ignore(count: int) -> None:
    """Count nothing."""
