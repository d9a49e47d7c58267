"""The import structure of the `cift` package: no cycles, and generate/ imported only from above.

Imports are read from the source with `ast`, at every depth: an import inside a function counts
as much as one at the top of a module. A lazy import defers loading, it does not remove the
dependency — the module still needs the other one to do its work, and the layering (nothing
points up) is about that dependency. Both cycles this test was written against (`cift.cli` ↔ the
sub-CLIs, the registry store ↔ mirrors/publish) were made of function-level imports; a check of
module-level imports only sees neither. `if TYPE_CHECKING:` imports count too, for the same reason.
"""

from __future__ import annotations

import ast
import functools
import graphlib
import itertools
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MAY_IMPORT_GENERATE = {"cift.cli"}  # the top-level CLI wires everything, as stages/ do


def package_modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `package` (a package is its __init__)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lives in: the longest known prefix of the dotted name."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def module_imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import of a module in `modules`, at any depth."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1 more
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            owner = _owner(name, modules)
            if owner is not None and owner != module:
                yield owner, node.lineno


def import_graph(package: Path) -> dict[str, dict[str, str]]:
    """module -> {imported module: "file:line" of the first such import}, within `package`."""
    modules = package_modules(package)
    graph: dict[str, dict[str, str]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for target, line in module_imports(module, path, modules):
            edges.setdefault(target, f"{path.relative_to(package.parent)}:{line}")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> str | None:
    """One import cycle, written "a -> b (a.py:3) -> a (b.py:7)"; None when there is none."""
    try:
        graphlib.TopologicalSorter({m: set(edges) for m, edges in graph.items()}).prepare()
    except graphlib.CycleError as exc:
        cycle = list(reversed(exc.args[1]))  # graphlib lists it against the import direction
        hops = [f"{b} ({graph[a][b]})" for a, b in itertools.pairwise(cycle)]
        return " -> ".join([cycle[0], *hops])
    return None


@functools.cache
def cift_graph() -> dict[str, dict[str, str]]:
    return import_graph(ROOT / "cift")


def test_no_import_cycles_among_cift_modules():
    cycle = find_cycle(cift_graph())
    assert cycle is None, f"import cycle: {cycle}"


def test_the_cycle_finder_sees_function_level_imports(tmp_path: Path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("def main():\n    from pkg.sub.cli import add\n")
    (pkg / "sub" / "cli.py").write_text("def add():\n    from ..cli import main\n")
    (pkg / "store.py").write_text("import pkg.sub\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None and "pkg.cli" in cycle and "pkg.sub.cli" in cycle
    assert "pkg/cli.py:2" in cycle and "pkg/sub/cli.py:2" in cycle
    (pkg / "sub" / "cli.py").write_text("def add():\n    from pkg.store import x\n")
    assert find_cycle(import_graph(pkg)) is None


def outside_imports_of_generate() -> list[str]:
    """ "module imports generate-module (file:line)" for every import of cift.generate from a
    module outside cift/generate/ that may not import it."""
    found = []
    for module, edges in cift_graph().items():
        if module.startswith("cift.generate") or module in MAY_IMPORT_GENERATE:
            continue
        for target, where in edges.items():
            if target.startswith("cift.generate"):
                found.append(f"{module} imports {target} ({where})")
    return found


def test_nothing_outside_generate_imports_generate():
    found = outside_imports_of_generate()
    assert not found, "only stages/ and cift.cli may import cift.generate:\n" + "\n".join(found)
