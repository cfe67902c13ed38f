"""Checking a filesystem's metadata and content for consistency (``dittofs fsck``).

:func:`check` is pure: from an :class:`~dittofs.model.Inventory` and the ids
that have content it derives every problem and the repairs that fix it.
The command around it (:func:`run`) reads the stores, prints what it found,
and applies the repairs only when asked.

What is checked:

- dangling entries: an entry naming an inode that does not exist, or that
  sits in a directory that does not exist;
- orphans: inodes that no path from the root reaches (a crash between two
  steps of an operation a store could not make atomic, or a bug);
- link counts: a file's nlink equals the entries naming it, a directory's is
  2 plus its subdirectories;
- parents: a directory's ``..`` is the directory whose entry names it;
- content nobody owns: stored content whose file id is no reachable regular
  file (it would otherwise occupy space for ever);
- the content store's own records against its data, where it can check them
  (:class:`~dittofs.interfaces.IContentCheck`: the S3 store's block maps
  against the block objects in the bucket).
"""

from __future__ import annotations

import functools
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import TextIO

import attrs

from dittofs import progress
from dittofs.interfaces import (
    IContentCheck,
    IContentInventory,
    IContentStore,
    IMetadataInventory,
    IMetadataStore,
)
from dittofs.model import Inventory, Repair
from dittofs.vocabulary import FileType

#: e2fsck's exit statuses: clean, problems corrected, problems left.
CLEAN = 0
CORRECTED = 1
UNCORRECTED = 4


@attrs.frozen
class Report:
    """The outcome of a check: what is wrong and how to mend it."""

    problems: list[str]
    repairs: list[Repair]
    ownerless_content: list[int]

    @property
    def clean(self) -> bool:
        """True when nothing at all was found."""
        return not self.problems


def check(
    inventory: Inventory,
    content_ids: Iterable[int],
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Find every inconsistency in *inventory* and the repairs for it.

    *progress* is called with the number of inodes and entries looked at
    since its last call, to drive a progress bar on large stores.
    """
    advance = progress or (lambda count: None)
    inodes = inventory.inodes
    problems: list[str] = []
    repairs: list[Repair] = []
    children: dict[int, list[int]] = defaultdict(list)
    names_of: Counter[int] = Counter()
    parent_of: dict[int, int] = {}

    for directory, name, fileid in inventory.entries:
        holder = inodes.get(directory)
        if holder is None or holder.type != FileType.DIR:
            problems.append(f"entry {name!r} is in directory {directory}, which does not exist")
            repairs.append(Repair("drop-entry", directory, name=name))
        elif fileid not in inodes:
            problems.append(f"entry {name!r} in directory {directory} names missing inode {fileid}")
            repairs.append(Repair("drop-entry", directory, name=name))
        else:
            children[directory].append(fileid)
            names_of[fileid] += 1
            if inodes[fileid].type == FileType.DIR:
                parent_of[fileid] = directory
    advance(len(inventory.entries))

    reachable = _reachable(inventory.root, children)
    for fileid, record in sorted(inodes.items()):
        if fileid not in reachable:
            problems.append(f"inode {fileid} ({record.type.name}) is not reachable from the root")
            repairs.append(Repair("drop-inode", fileid))
            continue
        if record.type == FileType.DIR:
            subdirectories = sum(
                1 for child in children[fileid] if inodes[child].type == FileType.DIR
            )
            expected = 2 + subdirectories
            parent = inventory.root if fileid == inventory.root else parent_of[fileid]
            if record.parent != parent:
                problems.append(
                    f"directory {fileid} says its parent is {record.parent}, not {parent}"
                )
                repairs.append(Repair("parent", fileid, parent))
        else:
            expected = names_of[fileid]
        if record.nlink != expected:
            problems.append(f"inode {fileid} has nlink {record.nlink}, expected {expected}")
            repairs.append(Repair("nlink", fileid, expected))
    advance(len(inodes))

    owners = {f for f in reachable if inodes[f].type == FileType.REG}
    ownerless = sorted(set(content_ids) - owners)
    problems.extend(f"content of file id {fileid} belongs to no file" for fileid in ownerless)
    return Report(problems, repairs, ownerless)


def _reachable(root: int, children: dict[int, list[int]]) -> set[int]:
    seen = {root}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


async def run(
    metadata: IMetadataStore,
    content: IContentStore,
    repair: bool,
    out: TextIO = sys.stdout,
    show_progress: bool = True,
) -> int:
    """Check (and with *repair*, mend) a pair of stores; return e2fsck's exit status."""
    if not IMetadataInventory.providedBy(metadata):
        out.write(f"fsck: the {metadata.name} metadata store cannot be checked\n")
        return UNCORRECTED
    await metadata.open()
    await content.open()
    try:
        inventory = await IMetadataInventory(metadata).inventory()
        pending = set(await metadata.pending_orphans())
        content_ids: list[int] = []
        if IContentInventory.providedBy(content):
            content_ids = await IContentInventory(content).content_ids()
        if pending:
            # Removed files whose content deletion a stop interrupted: the server
            # finishes them when it opens the stores, so they are not damage.
            out.write(f"fsck: {len(pending)} removed files still have content to delete\n")
            content_ids = [fileid for fileid in content_ids if fileid not in pending]
        total = len(inventory.inodes) + len(inventory.entries)
        with progress.bar("checking", total, "item", shown=show_progress) as advance:
            report = check(inventory, content_ids, advance)
        content_problems: list[str] = []
        if IContentCheck.providedBy(content):
            phases = functools.partial(progress.bar, shown=show_progress)
            checked = await IContentCheck(content).check_content(phases)
            out.write(f"fsck: {content.name} content: {checked.summary}\n")
            content_problems = checked.problems
        for problem in [*report.problems, *content_problems]:
            out.write(f"{problem}\n")
        if content_problems:
            out.write(f"fsck: {len(content_problems)} content problems that --repair cannot mend\n")
        if report.clean and not content_problems:
            out.write(
                f"fsck: clean: {len(inventory.inodes)} inodes, {len(inventory.entries)} entries\n"
            )
            return CLEAN
        if report.clean:
            return UNCORRECTED
        if not repair:
            out.write(f"fsck: {len(report.problems)} problems; run with --repair to fix them\n")
            return UNCORRECTED
        await IMetadataInventory(metadata).repair(report.repairs)
        dropped = {r.fileid for r in report.repairs if r.action == "drop-inode"}
        for fileid in sorted(set(report.ownerless_content) | dropped):
            await content.delete(fileid)
        out.write(f"fsck: repaired {len(report.problems)} problems\n")
        return UNCORRECTED if content_problems else CORRECTED
    finally:
        await content.close()
        await metadata.close()
