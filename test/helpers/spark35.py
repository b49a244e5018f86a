"""The PySpark 3.5.6 tier (the Spark of every EMR 7.x release): ``.spark35``, made by ``make setup``.

A process with :func:`env35` runs the stage CLIs with pyspark 3.5.6 first on PYTHONPATH and as
SPARK_HOME, as EMR's spark-submit puts the cluster's PySpark ahead of the venv's.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPARK35 = ROOT / ".spark35"
SPARK35_HOME = SPARK35 / "pyspark"


def require() -> None:
    """The tier fails, never skips, without its PySpark."""
    if not (SPARK35_HOME / "__init__.py").exists():
        pytest.fail("pyspark 3.5 is not installed in .spark35: run make setup", pytrace=False)


def env35() -> dict[str, str]:
    """This environment with pyspark 3.5.6 first on PYTHONPATH and as SPARK_HOME."""
    path = os.pathsep.join(p for p in (str(SPARK35), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "SPARK_HOME": str(SPARK35_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "3"}
