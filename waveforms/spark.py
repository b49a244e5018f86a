"""The one SparkSession factory for every stage and every master."""
from __future__ import annotations

import os
import sys
from typing import Mapping


def is_local_master(master: str) -> bool:
    return master.startswith("local")


def prepare_env(master: str) -> None:
    """Environment the driver and executors need before the JVM starts.

    Executors run this interpreter (the venv's), not ``python3`` from PATH; for
    local and local-cluster masters everything binds to loopback.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if is_local_master(master):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def get_session(
    master: str = "local[*]",
    app_name: str = "waveforms",
    conf: Mapping[str, str] | None = None,
):
    """Return a SparkSession for ``master`` (``local[N]``, ``local-cluster[...]``, ``spark://``, ``yarn``)."""
    prepare_env(master)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName(app_name)
    defaults = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.executorEnv.PYSPARK_PYTHON": os.environ["PYSPARK_PYTHON"],
        "spark.pyspark.python": os.environ["PYSPARK_PYTHON"],
        "spark.task.maxFailures": "4",
    }
    local_ip = os.environ.get("SPARK_LOCAL_IP")
    if local_ip:
        defaults["spark.driver.host"] = local_ip
        defaults["spark.driver.bindAddress"] = local_ip
    if master.startswith("local-cluster"):
        # local-cluster executors are separate JVMs; let them find the package.
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        defaults["spark.executorEnv.PYTHONPATH"] = pkg_root + os.pathsep + os.environ.get("PYTHONPATH", "")
    for key, value in {**defaults, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def package_zip(dest_dir: str) -> str:
    """Zip the ``waveforms`` package (sources only) into ``dest_dir``; returns the zip's path."""
    import zipfile
    from pathlib import Path

    pkg = Path(__file__).resolve().parent
    out = Path(dest_dir) / "waveforms.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(pkg.rglob("*.py")):
            zf.write(path, path.relative_to(pkg.parent).as_posix())
    return str(out)


def ship_package(sc) -> None:
    """Make ``import waveforms`` work on executors of a cluster whose Python lacks the package."""
    import tempfile

    sc.addPyFile(package_zip(tempfile.mkdtemp(prefix="waveforms-pkg-")))
