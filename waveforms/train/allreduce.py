"""The allreduce engine: N training processes as one Spark barrier stage, gradients all-reduced every step.

The driver runs ``rdd.barrier().mapPartitions`` over N partitions: Spark starts
all N tasks at once or none. Each task learns its rank (``partitionId``), picks
a free port on its host, exchanges ``host:port`` with the others through
``allGather``, and starts one rank process (:mod:`waveforms.train.rank`) with
the resulting ``TF_CONFIG``, its share of the host's CPU threads and the GPUs
Spark assigned it. The ranks run the training loop (:mod:`waveforms.train.loop`);
rank 0 writes checkpoints and the artifact to ``model_dir``, which every
executor must reach (``s3://`` on a cluster of several machines).

A rank that dies fails its task, and Spark fails the whole barrier stage (its
other tasks are killed; each rank process dies with its task). The driver
reruns the stage up to ``allreduce.retries`` times (Spark may also retry a
barrier stage itself), and every rerun resumes from the last checkpoint: the
driver applies ``--fresh`` once, before the first stage. A bad input (a
UserError in a rank) is not retried.

A host that does not come back never makes the run wait forever: Spark's own
bound on a barrier job's wait for its task slots is set from
``allreduce.slots_wait_s`` (on a cluster master), a :class:`SlotWatch` bounds the
wait of a stage Spark resubmits itself, and once either is spent the driver
stops with :class:`SlotsMissing`, naming the slots it needs (the run resumes from its last checkpoint once they are back, or
with fewer ``--workers``). Ranks on several hosts need a ``model_dir`` every host
reaches (``s3://``): a local path is refused before the first step.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from typing import Any, Iterator

from waveforms import config as cfgmod
from waveforms.config import TrainConfig
from waveforms.runtime.errors import UserError
from waveforms.runtime.ports import free_port
from waveforms.train import recipe
from waveforms.train.collective import tf_config

log = logging.getLogger(__name__)

USER_MARK = "waveforms-user-error: "  # prefixes a rank's bad-input message in a failed task's error
SPARK_SLOTS = "requires more slots than the total number of slots"  # Spark's barrier check gave up waiting


class StageFailed(UserError):
    """The barrier stage failed more often than ``allreduce.retries`` allows."""


class SlotsMissing(UserError):
    """Fewer task slots than ranks for longer than ``allreduce.slots_wait_s``: a host lost for good."""


def shared_model_dir(model_dir: str, hosts: set[str]) -> str:
    """The error for ranks on several hosts sharing a local ``model_dir`` ("" when it is fine)."""
    if len(hosts) < 2 or model_dir.startswith("s3://"):
        return ""
    return (f"model_dir {model_dir} is a local path, but the ranks run on {len(hosts)} hosts "
            f"({', '.join(sorted(hosts))}): each would read and write its own disk; give an s3:// model_dir")


def _die_with_parent() -> None:
    """In the rank process before exec (Linux): SIGKILL it when its task's process dies."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def host_threads(cores: int, ranks_here: int, threads: int = 0) -> int:
    """CPU threads per rank: ``threads`` if set, else the host's cores split among its ranks (at least 1)."""
    return threads if threads > 0 else max(1, cores // max(1, ranks_here))


def quota_cores(cgroup_file: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (v1 ``cpu.cfs_quota_us``, v2 ``cpu.max``); None if none."""
    try:
        lines = open(cgroup_file).read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        try:
            if controllers == "":  # v2
                quota, period = open(f"{root}/{path.lstrip('/')}/cpu.max").read().split()
                return None if quota == "max" else int(quota) / int(period)
            if "cpu" in controllers.split(","):
                base = f"{root}/{controllers}/{path.lstrip('/')}"
                quota = int(open(f"{base}/cpu.cfs_quota_us").read())
                return None if quota <= 0 else quota / int(open(f"{base}/cpu.cfs_period_us").read())
        except (OSError, ValueError):
            continue
    return None


def host_cores() -> int:
    """The cores this host gives its tasks: the CPU count, or fewer where a cgroup quota caps it (at least 1)."""
    cores = os.cpu_count() or 1
    quota = quota_cores()
    return max(1, min(cores, int(quota + 0.5))) if quota else cores


def rank_task(payload: str, _rows: Iterator[Any]) -> Iterator[str]:
    """The barrier task of one rank: start its training process, wait, yield its result as JSON."""
    from pyspark import BarrierTaskContext

    ctx = BarrierTaskContext.get()
    rank = ctx.partitionId()
    host = os.environ.get("SPARK_LOCAL_IP") or ctx.getTaskInfos()[rank].address.rsplit(":", 1)[0]
    port = free_port(host)
    peers = ctx.allGather(f"{host}:{port}")  # in partition (rank) order
    cfg = cfgmod.from_json(payload)
    problem = shared_model_dir(cfg.model_dir, {p.rsplit(":", 1)[0] for p in peers})
    if problem:
        raise RuntimeError(USER_MARK + problem)
    threads = host_threads(host_cores(), sum(p.rsplit(":", 1)[0] == host for p in peers), cfg.allreduce.threads)
    env = {**os.environ, "TF_CONFIG": tf_config(peers, rank), "WAVEFORMS_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    gpus = ctx.resources().get("gpu")
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)
    work = tempfile.mkdtemp(prefix=f"waveforms-rank{rank}-")
    try:
        cfg_path, result_path = os.path.join(work, "config.json"), os.path.join(work, "result.json")
        with open(cfg_path, "w") as fh:
            fh.write(payload)
        proc = subprocess.Popen(
            [sys.executable, "-m", "waveforms.train.rank", cfg_path, result_path, "--rank", str(rank),
             "--model-dir", cfg.model_dir],
            env=env, stdout=sys.stderr, preexec_fn=_die_with_parent)
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result: dict[str, Any] = {}
        if os.path.exists(result_path):
            with open(result_path) as fh:
                result = json.load(fh)
        if code != 0:
            what = result.get("error") or f"exit status {code}"
            if result.get("user_error"):
                raise RuntimeError(USER_MARK + what)
            raise RuntimeError(f"rank {rank} ({host}:{port}) failed: {what}")
        yield json.dumps({"rank": rank, "peer": f"{host}:{port}", **result})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _reason(exc: BaseException) -> str:
    """The most telling line of a failed Spark job's error: a rank's, else the first Python exception's."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:
        if USER_MARK in line:
            return line[line.index(USER_MARK):]
    for line in lines:
        if line.startswith("RuntimeError: rank "):
            return line[len("RuntimeError: "):]
    for line in lines:
        if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line) and not line.startswith("py4j"):
            return line
    return lines[0] if lines else type(exc).__name__


def executors(sc) -> int:
    """Executors registered with the driver now (not the driver itself).

    Private API (``sc._jsc``), kept: PySpark's public calls cannot tell (its ``StatusTracker`` has no
    executor list), and ``defaultParallelism`` counts cores with a floor of 2 (or returns
    ``spark.default.parallelism``): measured on ``local-cluster[1,1,1024]``, 1 executor here and
    ``defaultParallelism`` 2, so a :class:`SlotWatch` needing 2 ranks would never see the host missing.
    """
    return max(0, sc._jsc.sc().getExecutorMemoryStatus().size() - 1)


def barrier_conf(wait_s: float) -> dict[str, str]:
    """Spark's bound on how long a barrier stage waits for its task slots: about ``wait_s`` seconds, checked
    every 15 s at most, in whole seconds (Spark refuses "7.5s"); the job then fails with Spark's
    "more slots than ..." error."""
    interval = max(1, min(15, int(wait_s // 4)))
    return {"spark.scheduler.barrier.maxConcurrentTasksCheck.interval": f"{interval}s",
            "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": str(math.ceil(wait_s / interval))}


class SlotWatch:
    """Cancels a job group once the cluster has had fewer executors than ``need`` for ``wait_s`` seconds.

    Spark checks a barrier job's slots when the job is submitted (:func:`barrier_conf`), but a barrier
    stage that Spark itself resubmits after losing an executor waits for its slots without a bound."""

    def __init__(self, sc, group: str, need: int, wait_s: float, every_s: float = 1.0):
        self.sc, self.group, self.need, self.wait_s, self.every_s = sc, group, need, wait_s, every_s
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="slot-watch", daemon=True)

    def _watch(self) -> None:
        since = None
        while not self._stop.wait(self.every_s):
            if executors(self.sc) >= self.need:
                since = None
                continue
            since = since or time.monotonic()
            if time.monotonic() - since >= self.wait_s:
                self.fired = True
                self.sc.cancelJobGroup(self.group)
                return

    def __enter__(self) -> SlotWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_stage(sc, cfg: TrainConfig) -> list[dict[str, Any]]:
    """One barrier stage of ``workers`` ranks; each rank's result. On a cluster master a :class:`SlotWatch`
    bounds its wait for slots; a wait it ends is a :class:`SlotsMissing`."""
    from functools import partial

    from waveforms.runtime.spark import is_local_master

    n = cfg.workers
    payload = cfgmod.to_json(cfg, "train")
    group = f"waveforms-allreduce-{uuid.uuid4().hex[:8]}"
    sc.setJobGroup(group, "allreduce barrier stage", interruptOnCancel=True)
    rdd = sc.parallelize(range(n), n).barrier().mapPartitions(partial(rank_task, payload))
    if is_local_master(cfg.master):
        return [json.loads(r) for r in rdd.collect()]
    with SlotWatch(sc, group, n, cfg.allreduce.slots_wait_s) as watch:
        try:
            return [json.loads(r) for r in rdd.collect()]
        except Exception:
            if watch.fired:
                raise slots_missing(sc, cfg) from None
            raise


def slots_missing(sc, cfg: TrainConfig) -> SlotsMissing:
    have = executors(sc)
    return SlotsMissing(
        f"the allreduce stage needs {cfg.workers} task slots at once (one per rank), but the cluster had fewer "
        f"for {cfg.allreduce.slots_wait_s:.0f} s (allreduce.slots_wait_s; {have} executor(s) now): a host is lost; "
        "bring it back and rerun (training resumes from its last checkpoint), or rerun with fewer --workers")


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train with ``workers`` ranks on ``master``; rank 0 writes the artifact; returns its summary."""
    from waveforms.runtime.spark import is_local_master, stage_context  # imports pyspark

    batch = recipe.global_batch(cfg, cfg.workers)  # a batch that splits among the ranks, before Spark starts
    if cfg.fresh:  # here, once: every (re)run of the stage resumes from what is there
        # here, not at the top: this module runs in Spark tasks, which start the rank process and load no TensorFlow
        from waveforms.storage import OutputDir
        from waveforms.train.loop import start_fresh  # TensorFlow, in the driver, for --fresh only

        with OutputDir(cfg.model_dir) as out:
            start_fresh(out)
        cfg = replace(cfg, fresh=False)
    local = is_local_master(cfg.master)
    sc = stage_context(cfg.master, "waveforms-train", None if local else barrier_conf(cfg.allreduce.slots_wait_s))
    n = cfg.workers
    log.info("allreduce: %d ranks on %s, a global batch of %d windows", n, cfg.master, batch)
    for attempt in range(cfg.allreduce.retries + 1):
        try:
            results = run_stage(sc, cfg)
            break
        except Exception as exc:  # py4j's Py4JJavaError: the stage failed
            if isinstance(exc, SlotsMissing):
                raise
            if SPARK_SLOTS in str(exc):
                raise slots_missing(sc, cfg) from None
            reason = _reason(exc)
            if USER_MARK in reason:
                raise UserError(reason[len(USER_MARK):]) from None
            if attempt == cfg.allreduce.retries:
                raise StageFailed(f"the allreduce stage failed {attempt + 1} times; the last time: {reason}") from None
            log.warning("the allreduce stage failed (%s); rerunning it from the last checkpoint (%d of %d)",
                        reason, attempt + 1, cfg.allreduce.retries)
    summary = next(r for r in results if r["rank"] == 0)
    summary.pop("rank")
    summary.pop("peer")
    return summary
