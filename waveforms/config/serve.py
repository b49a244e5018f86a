"""``[serve]``: the studio."""
from __future__ import annotations

from dataclasses import dataclass

from waveforms.config.metadata import opt


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
    max_primes: int = opt(100, min=1, unit="primes", help="uploaded primes kept; beyond this the oldest are removed")
    max_generations: int = opt(0, min=0, flag="--max-generations",
                               help="generations running at once (more get 429); 0 = one per CPU core")
    max_generate_seconds: float = opt(120.0, gt=0, unit="s", help="longest audio one generate request may ask for")
    max_audio_seconds: float = opt(60.0, gt=0, unit="s", help="longest dataset span one audio request may ask for")
    rescan_s: float = opt(2.0, min=0, unit="s", help="minimum time between scans of the roots")
    model_cache: int = opt(4, min=1, unit="models", help="loaded models kept in memory")
