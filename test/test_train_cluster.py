"""elephas on a real Spark standalone cluster (a master and two workers on 127.0.0.1).

The CLI runs in the main environment and hands the run to elephas's own (``.elephas``), whose
PySpark 4.0 drives a cluster of the same Spark.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import elephas as elephas_env
from helpers.spark_cluster import standalone_cluster
from helpers.train import tone_dataset
from helpers.waiting import wait_for
from waveforms.model import load


pytestmark = pytest.mark.slow  # a standalone cluster, SIGKILL


@pytest.fixture(scope="module")
def cluster_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def cluster(cluster_root):
    with standalone_cluster(cluster_root, workers=2, spark_home=elephas_env.spark_home()) as url:
        yield url


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tone_dataset(tmp_path_factory.mktemp("cluster-data") / "ds")


def train_cmd(data, out, master, mode, epochs=3):
    return [sys.executable, "-m", "waveforms", "train", "--data", str(data), "--model-dir", str(out),
            "--preset", "tiny", "--engine", "elephas", "--mode", mode, "--master", master, "--workers", "2",
            "--epochs", str(epochs), "--batch-size", "4", "--window", "64", "--seed", "2",
            "--set", "elephas.windows_per_worker=32", "--set", "learning_rate=0.01",
            # a fixed, stable recipe: these tests are about the cluster, not the schedule
            "--set", "lr_schedule=constant", "--set", "warmup_steps=0", "--set", "clip_norm=1.0"]


def val_losses(out):
    return [json.loads(line)["val_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def task_workers(master: str) -> list[int]:
    """Python task processes forked by pyspark daemons under this cluster's worker JVMs."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                procs[int(entry)] = (_ppid(int(entry)), _cmdline(int(entry)))
            except (OSError, IndexError, ValueError):
                pass

    def under_cluster(pid: int) -> bool:
        while pid in procs and pid > 1:
            if "deploy.worker.Worker" in procs[pid][1] and master in procs[pid][1]:
                return True
            pid = procs[pid][0]
        return False

    return [pid for pid, (ppid, cmd) in procs.items()
            if "pyspark.daemon" in cmd and "pyspark.daemon" in procs.get(ppid, (0, ""))[1] and under_cluster(pid)]


def test_synchronous_training_on_a_standalone_cluster(cluster, data, tmp_path):
    out = tmp_path / "model"
    done = subprocess.run(train_cmd(data, out, cluster, "synchronous"), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = val_losses(out)
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]
    assert load(out).config.sample_rate == 8000


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of ``pid`` in clock ticks (-1 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[11]) + int(fields[12])


def busy_task_worker(master: str) -> int | None:
    """A task worker that is running a task now: it used CPU over the last 0.2 s."""
    before = {pid: cpu_ticks(pid) for pid in task_workers(master)}
    time.sleep(0.2)
    return next((pid for pid, t in before.items() if 0 <= t < cpu_ticks(pid)), None)


def crashed_tasks(cluster_root: Path) -> int:
    """Tasks the executors report as failed by a crashed Python worker (their stderr in the work folder)."""
    return sum(p.read_text(errors="replace").count("Python worker exited unexpectedly (crashed)")
               for p in (cluster_root / "work").rglob("stderr"))


def test_a_killed_python_worker_is_retried_and_asynchronous_training_completes(cluster, cluster_root, data,
                                                                              tmp_path):
    out = tmp_path / "model"
    crashed_before = crashed_tasks(cluster_root)
    proc = subprocess.Popen(train_cmd(data, out, cluster, "asynchronous", epochs=2), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    def kill_a_busy_worker() -> int | None:
        pid = busy_task_worker(cluster)  # a worker in the middle of a task, not an idle one
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return pid

    try:
        killed = wait_for(kill_a_busy_worker, 240, "a busy task worker", every=0, alive=lambda: proc.poll() is None)
        _, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    # the kill failed a running task, and Spark ran it again: training still has every epoch
    assert crashed_tasks(cluster_root) > crashed_before
    losses = val_losses(out)
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert load(out).config.sample_rate == 8000
