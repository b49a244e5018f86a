"""Pure functions from an :class:`AwsConfig` to the exact EMR and S3 requests.

Nothing here talks to AWS, so ``launch --dry-run`` prints what ``launch`` sends.

Layout under ``s3://BUCKET/PREFIX``::

    raw/ dataset/ model/ generated/     data, shared between runs (overridable)
    logs/                               EMR log URI (overridable)
    runs/RUN_ID/code/                   the wheel, bootstrap.sh, step.py
    runs/RUN_ID/config/CONFIG.toml      the launch config (stage tables included)

Each stage is a ``command-runner.jar`` step running ``spark-submit`` of
``step.py`` (see :mod:`waveforms.aws.step`), which fetches the config from S3
and calls ``waveforms <stage> --config LOCAL_COPY`` with ``s3://`` paths. The
train step also carries the engine, its workers and their Spark resources
(:mod:`waveforms.aws.train_plan`), and runs up to ``train_attempts`` times,
each retry resuming from the last checkpoint.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waveforms import config as cfgmod
from waveforms import storage
from waveforms.aws import instances, sizing, train_plan
from waveforms.aws.train_plan import TrainPlan
from waveforms.config import AwsConfig, ConfigError
from waveforms.stages import EMR_STEPS as PIPELINE

VENV = "/opt/waveforms/venv"
VENV_PYTHON = f"{VENV}/bin/python"
ELEPHAS_VENV = "/opt/waveforms/elephas"  # elephas's own pins (waveforms/elephas-requirements.txt)
ELEPHAS_PYTHON = f"{ELEPHAS_VENV}/bin/python"
RELEASE_RE = re.compile(r"^emr-(spark-)?\d+\.\d+\.\d+$")
BOOTSTRAP_NAME = "bootstrap.sh"
STEP_NAME = "step.py"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Locations:
    """Every ``s3://`` URI a run reads or writes."""

    base: str
    raw: str
    dataset: str
    model: str
    generated: str
    logs: str
    code: str
    config: str
    wheel: str
    bootstrap: str
    step: str


def validate(cfg: AwsConfig, config_file: str | Path | None = None) -> None:
    """Raise :class:`ConfigError` for anything EMR would reject or run wrongly."""
    if not cfg.bucket:
        raise ConfigError("[aws] bucket is empty: name an existing S3 bucket")
    if not _BUCKET_RE.match(cfg.bucket) or ".." in cfg.bucket:
        raise ConfigError(f"[aws] bucket {cfg.bucket!r} is not a valid S3 bucket name")
    if not cfg.region:
        raise ConfigError("[aws] region is empty")
    if not RELEASE_RE.match(cfg.release_label):
        raise ConfigError(f"[aws] release_label {cfg.release_label!r} must look like emr-spark-8.1.0 or emr-7.13.0")
    if cfg.core_instance_count < 0:
        raise ConfigError(f"[aws] core_instance_count must be >= 0, got {cfg.core_instance_count}")
    for key in ("master_instance_type", "core_instance_type", "service_role", "job_flow_role", "python"):
        if not getattr(cfg, key):
            raise ConfigError(f"[aws] {key} is empty")
    if not 60 <= cfg.idle_timeout_s <= 7 * 24 * 3600:
        raise ConfigError(f"[aws] idle_timeout_s must be 60..604800 seconds, got {cfg.idle_timeout_s}")
    if not cfg.stages:
        raise ConfigError(f"[aws] stages is empty; choose from {list(PIPELINE)}")
    unknown = [s for s in cfg.stages if s not in PIPELINE]
    if unknown:
        raise ConfigError(f"[aws] unknown stage(s) {unknown}; choose from {list(PIPELINE)}")
    order = [PIPELINE.index(s) for s in cfg.stages]
    if order != sorted(set(order)):
        raise ConfigError(f"[aws] stages {cfg.stages} must be distinct and in pipeline order {list(PIPELINE)}")
    for key in ("input", "data", "model_dir", "output", "log_uri"):
        value = getattr(cfg, key)
        if value and not storage.is_s3(value):
            raise ConfigError(f"[aws] {key} must be an s3:// URI (the cluster cannot read local paths), got {value!r}")
    if cfg.wheel and (not cfg.wheel.endswith(".whl") or not Path(cfg.wheel).is_file()):
        raise ConfigError(f"[aws] wheel must be an existing .whl file, got {cfg.wheel!r}")
    if config_file is not None:
        for stage in PIPELINE:  # unknown keys in the stage tables fail here, not on the cluster
            cfgmod.load(stage, config_file)
    if "train" in cfg.stages:
        cache = train_plan.cache_gb(cfg, cfgmod.read_file(config_file, "train") if config_file else {})
        if cfg.core_volume_gb and cache > cfg.core_volume_gb * train_plan.CACHE_SHARE:
            raise ConfigError(f"[train] shard_cache_gb = {cache:g} leaves too little of [aws] core_volume_gb = "
                              f"{cfg.core_volume_gb} GB for YARN's scratch: at most "
                              f"{cfg.core_volume_gb * train_plan.CACHE_SHARE:g} GB, or a larger volume")
        train_plan.plan(cfg, config_file)


