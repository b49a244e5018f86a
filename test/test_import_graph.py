"""The package's parts depend one way: no cycle between them, counting every import (module level and in functions)."""
import ast
import textwrap
from pathlib import Path

from helpers import import_graph as graph

ROOT = Path(__file__).resolve().parents[1]


def test_no_cycle_between_the_packages_parts():
    edges = graph.part_edges(graph.package_imports(ROOT))
    assert graph.cycles(edges) == [], {k: [f"{i.source}:{i.line}" for i in v] for k, v in edges.items()}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    _write(tmp_path, {
        "waveforms/__init__.py": "",
        "waveforms/a/__init__.py": "from waveforms.b.x import f\n",
        "waveforms/b/__init__.py": "",
        "waveforms/b/x.py": "def f():\n    from waveforms import c\n    return c\n",
        "waveforms/c.py": "from .a import f\n",
        "waveforms/d.py": "import waveforms.c\n",
    })
    imports = graph.package_imports(tmp_path)
    assert sorted((i.source, i.target, i.in_function) for i in imports) == [
        ("waveforms.a", "waveforms.b.x", False), ("waveforms.b.x", "waveforms.c", True),
        ("waveforms.c", "waveforms.a", False), ("waveforms.d", "waveforms.c", False)]
    assert graph.cycles(graph.part_edges(imports)) == [["a", "b", "c"]]


def test_imports_within_a_part_and_one_way_chains_are_not_cycles(tmp_path):
    _write(tmp_path, {
        "waveforms/__init__.py": "",
        "waveforms/a/__init__.py": "from waveforms.a import inner\n",
        "waveforms/a/inner.py": "from waveforms.a import other\n",
        "waveforms/a/other.py": "from waveforms.a import inner\n",
        "waveforms/b.py": "from waveforms import a\n",
    })
    assert graph.cycles(graph.part_edges(graph.package_imports(tmp_path))) == []


def test_every_import_statement_of_the_package_is_counted():
    expected = 0
    for path in (ROOT / "waveforms").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                expected += len({a.name for a in node.names if a.name.split(".")[0] == "waveforms"})
            elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "waveforms"):
                expected += 1 if node.module or node.level else 0
    counted = graph.package_imports(ROOT)
    # ``from waveforms import a, b`` is one statement but two modules: counted once per module
    multi = sum(len({i.target for i in counted if (i.source, i.line) == key}) - 1
                for key in {(i.source, i.line) for i in counted})
    assert len(counted) - multi == expected


def test_every_part_is_on_exactly_one_declared_layer():
    declared = [part for _, members in graph.LAYERS for part in members]
    assert len(declared) == len(set(declared)), "a part is on two layers"
    assert set(declared) == graph.parts(ROOT)


def test_every_part_imports_only_its_own_layer_or_below_and_no_stage_imports_another():
    assert graph.layer_violations(graph.part_edges(graph.package_imports(ROOT))) == []


def test_imports_up_a_layer_between_stages_or_from_an_undeclared_part_are_found(tmp_path):
    _write(tmp_path, {
        "waveforms/__init__.py": "",
        "waveforms/low.py": "from waveforms import high\n",
        "waveforms/high.py": "",
        "waveforms/one.py": "def f():\n    from waveforms import two\n",
        "waveforms/two.py": "from waveforms import low\n",
        "waveforms/stray.py": "from waveforms import low\n",
    })
    layers = (("bottom", ("waveforms", "low")), ("stages", ("one", "two")), ("top", ("high",)))
    edges = graph.part_edges(graph.package_imports(tmp_path))
    found = graph.layer_violations(edges, layers)
    assert [line.split(":")[0] for line in found] == [
        "low (bottom) -> high (top)", "one -> two", "stray -> low"]
    assert graph.layer_violations(edges, layers, between_stages=frozenset({("one", "two")}))[1].startswith("stray")


def test_the_docs_layer_and_import_tables_are_the_generated_ones():
    text = (ROOT / graph.DOCS).read_text()
    assert graph.with_tables(text, ROOT) == text, "regenerate them: python test/helpers/import_graph.py --write-docs"
    for name, table in graph.TABLES.items():
        start, end = graph.docs_markers(name)
        assert text[text.index(start) + len(start):text.index(end)].strip("\n") + "\n" == table(ROOT)
