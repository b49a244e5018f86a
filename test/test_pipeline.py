"""The four run_ scripts end to end on tiny fixtures: mirror -> scrape -> transform -> train -> generate."""
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

import pytest

from waveforms.demo.mirror import Mirror, MirrorTrack
from waveforms.transform import read_tracks

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args, timeout=600):
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    out = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=str(ROOT))
    assert out.returncode == 0, f"{script} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.mark.slow
def test_four_scripts_end_to_end(sine_mp3, tmp_path):
    tones = [
        sine_mp3(tmp_path / "a.mp3", 330.0, 2.0, rate=44100, channels=2),
        sine_mp3(tmp_path / "b.mp3", 550.0, 2.0, rate=22050, channels=1),
        sine_mp3(tmp_path / "c.mp3", 770.0, 2.0, rate=48000, channels=2),
    ]
    tracks = [MirrorTrack(id=i + 1, title=f"Tone {i}", artist="Test", mp3=p, genres=["Electronic"])
              for i, p in enumerate(tones)]
    raw, ds, model, wav = tmp_path / "raw", tmp_path / "dataset", tmp_path / "model", tmp_path / "out.wav"
    with Mirror(tracks) as mirror:
        run("run_webscraper.py", "--base-url", mirror.url, "--genre", "Electronic", "--limit", 5, "--out", raw,
            "--rate", 100)
    manifest = [json.loads(line) for line in (raw / "manifest.jsonl").read_text().splitlines()]
    assert sorted(m["id"] for m in manifest) == ["1", "2", "3"]  # track ids are strings everywhere
    for m in manifest:
        assert (raw / m["path"]).read_bytes() == tones[int(m["id"]) - 1].read_bytes()

    run("run_transformation_scripts.py", "--input", raw, "--output", ds, "--master", "local[2]",
        "--sample-rate", 8000, "--val-fraction", 0)
    got = {tid: (samples, meta) for tid, samples, meta in read_tracks(str(ds))}
    assert sorted(got) == ["1", "2", "3"]
    for samples, meta in got.values():
        assert samples.dtype == np.uint8
        assert abs(len(samples) - 16000) <= 160  # 2 s at 8 kHz, within 1%
        assert meta["sample_rate"] == 8000

    run("run_model_training.py", "--data", ds, "--model-dir", model, "--preset", "tiny", "--steps", 30,
        "--window", 200, "--batch-size", 4)
    meta = json.loads((model / "model.json").read_text())
    assert meta["sample_rate"] == 8000 and meta["receptive_field"] == 17
    assert meta["dataset_id"] == next(iter(got.values()))[1]["dataset_id"]
    metrics = [json.loads(line) for line in (model / "metrics.jsonl").read_text().splitlines()]
    assert metrics and metrics[-1]["step"] == 30

    seconds, rate = 0.25, 8000
    run("run_model_predictions.py", "--model", model, "--seconds", seconds, "--output", wav, "--seed", 3)
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (rate, 1, 2)
        assert w.getnframes() == int(seconds * rate) == 2000
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert len(pcm) == 2000 and pcm.any()  # every frame is there, and it is not all silence
    # the sidecar names the trained model and the dataset it learned from
    sidecar = json.loads(Path(f"{wav}.json").read_text())
    summary = json.loads((ds / "dataset.json").read_text())
    assert sidecar["model"] == str(model.resolve())
    assert sidecar["model_git_commit"] == meta["git_commit"]
    assert sidecar["model_dataset_id"] == meta["dataset_id"] == summary["dataset_id"]
    assert {m["dataset_id"] for _, m in got.values()} == {summary["dataset_id"]}  # manifest.jsonl rows
    assert (sidecar["sample_rate"], sidecar["samples"], sidecar["stream"]) == (rate, 2000, 0)
