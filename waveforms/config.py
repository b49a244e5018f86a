"""Typed configuration for each stage: defaults, TOML files and ``--set key=value``.

A config file is TOML with one table per stage (``[scrape]``, ``[transform]``,
``[train]``, ``[generate]``, ``[aws]``); a stage reads only its own table and
rejects keys it does not know. Files list only what differs from the defaults.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TypeVar

from waveforms.errors import UserError

STAGES = ("scrape", "transform", "train", "generate", "aws")


class ConfigError(UserError, ValueError):
    """A config file, override or value that cannot be used."""


@dataclass
class ScrapeConfig:
    source: str = "fma-site"  # fma-site | fma-dataset | dir
    base_url: str = "https://freemusicarchive.org"
    genres: list[str] = field(default_factory=list)
    limit: int = 20  # per genre (fma-site) or in total (other sources)
    total_limit: int = 0  # 0 = no cap across genres
    out: str = "data/raw"
    page_size: int = 200
    licences: list[str] = field(default_factory=list)  # e.g. CC-BY, CC-BY-NC*
    fetch_licence: bool = True
    user_agent: str = "waveforms-scraper/0.1 (+https://github.com/waveforms/waveforms)"
    requests_per_second: float = 1.0
    download_concurrency: int = 2
    max_retries: int = 5
    backoff_factor: float = 0.5
    timeout_s: float = 30.0
    max_file_bytes: int = 200 * 1024 * 1024
    # fma-dataset source
    archive: str = "fma_small"
    mirror: str = "https://os.unil.cloud.switch.ch/fma/"
    cache_dir: str = ""  # where archives are downloaded; "" = <out>/.archives (local out) or ~/.cache/waveforms
    archive_sha1: dict[str, str] = field(default_factory=dict)  # extra/overriding sha1 per archive name
    # dir source
    input: str = ""


@dataclass
class TransformConfig:
    input: str = "data/raw"
    output: str = "data/dataset"
    master: str = "local[*]"
    sample_rate: int = 16000
    mu: int = 255
    normalise: str = "peak"  # peak | rms | none
    target_peak: float = 0.95
    target_rms_db: float = -20.0
    trim_silence: bool = True
    silence_threshold_db: float = -50.0
    min_seconds: float = 1.0
    val_fraction: float = 0.1
    partitions: int = 0  # 0 = one per track, up to 16 per core (default parallelism)
    resampler: str = "soxr"  # soxr | swr
    spark_conf: dict[str, str] = field(default_factory=dict)


@dataclass
class TrainConfig:
    data: str = "data/dataset"
    model_dir: str = "data/model"
    preset: str = "small"
    steps: int = 1000
    batch_size: int = 8
    window: int = 4000  # predicted samples per window (T); input is receptive field + T
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine
    clip_norm: float = 1.0
    seed: int = 0
    log_every: int = 20
    val_every: int = 100
    val_batches: int = 4
    checkpoint_every: int = 100
    early_stopping_patience: int = 0  # validation checks without improvement; 0 = off
    max_minutes: float = 0.0  # stop after this much training wall time in total (resumes included); 0 = no limit
    fresh: bool = False
    condition_on_genre: bool = False
    engine: str = "local"  # local | elephas
    # elephas
    mode: str = "synchronous"  # synchronous | asynchronous | hogwild
    frequency: str = "epoch"  # epoch | batch
    parameter_server: str = "http"  # http | socket
    port: int = 0  # 0 = pick a free port
    master: str = "local[2]"
    workers: int = 2
    epochs: int = 2
    windows_per_worker: int = 64


@dataclass
class GenerateConfig:
    model: str = "data/model"
    seconds: float = 2.0
    output: str = "generated.wav"
    temperature: float = 1.0
    prime: str = ""
    seed: int = 0
    streams: int = 1
    genre: str = ""
    save_every: float = 0.0  # seconds of audio between partial saves; 0 = only at the end


@dataclass
class AwsConfig:
    """An EMR run: where artefacts go, the cluster, and which stages run as steps.

    Empty locations default to ``s3://BUCKET/PREFIX/{raw,dataset,model,generated}``;
    the stage tables of the same file configure the stages themselves.
    """

    region: str = "us-east-1"
    bucket: str = ""
    prefix: str = "waveforms"
    cluster_name: str = "waveforms"
    release_label: str = "emr-7.5.0"
    master_instance_type: str = "m5.xlarge"
    core_instance_type: str = "m5.xlarge"
    core_instance_count: int = 2
    use_spot: bool = False  # core nodes only; the master stays on-demand
    log_uri: str = ""  # default s3://BUCKET/PREFIX/logs/
    service_role: str = "EMR_DefaultRole"
    job_flow_role: str = "EMR_EC2_DefaultRole"
    auto_terminate: bool = True  # terminate after the last step
    idle_timeout_s: int = 3600  # EMR auto-termination policy, always set
    stages: list[str] = field(default_factory=lambda: ["transform", "train"])
    input: str = ""  # raw MP3s (scrape output, transform input)
    data: str = ""  # transformed dataset
    model_dir: str = ""  # trained model
    output: str = ""  # generated WAV
    python: str = "python3.11"  # interpreter the bootstrap builds the venv from
    ffmpeg_url: str = "https://johnvansickle.com/ffmpeg/releases/ffmpeg-release-amd64-static.tar.xz"
    ffmpeg_sha256: str = ""  # checked when set
    spark_conf: dict[str, str] = field(default_factory=dict)  # extra --conf for every step
    wheel: str = ""  # a prebuilt wheel; empty = build one from this checkout
    ec2_key_name: str = ""
    subnet_id: str = ""


STAGE_CONFIGS: dict[str, type] = {
    "scrape": ScrapeConfig,
    "transform": TransformConfig,
    "train": TrainConfig,
    "generate": GenerateConfig,
    "aws": AwsConfig,
}

C = TypeVar("C")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a TOML value or a ``--set`` string to the field's type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, key) for v in value]
    if origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{key}: expected a JSON object, got {value!r}") from exc
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot read {value!r} as {tp.__name__}") from exc
    return value


def _apply(cfg: C, values: dict[str, Any], where: str) -> C:
    hints = typing.get_type_hints(type(cfg))
    known = {f.name for f in dataclasses.fields(cfg)}
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        if key not in known:
            raise ConfigError(
                f"unknown key {raw_key!r} in {where}; known keys: {', '.join(sorted(known))}"
            )
        setattr(cfg, key, _coerce(value, hints[key], key))
    return cfg


def parse_sets(items: Iterable[str]) -> dict[str, str]:
    """Parse repeated ``key=value`` strings."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value
    return out


def read_file(path: str | Path, stage: str) -> dict[str, Any]:
    """Return the table for ``stage`` from a TOML config file (empty if absent)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    unknown = [k for k in data if k not in STAGES]
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {unknown}; a config file holds tables {list(STAGES)}"
        )
    table = data.get(stage, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{stage}] must be a table")
    return table


def load(
    stage: str,
    config_file: str | Path | None = None,
    sets: Iterable[str] = (),
    flags: dict[str, Any] | None = None,
) -> Any:
    """Build a stage config: defaults < file < explicit flags < ``--set`` overrides."""
    cfg = STAGE_CONFIGS[stage]()
    if config_file:
        _apply(cfg, read_file(config_file, stage), f"{config_file} [{stage}]")
    if flags:
        _apply(cfg, {k: v for k, v in flags.items() if v is not None}, "flags")
    _apply(cfg, parse_sets(sets), "--set")
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_json(cfg: Any, stage: str) -> str:
    """The config as JSON, saved beside every output."""
    return json.dumps({"stage": stage, "config": to_dict(cfg)}, indent=2, sort_keys=True) + "\n"
