"""What integrity costs: the size check on open, and verify's hashing, against reading the same data.

A synthetic dataset (``--shards`` shards of ``--shard-mib`` MiB, 4 tracks each,
with size and SHA-256 records) on local disk and, with ``--s3``, on a moto S3
server on 127.0.0.1. Prints a markdown table; each figure is a ratio against a
reference measured in the same run: opening with the check against opening
without it (the manifest read alone), and ``waveforms verify`` (sizes + SHA-256
of every shard) against streaming every shard's bytes without hashing.
Usage: python bench/bench_integrity.py [--shards N] [--shard-mib M] [--s3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test"))

import numpy as np  # noqa: E402

from helpers.train import write_dataset  # noqa: E402

from waveforms import storage  # noqa: E402
from waveforms.dataset import Dataset  # noqa: E402
from waveforms.verify import dataset_report  # noqa: E402


def best(fn, repeat: int = 3) -> float:
    """The fastest of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def read_all(root: str) -> None:
    """Every shard's bytes, streamed as verify streams them, without hashing."""
    ds = Dataset.open(root, check=False)
    client = storage.s3_client() if storage.is_s3(root) else None
    for shard in sorted({t["shard"] for t in ds.tracks}):
        for _ in storage.iter_bytes(storage.join(root, shard), 1 << 20, client):
            pass


def measure(root: str, where: str, mib: float) -> None:
    bare = best(lambda: Dataset.open(root, check=False))
    checked = best(lambda: Dataset.open(root))
    read = best(lambda: read_all(root), 2)
    verified = best(lambda: dataset_report(root, hashes=True), 2)
    print(f"| {where} | {bare * 1e3:.1f} | {checked * 1e3:.1f} | {checked / bare:.2f}x "
          f"| {mib / read:.0f} | {mib / verified:.0f} | {verified / read:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--shard-mib", type=float, default=4.0)
    ap.add_argument("--s3", action="store_true", help="also on a moto S3 server on 127.0.0.1")
    args = ap.parse_args()
    per_track = int(args.shard_mib * (1 << 20)) // 4
    rng = np.random.default_rng(0)
    tracks = [{"id": f"t{i:04d}", "codes": rng.integers(0, 256, per_track, dtype=np.uint8)}
              for i in range(4 * args.shards)]
    mib = 4 * args.shards * per_track / (1 << 20)
    print(f"{args.shards} shards, {mib:.0f} MiB, {len(tracks)} tracks; load average {os.getloadavg()[0]:.2f}")
    print()
    print("| where | open, manifest only (ms) | open with size check (ms) | ratio "
          "| read every byte (MiB/s) | verify with SHA-256 (MiB/s) | ratio |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-integrity-") as tmp:
        local = write_dataset(Path(tmp, "ds"), tracks, shard_size=4)
        measure(str(local), "local disk", mib)
        if args.s3:
            import logging

            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request lines
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                              AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
            try:
                storage.s3_client().create_bucket(Bucket="bench")
                for p in sorted(local.rglob("*")):
                    if p.is_file():
                        storage.upload_file(p, f"s3://bench/ds/{p.relative_to(local).as_posix()}")
                measure("s3://bench/ds", "moto S3 (127.0.0.1)", mib)
            finally:
                server.stop()
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
