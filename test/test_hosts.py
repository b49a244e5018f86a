"""The allreduce engine across emulated hosts (test/helpers/hosts.py): its own network, CPU and /tmp per host.

One cluster for the module: host 0 runs the S3 server, the Spark master and the driver; hosts 1 and 2
a worker each. The model and the data are on its S3. Faults: a link cut for longer than the collective
timeout and a host lost (every process killed, its link down) and back, one after the other in one run;
a host that never comes back; and a local model_dir shared by ranks on two hosts.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from helpers import hosts as hostlib
from helpers.train import tone_dataset
from helpers.waiting import wait_for
from test_train_allreduce import argv, cfg_for, weights
from waveforms.train import run

pytestmark = pytest.mark.slow

TIMEOUT_S = 15  # the collective's: a lost peer fails the step within this
S3 = f"s3://{hostlib.BUCKET}"


@pytest.fixture(scope="module")
def cluster():
    why = hostlib.check()
    if why:
        pytest.skip(why)
    with hostlib.Cluster(workers=2, cpu=0.5, head_cpu=0.8) as c:
        yield c


@pytest.fixture(scope="module")
def data(cluster, tmp_path_factory) -> Path:
    """A tone dataset on local disk, and the same files on the cluster's S3 under ``ds/``."""
    local = tone_dataset(tmp_path_factory.mktemp("hosts") / "ds")
    shutil.copytree(local, cluster.shared / "ds")
    copy = cluster.on_head(["-m", "waveforms", "aws", "sync", str(cluster.shared / "ds"), f"{S3}/ds"])
    assert copy.returncode == 0, copy.stderr[-3000:]
    return local


def on_s3(cfg, name: str):
    return replace(cfg, data=f"{S3}/ds", model_dir=f"{S3}/{name}")


def train_on(cluster, cfg, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**cluster.env(cluster.head), "PYTHONPATH": str(hostlib.ROOT)}
    return cluster.head.run(argv(cfg, cluster.master_url, 2, *extra), env, timeout)


def apps(cluster) -> set[Path]:
    """The executors' folders of every Spark application so far, on every worker host."""
    return {app for host in cluster.hosts[1:] for app in (host.tmp / "spark-work").glob("app-*")}


def executor_logs(folders) -> str:
    """The ranks' output: the stderr of every executor in the applications' ``folders``."""
    return "".join(log.read_text(errors="replace") for app in folders for log in sorted(app.rglob("stderr")))


def rank_hosts(cluster) -> set[str]:
    """The addresses the ranks announced, from the executors' logs on each worker host."""
    return set(re.findall(r"rank \d of 2 at ([\d.]+):\d+", executor_logs(apps(cluster))))


def fetch(cluster, uri: str, name: str) -> Path:
    """Copy ``uri`` (a model folder on the cluster's S3) to this machine."""
    target = cluster.shared / name
    done = cluster.on_head(["-m", "waveforms", "aws", "sync", uri, str(target)])
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def rows(model_dir: Path) -> list[dict]:
    return [json.loads(r) for r in (model_dir / "metrics.jsonl").read_text().splitlines()]


def latest(cluster, model: str) -> int:
    done = cluster.on_head(["-c", "from waveforms import storage; "
                                  f"print(storage.read_text('{model}/checkpoints/latest').strip())"], timeout=60)
    found = re.search(r"ckpt-(\d+)", done.stdout)
    return int(found.group(1)) if found else -1


def rank_processes(cluster) -> list[int]:
    found = []
    for host in cluster.hosts:
        for pid in host.pids():
            try:
                if b"waveforms.train.rank" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
    return found


def test_a_quota_the_kernel_would_refuse_is_an_error_naming_the_finest_period():
    # 0.3 of a core over 2 ms is 600 us, under the kernel's 1 ms: refused before anything is made, naming
    # ceil(1000 / 0.3) = 3334 us; at that period both quotas are at least 1 ms
    with pytest.raises(ValueError, match="at least 3334 us"):
        hostlib.Cluster(workers=1, cpu=0.3, period_us=2000)
    assert hostlib.finest_period_us(0.3) == 3334 and int(0.3 * 3334) >= 1000 and int(0.3 * 3333) < 1000
    assert hostlib.finest_period_us(2.0) == 1000  # the kernel's smallest period


