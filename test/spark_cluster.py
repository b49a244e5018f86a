"""A real Spark standalone cluster on 127.0.0.1: one master and two workers from pyspark's spark-class."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyspark


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def standalone_cluster(workers: int = 2, cores: int = 1, memory: str = "1g") -> Iterator[str]:
    """Start a master and ``workers`` workers; yield the master URL; always kill them."""
    home = os.path.dirname(pyspark.__file__)
    env = {
        **os.environ,
        "SPARK_HOME": home,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_MASTER_HOST": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": tempfile.mkdtemp(prefix="spark-logs-"),
        "SPARK_WORKER_DIR": tempfile.mkdtemp(prefix="spark-work-"),
    }
    port = free_port()
    spark_class = str(Path(home) / "bin" / "spark-class")
    logs = Path(env["SPARK_LOG_DIR"])
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        out = open(logs / f"{name}.log", "wb")
        procs.append(subprocess.Popen([spark_class, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True))

    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", str(free_port()))
        _wait_for(lambda: _listening(port), 90, "the Spark master")
        url = f"spark://127.0.0.1:{port}"
        for i in range(workers):
            start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
                  "--memory", memory, "--webui-port", str(free_port()), url)
        _wait_for(lambda: sum("Successfully registered with master" in (logs / f"worker{i}.log").read_text(
            errors="replace") for i in range(workers)) == workers, 120, "the workers to register")
        yield url
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)
