"""The training feed: batched ranged reads, the step-ordered prefetcher, and training from S3 behind latency.

Batches are a pure function of (seed, step), so a run that reads its windows
from S3 through the delaying proxy must see the same data, and reach the same
losses, as the same run from local disk, while the proxy sees many requests
in flight at once.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.aws import BUCKET, client
from helpers.delay_proxy import DelayProxy
from helpers.train import tone_dataset, write_dataset
from waveforms import storage
from waveforms.config import TrainConfig
from waveforms.dataset import Dataset, DatasetError, regions
from waveforms.dataset.cache import ShardCache
from waveforms.train import run
from waveforms.train.windows import Prefetcher, WindowSampler


def random_tracks(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [{"id": f"r{i}", "codes": rng.integers(0, 256, n, dtype=np.uint8)} for i, n in enumerate(lengths)]


def test_read_windows_returns_each_span_of_its_track_in_order(tmp_path):
    tracks = random_tracks([3000, 1000, 5000])  # two shards: r0 and r1 share the first
    ds = Dataset.open(str(write_dataset(tmp_path / "ds", tracks)))
    rows = {t["id"]: t for t in ds.tracks}
    spans = [(rows["r2"], 4000, 1000), (rows["r1"], 0, 1000), (rows["r0"], 2999, 1), (rows["r1"], 500, 17)]
    got = ds.read_windows(spans, storage.RangeReader(4))
    codes = {t["id"]: t["codes"] for t in tracks}
    for (track, start, length), window in zip(spans, got):
        np.testing.assert_array_equal(window, codes[track["id"]][start:start + length])
        np.testing.assert_array_equal(window, ds.read_window(track, start, length))
    with pytest.raises(DatasetError, match="outside track r1"):
        ds.read_windows([(rows["r1"], 990, 11)])


def test_a_short_read_is_a_dataset_error_naming_the_track_and_shard(tmp_path):
    root = write_dataset(tmp_path / "ds", random_tracks([3000, 1000]))
    shard = root / "shards" / "part-00000.u8"
    shard.write_bytes(shard.read_bytes()[:3500])  # r1 (offset 3000, 1000 samples) loses its last 500
    ds = Dataset.open(str(root), check=False)  # past the size check on open, as a shard cut after it
    r0, r1 = ds.tracks
    assert len(ds.read_windows([(r0, 0, 3000), (r1, 0, 500)])[1]) == 500  # what is there still reads
    with pytest.raises(DatasetError, match=r"track r1 in shard shards/part-00000\.u8: read 300 of 400 bytes"):
        ds.read_windows([(r0, 0, 10), (r1, 200, 400)])


def test_prefetcher_hands_out_steps_in_order_however_they_finish_and_raises_at_the_failing_step():
    active, most = [0], [0]
    lock = threading.Lock()

    def fn(step: int) -> int:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.02 * ((7 * step) % 5))  # later steps often finish first
        with lock:
            active[0] -= 1
        if step == 13:
            raise ValueError("step 13 failed")
        return step * step

    with Prefetcher(fn, 5, depth=4) as steps:
        assert [next(steps) for _ in range(8)] == [s * s for s in range(5, 13)]
        with pytest.raises(ValueError, match="step 13 failed"):
            next(steps)
    assert most[0] > 1  # several steps were computed at once


@pytest.fixture
def s3_data(aws_env, tmp_path):
    """A tone dataset on local disk and the same files in the test bucket under ``ds/``."""
    local = tone_dataset(tmp_path / "ds", n_tracks=4, seconds=2.0)
    client("s3").create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.upload_file(path, f"s3://{BUCKET}/ds/{path.relative_to(local).as_posix()}")
    return local, f"s3://{BUCKET}/ds"


def metrics(model_dir: Path | str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(storage.join(str(model_dir), "metrics.jsonl")).splitlines()]


def test_training_from_s3_behind_latency_matches_local_disk_with_reads_in_flight(s3_data, moto_url, monkeypatch,
                                                                                 tmp_path):
    local, remote = s3_data
    settings = dict(preset="tiny", steps=12, batch_size=4, window=64, learning_rate=0.01, seed=5, log_every=3,
                    val_every=6, checkpoint_every=6, preview_every=-1, reads_in_flight=16)
    run(TrainConfig(data=str(local), model_dir=str(tmp_path / "from-disk"), **settings))

    with DelayProxy(moto_url, delay_s=0.03) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        ds_local, ds_remote = Dataset.open(str(local)), Dataset.open(remote)
        train, _, _ = regions(ds_local, 64 + 100)
        train_remote, _, _ = regions(ds_remote, 64 + 100)
        want = WindowSampler(ds_local, train, 64, 100, batch_size=8, seed=2).batch(3)
        got = WindowSampler(ds_remote, train_remote, 64, 100, batch_size=8, seed=2).batch(3)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])

        proxy.reset()
        run(TrainConfig(data=remote, model_dir=str(tmp_path / "from-s3"), **settings))
        seen = proxy.stats()

    disk, s3 = metrics(tmp_path / "from-disk"), metrics(tmp_path / "from-s3")
    assert [r["step"] for r in s3] == [r["step"] for r in disk] == [3, 6, 9, 12]
    np.testing.assert_allclose([r["loss"] for r in s3], [r["loss"] for r in disk], rtol=1e-6)
    np.testing.assert_allclose([r["val_loss"] for r in s3 if "val_loss" in r],
                               [r["val_loss"] for r in disk if "val_loss" in r], rtol=1e-6)
    assert seen["requests"] >= 12 * 4  # every training window went through the proxy
    assert seen["max_in_flight"] > 4  # more than one batch's reads at once


def test_shard_cache_fills_on_first_read_and_serves_later_runs_without_requests(s3_data, moto_url, monkeypatch,
                                                                                tmp_path):
    local, remote = s3_data
    folder = tmp_path / "cache"
    with DelayProxy(moto_url, delay_s=0.0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        ds = Dataset.open(remote)
        spans = [(t, 100, 500) for t in ds.tracks]
        want = [np.fromfile(local / t["shard"], dtype=np.uint8)[t["offset"] + 100:t["offset"] + 600]
                for t in ds.tracks]
        first = ShardCache(remote, ds.dataset_id, folder, max_bytes=10**9)
        for got, expected in zip(ds.read_windows(spans, storage.RangeReader(8), first), want):
            np.testing.assert_array_equal(got, expected)
        first.wait()
        assert first.misses == len(spans) and first.hits == 0
        shards = sorted({t["shard"] for t in ds.tracks})
        for shard in shards:  # whole copies under the dataset id
            assert (folder / "test-ds" / shard).read_bytes() == (local / shard).read_bytes()
        first.close()

        later = ShardCache(remote, ds.dataset_id, folder, max_bytes=10**9)  # a later run
        proxy.reset()
        for got, expected in zip(ds.read_windows(spans, storage.RangeReader(8), later), want):
            np.testing.assert_array_equal(got, expected)
        assert proxy.stats()["requests"] == 0 and later.hits == len(spans)

        # a copy of the wrong size is not read; another dataset id has its own folder
        (folder / "test-ds" / shards[0]).write_bytes(b"\0" * 10)
        check = ShardCache(remote, ds.dataset_id, folder, max_bytes=10**9)
        assert check.lookup(storage.join(remote, shards[0])) is None
        check.wait()
        assert (folder / "test-ds" / shards[0]).read_bytes() == (local / shards[0]).read_bytes()
        other = ShardCache(remote, "another-id", folder, max_bytes=10**9)
        assert other.lookup(storage.join(remote, shards[0])) is None
        other.close(), check.close()


def test_shard_cache_stays_within_its_size_and_skips_shards_bigger_than_it(s3_data, tmp_path):
    local, remote = s3_data
    ds = Dataset.open(remote)
    sizes = {t["shard"]: (local / t["shard"]).stat().st_size for t in ds.tracks}
    assert len(sizes) == 2
    folder = tmp_path / "cache"
    one = max(sizes.values())  # room for one shard at a time
    first, second = sorted(sizes)

    def held() -> list[str]:
        return sorted(p.relative_to(folder / "test-ds").as_posix() for p in folder.rglob("*") if p.is_file())

    run1 = ShardCache(remote, ds.dataset_id, folder, max_bytes=one)
    assert run1.lookup(storage.join(remote, first)) is None
    run1.wait()
    assert run1.lookup(storage.join(remote, first)) is not None and held() == [first]
    run1.lookup(storage.join(remote, second))  # no room: this run's own shard stays
    run1.wait()
    assert held() == [first]
    run1.close()
    run2 = ShardCache(remote, ds.dataset_id, folder, max_bytes=one)  # a later run evicts the old shard
    run2.lookup(storage.join(remote, second))
    run2.wait()
    assert held() == [second]
    run2.close()
    tiny = ShardCache(remote, ds.dataset_id, tmp_path / "tiny", max_bytes=min(sizes.values()) - 1)
    for shard in sizes:
        tiny.lookup(storage.join(remote, shard))
    tiny.wait()
    assert not [p for p in (tmp_path / "tiny").rglob("*") if p.is_file()]
    tiny.close()


def test_elephas_executor_windows_from_s3_come_through_the_concurrent_feed(s3_data, moto_url, monkeypatch):
    from waveforms.train.elephas.engine import partition_windows

    local, remote = s3_data
    want = list(partition_windows(str(local), 32, 100, 40, 7, (1, 3)))
    with DelayProxy(moto_url, delay_s=0.03) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        Dataset.open(remote)  # the manifest read is not part of what is counted
        proxy.reset()
        got = list(partition_windows(remote, 32, 100, 40, 7, (1, 3), reads_in_flight=8))
        seen = proxy.stats()
    assert len(got) == len(want) == 40
    for (gx, gy), (wx, wy) in zip(got, want):
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gy, wy)
    assert 1 < seen["max_in_flight"] <= 8  # the executor's 40 reads went up to 8 at a time
