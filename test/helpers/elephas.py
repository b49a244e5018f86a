"""The elephas environment (``.elephas``, made by ``make setup``) as the tests use it."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".elephas" / "bin" / "python"


def python() -> str:
    """The elephas environment's interpreter; the test fails, never skips, without it."""
    if not PYTHON.exists():
        pytest.fail(f"elephas's environment is missing ({PYTHON}): run make setup", pytrace=False)
    return str(PYTHON)


def spark_home() -> str:
    """The folder of the elephas environment's own PySpark (its Spark, for a cluster it can join)."""
    done = subprocess.run([python(), "-c", "import os, pyspark; print(os.path.dirname(pyspark.__file__))"],
                          capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""})
    return done.stdout.strip()
