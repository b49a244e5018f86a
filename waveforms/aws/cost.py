"""What a training run on EMR costs per hour, all in: instances, EMR, EBS, S3 storage and S3 requests.

Pure arithmetic over the instance table (``waveforms.aws.instances``) and the
list prices in :data:`PRICES`. The feed makes one ranged GET per window that
the node's shard cache does not hold (``docs/feed.md``), so a run's S3
requests per hour are its windows per hour times the share of the dataset
outside the cache. A GPU's windows per second are not measured here (no GPU):
:func:`gpu_windows_per_s` states them as a share of the GPU's float32 peak,
the way ``bench/bench_feed.py`` estimates one GPU's need.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from waveforms.aws import instances
from waveforms.aws.train_plan import CACHE_SHARE


@dataclass(frozen=True)
class Prices:
    """us-east-1 list prices in USD, as AWS published them in 2024-2025 (not re-checked since)."""

    s3_get_per_1000: float = 0.0004  # S3 Standard GET (and HEAD), per 1,000 requests
    s3_gb_month: float = 0.023  # S3 Standard storage, first 50 TB
    ebs_gp3_gb_month: float = 0.08  # gp3 volume, 3,000 IOPS and 125 MB/s included
    hours_per_month: float = 730.0  # AWS's month for hourly rates
    as_of: str = "us-east-1 list prices as published in 2024-2025 (table dated 2026-12-06)"


PRICES = Prices()

# Float32 peak (CUDA cores, no tensor cores), TFLOP/s, from NVIDIA's data sheets.
GPU_FP32_TFLOPS = {"T4": 8.1, "A10G": 31.2, "L4": 30.3, "A100": 19.5}
# The share of its own float32 GEMM rate that training reaches on this project's CPUs
# (bench/bench_train.py: 0.37 for `small`, 0.42-0.45 for `default`), assumed for a GPU too.
TRAINING_SHARE = 0.4


@dataclass(frozen=True)
class Corpus:
    """A dataset's size, for pricing its storage and reads."""

    name: str
    gb: float  # codes, 1 byte a sample
    hours: float


# The whole FMA: about 106k tracks and 8,000 hours, 1 byte a sample at 16 kHz.
FMA_FULL = Corpus("fma_full", gb=8000 * 3600 * 16000 / 1e9, hours=8000)


def flops_per_sample(params: int) -> float:
    """Training FLOPs per predicted sample: 6 per trainable parameter (forward 2, backward 4)."""
    return 6.0 * params


def useful_flops_per_s(gpu_model: str, share: float = TRAINING_SHARE) -> float:
    """The training FLOP/s assumed for one GPU: ``share`` of its float32 peak."""
    if gpu_model not in GPU_FP32_TFLOPS:
        raise ValueError(f"no float32 peak for GPU {gpu_model!r}; known: {', '.join(GPU_FP32_TFLOPS)}")
    return GPU_FP32_TFLOPS[gpu_model] * 1e12 * share


def gpu_samples_per_s(gpu_model: str, params: int, share: float = TRAINING_SHARE) -> float:
    """Predicted samples per second one GPU trains: its useful FLOP/s over the FLOPs per sample."""
    return useful_flops_per_s(gpu_model, share) / flops_per_sample(params)


def gpu_windows_per_s(gpu_model: str, params: int, window: int, share: float = TRAINING_SHARE) -> float:
    """Windows per second one GPU consumes (``window`` predicted samples each)."""
    return gpu_samples_per_s(gpu_model, params, share) / window


def gpu_hour_usd(gpu_model: str) -> tuple[float, str]:
    """The cheapest listed price of one GPU-hour of ``gpu_model`` (EC2 + EMR per GPU) and the type it comes from.

    Where the table has no EMR charge for the type (p4d), the price is EC2's alone and the name says so.
    """
    best: tuple[float, str] | None = None
    for t in instances.TYPES.values():
        if t.gpu_model != gpu_model or t.ec2_usd_h is None:
            continue
        price, name = (t.usd_h, t.name) if t.usd_h is not None else (t.ec2_usd_h, f"{t.name}, EC2 only")
        if best is None or price / t.gpus < best[0]:
            best = (price / t.gpus, name)
    if best is None:
        raise ValueError(f"no instance type with a {gpu_model} GPU and a price in the instance table")
    return best


def miss_fraction(cache_gb: float, dataset_gb: float) -> float:
    """Share of random windows (drawn by length across the dataset) that the node's cache does not hold."""
    if dataset_gb <= 0:
        raise ValueError("dataset_gb must be > 0")
    return max(0.0, 1.0 - max(cache_gb, 0.0) / dataset_gb)


def requests_per_step(windows_per_step: int, cache_gb: float, dataset_gb: float) -> float:
    """S3 GETs per training step: one per window outside the cache (the shard downloads are not counted)."""
    return windows_per_step * miss_fraction(cache_gb, dataset_gb)


def volume_for_cache(cache_gb: float) -> int:
    """The smallest core data volume (GB) whose share for the shard cache holds ``cache_gb``."""
    return math.ceil(cache_gb / CACHE_SHARE)


