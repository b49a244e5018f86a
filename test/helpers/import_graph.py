"""The package's internal imports, read from the source with :mod:`ast`, and the cycles between its parts.

A *part* is a direct child of ``waveforms``: a subpackage (``waveforms.evaluate``) or a top-level
module (``waveforms.generate``). Every import statement counts, wherever it sits: at module level
(``if TYPE_CHECKING`` blocks included) or inside a function. :data:`LAYERS` says which layer each part
is on. ``python test/helpers/import_graph.py`` prints the counts, the edges between parts and any cycle;
``--write-docs`` regenerates the layer and import tables of ``docs/architecture.md``.
``test_import_graph.py`` fails on a cycle, on an import down-to-up between layers, on an import between
two stages the table does not allow, and on docs tables that differ from the generated ones.
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PACKAGE = "waveforms"
# The layers from the bottom up, each with its parts: a part imports only parts on its own layer or below.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("waveforms", "runtime", "stages", "storage", "config")),
    ("formats", ("dataset", "model", "audio")),
    ("stages", ("scrape", "transform", "train", "generate", "evaluate", "verify")),
    ("above the stages", ("pipeline", "serve")),
    ("entry points", ("cli", "__main__", "aws", "demo")),
)
STAGES_LAYER = "stages"
# Imports from one stage part into another that the layers allow, as ``(from, to)``: none. Runs that join
# two stages belong to ``pipeline``; what two stages share belongs to a layer below them.
BETWEEN_STAGES: frozenset[tuple[str, str]] = frozenset()
# Libraries slow to import or optional: the one reason an internal import may sit inside a function.
HEAVY = ("tensorflow", "keras", "pyspark", "faiss", "numba", "boto3", "matplotlib", "elephas", "fastapi", "uvicorn")


@dataclass(frozen=True)
class Import:
    """One internal module imported by one statement of ``source`` (a dotted module name)."""

    source: str
    target: str
    line: int
    in_function: bool


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """``waveforms.evaluate.report`` → ``evaluate``; ``waveforms`` itself → ``waveforms``."""
    names = module.split(".")
    return names[1] if len(names) > 1 else names[0]


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, is_package: bool, node: ast.AST, modules: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE:
                yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(module, is_package, node)
        if base.split(".")[0] != PACKAGE:
            return
        for alias in node.names:  # ``from waveforms import cli`` imports the module waveforms.cli
            sub = f"{base}.{alias.name}"
            yield sub if sub in modules else base


def imports_of(path: Path, root: Path, modules: set[str]) -> list[Import]:
    """Every internal import in one file, each marked top-level or inside a function."""
    module = module_name(path, root)
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets = dict.fromkeys(_targets(module, path.name == "__init__.py", child, modules))
            found.extend(Import(module, target, child.lineno, in_function) for target in targets)
            visit(child, nested)

    visit(tree, False)
    return found


def package_imports(root: Path) -> list[Import]:
    """Every internal import of the package under ``root`` (the folder holding ``waveforms/``)."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(p, root) for p in files}
    return [imp for p in files for imp in imports_of(p, root, modules)]


def heavy_modules(root: Path) -> set[str]:
    """Modules whose import loads a :data:`HEAVY` library: directly at module level, or through
    an internal module they import at module level."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(p, root) for p in files}
    heavy: set[str] = set()
    internal: dict[str, set[str]] = {}
    for p in files:
        name = module_name(p, root)
        tree = ast.parse(p.read_text(), str(p))
        for node in _module_level(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [(node.module or "").split(".")[0]]
            else:
                roots = []
            if any(r in HEAVY for r in roots):
                heavy.add(name)
        internal[name] = {imp.target for imp in imports_of(p, root, modules) if not imp.in_function}
    for name in list(internal):  # a package's __init__ runs before any of its modules
        internal[name] |= {m for m in (name.rsplit(".", 1)[0],) if m in internal and m != name}
    changed = True
    while changed:
        changed = False
        for name, targets in internal.items():
            if name not in heavy and targets & heavy:
                heavy.add(name)
                changed = True
    return heavy


def _module_level(tree: ast.AST) -> Iterator[ast.AST]:
    """Statements that run on import: the module body, into ``if``/``try``/``with`` blocks, not into defs."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            yield from _module_level(node)


def part_edges(imports: list[Import]) -> dict[tuple[str, str], list[Import]]:
    """Imports from one part into another, by ``(from part, to part)``; imports within a part are left out."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in imports:
        a, b = part_of(imp.source), part_of(imp.target)
        if a != b and b != PACKAGE:
            edges.setdefault((a, b), []).append(imp)
    return edges


def cycles(edges: dict[tuple[str, str], list[Import]]) -> list[list[str]]:
    """The strongly connected groups of more than one part (Tarjan), each sorted; empty when parts depend one way."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(groups)


