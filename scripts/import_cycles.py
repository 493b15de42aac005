"""Import circles in the stilts tree: every ``import`` of a stilts module, lazy ones included.

Reads the sources (no import is executed) of ``stilts`` and of the rooms pyproject maps into it
(``index/`` -> ``stilts.index``, ``server/``, ``training/``, ``benchmarks/``), builds the graph
module -> stilts modules it imports (at the top or inside a function: a lazy import still ties
the two; an import under ``if TYPE_CHECKING:`` never runs and is left out), and prints each strongly connected component of more than one module: a circle.
``from stilts.pkg import name`` counts as an import of ``stilts.pkg.name`` when that is a module,
else of ``stilts.pkg``. A package's ``__init__`` that Python runs before a submodule is not
counted as an edge (a parent package is not an import of its children's choosing).

It also checks the core's layers (:data:`LAYERS`, docs/layout.md): a core module imports only
modules of its own layer or of a layer below.

Usage: python scripts/import_cycles.py [--edges]; exit status 1 when there is a circle or an
import running up the core's layers.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The core's layers, bottom first (docs/layout.md); a module prefix per entry. The rooms
# (stilts.index, .server, .training, .benchmarks) sit above the whole core.
LAYERS = (
    (
        "stilts.errors",
        "stilts.records",
        "stilts.fsutil",
        "stilts.manifest",
        "stilts.home",
        "stilts.inputs",
        "stilts.sample",
        "stilts.v1",
        "stilts.wire",
    ),
    ("stilts.runtimes",),
    ("stilts.graphs",),
    ("stilts.encoding",),
    ("stilts.sources",),
    ("stilts.catalog", "stilts.client", "stilts.cliutil", "stilts.client_cli", "stilts.cli"),
)
ROOMS = ("stilts.index", "stilts.server", "stilts.training", "stilts.benchmarks")


def package_dirs() -> dict[str, Path]:
    """``stilts.x`` -> its folder, as pyproject's ``package-dir`` maps them."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {k: ROOT / v for k, v in conf["tool"]["setuptools"]["package-dir"].items()}


def modules() -> dict[str, Path]:
    """Every module of the tree by dotted name (packages by their ``__init__``)."""
    roots = package_dirs()
    out: dict[str, Path] = {}
    for pkg, folder in roots.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([pkg, *parts])
            # a room mapped into stilts (index/ -> stilts.index) is its own entry, not stilts/'s
            if pkg == "stilts" and any(
                p != "stilts" and path.is_relative_to(roots[p]) for p in roots
            ):
                continue
            out[name] = path
    return out


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The stilts modules ``name`` (at ``path``) imports anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def add(mod: str) -> None:
        while mod and mod not in known:
            mod = mod.rpartition(".")[0]
        if mod and mod != name:
            found.add(mod)

    for node in walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "stilts" or a.name.startswith("stilts."):
                    add(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if not (base == "stilts" or base.startswith("stilts.")):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                add(sub if sub in known else base)
    return found


def walk(tree: ast.AST):
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (annotations, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def layer(module: str) -> int | None:
    """The core layer of ``module`` (0 = bottom); the ``stilts`` package itself (its
    ``__init__``: ``stilts.Encoder``) counts as the top; None for the rooms."""
    if module == "stilts":
        return len(LAYERS) - 1
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def upward(g: dict[str, set[str]]) -> list[str]:
    """Imports that run up: a core module importing a higher layer, or a room."""
    out = []
    for name, deps in g.items():
        own = layer(name)
        if own is None:
            continue
        for dep in sorted(deps):
            theirs = layer(dep)
            if theirs is None or theirs > own:
                out.append(f"{name} (layer {own}) imports {dep} (layer {theirs})")
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in sorted(known.items())}


def main(argv: list[str]) -> int:
    g = graph()
    if "--edges" in argv:
        for name, deps in g.items():
            print(f"{name}: {', '.join(sorted(deps))}")
    found = circles(g)
    up = upward(g)
    print(f"{len(g)} modules, {sum(len(d) for d in g.values())} imports of stilts modules")
    for comp in found:
        print(f"circle of {len(comp)}: {' '.join(comp)}")
    for line in up:
        print(f"upward: {line}")
    if not found and not up:
        print("no import circle; the core's imports run down its layers")
    return 1 if found or up else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
