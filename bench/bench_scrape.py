"""Crawl + download throughput against the local FMA-format mirror.

Compares the default politeness (1 request/s to the site) with relaxed rates:
tracks/s, MB/s, requests, and the share of wall time the crawl spent waiting on
the rate limiter. Prints a markdown table. Not a test.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test"))

from helpers.tones import sine_mp3  # noqa: E402
from waveforms.config import ScrapeConfig  # noqa: E402
from waveforms.demo.mirror import Mirror, MirrorTrack  # noqa: E402
from waveforms.scrape import fma_site, make_http  # noqa: E402
from waveforms.scrape.job import Job  # noqa: E402


def crawl_once(mirror: Mirror, out: Path, rate: float, n: int) -> dict:
    cfg = ScrapeConfig(base_url=mirror.url, genres=["Bench"], out=str(out), limit=n,
                       requests_per_second=rate)
    http = make_http(cfg)
    with contextlib.redirect_stderr(io.StringIO()):
        job = Job(cfg, "fma-site")
        t0 = time.perf_counter()
        fma_site.crawl(cfg, job, http)
        wall = time.perf_counter() - t0
        job.finish()
    wait = http.waited_s / max(1, cfg.download_concurrency)
    return {"rate": rate, "tracks": job.counts["downloaded"], "bytes": job.bytes, "wall": wall,
            "requests": http.requests, "wait_share": min(1.0, wait / wall)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracks", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each MP3")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        tracks = [MirrorTrack(id=i + 1, title=f"Bench {i}", artist="Bench", genres=["Bench"],
                              mp3=sine_mp3(d / f"b{i}.mp3", 200.0 + 40 * i, args.seconds, rate=44100))
                  for i in range(args.tracks)]
        rows = []
        with Mirror(tracks) as m:
            for rate in (1.0, 10.0, 0.0):
                rows.append(crawl_once(m, d / f"out-{rate}", rate, args.tracks))
    print(f"\nscrape: {args.tracks} tracks of {args.seconds:g} s MP3 from the local mirror, "
          "licence pages fetched, 2 download threads\n")
    print("| rate limit (req/s) | requests | wall (s) | tracks/s | MB/s | waiting on rate limit |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        label = "unlimited" if r["rate"] <= 0 else f"{r['rate']:g}" + (" (default)" if r["rate"] == 1.0 else "")
        print(f"| {label} | {r['requests']} | {r['wall']:.2f} | {r['tracks'] / r['wall']:.2f} | "
              f"{r['bytes'] / 1e6 / r['wall']:.2f} | {100 * r['wait_share']:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
