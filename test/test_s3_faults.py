"""S3 through a faulty network: responses cut in their headers or body (at fixed places, at seeded random
bytes), 503 SlowDown, connections closed during a PUT's 100-continue exchange. Every storage call retries,
bounded; data comes back whole; a persistent fault is a clear error naming the object; a fault that was
retried prints one line, and a stage says once how many there were; training's losses equal a fault-free
run's exactly. (Every byte of every operation's answer is cut in test_s3_cut_matrix.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers.aws import BUCKET, client
from helpers.delay_proxy import CUT_SEED, Cut, DelayProxy, Faults, Script
from helpers.train import tone_dataset
from waveforms import storage
from waveforms.config import TrainConfig
from waveforms.dataset import Dataset
from waveforms.storage import s3retry
from waveforms.train import run


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(s3retry, "BACKOFF_S", 0.01)
    monkeypatch.setattr(s3retry, "OUTAGE_S", 0.0)  # stop after the attempts; the time bound: test_s3_outage


@pytest.fixture
def bucket(aws_env):
    client("s3").create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}"


def through(monkeypatch, proxy: DelayProxy) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)


def test_reads_and_listings_come_back_whole_through_cut_responses_and_slowdowns(bucket, moto_url, monkeypatch,
                                                                               fast_backoff):
    rng = np.random.default_rng(0)
    blobs = {f"{bucket}/r/{i}.bin": rng.integers(0, 256, 3000 + 997 * i, dtype=np.uint8).tobytes() for i in range(8)}
    for uri, data in blobs.items():
        storage.write_bytes(uri, data)
    big = rng.integers(0, 256, 5 * 1024 * 1024 + 17, dtype=np.uint8).tobytes()
    storage.write_bytes(f"{bucket}/r/big.bin", big)
    with DelayProxy(moto_url, delay_s=0.0, faults=Faults(body_every=3, headers_every=7, slowdown_every=11)) as proxy:
        through(monkeypatch, proxy)
        for uri, data in blobs.items():
            assert storage.read_bytes(uri) == data
            assert storage.read_range(uri, 100, 1000) == data[100:1100]
        assert b"".join(storage.iter_bytes(f"{bucket}/r/big.bin", chunk_size=1 << 20)) == big
        assert sorted(storage.list_sizes(f"{bucket}/r")) == sorted([*blobs, f"{bucket}/r/big.bin"])
        local = storage.local_size  # the download is atomic: no partial file under the final name
        target = os.path.join(os.environ["TMPDIR"] if "TMPDIR" in os.environ else "/tmp", f"big-{os.getpid()}.bin")
        storage.download_file(f"{bucket}/r/big.bin", target)
        assert local(target) == len(big)
        os.unlink(target)
        faults = proxy.stats()["faults"]
    assert faults.get("body", 0) >= 5 and faults.get("headers", 0) >= 2 and faults.get("slowdown", 0) >= 1


def test_writes_survive_slowdowns_and_send_no_100_continue(bucket, moto_url, monkeypatch, fast_backoff, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(np.random.default_rng(1).integers(0, 256, 9 * 1024 * 1024, dtype=np.uint8).tobytes())
    faults = Faults(slowdown_every=3, headers_every=5, cut_continue=True)
    with DelayProxy(moto_url, delay_s=0.0, faults=faults) as proxy:
        through(monkeypatch, proxy)
        for i in range(6):
            storage.write_text(f"{bucket}/w/{i}.txt", f"object {i}\n" * 100)
        storage.upload_file(big, f"{bucket}/w/big.bin")  # multipart: 8 MiB parts
        stats = proxy.stats()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    assert [storage.read_text(f"{bucket}/w/{i}.txt") for i in range(6)] == [f"object {i}\n" * 100 for i in range(6)]
    assert storage.read_bytes(f"{bucket}/w/big.bin") == big.read_bytes()
    assert stats["faults"].get("slowdown", 0) >= 2
    assert "expect_continue_seen" not in stats["faults"]  # the header that makes botocore spin on EOF is gone


def test_a_persistent_fault_is_a_clear_error_naming_the_object_and_the_attempts(bucket, moto_url, monkeypatch,
                                                                                fast_backoff):
    storage.write_bytes(f"{bucket}/p/x.bin", b"x" * 5000)
    with DelayProxy(moto_url, delay_s=0.0, faults=Faults(body_every=1)) as proxy:
        through(monkeypatch, proxy)
        t0 = time.monotonic()
        with pytest.raises(s3retry.StorageError, match=rf"GET {bucket}/p/x.bin: 6 attempts failed with network "
                                                      r"faults; the last: \w+"):
            storage.read_bytes(f"{bucket}/p/x.bin")
        assert proxy.stats()["faults"]["body"] == 6  # each a whole GET: botocore does not retry a cut body
    assert time.monotonic() - t0 < 120  # bounded: no hang
    # an answer about the object is not a network fault: raised at once, not retried
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    with pytest.raises(Exception) as missing:
        storage.read_bytes(f"{bucket}/p/none.bin")
    assert not isinstance(missing.value, s3retry.StorageError)


def test_backoff_is_capped_exponential_with_jitter():
    import random

    rng = random.Random(0)
    waits = [s3retry.backoff(a, rng) for a in range(1, 10)]
    for attempt, wait in enumerate(waits, start=1):
        full = min(s3retry.BACKOFF_CAP_S, s3retry.BACKOFF_S * 2 ** (attempt - 1))
        assert full / 2 <= wait <= full


def metrics(model_dir: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(storage.join(model_dir, "metrics.jsonl")).splitlines()]


def setup_cuts() -> Script:
    """Cuts in the reads a training run makes before it builds its model: the manifest's headers (retried
    by botocore, whose backoff draws from Python's global random) and dataset.json's body."""
    return Script().add(Cut(120), "GET", "manifest.jsonl").add(Cut(400), "GET", "dataset.json")


FAULTS = {"fixed": lambda: Faults(body_every=9, headers_every=13, slowdown_every=17),
          "seeded-random": lambda: Faults(cut_chunks=12, seed=CUT_SEED),
          "before-the-build": setup_cuts}
_CLEAN: dict[str, list[float]] = {}


@pytest.mark.parametrize("faults", list(FAULTS))
def test_training_through_a_faulty_s3_computes_the_losses_of_a_fault_free_run(bucket, moto_url, monkeypatch,
                                                                               tmp_path, fast_backoff, faults):
    """Batches are a pure function of (seed, step), the model's weights of the seed: a retried fault anywhere
    (before the model is built too) changes nothing the run computes."""
    local = tone_dataset(tmp_path / "ds", n_tracks=3, seconds=2.0)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.upload_file(path, f"{bucket}/ds/{path.relative_to(local).as_posix()}")
    storage.write_text(f"{bucket}/ds/dataset.json", json.dumps({"format_version": 1, "note": "x" * 600}))
    settings = dict(data=f"{bucket}/ds", preset="tiny", steps=12, batch_size=4, window=64, learning_rate=0.01,
                    seed=5, log_every=3, val_every=6, checkpoint_every=6, preview_every=6, reads_in_flight=8)
    if not _CLEAN:
        run(TrainConfig(model_dir=f"{bucket}/clean", **settings))
        _CLEAN["loss"] = [r["loss"] for r in metrics(f"{bucket}/clean")]
    with DelayProxy(moto_url, delay_s=0.0, faults=FAULTS[faults]()) as proxy:
        through(monkeypatch, proxy)
        run(TrainConfig(model_dir=f"{bucket}/faulty", **settings))  # reads, checkpoints, metrics, previews
        injected = proxy.stats()["faults"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    faulty = metrics(f"{bucket}/faulty")
    assert [r["step"] for r in faulty] == [3, 6, 9, 12]
    assert [r["loss"] for r in faulty] == _CLEAN["loss"]  # exactly
    assert sum(injected.values()) >= 2, injected
    assert Dataset.open(f"{bucket}/ds").tracks  # the dataset itself was never reported damaged
    assert storage.exists(f"{bucket}/faulty/model.json")


def test_a_stage_through_faults_prints_a_line_per_retried_fault_and_their_count_once(bucket, moto_url, tmp_path):
    local = tone_dataset(tmp_path / "ds", n_tracks=4, seconds=1.0)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.upload_file(path, f"{bucket}/ds/{path.relative_to(local).as_posix()}")
    log_file = tmp_path / "verify.log"
    with DelayProxy(moto_url, delay_s=0.0, faults=Faults(headers_every=2, body_every=3, slowdown_every=7)) as proxy:
        out = subprocess.run([sys.executable, "-m", "waveforms", "--log-file", str(log_file), "verify", f"{bucket}/ds"],
                             env={**os.environ, "AWS_ENDPOINT_URL": proxy.url}, capture_output=True, text=True,
                             timeout=300)
        injected = sum(proxy.stats()["faults"].values())
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (out.stdout + out.stderr).splitlines()
    assert not [line for line in lines if "Traceback" in line or "Failed to parse" in line or "Defect" in line]
    assert [line for line in lines if line.startswith("S3: ")] == [f"S3: {injected} transient faults, all retried"]
    retried = [line for line in lines if "retrying in" in line]  # the faults botocore did not absorb itself
    assert len(retried) < injected and all(line.startswith("warning: GET s3://") for line in retried), retried
    assert "Traceback" in log_file.read_text()  # the whole record is in the log file
