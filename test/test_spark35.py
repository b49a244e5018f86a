"""The stages under PySpark 3.5, the Spark of every EMR 7.x release (3.5.6 on Python 3.11 up to emr-7.13.0).

On EMR, ``spark-submit`` puts the cluster's PySpark ahead of the venv's pinned
4.0; here ``scripts/setup.sh`` installs pyspark 3.5.6 into ``.spark35`` and
these tests run the stage CLIs with it first on PYTHONPATH and as SPARK_HOME,
so the driver, the JVMs and the executors' Python all run 3.5. Each test runs
on a real standalone cluster of 3.5 (its own master, worker and executor JVMs,
as YARN gives on EMR). The allreduce engine's step-equivalence oracle and its
kill-and-resume test run on this tier in ``test_train_allreduce.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from helpers import spark35
from helpers.train import tone_dataset
from waveforms.audio import mulaw
from waveforms.transform import read_tracks

ROOT = Path(__file__).resolve().parents[1]
RATE = 8000
FREQS = {"low": 250.0, "mid": 500.0, "high": 1000.0}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def spark35_installed() -> None:
    spark35.require()

# The stage CLI, after printing the driver's and the executors' pyspark versions
# and the JVM's Spark version from the same session (the stage reuses it).
STAGE_WITH_VERSIONS = """
import sys

import pyspark

from waveforms.cli import main
from waveforms.runtime.spark import get_session


def executor_version(_):
    import pyspark
    return pyspark.__version__


master = sys.argv[sys.argv.index("--master") + 1]
sc = get_session(master, "waveforms").sparkContext
print("driver", pyspark.__version__, sc.version)
print("executors", *sorted(set(sc.parallelize(range(4), 2).map(executor_version).collect())))
sys.exit(main(sys.argv[1:]))
"""


def run35(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], env=spark35.env35(), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def master(standalone):
    return standalone(str(spark35.SPARK35_HOME))


@pytest.fixture(scope="module")
def mp3s(sine_mp3, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mp3")
    for name, freq in FREQS.items():
        sine_mp3(folder / f"{name}.mp3", freq=freq, seconds=2.0)
    return folder


@pytest.fixture(scope="module")
def tone_data(tmp_path_factory) -> Path:
    return tone_dataset(tmp_path_factory.mktemp("tones") / "ds", sample_rate=RATE)


def dominant_frequency(codes: np.ndarray, rate: int) -> float:
    x = mulaw.decode(codes)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def test_transform_with_pyspark_35_in_the_driver_the_jvm_and_the_executors(master, mp3s, tmp_path):
    out = tmp_path / "dataset"
    done = run35("-c", STAGE_WITH_VERSIONS, "transform", "--input", str(mp3s), "--output", str(out),
                 "--master", master, "--sample-rate", str(RATE))
    versions = dict(line.split(" ", 1) for line in done.stdout.splitlines()
                    if line.startswith(("driver ", "executors ")))
    python_version, jvm_version = versions["driver"].split()
    assert python_version.startswith("3.5.") and jvm_version.startswith("3.5."), versions
    assert versions["executors"].split() == [python_version]
    assert "Exception" not in done.stderr, done.stderr[-3000:]  # e.g. 3.5's shutdown-hook traces at exit
    tracks = {track_id: codes for track_id, codes, _ in read_tracks(str(out))}
    assert sorted(tracks) == sorted(FREQS)
    for track_id, codes in tracks.items():
        assert abs(len(codes) - 2 * RATE) <= RATE // 10, (track_id, len(codes))
        assert abs(dominant_frequency(codes, RATE) - FREQS[track_id]) < 5, track_id
    assert (out / "errors.jsonl").read_text() == ""


def read_wav(path: Path) -> tuple[int, int, np.ndarray]:
    with wave.open(str(path)) as w:
        return w.getframerate(), w.getsampwidth(), np.frombuffer(w.readframes(w.getnframes()), np.int16)


@pytest.mark.parametrize("mode", ["synchronous", "asynchronous"])
def test_elephas_training_then_generation(master, tone_data, tmp_path, mode):
    """Both modes train; generation (no Spark, but the 3.5 environment) runs once, after asynchronous."""
    model = tmp_path / "model"
    run35("-m", "waveforms", "train", "--data", str(tone_data), "--model-dir", str(model), "--preset", "tiny",
          "--engine", "elephas", "--mode", mode, "--master", master, "--workers", "2", "--epochs", "1",
          "--batch-size", "4", "--window", "64", "--seed", "3", "--set", "elephas.windows_per_worker=16",
          "--set", "learning_rate=0.01", "--set", "clip_norm=1.0")  # a stable recipe: the tier tests Spark
    rows = [json.loads(line) for line in (model / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[1]["val_loss"] < rows[0]["val_loss"]
    assert json.loads((model / "model.json").read_text())["config"]["sample_rate"] == RATE

    if mode == "synchronous":
        return
    wav = tmp_path / "out.wav"
    run35("-m", "waveforms", "generate", "--model", str(model), "--seconds", "0.05", "--output", str(wav),
          "--seed", "1")
    rate, width, pcm = read_wav(wav)
    assert (rate, width, len(pcm)) == (RATE, 2, int(0.05 * RATE))