def locations(cfg: AwsConfig, run_id: str, wheel_name: str, config_name: str) -> Locations:
    base = f"s3://{cfg.bucket}/{cfg.prefix.strip('/')}" if cfg.prefix.strip("/") else f"s3://{cfg.bucket}"
    code = f"{base}/runs/{run_id}/code"
    return Locations(
        base=base,
        raw=cfg.input or f"{base}/raw",
        dataset=cfg.data or f"{base}/dataset",
        model=cfg.model_dir or f"{base}/model",
        generated=cfg.output or f"{base}/generated/generated.wav",
        logs=cfg.log_uri or f"{base}/logs/",
        code=code,
        config=f"{base}/runs/{run_id}/config/{config_name}",
        wheel=f"{code}/{wheel_name}",
        bootstrap=f"{code}/{BOOTSTRAP_NAME}",
        step=f"{code}/{STEP_NAME}",
    )


def stage_flags(stage: str, loc: Locations, train: TrainPlan | None = None) -> list[str]:
    """The ``waveforms <stage>`` flags that wire the stages together through S3 (and the train step's engine)."""
    return {
        "scrape": ["--out", loc.raw],
        "transform": ["--input", loc.raw, "--output", loc.dataset, "--master", "yarn"],
        "train": ["--data", loc.dataset, "--model-dir", loc.model, "--master", "yarn", *(train.flags if train else [])],
        "generate": ["--model", loc.model, "--output", loc.generated],
    }[stage]


def spark_settings(cfg: AwsConfig, stage: str, train: TrainPlan | None = None) -> dict[str, str]:
    """Every ``--conf`` of a stage's ``spark-submit``: the venv (elephas's own for an elephas train step), the
    train step's resources, then ``spark_conf``."""
    python = ELEPHAS_PYTHON if stage == "train" and uses_elephas(train) else VENV_PYTHON
    return {
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        **(train.spark_conf() if train and stage == "train" else {}),
        **cfg.spark_conf,
    }


def step_args(cfg: AwsConfig, stage: str, loc: Locations, train: TrainPlan | None = None) -> list[str]:
    """``command-runner.jar`` arguments for one stage."""
    conf = spark_settings(cfg, stage, train)
    args = ["spark-submit", "--deploy-mode", "client", "--master", "yarn"]
    for key in sorted(conf):
        args += ["--conf", f"{key}={conf[key]}"]
    retry = (["--attempts", str(cfg.train_attempts), "--retry-wait", str(cfg.train_retry_wait_s)]
             if stage == "train" else [])
    return args + [loc.step, "--config", loc.config, *retry, stage, *stage_flags(stage, loc, train)]


def steps(cfg: AwsConfig, loc: Locations, train: TrainPlan | None = None) -> list[dict[str, Any]]:
    on_failure = "TERMINATE_CLUSTER" if cfg.auto_terminate else "CANCEL_AND_WAIT"
    return [
        {
            "Name": f"waveforms {stage}",
            "ActionOnFailure": on_failure,
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": step_args(cfg, stage, loc, train)},
        }
        for stage in cfg.stages
    ]


def core_gpus(cfg: AwsConfig) -> int:
    """GPUs per core node (0 without core nodes), from the instance table or ``core_gpus``."""
    if not cfg.core_instance_count:
        return 0
    if cfg.core_gpus >= 0:
        return cfg.core_gpus
    known = instances.lookup(cfg.core_instance_type)
    return known.gpus if known else 0


def uses_elephas(train: TrainPlan | None) -> bool:
    return train is not None and train.engine == "elephas"