@dataclass(frozen=True)
class HourCost:
    """USD per hour of a run, by part; ``gets_per_h`` is the S3 GETs an hour."""

    nodes: int
    gpus: int
    ec2: float
    emr: float
    ebs: float
    gets_per_h: float
    s3_requests: float
    s3_storage: float

    @property
    def instances(self) -> float:
        return self.ec2 + self.emr

    @property
    def total(self) -> float:
        return self.ec2 + self.emr + self.ebs + self.s3_requests + self.s3_storage

    @property
    def request_share(self) -> float:
        """S3 requests as a share of the instances (EC2 + EMR)."""
        return self.s3_requests / self.instances


def hour_cost(core: str, nodes: int, windows_per_s_per_gpu: float, *, dataset_gb: float, cache_gb: float,
              volume_gb: float, master: str = "m5.xlarge", windows_per_get: int = 1,
              prices: Prices = PRICES) -> HourCost:
    """One hour of ``nodes`` core nodes of type ``core`` (plus the master) training at the given rate.

    Every GPU (or CPU node) consumes ``windows_per_s_per_gpu``; each node's cache holds ``cache_gb`` of
    the ``dataset_gb`` (steady state, cache filled). EBS counts the core nodes' data volumes of
    ``volume_gb``; S3 storage counts the dataset. ``windows_per_get`` > 1 prices a feed that reads
    blocks of several windows per GET (not built; today's feed reads one).
    """
    if windows_per_get < 1:
        raise ValueError("windows_per_get must be >= 1")
    c, m = instances.lookup(core), instances.lookup(master)
    if c is None or m is None:
        raise ValueError(f"unknown instance type: {core if c is None else master}")
    if None in (c.ec2_usd_h, c.emr_usd_h, m.ec2_usd_h, m.emr_usd_h):
        raise ValueError(f"the instance table lacks a price for {core} or {master}")
    gpus = nodes * max(1, c.gpus)
    gets = gpus * windows_per_s_per_gpu * 3600 * miss_fraction(cache_gb, dataset_gb) / windows_per_get
    return HourCost(
        nodes=nodes, gpus=nodes * c.gpus,
        ec2=m.ec2_usd_h + nodes * c.ec2_usd_h, emr=m.emr_usd_h + nodes * c.emr_usd_h,
        ebs=nodes * volume_gb * prices.ebs_gp3_gb_month / prices.hours_per_month,
        gets_per_h=gets, s3_requests=gets / 1000 * prices.s3_get_per_1000,
        s3_storage=dataset_gb * prices.s3_gb_month / prices.hours_per_month,
    )


def _usd(v: float) -> str:
    return f"{v:,.2f}" if v >= 0.995 else f"{v:.3f}"


def run_table(core: str, windows_per_s_per_gpu: float, dataset: Corpus, *, cache_gb: float, volume_gb: float,
              nodes: tuple[int, ...] = (1, 8, 32), master: str = "m5.xlarge", prices: Prices = PRICES) -> str:
    """Markdown: USD per hour of a run on ``dataset`` for each node count, by part, and requests ÷ instances."""
    rows = ["| core nodes | GPUs | EC2 $/h | EMR $/h | EBS $/h | S3 GETs/h | S3 GETs $/h | S3 storage $/h "
            "| total $/h | GETs ÷ instances |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in nodes:
        h = hour_cost(core, n, windows_per_s_per_gpu, dataset_gb=dataset.gb, cache_gb=cache_gb,
                      volume_gb=volume_gb, master=master, prices=prices)
        rows.append(f"| {n} × {core} | {h.gpus} | {_usd(h.ec2)} | {_usd(h.emr)} | {_usd(h.ebs)} "
                    f"| {h.gets_per_h / 1e6:,.1f} M | {_usd(h.s3_requests)} | {_usd(h.s3_storage)} "
                    f"| {_usd(h.total)} | {h.request_share:.0%} |")
    return "\n".join(rows) + "\n"


def breakeven_windows_per_s(core: str, share: float = 0.10, prices: Prices = PRICES) -> float:
    """Windows per second per GPU (all missing the cache) at which S3 GETs cost ``share`` of one core node."""
    t = instances.lookup(core)
    if t is None or t.usd_h is None:
        raise ValueError(f"no price for {core!r} in the instance table")
    per_window = prices.s3_get_per_1000 / 1000
    return share * t.usd_h / max(1, t.gpus) / (per_window * 3600)


def gpu_hours(gpu_model: str, flops: float, share: float = TRAINING_SHARE) -> float:
    """Hours one GPU of ``gpu_model`` takes for ``flops`` training FLOPs at ``share`` of its float32 peak."""
    return flops / useful_flops_per_s(gpu_model, share) / 3600


def core_hour_usd(name: str = "m5.xlarge") -> float:
    """EC2 + EMR per vCPU-hour of a CPU type in the instance table."""
    t = instances.lookup(name)
    if t is None or t.usd_h is None:
        raise ValueError(f"no price for {name!r} in the instance table")
    return t.usd_h / t.vcpus
