"""The one SparkSession factory for every stage and every master."""
from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Mapping

log = logging.getLogger(__name__)
logging.getLogger("py4j").setLevel(logging.WARNING)  # py4j logs each connection it opens and closes at INFO


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


def session_conf(master: str, conf: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings ``get_session`` starts a context with: defaults, then ``conf``."""
    defaults = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
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
    return {**defaults, **{k: str(v) for k, v in (conf or {}).items()}}


def conflicts(sc, master: str, settings: Mapping[str, str]) -> list[str]:
    """How the running context ``sc`` differs from ``master`` and ``settings`` (empty: reusable)."""
    found = [f"master {sc.master} != {master}"] if sc.master != master else []
    running = sc.getConf()
    for key, value in sorted(settings.items()):
        if running.get(key) != value:
            found.append(f"{key}={running.get(key)!r} != {value!r}")
    return found


def _stop_active(sc) -> None:
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession() or getattr(SparkSession, "_instantiatedSession", None)
    if session is not None and session.sparkContext is sc:
        session.stop()
    else:
        sc.stop()


def stop_active_session() -> None:
    """Stop the running SparkContext, if any."""
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    if sc is not None:
        _stop_active(sc)


def _stop_at_exit() -> None:
    """Best effort at interpreter exit: a context left to the JVM's shutdown hooks makes
    Spark 3.5's local-cluster executors log pages of stack traces."""
    try:
        stop_active_session()
    except Exception as exc:  # the gateway may already be gone
        log.debug("stopping Spark at exit: %s", exc)


def get_session(
    master: str = "local[*]",
    app_name: str = "waveforms",
    conf: Mapping[str, str] | None = None,
):
    """Return a SparkSession for ``master`` (``local[N]``, ``local-cluster[...]``, ``spark://``, ``yarn``).

    A running session is reused only when its master and every requested
    setting match. Otherwise it is stopped and a new one started, with a
    WARNING naming the old and the new master and what differs (Spark's own
    ``getOrCreate`` would silently hand back the old context). The running
    session is stopped at interpreter exit.
    """
    prepare_env(master)
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    settings = session_conf(master, conf)
    active = SparkContext._active_spark_context
    if active is not None:
        differences = conflicts(active, master, settings)
        if differences:
            log.warning("restarting Spark: the running session (master %s) differs from the one asked for "
                        "(master %s): %s", active.master, master, "; ".join(differences))
            _stop_active(active)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    atexit.unregister(_stop_at_exit)
    atexit.register(_stop_at_exit)  # registered after pyspark's own handlers, so it runs before them
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