def bootstrap_actions(cfg: AwsConfig, loc: Locations, train: TrainPlan | None = None) -> list[dict[str, Any]]:
    """The one bootstrap action: the venv on every node, elephas's venv beside it only for an elephas step."""
    args = ["--wheel", loc.wheel, "--python", cfg.python, "--venv", VENV]
    if uses_elephas(train):
        args += ["--elephas-venv", ELEPHAS_VENV]
    if cfg.ffmpeg_url:
        args += ["--ffmpeg-url", cfg.ffmpeg_url]
    if cfg.ffmpeg_sha256:
        args += ["--ffmpeg-sha256", cfg.ffmpeg_sha256]
    if core_gpus(cfg):  # GPU nodes find themselves with nvidia-smi; the master may have none
        args += ["--gpu", "auto", "--gpu-discovery", sizing.GPU_DISCOVERY, "--cgroup-root", sizing.CGROUP_ROOT]
    return [
        {
            "Name": "waveforms dependencies",
            "ScriptBootstrapAction": {"Path": loc.bootstrap, "Args": args},
        }
    ]


def instance_groups(cfg: AwsConfig) -> dict[str, Any]:
    groups: list[dict[str, Any]] = [
        {
            "Name": "master",
            "InstanceRole": "MASTER",
            "Market": "ON_DEMAND",
            "InstanceType": cfg.master_instance_type,
            "InstanceCount": 1,
        }
    ]
    if cfg.core_instance_count:
        groups.append(
            {
                "Name": "core",
                "InstanceRole": "CORE",
                "Market": "SPOT" if cfg.use_spot else "ON_DEMAND",
                "InstanceType": cfg.core_instance_type,
                "InstanceCount": cfg.core_instance_count,
                **({"EbsConfiguration": {"EbsBlockDeviceConfigs": [{
                    "VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": cfg.core_volume_gb},
                    "VolumesPerInstance": 1}]}} if cfg.core_volume_gb else {}),
            }
        )
    out: dict[str, Any] = {
        "InstanceGroups": groups,
        "KeepJobFlowAliveWhenNoSteps": not cfg.auto_terminate,
        "TerminationProtected": False,
    }
    if cfg.ec2_key_name:
        out["Ec2KeyName"] = cfg.ec2_key_name
    if cfg.subnet_id:
        out["Ec2SubnetId"] = cfg.subnet_id
    return out


def train_step_plan(cfg: AwsConfig, config_file: str | Path | None = None) -> TrainPlan | None:
    """The train step's plan, or ``None`` when ``train`` is not among the stages."""
    return train_plan.plan(cfg, config_file) if "train" in cfg.stages else None


def run_job_flow_request(cfg: AwsConfig, loc: Locations, run_id: str,
                         train: TrainPlan | None = None) -> dict[str, Any]:
    """The ``emr.run_job_flow`` keyword arguments (``train``: the train step's plan, default from ``cfg`` alone)."""
    train = train or train_step_plan(cfg)
    request: dict[str, Any] = {
        "Name": f"{cfg.cluster_name} {run_id}",
        "LogUri": loc.logs,
        "ReleaseLabel": cfg.release_label,
        "Applications": [{"Name": "Spark"}],
        "Instances": instance_groups(cfg),
        "BootstrapActions": bootstrap_actions(cfg, loc, train),
        "Steps": steps(cfg, loc, train),
        "ServiceRole": cfg.service_role,
        "JobFlowRole": cfg.job_flow_role,
        "VisibleToAllUsers": True,
        "AutoTerminationPolicy": {"IdleTimeout": cfg.idle_timeout_s},
        "Tags": [
            {"Key": "project", "Value": "waveforms"},
            {"Key": "waveforms:run", "Value": run_id},
        ],
    }
    configurations = train.configurations() if train else []
    if configurations:
        request["Configurations"] = configurations
    return request


def cost_per_hour(cfg: AwsConfig) -> float | None:
    """On-demand EC2 + EMR dollars per hour of the cluster (``None`` if a type's price is unknown)."""
    master, core = instances.lookup(cfg.master_instance_type), instances.lookup(cfg.core_instance_type)
    parts = [master.usd_h if master else None]
    if cfg.core_instance_count:
        parts.append(core.usd_h * cfg.core_instance_count if core and core.usd_h is not None else None)
    return None if None in parts else round(sum(p for p in parts if p is not None), 4)


def uploads(loc: Locations, wheel: str, bootstrap: str, step: str, config_file: str) -> list[tuple[str, str]]:
    """(local file, s3 URI) pairs that must exist before the cluster starts."""
    return [
        (wheel, loc.wheel),
        (bootstrap, loc.bootstrap),
        (step, loc.step),
        (config_file, loc.config),
    ]
