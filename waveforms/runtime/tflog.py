"""TensorFlow's import without its native start-up notices, where ``TF_CPP_MIN_LOG_LEVEL`` asks for quiet.

TensorFlow 2.20 and later write absl log lines while they load ("oneDNN custom operations
are on", once per native library, after absl's "All log messages before
absl::InitializeLog() is called are written to STDERR"), before absl's logging reads
``TF_CPP_MIN_LOG_LEVEL`` (tensorflow/tensorflow#100442). :func:`quiet_import` makes the
process's first ``import tensorflow`` run with file descriptor 2 captured, then writes back
every captured line except native log lines below that level; Python's own warnings and
errors from the import come through unchanged.

Only entry points call it (``waveforms.cli.main``, an allreduce rank's ``main``): a library
must not change its host process when imported, so ``import waveforms`` leaves fd 2 and
``sys.meta_path`` alone (test/test_cli_quiet.py checks both sides). Measured on TensorFlow
2.21 here: `import tensorflow` with `TF_CPP_MIN_LOG_LEVEL=3` still writes 4 such lines (the absl
notice and oneDNN's, twice); through :func:`import_tensorflow`, none.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from types import ModuleType

# absl's prefix ("I0000 00:00:1796207029.961768    9705 port.cc:153] ...") and its pre-initialisation notice
NATIVE = re.compile(r"^(?:([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ |WARNING: All log messages before absl::InitializeLog)")
LEVELS = "IWEF"


def min_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as a number (0 shows everything)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def kept(text: str, level: int) -> str:
    """``text`` without the native log lines below ``level`` (pure: the filter :func:`import_tensorflow` applies)."""
    out = []
    for line in text.splitlines(keepends=True):
        found = NATIVE.match(line)
        if found and (found.group(1) is None or LEVELS.index(found.group(1)) < level):
            continue
        out.append(line)
    return "".join(out)


def import_tensorflow() -> ModuleType:
    """``import tensorflow`` with its start-up notices filtered by ``TF_CPP_MIN_LOG_LEVEL``."""
    if "tensorflow" in sys.modules or min_level() <= 0:
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = kept(captured.read().decode(errors="replace"), min_level())
            if rest:
                os.write(2, rest.encode())
    return tensorflow


class _FirstImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``tensorflow`` once: imports it through :func:`import_tensorflow`, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        import_tensorflow()
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return sys.modules["tensorflow"]

    def exec_module(self, module):
        pass


def quiet_import() -> None:
    """Make this process's first ``import tensorflow``, wherever it happens, a quiet one."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _FirstImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _FirstImport())
