"""The one SparkSession factory for every stage and every master.

Unless debug logging is on (``waveforms -v``), the driver JVM's start-up banner stays out of
a stage's output: the driver logs errors only (``spark-log4j2.properties``), and the JVM's own
early stderr lines (``WARNING: Using incubator modules``) are dropped, and so is Spark 3.5's known shutdown
race (:data:`SHUTDOWN_RACE`); every other line is passed on.

Private API, kept for a quiet stage (measured 2026-12-06, pyspark 4.1.4, ``waveforms transform`` of one
track on ``local[1]``, piped): with only public means (the log4j2 file in
``spark.driver.extraJavaOptions``, ``setLogLevel``, ``spark.ui.showConsoleProgress=false``) a stage still
prints 3 lines on every JVM start: ``WARNING: Using incubator modules: jdk.incubator.vector`` (the JVM's
own warning for the ``--add-modules`` that Spark's launcher always adds; no option turns it off) and
Spark's two ``Setting default log level`` lines (also printed with a ``org.apache.spark.repl.Main`` logger
at the root's level). With the JVM's stderr through :func:`shown`: none. That needs the JVM started by
``pyspark.java_gateway.launch_gateway(conf, popen_kwargs=...)`` and handed to ``SparkContext(gateway=...)``
(both documented parameters, used by pyspark itself), and ``SparkContext._gateway`` /
``SparkContext._active_spark_context`` to know whether this process already runs a JVM or a context
(PySpark has no public query for either: ``SparkContext.getOrCreate`` starts one, and
``SparkSession.getActiveSession`` misses a context made without a session or in another thread).
test/test_cli_quiet.py tests the behaviour (a piped stage shows none of those lines; ``-v`` shows them).
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping

log = logging.getLogger(__name__)
logging.getLogger("py4j").setLevel(logging.WARNING)  # py4j logs each connection it opens and closes at INFO


LOG4J2 = Path(__file__).with_name("spark-log4j2.properties")
LOG4J2_OPTION = f"-Dlog4j2.configurationFile=file:{LOG4J2}"
JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# What the JVM and Spark print on every start, whatever happens next.
BANNER = re.compile(rb"^(WARNING: Using incubator modules: |Using Spark's default log4j profile: "
                    rb"|Setting default log level to |To adjust logging level use sc\.setLogLevel"
                    rb"|\S+ \S+ WARN NativeCodeLoader: Unable to load native-hadoop library)")


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


def quiet() -> bool:
    """Whether Spark's start-up banner is kept out of the output: unless debug logging is on (``-v``)."""
    return not logging.getLogger().isEnabledFor(logging.DEBUG)


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


def quiet_conf(settings: Mapping[str, str]) -> dict[str, str]:
    """``settings`` with the driver's log4j2 file after the user's ``spark.driver.extraJavaOptions``.

    The option counts only where it starts the JVM, so :func:`conflicts` leaves it out.
    """
    java = settings.get(JAVA_OPTIONS, "")
    if "log4j2.configurationFile" in java:
        return dict(settings)
    return {**settings, JAVA_OPTIONS: f"{java} {LOG4J2_OPTION}".strip()}


# SPARK-47121, fixed in Spark 4.0 and not in 3.5 (EMR 7.x's): while a standalone scheduler backend stops, its
# driver endpoint can still schedule work on a pool it has shut down, and the RejectedExecutionException is
# logged with its stack at ERROR after the stage has finished. A second race of the same stop: an executor's
# message arrives after the scheduler or app-client endpoint was removed ("Could not find CoarseGrainedScheduler", "... AppClient"). Both
# were seen on a loaded machine after a stage that succeeded; neither is a fault.
SHUTDOWN_RACE = re.compile(rb"RejectedExecutionException: Task .*StandaloneSchedulerBackend\$StandaloneDriverEndpoint"
                           rb"|SparkException: Could not find (CoarseGrainedScheduler|AppClient)\.")
LOG_RECORD = re.compile(rb"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d ERROR ")  # spark-log4j2.properties' pattern
TRACE = (b"\t", b"Caused by: ", b"Suppressed: ")


def shown(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The JVM's stderr ``lines`` a stage passes on: not :data:`BANNER` lines, nor a record of
    :data:`SHUTDOWN_RACE` (its log line, exception and stack). A log line waits for the next line, which
    tells whether it begins that record."""
    held, in_trace = None, False
    for line in lines:
        if in_trace and line.startswith(TRACE):
            continue
        in_trace = False
        if SHUTDOWN_RACE.search(line):
            held, in_trace = None, True
            continue
        if held is not None:
            yield held
            held = None
        if LOG_RECORD.match(line):
            held = line
        elif not BANNER.match(line):
            yield line
    if held is not None:
        yield held


def _forward_stderr(stream: IO[bytes]) -> None:
    """Copy the JVM's stderr to ours line by line (the lines :func:`shown` passes), until it closes."""
    for line in shown(iter(stream.readline, b"")):
        try:
            os.write(2, line)
        except OSError:  # our stderr is gone; keep draining so the JVM never blocks on a full pipe
            pass


def _launch_quiet_gateway(master: str, app_name: str, settings: Mapping[str, str]) -> None:
    """Start the driver JVM with its stderr through :func:`_forward_stderr`, as pyspark would start it otherwise."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    conf = SparkConf().setMaster(master).setAppName(app_name).setAll(list(settings.items()))
    gateway = launch_gateway(conf, popen_kwargs={"stderr": subprocess.PIPE})
    threading.Thread(target=_forward_stderr, args=(gateway.proc.stderr,), name="spark-stderr", daemon=True).start()
    SparkContext(conf=conf, gateway=gateway)


def conflicts(sc, master: str, settings: Mapping[str, str]) -> list[str]:
    """How the running context ``sc`` differs from ``master`` and ``settings`` (empty: reusable)."""
    found = [f"master {sc.master} != {master}"] if sc.master != master else []
    running = sc.getConf()
    for key, value in sorted(settings.items()):
        now = running.get(key)
        if key == JAVA_OPTIONS and now is not None:
            now = now.replace(LOG4J2_OPTION, "").strip()
        if now != value:
            found.append(f"{key}={now!r} != {value!r}")
    return found


def _stop_active(sc) -> None:
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
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

    hush = quiet()
    settings = session_conf(master, conf)
    active = SparkContext._active_spark_context
    if active is not None:
        differences = conflicts(active, master, settings)
        if differences:
            log.warning("restarting Spark: the running session (master %s) differs from the one asked for "
                        "(master %s): %s", active.master, master, "; ".join(differences))
            _stop_active(active)
    # The first context of the process starts the JVM; under spark-submit it is already running.
    start = quiet_conf(settings) if hush else settings
    if hush and SparkContext._gateway is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        _launch_quiet_gateway(master, app_name, start)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in start.items():
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


def stage_context(master: str, app_name: str, conf: Mapping[str, str] | None = None):
    """The SparkContext a stage runs its tasks on: :func:`get_session`'s, with the package
    shipped to the executors of a non-local master (whose Python may lack it)."""
    sc = get_session(master, app_name, conf).sparkContext
    if not is_local_master(master):
        ship_package(sc)
    return sc
