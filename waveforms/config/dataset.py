"""The stages that build the dataset: ``[scrape]`` and ``[transform]``."""
from __future__ import annotations

from dataclasses import dataclass

from waveforms.config.metadata import opt, s3_outage

SAMPLE_RATE = 16000
"""Hz: the transform's default output rate, and so the rate of every model trained on its datasets."""

ARCHIVES = ("fma_small", "fma_medium", "fma_large", "fma_full")


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
    s3_outage_s: float = s3_outage()


@dataclass
class TransformConfig:
    """The transform stage: decode, mono, resample, trim, normalise, mu-law encode."""

    input: str = opt("data/raw", flag="--input", help="scraped folder, manifest, or s3:// prefix")
    output: str = opt("data/dataset", flag="--output", help="dataset folder or s3:// prefix")
    master: str = opt("local[*]", flag="--master", help="Spark master URL")
    sample_rate: int = opt(SAMPLE_RATE, min=1000, max=192000, unit="Hz", flag="--sample-rate", help="output sample rate")
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
    s3_outage_s: float = s3_outage()


@dataclass
class VerifyConfig:
    """The verify stage: a dataset's or model's files against the sizes and SHA-256 it records."""

    data: str = opt("data/dataset", flag="--data", help="dataset or model folder, or s3:// prefix (or give it as DATA)")
    hashes: bool = opt(True, help="also read every file and check its SHA-256; false = sizes only (one listing)")
    workers: int = opt(4, min=1, unit="threads", help="files hashed at once")
    s3_outage_s: float = s3_outage()
