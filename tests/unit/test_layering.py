"""DittoFS's layers import only downward: checked on the source, not by convention.

Every ``import`` statement in the package is read (those inside functions
too, since lazily imported modules are still dependencies), and each rule
below is checked on everything a module reaches, directly or through others.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import dittofs

PACKAGE = Path(dittofs.__file__).parent


def _module_path(name: str) -> Path | None:
    """The file of module *name* inside the package, or ``None`` if it is not one."""
    relative = Path(*name.split(".")[1:])
    for candidate in (PACKAGE / relative / "__init__.py", PACKAGE / f"{relative}.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def imports_of(name: str) -> frozenset[str]:
    """The ``dittofs`` modules that module *name* imports itself."""
    path = _module_path(name)
    if path is None:
        return frozenset()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if _module_path(submodule) else node.module)
    return frozenset(m for m in found if m == "dittofs" or m.startswith("dittofs."))


def reach(name: str) -> set[str]:
    """Every ``dittofs`` module that importing *name* imports, directly or not."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for imported in imports_of(todo.pop()) - seen:
            seen.add(imported)
            todo.append(imported)
    return seen


def modules_under(prefix: str) -> list[str]:
    """The modules of the package whose dotted names start with *prefix*."""
    names = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if dotted == prefix or dotted.startswith(prefix + "."):
            names.append(dotted)
    return sorted(names)


def _inside(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


class LayeringTests(SynchronousTestCase):
    """The import rules of ``docs/architecture.md``."""

    def test_the_reader_sees_imports(self) -> None:
        """The checker itself finds a known import, so the rules below cannot pass vacuously."""
        self.assertIn("dittofs.vocabulary", reach("dittofs.errors"))
        self.assertIn("dittofs.rpc.xdr", reach("dittofs.nfs3.service"))
        self.assertIn("dittofs.rpc.dispatch", modules_under("dittofs.rpc"))

    def test_the_vocabulary_model_and_errors_are_the_bottom(self) -> None:
        """``vocabulary``, ``model`` and ``errors`` import nothing from protocols or stores."""
        for module in ("dittofs.vocabulary", "dittofs.model", "dittofs.errors"):
            upward = {
                m
                for m in reach(module)
                if _inside(m, ("dittofs.nfs3", "dittofs.rpc", "dittofs.stores"))
            }
            self.assertEqual(upward, set(), f"{module} reaches up")
        self.assertEqual(reach("dittofs.vocabulary"), set())

    def test_the_rpc_layer_depends_on_nothing_above_it(self) -> None:
        """``dittofs/rpc/`` imports nothing of DittoFS outside itself but the logging setup."""
        allowed = ("dittofs.rpc", "dittofs.log")
        for module in modules_under("dittofs.rpc"):
            outside = {m for m in reach(module) if m != "dittofs" and not _inside(m, allowed)}
            self.assertEqual(outside, set(), f"{module} reaches outside the RPC layer")

    def test_metrics_is_a_leaf(self) -> None:
        """Metrics know the calls they observe and the stores' interfaces, nothing that serves."""
        above = ("dittofs.exports", "dittofs.web", "dittofs.tap", "dittofs.nfs3", "dittofs.stores")
        reached = reach("dittofs.metrics")
        self.assertIn("dittofs.rpc.observe", reached)
        self.assertEqual({m for m in reached if _inside(m, above)}, set())