def layer_of(layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> dict[str, int]:
    """Part -> the index of its layer in ``layers`` (0 at the bottom)."""
    return {part: i for i, (_, parts) in enumerate(layers) for part in parts}


def parts(root: Path) -> set[str]:
    """Every part of the package under ``root``."""
    return {part_of(module_name(p, root)) for p in (root / PACKAGE).rglob("*.py")}


def layer_violations(edges: dict[tuple[str, str], list[Import]],
                     layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS,
                     stages_layer: str = STAGES_LAYER,
                     between_stages: frozenset[tuple[str, str]] = BETWEEN_STAGES) -> list[str]:
    """Each import from a part into a part on a higher layer, or between two stages without leave, as a line."""
    level = layer_of(layers)
    names = [name for name, _ in layers]
    stage = names.index(stages_layer) if stages_layer in names else -1
    found = []
    for (a, b), imps in sorted(edges.items()):
        where = ", ".join(f"{i.source}:{i.line}" for i in imps)
        if a not in level or b not in level:
            found.append(f"{a} -> {b}: {a if a not in level else b} is on no layer ({where})")
        elif level[b] > level[a]:
            found.append(f"{a} ({names[level[a]]}) -> {b} ({names[level[b]]}): up a layer ({where})")
        elif level[a] == level[b] == stage and (a, b) not in between_stages:
            found.append(f"{a} -> {b}: one stage imports another ({where})")
    return found


def summary(root: Path, part: str) -> str:
    """The first paragraph of a part's docstring on one line, in Markdown (no Sphinx roles, single backquotes)."""
    module = root / PACKAGE / f"{part}.py"
    path = module if module.exists() else root / PACKAGE / ("" if part == PACKAGE else part) / "__init__.py"
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    return re.sub(r":\w+:`", "`", text).replace("``", "`").replace("|", "\\|")


def layer_table(root: Path) -> str:
    """The layer table of ``docs/architecture.md``: every part, bottom layer first, with its docstring's summary."""
    rows = [f"| {name if i == 0 else ''} | `{part}` | {summary(root, part)} |"
            for name, members in LAYERS for i, part in enumerate(members)]
    return "\n".join(["| layer | part | what it holds |", "|---|---|---|", *rows]) + "\n"


def import_table(root: Path) -> str:
    """The import table of ``docs/architecture.md``: the parts each part imports, bottom layer first."""
    edges = part_edges(package_imports(root))
    rows = []
    for _, members in LAYERS:
        for part in members:
            targets = sorted(b for a, b in edges if a == part)
            rows.append(f"| `{part}` | {', '.join(f'`{b}`' for b in targets)} |")
    return "\n".join(["| part | imports |", "|---|---|", *rows]) + "\n"


DOCS = "docs/architecture.md"
TABLES = {"layer": layer_table, "import": import_table}


def docs_markers(name: str) -> tuple[str, str]:
    """The comments around a generated table in :data:`DOCS`."""
    return (f"<!-- {name} table: generated by `python test/helpers/import_graph.py --write-docs`; do not edit -->",
            f"<!-- end of {name} table -->")


def with_tables(text: str, root: Path) -> str:
    """``text`` (the architecture page) with each generated table replaced by its current version."""
    for name, table in TABLES.items():
        start, end = docs_markers(name)
        text, n = re.subn(re.escape(start) + r".*?" + re.escape(end), lambda _: f"{start}\n\n{table(root)}\n{end}",
                          text, flags=re.S)
        if n != 1:
            raise ValueError(f"{DOCS} holds {n} {name} tables; expected one between {start!r} and {end!r}")
    return text


def main() -> int:
    root = Path(__file__).resolve().parents[2]
    if sys.argv[1:] == ["--write-docs"]:
        path = root / DOCS
        path.write_text(with_tables(path.read_text(), root))
        print(f"wrote the layer and import tables of {DOCS}")
        return 0
    imports = package_imports(root)
    edges = part_edges(imports)
    inner = sum(imp.in_function for imp in imports)
    print(f"internal imports: {len(imports)} ({len(imports) - inner} top-level, {inner} inside functions)")
    print(f"between parts: {sum(map(len, edges.values()))} imports, {len(edges)} part-to-part edges")
    for (a, b), imps in sorted(edges.items()):
        late = [f"{i.source.removeprefix(PACKAGE + '.')}:{i.line}" for i in imps if i.in_function]
        print(f"  {a:>10} -> {b:<10} {len(imps):3d}" + (f"   in functions: {', '.join(late)}" if late else ""))
    heavy = heavy_modules(root)
    light = [i for i in imports if i.in_function and i.target not in heavy]
    print(f"inside functions: {inner - len(light)} of heavy modules ({', '.join(HEAVY)}), {len(light)} of light ones"
          + (": " + ", ".join(f"{i.source.removeprefix(PACKAGE + '.')}:{i.line}" for i in light) if light else ""))
    found = cycles(edges)
    for group in found:
        print("cycle between parts: " + " <-> ".join(group))
    wrong = layer_violations(edges)
    for line in wrong:
        print("against the layers: " + line)
    return 1 if found or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
