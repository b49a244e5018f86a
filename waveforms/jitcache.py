"""Where numba keeps compiled kernels, so only a machine's first generation pays for compiling them.

The kernels in :mod:`waveforms.fastgen` are compiled with ``cache=True``; numba
writes the machine code next to the source (``waveforms/__pycache__``) when that
folder is writable. When it is not (a read-only install, a container image),
the cache goes to ``NUMBA_CACHE_DIR``, which defaults here to
``$XDG_CACHE_HOME/waveforms/numba`` (``~/.cache/waveforms/numba``). A
``NUMBA_CACHE_DIR`` set by the user is always kept.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "waveforms" / "numba"


def _writable(folder: Path) -> bool:
    """Whether numba could write its cache files in ``folder/__pycache__``."""
    cache = folder / "__pycache__"
    if cache.exists():
        return os.access(cache, os.W_OK | os.X_OK)
    return os.access(folder, os.W_OK | os.X_OK)


def configure(package: Path = PACKAGE) -> str:
    """Choose the cache folder before kernels compile; returns it ("" = next to the source)."""
    chosen = os.environ.get("NUMBA_CACHE_DIR", "")
    if not chosen and not _writable(package):
        folder = default_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return ""  # nowhere to write: numba compiles in memory, as without a cache
        chosen = os.environ["NUMBA_CACHE_DIR"] = str(folder)
    if chosen and "numba" in sys.modules:  # numba read its config at import: tell it too
        sys.modules["numba"].config.CACHE_DIR = chosen
    return chosen
