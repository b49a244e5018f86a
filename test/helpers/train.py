"""Datasets written directly in the transform stage's format, for the train tests."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from waveforms.audio import mulaw
from waveforms.config.dataset import SAMPLE_RATE


def tone(num_samples: int, period: int = 40, amplitude: float = 0.6, phase: int = 0) -> np.ndarray:
    """A sine with an integer period, as mu-law codes."""
    t = np.arange(phase, phase + num_samples)
    return mulaw.encode(amplitude * np.sin(2 * np.pi * t / period))


def write_dataset(root: str | Path, tracks: list[dict], sample_rate: int = SAMPLE_RATE,
                  dataset_id: str = "test-ds", shard_size: int = 2, hashes: bool = True) -> Path:
    """Write ``tracks`` ({"id", "codes", optional "split", "genre"}) as shards + manifest.jsonl.

    ``hashes``: record each shard's size and SHA-256 in its rows, as the transform does
    (False: a dataset as the transform wrote them before it recorded them).
    """
    root = Path(root)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(0, len(tracks), shard_size):
        shard = f"shards/part-{s // shard_size:05d}.u8"
        offset = 0
        data = b""
        for t in tracks[s:s + shard_size]:
            codes = np.asarray(t["codes"], dtype=np.uint8)
            data += codes.tobytes()
            rows.append({
                "id": t["id"], "shard": shard, "offset": offset, "num_samples": len(codes),
                "sample_rate": sample_rate, "mu": 255, "duration_s": len(codes) / sample_rate,
                "split": t.get("split", "train"), "dataset_id": dataset_id, "genre": t.get("genre", ""),
            })
            offset += len(codes)
        (root / shard).write_bytes(data)
        if hashes:
            for row in rows:
                if row["shard"] == shard:
                    row.update(shard_size=len(data), shard_sha256=hashlib.sha256(data).hexdigest())
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def tone_dataset(root: str | Path, n_tracks: int = 4, seconds: float = 1.0, sample_rate: int = 8000,
                 val: bool = True, genres: tuple[str, ...] = ()) -> Path:
    """Tracks of a tone (period 40 samples, different phases); the last one is ``val`` when asked."""
    n = int(seconds * sample_rate)
    tracks = []
    for i in range(n_tracks):
        tracks.append({
            "id": f"t{i}", "codes": tone(n, phase=7 * i),
            "split": "val" if val and i == n_tracks - 1 else "train",
            "genre": genres[i % len(genres)] if genres else "",
        })
    return write_dataset(root, tracks, sample_rate=sample_rate)


def train_argv(data: Path, model_dir: Path, *extra: str) -> list[str]:
    """CLI flags for a quick tiny-preset run."""
    return ["train", "--data", str(data), "--model-dir", str(model_dir), "--preset", "tiny",
            "--batch-size", "4", "--window", "64", "--set", "learning_rate=0.01", *extra]


def sigkill_when(argv: list[str], reached, timeout_s: float = 240) -> None:
    """Run ``argv`` and SIGKILL it as soon as ``reached()`` is true; fails if it ends first."""
    import signal
    import subprocess

    from helpers.waiting import wait_for

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(reached, timeout_s, "the point to kill the run at", every=0.05, alive=lambda: proc.poll() is None)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
