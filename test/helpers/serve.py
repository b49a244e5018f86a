"""A studio root (dataset, tiny trained model, previews, evaluation, a generated WAV) and a live server."""
from __future__ import annotations

import contextlib
import json
import socket
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from helpers.train import tone_dataset, train_argv
from helpers.waiting import wait_for

RATE = 8000
TRACK_INFO = {  # id -> title, artist, licence
    "t0": ("Low Hum", "Ada", "CC-BY 4.0"),
    "t1": ("Second Sine", "Bea", "CC-BY-SA 4.0"),
    "t2": ("Third Tone", "Cy", "CC-BY-NC 4.0"),
    "t3": ("Held Out", "Dee", "CC0 1.0"),
}


def make_dataset(root: Path) -> Path:
    """A tone dataset in the transform format, with titles, licences, dataset.json and errors.jsonl."""
    data = tone_dataset(root, n_tracks=4, seconds=2.0, sample_rate=RATE)
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
    for r in rows:
        title, artist, licence = TRACK_INFO[r["id"]]
        r.update(title=title, artist=artist, licence=licence, genre="Electronic")
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "dataset.json").write_text(json.dumps({
        "format": "waveforms-dataset", "format_version": 1, "dataset_id": "test-ds", "sample_rate": RATE, "mu": 255,
        "settings": {"sample_rate": RATE, "mu": 255, "normalise": "peak", "target_peak": 0.95,
                     "target_rms_db": -20.0, "trim_silence": True, "silence_threshold_db": -50.0,
                     "min_seconds": 1.0, "resampler": "soxr"},
        "tracks": len(rows), "errors": 1, "seconds": 8.0, "val_tracks": 1}))
    (data / "errors.jsonl").write_text(json.dumps({"id": "broken", "input": "/somewhere/raw/tracks/broken.mp3",
                                                   "reason": "decode-failed", "detail": "Invalid data"}) + "\n")
    return data


def train_model(data: Path, model_dir: Path, steps: int = 30) -> Path:
    from waveforms.cli import main

    assert main(train_argv(data, model_dir, "--steps", str(steps), "--set", "log_every=5",
                           "--set", "val_every=10", "--set", "checkpoint_every=10")) == 0
    return model_dir


def add_previews_and_evaluation(model_dir: Path) -> None:
    from helpers.train import tone
    from waveforms.serve.wav import wav_bytes

    (model_dir / "previews").mkdir(exist_ok=True)
    (model_dir / "previews" / "step-000030.wav").write_bytes(wav_bytes(tone(RATE // 2, period=20), RATE))
    (model_dir / "evaluation.json").write_text(json.dumps({
        "format": "waveforms-evaluation", "format_version": 2, "val_nats": 2.5,
        "val_split_bits_per_sample": 2.5 / np.log(2),
        "fd_mel": {"generated": 12.5, "halves": 1.5, "noise": 80.0},
        "memorisation": {"threshold": 0.95, "match_fraction": 0.5, "seconds": [
            {"clip": 0, "second": 0, "track_id": "t1", "title": "Second Sine", "artist": "Bea",
             "licence": "CC-BY-SA 4.0", "offset_s": 0.5, "similarity": 0.97, "match": True},
            {"clip": 0, "second": 1, "track_id": "t2", "title": "Third Tone", "artist": "Cy",
             "licence": "CC-BY-NC 4.0", "offset_s": 1.0, "similarity": 0.41, "match": False}]}}))


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def running(cfg) -> Iterator[str]:
    """A real uvicorn server for ``cfg`` on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    from waveforms.serve.app import create_app

    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the server to start", every=0.05, alive=thread.is_alive)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
