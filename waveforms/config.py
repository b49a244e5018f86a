"""Typed configuration for each stage: defaults, TOML files and ``--set key=value``.

A config file is TOML with one table per stage (``[scrape]``, ``[transform]``,
``[train]`` with its ``[train.elephas]`` sub-table, ``[generate]``, ``[aws]``);
a stage reads only its own table and rejects keys it does not know. Files list
only what differs from the defaults.

Each field's help, unit, allowed values and CLI flag are declared once, with
:func:`opt`; :func:`validate`, the CLI (``waveforms.cli``) and the README's key
tables (``python -m waveforms.config --readme``) are derived from them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypeVar

from waveforms.errors import UserError

STAGES = ("scrape", "transform", "train", "generate", "index", "evaluate", "aws", "serve")
PIPELINE = ("scrape", "transform", "train", "generate")
ARCHIVES = ("fma_small", "fma_medium", "fma_large", "fma_full")


class ConfigError(UserError, ValueError):
    """A config file, override or value that cannot be used."""


def opt(default: Any, *, help: str, choices: Sequence[Any] | None = None, min: float | None = None,
        max: float | None = None, gt: float | None = None, lt: float | None = None, unit: str = "",
        flag: str | None = None, choices_also: str | None = None) -> Any:
    """A config field: its default, help, unit, allowed values and (optional) CLI flag.

    ``min``/``max`` are inclusive bounds, ``gt``/``lt`` exclusive ones; ``choices`` apply to
    each item of a list; ``choices_also`` names a dict field whose keys are also allowed.
    """
    meta = {"help": help, "choices": tuple(choices) if choices else None, "min": min, "max": max,
            "gt": gt, "lt": lt, "unit": unit, "flag": flag, "choices_also": choices_also}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ScrapeConfig:
    """The scrape stage: which source, how much, and how politely."""

    source: str = opt("fma-site", choices=("fma-site", "fma-dataset", "dir"), flag="--source",
                      help="where tracks come from: the FMA site, the FMA dataset archives, or a folder")
    base_url: str = opt("https://freemusicarchive.org", flag="--base-url", help="site root serving FMA markup")
    genres: list[str] = opt([], flag="--genre", help="genre names or slugs (flag repeatable)")
    limit: int = opt(20, min=0, unit="tracks", flag="--limit", help="tracks kept in total, every source; 0 = no limit")
    per_genre_limit: int = opt(0, min=0, unit="tracks", flag="--per-genre-limit",
                               help="fma-site: tracks kept per genre; 0 = no per-genre cap")
    out: str = opt("data/raw", flag="--out", help="output folder or s3://bucket/prefix")
    page_size: int = opt(200, min=1, max=200, unit="tracks", help="fma-site: tracks per listing page")
    licences: list[str] = opt([], flag="--licence",
                              help="keep only these licences, e.g. CC-BY, CC-BY-NC* (flag repeatable); empty = all")
    fetch_licence: bool = opt(True, help="fma-site: read each track page for its licence")
    user_agent: str = opt("waveforms-scraper/0.1 (+https://github.com/waveforms/waveforms)", flag="--user-agent",
                          help="User-Agent naming the tool and a contact URL")
    requests_per_second: float = opt(1.0, min=0, unit="1/s", flag="--rate",
                                     help="requests per second to one host; 0 = unlimited")
    download_concurrency: int = opt(2, min=1, unit="threads", help="parallel downloads")
    max_retries: int = opt(5, min=0, help="retries per request on 5xx, 429 and connection errors")
    backoff_factor: float = opt(0.5, min=0, unit="s", help="exponential backoff base between retries")
    timeout_s: float = opt(30.0, gt=0, unit="s", help="connect and read timeout per request")
    max_file_bytes: int = opt(200 * 1024 * 1024, min=1, unit="bytes", help="largest MP3 accepted")
    archive: str = opt("fma_small", choices=ARCHIVES, choices_also="archive_sha1", flag="--archive",
                       help="fma-dataset: which audio archive (or a name given in archive_sha1)")
    mirror: str = opt("https://os.unil.cloud.switch.ch/fma/", flag="--mirror", help="fma-dataset: base URL")
    cache_dir: str = opt("", help="fma-dataset: archive downloads; empty = OUT/.archives (local) or ~/.cache/waveforms")
    archive_sha1: dict[str, str] = opt({}, help="fma-dataset: extra or overriding sha1 per archive name")
    input: str = opt("", flag="--input", help="dir source: folder or s3:// prefix of MP3s")


@dataclass
class TransformConfig:
    """The transform stage: decode, mono, resample, trim, normalise, mu-law encode."""

    input: str = opt("data/raw", flag="--input", help="scraped folder, manifest, or s3:// prefix")
    output: str = opt("data/dataset", flag="--output", help="dataset folder or s3:// prefix")
    master: str = opt("local[*]", flag="--master", help="Spark master URL")
    sample_rate: int = opt(16000, min=1000, max=192000, unit="Hz", flag="--sample-rate", help="output sample rate")
    mu: int = opt(255, min=1, max=255, help="mu-law parameter; codes are 0..mu, one byte per sample")
    normalise: str = opt("peak", choices=("peak", "rms", "none"), flag="--normalise",
                         help="loudness normalisation after trimming")
    target_peak: float = opt(0.95, gt=0, max=1, help="peak level for normalise = peak (full scale = 1)")
    target_rms_db: float = opt(-20.0, max=0, unit="dBFS", help="RMS level for normalise = rms")
    trim_silence: bool = opt(True, help="trim leading and trailing audio below silence_threshold_db")
    silence_threshold_db: float = opt(-50.0, max=0, unit="dBFS", flag="--silence-threshold-db",
                                      help="trim leading/trailing audio below this level")
    min_seconds: float = opt(1.0, min=0, unit="s", help="tracks shorter than this after trimming are set aside")
    val_fraction: float = opt(0.1, min=0, lt=1, flag="--val-fraction", help="share of tracks held out for validation")
    partitions: int = opt(0, min=0, help="Spark partitions; 0 = one per track, up to 16 per core")
    resampler: str = opt("soxr", choices=("soxr", "swr"), help="ffmpeg resampler")
    spark_conf: dict[str, str] = opt({}, help="extra Spark settings")


@dataclass
class ElephasConfig:
    """``[train.elephas]``: keys only the elephas engine reads (``--set elephas.KEY=VALUE``)."""

    mode: str = opt("synchronous", choices=("synchronous", "asynchronous", "hogwild"), flag="--mode",
                    help="elephas training mode")
    frequency: str = opt("epoch", choices=("epoch", "batch"), flag="--frequency",
                         help="how often workers exchange weights with the parameter server")
    parameter_server: str = opt("http", choices=("http", "socket"), flag="--parameter-server",
                                help="parameter server protocol (asynchronous, hogwild)")
    port: int = opt(0, min=0, max=65535, flag="--port", help="parameter server port; 0 = a free one")
    master: str = opt("local[2]", flag="--master", help="Spark master URL")
    workers: int = opt(2, min=1, flag="--workers", help="workers (Spark partitions) per epoch")
    epochs: int = opt(2, min=1, flag="--epochs", help="epochs; each worker reads windows_per_worker fresh windows")
    windows_per_worker: int = opt(64, min=1, unit="windows", help="windows per worker and epoch (> batch_size)")


@dataclass
class TrainConfig:
    """The train stage; ``engine`` picks local Keras or elephas on Spark.

    A *step* is one optimizer update on one batch of ``batch_size`` windows, for
    both engines: ``steps`` counts them for the local engine, and an elephas
    epoch makes ``workers * ceil(windows_per_worker / batch_size)`` of them.
    ``log_every``, ``val_every``, ``checkpoint_every`` and the cosine schedule
    count steps too.
    """

    data: str = opt("data/dataset", flag="--data", help="dataset folder or s3:// prefix")
    model_dir: str = opt("data/model", flag="--model-dir", help="where the model, checkpoints and metrics go")
    preset: str = opt("small", choices=("tiny", "small", "default", "large"), flag="--preset", help="model size")
    steps: int = opt(1000, min=1, unit="steps", flag="--steps", help="training steps (local engine)")
    batch_size: int = opt(8, min=1, unit="windows", flag="--batch-size", help="windows per batch")
    window: int = opt(4000, min=1, unit="samples", flag="--window",
                      help="predicted samples per window; the input is receptive field + window")
    learning_rate: float = opt(4e-3, gt=0, help="Adam learning rate (the peak, reached after the warmup)")
    lr_schedule: str = opt("cosine", choices=("constant", "cosine", "step"),
                           help="after the warmup: constant, cosine decay to min_lr_ratio × lr at `steps`, "
                                "or step decay (× lr_decay_factor every lr_decay_every steps)")
    warmup_steps: int = opt(100, min=0, unit="steps", help="linear learning-rate warmup from lr / warmup_steps")
    min_lr_ratio: float = opt(0.05, min=0, max=1, help="floor of the cosine and step decays, as a share of lr")
    lr_decay_every: int = opt(500, min=1, unit="steps", help="lr_schedule = step: steps between decays")
    lr_decay_factor: float = opt(0.5, gt=0, max=1, help="lr_schedule = step: learning-rate factor per decay")
    clip_norm: float = opt(10.0, min=0, help="global gradient-norm clip; 0 = off (1.0 throttles early training)")
    ema_decay: float = opt(0.999, min=0, lt=1,
                           help="moving average of the weights for validation, previews and the saved model; 0 = off "
                                "(local engine)")
    init: str = opt("data", choices=("data", "keras"),
                    help="data: residual/skip 1x1s scaled by 1/sqrt(layers), logits bias = code log-frequencies "
                         "(local engine)")
    preview_every: int = opt(0, min=-1, unit="steps",
                             help="steps between audio previews (MODEL_DIR/previews/); 0 = at each validation, -1 = off "
                                  "(local engine)")
    preview_seconds: float = opt(2.0, gt=0, unit="s", help="seconds of audio per preview")
    seed: int = opt(0, min=0, flag="--seed", help="random seed")
    log_every: int = opt(20, min=1, unit="steps", help="steps between metrics.jsonl lines (local engine)")
    val_every: int = opt(100, min=1, unit="steps", help="steps between validation checks (local engine)")
    val_batches: int = opt(4, min=1, unit="batches", help="batches per validation check")
    checkpoint_every: int = opt(100, min=1, unit="steps", help="steps between checkpoints (local engine)")
    early_stopping_patience: int = opt(0, min=0, unit="checks",
                                       help="validation checks without improvement before stopping; 0 = off")
    max_minutes: float = opt(0.0, min=0, unit="min",
                             help="training wall-time budget, resumes included; 0 = none; "
                                  "the local engine fits a cosine schedule to it")
    fresh: bool = opt(False, flag="--fresh", help="start over, ignoring checkpoints")
    condition_on_genre: bool = opt(False, help="add a genre embedding to every layer (local engine)")
    evaluate_at_end: bool = opt(False, help="run the evaluate stage on the final model (bits per sample, fd_mel)")
    mixed_precision: bool = opt(False, help="mixed_float16 compute with float32 variables, logits and loss "
                                            "(faster on GPUs with tensor cores; the saved model is float32)")
    engine: str = opt("local", choices=("local", "elephas"), flag="--engine",
                      help="local: Keras in this process; elephas: data-parallel on Spark")
    elephas: ElephasConfig = opt(ElephasConfig(), help="[train.elephas]: the elephas engine's keys")


@dataclass
class GenerateConfig:
    """The generate stage: sample new audio from a trained model."""

    model: str = opt("data/model", flag="--model", help="model folder or s3:// prefix")
    seconds: float = opt(2.0, gt=0, unit="s", flag="--seconds", help="seconds of audio per stream")
    output: str = opt("generated.wav", flag="--output", help="output WAV (stream k > 0 gets a _k suffix)")
    temperature: float = opt(1.0, min=0, flag="--temperature", help="sampling temperature; 0 = greedy")
    prime: str = opt("", flag="--prime", help="audio file whose samples start the sequence")
    seed: int = opt(0, min=0, flag="--seed", help="random seed")
    streams: int = opt(1, min=1, flag="--streams", help="independent streams generated together")
    genre: str = opt("", flag="--genre", help="genre for a genre-conditioned model")
    save_every: float = opt(0.0, min=0, unit="s", flag="--save-every",
                            help="write the partial WAV every S seconds of audio; 0 = only at the end")
    evaluate: bool = opt(False, flag="--evaluate",
                         help="add the nearest training audio of every second (the index) to the sidecar JSON")


@dataclass
class IndexConfig:
    """The index stage: log-mel window embeddings of the training tracks in a nearest-neighbour index."""

    data: str = opt("data/dataset", flag="--data", help="dataset folder or s3:// prefix")
    output: str = opt("", flag="--output", help="index folder or s3:// prefix; empty = DATA/index")
    master: str = opt("local[*]", flag="--master", help="Spark master URL")
    dims: int = opt(32, min=2, max=128, help="embedding dimensions kept by the PCA")
    sample_windows: int = opt(50000, min=100, unit="windows", help="windows sampled to fit the PCA and IVF lists")
    calibration_windows: int = opt(2000, min=10, unit="windows",
                                   help="sampled windows whose cross-track similarities set the match threshold")
    factory: str = opt("auto", help="FAISS index factory string; auto = Flat up to 200k vectors, else IVF,SQ8")
    nprobe: int = opt(32, min=1, help="IVF lists searched per query")
    ef_search: int = opt(64, min=1, help="HNSW search breadth (factory HNSW...)")
    partitions: int = opt(0, min=0, help="Spark partitions; 0 = up to 4 per core")
    spark_conf: dict[str, str] = opt({}, help="extra Spark settings")


@dataclass
class EvaluateConfig:
    """The evaluate stage: bits per sample, Fréchet mel distance and memorisation of a model."""

    model: str = opt("data/model", flag="--model", help="model folder or s3:// prefix")
    data: str = opt("", flag="--data", help="dataset; empty = the one in model.json")
    audio: list[str] = opt([], flag="--audio", help="WAV files to judge instead of generated clips (flag repeatable)")
    clips: int = opt(2, min=1, flag="--clips", help="clips generated when no --audio is given")
    seconds: float = opt(5.0, gt=0, unit="s", flag="--seconds", help="seconds per generated clip")
    temperature: float = opt(1.0, min=0, help="sampling temperature of the generated clips")
    seed: int = opt(0, min=0, help="random seed of the generated clips and the noise yardstick")
    output: str = opt("", flag="--output", help="folder for evaluation.json and .png; empty = the model folder")
    index: str = opt("", flag="--index", help="index folder; empty = DATA/index")
    window: int = opt(16000, min=2, unit="samples", help="validation window (the same cut for every model)")
    batch_size: int = opt(4, min=1, unit="windows", help="validation windows per forward pass")
    heldout_seconds: float = opt(0.0, min=0, unit="s", help="cap on held-out audio read for fd_mel; 0 = all")


@dataclass
class AwsConfig:
    """An EMR run: where artefacts go, the cluster, and which stages run as steps.

    Empty locations default to ``s3://BUCKET/PREFIX/{raw,dataset,model,generated}``;
    the stage tables of the same file configure the stages themselves.
    """

    region: str = opt("us-east-1", help="AWS region of the cluster and bucket")
    bucket: str = opt("", help="an S3 bucket you own (required)")
    prefix: str = opt("waveforms", help="key prefix in the bucket")
    cluster_name: str = opt("waveforms", help="EMR cluster name")
    release_label: str = opt("emr-7.13.0", help="EMR release")
    master_instance_type: str = opt("m5.xlarge", help="EC2 type of the master node")
    core_instance_type: str = opt("m5.xlarge", help="EC2 type of the core nodes")
    core_instance_count: int = opt(2, min=0, unit="nodes", help="core nodes")
    use_spot: bool = opt(False, help="core nodes on the spot market (the master stays on-demand)")
    log_uri: str = opt("", help="EMR logs; empty = s3://BUCKET/PREFIX/logs/")
    service_role: str = opt("EMR_DefaultRole", help="EMR service role")
    job_flow_role: str = opt("EMR_EC2_DefaultRole", help="EC2 instance profile of the nodes")
    auto_terminate: bool = opt(True, help="terminate after the last step (and on a failed step)")
    idle_timeout_s: int = opt(3600, min=60, max=7 * 24 * 3600, unit="s", help="EMR auto-termination when idle")
    stages: list[str] = opt(["transform", "train"], choices=PIPELINE, help="stages run as EMR steps, in order")
    input: str = opt("", help="raw MP3s (scrape output, transform input); empty = PREFIX/raw")
    data: str = opt("", help="transformed dataset; empty = PREFIX/dataset")
    model_dir: str = opt("", help="trained model; empty = PREFIX/model")
    output: str = opt("", help="generated WAV; empty = PREFIX/generated/generated.wav")
    python: str = opt("python3.11", help="interpreter the bootstrap builds the venv from")
    ffmpeg_url: str = opt("https://johnvansickle.com/ffmpeg/releases/ffmpeg-release-amd64-static.tar.xz",
                          help="static ffmpeg build for Amazon Linux")
    ffmpeg_sha256: str = opt("", help="checked against the ffmpeg download when set")
    spark_conf: dict[str, str] = opt({}, help="extra --conf for every step")
    wheel: str = opt("", help="a prebuilt wheel; empty = build one from this checkout")
    ec2_key_name: str = opt("", help="EC2 key pair for SSH to the nodes")
    subnet_id: str = opt("", help="VPC subnet of the cluster")


@dataclass
class ServeConfig:
    """The studio: an HTTP API and browser app over datasets, models and generated audio."""

    roots: list[str] = opt(["."], flag="--root", help="folders or s3:// prefixes searched for outputs (flag repeatable)")
    host: str = opt("127.0.0.1", flag="--host", help="address to bind; any other than loopback needs --token")
    port: int = opt(8000, min=0, max=65535, flag="--port", help="TCP port; 0 = a free one")
    token: str = opt("", flag="--token", help="require 'Authorization: Bearer TOKEN' on every request")
    upload_dir: str = opt("", help="where uploaded primes go; empty = a folder in the system temp dir")
    max_upload_mb: float = opt(20.0, gt=0, unit="MiB", help="largest prime upload accepted")
    max_prime_seconds: float = opt(10.0, gt=0, unit="s", help="an uploaded prime keeps at most its last S seconds")
    max_generations: int = opt(0, min=0, flag="--max-generations",
                               help="generations running at once (more get 429); 0 = one per CPU core")
    max_generate_seconds: float = opt(120.0, gt=0, unit="s", help="longest audio one generate request may ask for")
    max_audio_seconds: float = opt(60.0, gt=0, unit="s", help="longest dataset span one audio request may ask for")
    rescan_s: float = opt(2.0, min=0, unit="s", help="minimum time between scans of the roots")
    model_cache: int = opt(4, min=1, unit="models", help="loaded models kept in memory")


STAGE_CONFIGS: dict[str, type] = {
    "scrape": ScrapeConfig,
    "transform": TransformConfig,
    "train": TrainConfig,
    "generate": GenerateConfig,
    "index": IndexConfig,
    "evaluate": EvaluateConfig,
    "aws": AwsConfig,
    "serve": ServeConfig,
}

# Keys that are gone, per stage, with what to use instead.
REMOVED: dict[str, dict[str, str]] = {  # by config class name
    "ScrapeConfig": {
        "total_limit": "total_limit is gone: limit now counts tracks in total for every source "
                       "(per_genre_limit caps each genre on fma-site); use limit",
    },
    "TrainConfig": {
        f.name: f"{f.name} is an elephas key: put it in [train.elephas] or use --set elephas.{f.name}=..."
        for f in dataclasses.fields(ElephasConfig)
    },
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
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot read {value!r} as {tp.__name__}") from exc
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _apply(cfg: C, values: dict[str, Any], where: str, prefix: str = "") -> C:
    """Set ``values`` (dotted keys or nested tables for sub-sections) on ``cfg``."""
    hints = _hints(type(cfg))
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        head, dot, rest = key.partition(".")
        if head not in hints:
            removed = REMOVED.get(type(cfg).__name__, {}).get(head)
            if removed:
                raise ConfigError(f"{prefix}{raw_key} in {where}: {removed}")
            known = ", ".join(sorted(prefix + k for k in hints))
            raise ConfigError(f"unknown key {prefix + raw_key!r} in {where}; known keys: {known}")
        if _is_section(hints[head]):
            sub = {rest: value} if dot else value
            if not isinstance(sub, dict):
                raise ConfigError(f"{prefix}{head}: expected a table, got {value!r}")
            _apply(getattr(cfg, head), sub, where, f"{prefix}{head}.")
        elif dot:
            raise ConfigError(f"unknown key {prefix + raw_key!r} in {where}: {prefix}{head} has no sub-keys")
        else:
            setattr(cfg, key, _coerce(value, hints[key], prefix + key))
    return cfg


def allowed(f: dataclasses.Field) -> str:
    """What a field accepts, in words (empty when any value of its type will do)."""
    m = f.metadata
    if m.get("choices"):
        return ", ".join(map(str, m["choices"]))
    if m.get("min") is not None and m.get("max") is not None:
        return f"{m['min']:g}..{m['max']:g}"
    parts = [f"{op} {m[k]:g}" for k, op in (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))
             if m.get(k) is not None]
    return " and ".join(parts)


def _ok(value: Any, f: dataclasses.Field, cfg: Any) -> bool:
    m = f.metadata
    if m.get("choices"):
        extra = set(getattr(cfg, m["choices_also"])) if m.get("choices_also") else set()
        items = value if isinstance(value, list) else [value]
        return all(v in m["choices"] or v in extra for v in items)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return ((m.get("min") is None or value >= m["min"]) and (m.get("max") is None or value <= m["max"])
            and (m.get("gt") is None or value > m["gt"]) and (m.get("lt") is None or value < m["lt"]))


def validate(cfg: C, prefix: str = "") -> C:
    """Check every field against its declared choices and range; raise :class:`ConfigError`."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, f"{prefix}{f.name}.")
        elif not _ok(value, f, cfg):
            what = "one of" if f.metadata.get("choices") else "allowed:"
            raise ConfigError(f"{prefix}{f.name} = {value!r} is not allowed; {what} {allowed(f)}")
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
    """Build and validate a stage config: defaults < file < explicit flags < ``--set`` overrides.

    ``flags`` and ``sets`` may name sub-section keys with dots (``elephas.mode``).
    """
    cfg = STAGE_CONFIGS[stage]()
    if config_file:
        _apply(cfg, read_file(config_file, stage), f"{config_file} [{stage}]")
    if flags:
        _apply(cfg, {k: v for k, v in flags.items() if v is not None}, "flags")
    _apply(cfg, parse_sets(sets), "--set")
    return validate(cfg)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_json(cfg: Any, stage: str) -> str:
    """The config as JSON, saved beside every output."""
    return json.dumps({"stage": stage, "config": to_dict(cfg)}, indent=2, sort_keys=True) + "\n"


def fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(dotted key, field, type)`` for every leaf key of a stage config, sub-sections included."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            yield from fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f, hints[f.name]


def cli_options(stage: str) -> list[tuple[str, str, dataclasses.Field, Any]]:
    """``(flag, dotted key, field, type)`` for each key of ``stage`` that has a CLI flag."""
    return [(f.metadata["flag"], key, f, tp) for key, f, tp in fields(STAGE_CONFIGS[stage]) if f.metadata.get("flag")]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) if typing.get_origin(tp) is None else str(tp).replace("typing.", "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table() -> str:
    """The README's key tables, one per stage and sub-table, generated from the field metadata."""
    out: list[str] = []
    for stage, cls in STAGE_CONFIGS.items():
        sections: dict[str, list[str]] = {}
        for key, f, tp in fields(cls):
            table, _, name = key.rpartition(".")
            title = f"[{stage}.{table}]" if table else f"[{stage}]"
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            unit = f" ({f.metadata['unit']})" if f.metadata.get("unit") else ""
            flag = f"`{f.metadata['flag']}`" if f.metadata.get("flag") else ""
            sections.setdefault(title, []).append(
                f"| `{name}` | {_type_name(tp)}{unit} | `{_cell(json.dumps(default))}` | {_cell(allowed(f))} "
                f"| {flag} | {_cell(f.metadata['help'])} |")
        for title, rows in sections.items():
            out += [f"#### {title}", "", "| key | type | default | allowed | flag | help |",
                    "|---|---|---|---|---|---|", *rows, ""]
    return "\n".join(out).rstrip("\n") + "\n"


README_START = "<!-- config keys: generated by `python -m waveforms.config --write-readme`; do not edit -->"
README_END = "<!-- end of config keys -->"


def readme_section(readme: str) -> str:
    """The generated part of README text (between the markers)."""
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    return readme[start:end].strip("\n") + "\n"


def write_readme(path: str | Path) -> None:
    """Regenerate the key tables in the README at ``path``."""
    text = Path(path).read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    Path(path).write_text(text[:start] + "\n\n" + markdown_table() + "\n" + text[end:])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m waveforms.config", description="the config keys, from their metadata")
    ap.add_argument("--readme", action="store_true", help="print the README's key tables (Markdown)")
    ap.add_argument("--write-readme", metavar="README", nargs="?", const="README.md",
                    help="rewrite the key tables in README (default README.md)")
    args = ap.parse_args(argv)
    if args.write_readme:
        write_readme(args.write_readme)
    else:
        sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
