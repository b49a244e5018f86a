"""The reference site builds with MkDocs in strict mode: no broken links, no page missing from the nav."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once for this module by ``mkdocs build --strict``."""
    out = tmp_path_factory.mktemp("docs") / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_docs_build_strict(site):
    nav_pages = [line.split(":", 1)[1].strip() for line in (ROOT / "mkdocs.yml").read_text().splitlines()
                 if line.startswith("  - ") and line.rstrip().endswith(".md")]
    assert "config.md" in nav_pages
    for page in nav_pages:  # every page of the nav became a built page
        built = site / ("index.html" if page == "index.md" else page[:-3] + "/index.html")
        assert built.is_file(), page
    assert "[train]" in (site / "config" / "index.html").read_text()


def test_readme_is_short_and_links_into_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for target in ("docs/stages.md", "docs/config.md", "docs/benchmarks.md"):
        assert f"({target}" in readme, target
        assert (ROOT / target).is_file(), target


def test_readmes_performance_rows_are_short_and_each_links_to_its_benchmark_section(site):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Performance\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| [")]
    assert 1 <= len(rows) <= 8
    anchors = set(re.findall(r'id="([^"]+)"', (site / "benchmarks" / "index.html").read_text()))
    for row in rows:
        assert len(row) <= 240, row
        target = re.search(r"\]\(docs/benchmarks\.md#([^)]+)\)", row)
        assert target and target.group(1) in anchors, row
