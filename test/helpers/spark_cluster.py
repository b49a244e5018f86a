"""A real Spark standalone cluster on 127.0.0.1: one master and two workers from pyspark's spark-class."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyspark

from helpers.waiting import wait_for


def _master_url(log: Path) -> str | None:
    found = re.search(r"Starting Spark master at (spark://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
    return found.group(1) if found else None


@contextmanager
def standalone_cluster(root: Path | None = None, workers: int = 2, cores: int = 1,
                       memory: str = "1g", spark_home: str | None = None) -> Iterator[str]:
    """Start a master and ``workers`` workers; yield the master URL; always kill them.

    Logs go to ``root/logs`` and the executors' folders (with their stderr) to
    ``root/work``; ``root`` should be a test's own folder (a fresh temporary one if None).
    """
    root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="spark-cluster-"))
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "work").mkdir(parents=True, exist_ok=True)
    home = spark_home or os.path.dirname(pyspark.__file__)  # another pyspark's, e.g. 3.5
    env = {
        **os.environ,
        "SPARK_HOME": home,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_MASTER_HOST": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(root / "logs"),
        "SPARK_WORKER_DIR": str(root / "work"),
    }
    spark_class = str(Path(home) / "bin" / "spark-class")
    logs = Path(env["SPARK_LOG_DIR"])
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "wb") as out:  # the process writes its own copy of the descriptor
            procs.append(subprocess.Popen([spark_class, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))

    try:
        # port 0: the master binds a port of the OS's choosing (no window in which another process could take
        # a port picked in advance) and logs its URL
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", "0",
              "--webui-port", "0")
        url = wait_for(lambda: _master_url(logs / "master.log"), 90, "the Spark master")
        for i in range(workers):
            start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
                  "--memory", memory, "--webui-port", "0", url)
        wait_for(lambda: sum("Successfully registered with master" in (logs / f"worker{i}.log").read_text(
            errors="replace") for i in range(workers)) == workers, 120, "the workers to register")
        yield url
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)
