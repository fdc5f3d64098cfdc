"""Which modules a source file imports, read with ``ast`` (imports inside functions and under
``TYPE_CHECKING`` count too), for the tests that keep the import rules (test_architecture.py,
test_rooms.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it, relative imports made absolute; ``from a
    import b`` counts as ``a`` and as ``a.b`` (a module or a name in it)."""
    package = module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def reaches(imports: set[str], module: str) -> bool:
    return any(name == module or name.startswith(f"{module}.") for name in imports)
