"""S3 through a faulty network: responses cut in their headers or body, 503 SlowDown, connections closed
during a PUT's 100-continue exchange. Every storage call retries, bounded; data comes back whole; a
persistent fault is a clear error naming the object; training's losses equal a fault-free run's."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from helpers.aws import BUCKET, client
from helpers.delay_proxy import DelayProxy, Faults
from helpers.train import tone_dataset
from waveforms import s3retry, storage
from waveforms.config import TrainConfig
from waveforms.dataset import Dataset
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
    with DelayProxy(moto_url, delay_s=0.0, faults=Faults(slowdown_every=3, headers_every=5, cut_continue=True)) as proxy:
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


def test_training_through_a_faulty_s3_takes_the_steps_of_a_fault_free_run(bucket, moto_url, monkeypatch, tmp_path,
                                                                           fast_backoff):
    local = tone_dataset(tmp_path / "ds", n_tracks=3, seconds=2.0)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.upload_file(path, f"{bucket}/ds/{path.relative_to(local).as_posix()}")
    settings = dict(data=f"{bucket}/ds", preset="tiny", steps=12, batch_size=4, window=64, learning_rate=0.01,
                    seed=5, log_every=3, val_every=6, checkpoint_every=6, preview_every=6, reads_in_flight=8)
    run(TrainConfig(model_dir=f"{bucket}/clean", **settings))
    with DelayProxy(moto_url, delay_s=0.0, faults=Faults(body_every=9, headers_every=13, slowdown_every=17)) as proxy:
        through(monkeypatch, proxy)
        run(TrainConfig(model_dir=f"{bucket}/faulty", **settings))  # reads, checkpoints, metrics, previews
        faults = proxy.stats()["faults"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    clean, faulty = metrics(f"{bucket}/clean"), metrics(f"{bucket}/faulty")
    assert [r["step"] for r in faulty] == [r["step"] for r in clean] == [3, 6, 9, 12]
    np.testing.assert_allclose([r["loss"] for r in faulty], [r["loss"] for r in clean], rtol=1e-6)
    assert sum(faults.values()) >= 10, faults
    assert Dataset.open(f"{bucket}/ds").tracks  # the dataset itself was never reported damaged
    assert storage.exists(f"{bucket}/faulty/model.json")
