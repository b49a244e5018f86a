"""What the EMR train step runs: the engine, its workers, and the Spark and YARN settings for them.

By default the train step trains data-parallel on the core nodes with the
``allreduce`` engine: one Spark barrier task per core node, or per GPU on GPU
types (``waveforms.aws.sizing``). A ``[train]`` table that names ``engine`` or
``workers`` itself keeps them; ``engine = "local"`` trains on the master node
alone, as before. Without core nodes the step trains locally on the master.
The distributed engines read through a shard cache on each core node's data
volume (under ``/mnt``): ``[train] shard_cache_gb``, or half of ``[aws]
core_volume_gb`` where the ``[train]`` table does not set it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waveforms import config as cfgmod
from waveforms.aws import instances, sizing
from waveforms.config import AwsConfig, ConfigError

DEFAULT_ENGINE = "allreduce"
DISTRIBUTED = ("allreduce", "elephas")
GPU_RELEASES = ("emr-spark-8.", "emr-7.")  # YARN 3.4 / 3.3 with the GPU plugin, and nvidia-cuda on the image
CACHE_DIR = "/mnt/waveforms/shards"  # EMR mounts a core node's first data volume at /mnt
CACHE_SHARE = 0.75  # of [aws] core_volume_gb at most for the shard cache; the rest for YARN's scratch and logs
CACHE_DEFAULT_SHARE = 0.5  # of [aws] core_volume_gb: the shard cache where [train] does not set shard_cache_gb


@dataclass(frozen=True)
class TrainPlan:
    """The engine flags of the train step and the cluster settings they need."""

    engine: str
    workers: int = 0  # 0: the local engine, no workers
    layout: sizing.Layout | None = None
    flags: list[str] = field(default_factory=list)

    def spark_conf(self) -> dict[str, str]:
        return sizing.spark_conf(self.layout) if self.layout else {}

    def configurations(self) -> list[dict[str, Any]]:
        return sizing.yarn_configurations(self.layout) if self.layout else []


def core_type(cfg: AwsConfig) -> instances.InstanceType:
    """The core nodes' type: the instance table's entry, with any ``core_*`` keys of [aws] over it."""
    known = instances.lookup(cfg.core_instance_type)
    if known is None and not (cfg.core_vcpus and cfg.core_memory_gib and cfg.core_gpus >= 0):
        raise ConfigError(
            f"[aws] core_instance_type {cfg.core_instance_type!r} is not in the launcher's instance table; "
            f"set core_vcpus, core_memory_gib and core_gpus for it, or use one of: {', '.join(instances.known())}"
        )
    base = known or instances.InstanceType(cfg.core_instance_type, cfg.core_vcpus, cfg.core_memory_gib)
    return instances.InstanceType(
        base.name, cfg.core_vcpus or base.vcpus, cfg.core_memory_gib or base.memory_gib,
        base.gpus if cfg.core_gpus < 0 else cfg.core_gpus, base.gpu_model, base.ec2_usd_h, base.emr_usd_h,
    )


def _flag_key(flag: str) -> str:
    """The dotted [train] key that a ``waveforms train`` flag sets."""
    (key,) = [k for f, k, _, _ in cfgmod.cli_options("train") if f == flag]
    return key


def _in_table(table: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = table
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def plan(cfg: AwsConfig, config_file: str | Path | None = None) -> TrainPlan:
    """The train step's engine, workers and resources (raises :class:`ConfigError` for what cannot run)."""
    table = cfgmod.read_file(config_file, "train") if config_file else {}
    train = cfgmod.load("train", config_file) if config_file else cfgmod.STAGE_CONFIGS["train"]()
    engine_set, engine = _in_table(table, _flag_key("--engine"))
    workers_set, workers = _in_table(table, _flag_key("--workers"))
    if not engine_set:
        engine = DEFAULT_ENGINE if cfg.core_instance_count else train.engine
    if engine not in DISTRIBUTED:
        return TrainPlan(engine)
    if not cfg.core_instance_count:
        raise ConfigError(f"[train] engine = {engine!r} trains on the core nodes: set [aws] core_instance_count >= 1 "
                          "(or engine = 'local')")
    itype = core_type(cfg)
    if itype.gpus and not cfg.release_label.startswith(GPU_RELEASES):
        raise ConfigError(f"[aws] GPU core nodes ({itype.name}) need an emr-spark-8.x or emr-7.x release_label "
                          f"(their YARN GPU settings are what the launcher sends), got {cfg.release_label!r}")
    try:
        lay = sizing.layout(itype, cfg.core_instance_count)
    except ValueError as exc:
        raise ConfigError(f"[aws] core_instance_type: {exc}") from exc
    if not workers_set:
        workers = lay.workers
    if engine == "allreduce":
        if workers > lay.workers:
            raise ConfigError(
                f"[train] workers = {workers}, but {cfg.core_instance_count} × {itype.name} hold {lay.workers} "
                "barrier task(s) at once (one per node, or per GPU); a barrier stage needs all its tasks running")
        if not getattr(train, "batch_per_worker", 0) and train.batch_size % workers:
            raise ConfigError(f"[train] batch_size = {train.batch_size} does not split across {workers} workers; "
                              "choose a multiple of the worker count")
    return TrainPlan(engine, workers, lay, ["--engine", engine, "--workers", str(workers),
                                            *cache_flags(cfg, table)])


def cache_gb(cfg: AwsConfig, table: dict[str, Any]) -> float:
    """The train step's shard cache per core node: ``[train] shard_cache_gb`` where ``table`` (the file's
    [train] table) sets it, else :data:`CACHE_DEFAULT_SHARE` of the data volume (none without one)."""
    given, gb = _in_table(table, "shard_cache_gb")
    return float(gb) if given else cfg.core_volume_gb * CACHE_DEFAULT_SHARE


def cache_flags(cfg: AwsConfig, table: dict[str, Any]) -> list[str]:
    """``--set`` flags that put the shard cache on the core nodes' data volume, unless [train] sets its own."""
    gb = cache_gb(cfg, table)
    if _in_table(table, "shard_cache_gb")[0] or not gb:
        return []
    flags = ["--set", f"shard_cache_gb={gb:g}"]
    if not _in_table(table, "shard_cache_dir")[0]:
        flags += ["--set", f"shard_cache_dir={CACHE_DIR}"]
    return flags
