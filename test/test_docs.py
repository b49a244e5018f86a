"""The reference site builds with MkDocs in strict mode: no broken links, no page missing from the nav."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    out = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    nav_pages = [line.split(":", 1)[1].strip() for line in (ROOT / "mkdocs.yml").read_text().splitlines()
                 if line.startswith("  - ") and line.rstrip().endswith(".md")]
    assert "config.md" in nav_pages
    for page in nav_pages:  # every page of the nav became a built page
        built = out / ("index.html" if page == "index.md" else page[:-3] + "/index.html")
        assert built.is_file(), page
    assert "[train]" in (out / "config" / "index.html").read_text()


def test_readme_is_short_and_links_into_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for target in ("docs/stages.md", "docs/config.md", "docs/benchmarks.md"):
        assert f"({target}" in readme, target
        assert (ROOT / target).is_file(), target
