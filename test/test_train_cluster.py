"""elephas on a real Spark standalone cluster (a master and two workers on 127.0.0.1)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spark_cluster import standalone_cluster
from train_helpers import tone_dataset
from waveforms.model import load


@pytest.fixture(scope="module")
def cluster():
    with standalone_cluster(workers=2) as url:
        yield url


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tone_dataset(tmp_path_factory.mktemp("cluster") / "ds")


def train_cmd(data, out, master, mode, epochs=3):
    return [sys.executable, "-m", "waveforms", "train", "--data", str(data), "--model-dir", str(out),
            "--preset", "tiny", "--engine", "elephas", "--mode", mode, "--master", master, "--workers", "2",
            "--epochs", str(epochs), "--batch-size", "4", "--window", "64", "--seed", "2",
            "--set", "elephas.windows_per_worker=32", "--set", "learning_rate=0.01"]


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


def test_a_killed_python_worker_is_retried_and_asynchronous_training_completes(cluster, data, tmp_path):
    out = tmp_path / "model"
    proc = subprocess.Popen(train_cmd(data, out, cluster, "asynchronous", epochs=2), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.time() + 240
        while killed is None and time.time() < deadline and proc.poll() is None:
            workers = task_workers(cluster)
            if workers:
                time.sleep(1.0)  # let the task get going
                for pid in workers:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed = pid
                        break
                    except ProcessLookupError:
                        continue
            time.sleep(0.1)
        _, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no task worker appeared"
    assert proc.returncode == 0, stderr[-3000:]
    losses = val_losses(out)
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert load(out).keras_model is not None