def test_two_hosts_take_the_steps_of_one_process_with_the_model_on_s3(cluster, data, tmp_path):
    """The oracle across real links: ranks on hosts 1 and 2 end with the local engine's weights."""
    run(cfg_for(tmp_path, data, "local"))
    done = train_on(cluster, on_s3(cfg_for(tmp_path, data, "two"), "two"))
    assert done.returncode == 0, done.stderr[-4000:]
    got = fetch(cluster, f"{S3}/two", "two")
    for a, b in zip(weights(tmp_path / "local"), weights(got)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    meta = json.loads((got / "model.json").read_text())["training"]
    assert (meta["engine"], meta["workers"], meta["steps"]) == ("allreduce", 2, 6)
    assert [r["step"] for r in rows(got)] == [r["step"] for r in rows(tmp_path / "local")]
    assert rank_hosts(cluster) == {h.address for h in cluster.hosts[1:]}  # one rank on each worker host


def test_a_local_model_dir_shared_by_two_hosts_is_refused_before_any_step(cluster, data, tmp_path):
    cfg = replace(cfg_for(tmp_path, data), data=f"{S3}/ds", model_dir="/tmp/model")
    done = train_on(cluster, cfg, timeout=600)
    assert done.returncode == 1
    assert "model_dir /tmp/model is a local path, but the ranks run on 2 hosts" in done.stderr
    assert "give an s3:// model_dir" in done.stderr and "Traceback" not in done.stderr
    assert not any((h.tmp / "model" / "checkpoints").exists() for h in cluster.hosts)  # no step was taken


def fault_run(cluster, tmp_path, data, name: str, faults: list[tuple[int, Callable]], steps: int = 30,
              slots_wait_s: int = 300) -> tuple[subprocess.CompletedProcess, dict]:
    """Train ``steps`` steps on 2 hosts (two stage reruns allowed per fault) and apply each ``(checkpoint, fault)``
    in turn: ``fault(cluster)`` once that checkpoint is on S3. The run's output and timings (the run's seconds, each fault's, and the checkpoints
    the stage resumed from)."""
    cfg = on_s3(cfg_for(tmp_path, data, name, steps=steps, checkpoint_every=5, val_every=20, log_every=5), name)
    cmd = argv(cfg, cluster.master_url, 2, "--set", f"allreduce.timeout_s={TIMEOUT_S}",
               "--set", f"allreduce.slots_wait_s={slots_wait_s}", "--set", f"allreduce.retries={2 * len(faults)}")
    log = cluster.logs / f"{name}.log"
    before = apps(cluster)
    t0 = time.monotonic()
    proc = cluster.head.popen(cmd, {**cluster.env(cluster.head), "PYTHONPATH": str(hostlib.ROOT)}, log)
    at = []
    try:
        for step, fault in faults:
            wait_for(lambda: latest(cluster, f"{S3}/{name}") >= step, 600, f"checkpoint {step} of {name}", every=1,
                     alive=lambda: proc.poll() is None, detail=lambda: log.read_text()[-4000:])
            at.append(time.monotonic() - t0)
            fault(cluster)
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text(errors="replace")
    resumed = [int(m) for m in re.findall(r"resuming from step (\d+)", executor_logs(apps(cluster) - before))]
    return subprocess.CompletedProcess(cmd, proc.returncode, out, out), {
        "run_s": time.monotonic() - t0, "faults_at_s": at, "resumed": resumed}


def check_complete(cluster, name: str, steps: int) -> None:
    got = fetch(cluster, f"{S3}/{name}", name)
    assert json.loads((got / "model.json").read_text())["training"]["steps"] == steps
    assert [r["step"] for r in rows(got)] == list(range(5, steps + 1, 5))  # no gap, no duplicate
    assert rank_processes(cluster) == []


def partition(c) -> None:
    """Cut host 2's link for longer than the collective's timeout, then restore it."""
    c.hosts[2].link(False)
    time.sleep(TIMEOUT_S + 5)
    c.hosts[2].link(True)


def lose_host_2(c) -> None:
    """Host 2 lost (every process killed, its link down) for longer than the collective's timeout, then back."""
    c.hosts[2].link(False)
    c.hosts[2].kill()
    time.sleep(TIMEOUT_S + 5)
    c.hosts[2].link(True)
    c.start_worker(2)


def test_a_link_cut_then_a_host_lost_each_resume_from_the_last_checkpoint_and_the_run_completes(
        cluster, data, tmp_path, record_property):
    """Two faults in one run: a link cut longer than the timeout and restored at checkpoint 10, then host 2
    lost and back at checkpoint 25. Each fails the stage, which resumes from a checkpoint no older."""
    done, t = fault_run(cluster, tmp_path, data, "faults", [(10, partition), (25, lose_host_2)], steps=45)
    assert done.returncode == 0, done.stdout[-4000:]
    assert done.stdout.count("the allreduce stage failed") >= 2, done.stdout[-4000:]
    check_complete(cluster, "faults", 45)
    resumed = t["resumed"]
    assert len(resumed) >= 2 and min(resumed) >= 10 and max(resumed) >= 25, resumed  # no checkpoint lost
    record_property("faults", t)


def test_a_host_that_never_comes_back_stops_the_run_with_an_error_naming_the_slots(cluster, data, tmp_path):
    def lose_host_2_for_good(c):
        c.hosts[2].link(False)
        c.hosts[2].kill()

    try:
        done, t = fault_run(cluster, tmp_path, data, "gone", [(10, lose_host_2_for_good)], slots_wait_s=30)
    finally:
        cluster.hosts[2].link(True)
        cluster.start_worker(2)
    assert done.returncode == 1, done.stdout[-4000:]
    assert re.search(r"the allreduce stage needs 2 task slots at once \(one per rank\), but the cluster had fewer "
                     r"for 30 s \(allreduce.slots_wait_s; 1 executor\(s\) now\)", done.stdout), done.stdout[-3000:]
    assert "Traceback" not in done.stdout
    assert rank_processes(cluster) == []
