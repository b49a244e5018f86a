"""A local disk that fills up mid-stage (a small tmpfs, mounted for the test): every writer stops with a
:class:`~waveforms.errors.DiskFullError` naming the path and the free space, leaves no partial file under a
final name, and a rerun after space is freed continues; the shard cache, only an optimisation, falls back to
ranged reads and says so once."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.aws import BUCKET, client
from helpers.train import tone_dataset
from waveforms import storage
from waveforms.errors import DiskFullError

FULL = r"no space left on the disk while {what} {path}[^ ]* \(([\d.]+ k?B) free of ([\d.]+ [kM]B)\); free some space there and rerun"


@pytest.fixture
def small_disk(tmp_path):
    """``make(kb) -> Path``: a tmpfs of ``kb`` KiB mounted on a new folder (root only); unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def make(kb: int) -> Path:
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """A filler file that leaves about ``leave`` bytes free on ``disk``; delete it to free the space."""
    filler = disk / "filler"
    with open(filler, "ab") as fh:
        try:
            fh.write(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
            fh.flush()
        except OSError:
            pass
    return filler


def partials(root: Path) -> list[str]:
    """Files or folders under ``root`` that are some writer's temporary (``.part``, ``.tmp-``) leftovers."""
    return sorted(str(p) for p in root.rglob("*") if ".part" in p.name or p.name.startswith(".tmp-"))


def check_message(text: str, what: str, path: Path) -> None:
    match = re.search(FULL.format(what=re.escape(what), path=re.escape(str(path))), text)
    assert match, text
    free, total = match.groups()
    assert free.endswith(" B") or float(free.split()[0]) < 100 and free.endswith("kB"), free  # all but full
    assert total in ("1.0 MB", "8.4 MB"), total  # the small disk's size


# --- the shard cache --------------------------------------------------------------------------------------

def test_a_full_shard_cache_falls_back_to_ranged_reads_and_says_so_once(aws_env, small_disk, tmp_path, caplog):
    from waveforms.dataset import Dataset
    from waveforms.dataset.cache import open_cache

    client("s3").create_bucket(Bucket=BUCKET)
    local = tone_dataset(tmp_path / "ds", n_tracks=6, seconds=2.0)  # 3 shards of 32 kB
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.upload_file(path, f"s3://{BUCKET}/ds/{path.relative_to(local).as_posix()}")
    disk = small_disk(48)  # room for one shard, not two: the second download fills it
    ds, plain = Dataset.open(f"s3://{BUCKET}/ds"), Dataset.open(str(local))
    cache = open_cache(ds, disk, 1.0)
    spans = [(t, 100 * i, 500) for i, t in enumerate(ds.tracks)]
    expected = plain.read_windows([(next(p for p in plain.tracks if p["id"] == t["id"]), s, n) for t, s, n in spans])
    with caplog.at_level(logging.WARNING, "waveforms.dataset.cache"):
        for _ in range(3):  # each round queues the shards not cached yet; the first download fits, the next fills
            got = ds.read_windows(spans, cache=cache)
            assert [g.tobytes() for g in got] == [e.tobytes() for e in expected]
            cache.wait()
    cache.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "waveforms.dataset.cache"]
    assert len(warnings) == 1, warnings
    assert re.search(rf"the shard cache's disk is full \({re.escape(str(disk))}, [\d.]+ k?B free of 49\.2 kB\): shards "
                     "not cached yet are read from S3 with ranged reads", warnings[0]), warnings[0]
    assert cache.full and cache.hits >= 1  # the shard that fitted is used
    cached = [p for p in disk.rglob("*") if p.is_file()]
    assert len(cached) == 1 and cached[0].stat().st_size == 32000  # one whole shard, nothing partial
    assert not partials(disk)


# --- aws sync downloads -------------------------------------------------------------------------------------

def test_a_sync_download_onto_a_full_disk_stops_naming_the_file_and_a_rerun_copies_the_rest(aws_env, small_disk,
                                                                                            tmp_path):
    from waveforms.aws.sync import sync

    client("s3").create_bucket(Bucket=BUCKET)
    rng = np.random.default_rng(0)
    blobs = {f"f{i}.bin": rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes() for i in range(4)}
    for name, data in blobs.items():
        storage.write_bytes(f"s3://{BUCKET}/sync/{name}", data)
    disk = small_disk(1024)
    filler = fill(disk, leave=250_000)  # two files fit, the third fills the disk
    dst = disk / "copy"
    with pytest.raises(DiskFullError) as stopped:
        sync(f"s3://{BUCKET}/sync", str(dst), progress=False)
    check_message(str(stopped.value), f"downloading s3://{BUCKET}/sync/f2.bin to", dst / "f2.bin")
    assert sorted(p.name for p in dst.iterdir()) == ["f0.bin", "f1.bin"]  # whole files only, nothing partial
    assert not partials(disk)
    filler.unlink()
    again = sync(f"s3://{BUCKET}/sync", str(dst), progress=False)
    assert sorted(again.copied) == ["f2.bin", "f3.bin"] and again.unchanged == 2
    assert {name: (dst / name).read_bytes() for name in blobs} == blobs


# --- checkpoints, previews and metrics in a local model_dir ----------------------------------------------------

STEPS = 40
FLAGS = ["--preset", "tiny", "--steps", str(STEPS), "--batch-size", "4", "--window", "64", "--seed", "5",
         *[a for kv in ("learning_rate=0.01", "log_every=1", "val_every=10", "checkpoint_every=10", "preview_every=10",
                        "preview_seconds=0.5", "ema_decay=0.0") for a in ("--set", kv)]]


def losses(model_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


def saved_step(model_dir: Path) -> int:
    from waveforms.model import checkpoint

    try:
        return (checkpoint.load_state(model_dir) or {}).get("step", 0)
    except Exception:
        return 0


@pytest.mark.slow
def test_training_on_a_disk_that_fills_stops_with_its_checkpoint_and_resumes(small_disk, tmp_path, capsys):
    from waveforms import cli
    from waveforms.model import checkpoint

    data = tone_dataset(tmp_path / "ds", n_tracks=3, seconds=2.0)
    assert cli.main(["train", "--data", str(data), "--model-dir", str(tmp_path / "clean"), *FLAGS]) == 0
    disk = small_disk(8192)
    model_dir = disk / "model"
    argv = ["train", "--data", str(data), "--model-dir", str(model_dir), *FLAGS]
    fillers: list[Path] = []

    def fill_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 240
        while saved_step(model_dir) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        fillers.append(fill(disk))

    filling = threading.Thread(target=fill_after_the_first_checkpoint, daemon=True)
    filling.start()
    capsys.readouterr()
    assert cli.main(argv) == 1
    filling.join()
    err = capsys.readouterr().err
    stopped = re.search(r"waveforms train: error: training stopped at step (\d+): no space left on the disk while "
                        r"(writing(?: the checkpoint| the TensorBoard log in)?) "
                        rf"{re.escape(str(model_dir))}/(\S+) \(.*\); free some space there "
                        r"and rerun; the same command resumes from the checkpoint at step (\d+) in ", err)
    assert stopped, err[-3000:]
    check_message(err, stopped.group(2), model_dir / stopped.group(3))
    assert "Traceback" not in err
    step, saved = int(stopped.group(1)), int(stopped.group(4))
    assert 10 <= saved <= step < STEPS
    assert not partials(model_dir) and not (model_dir / "model.keras").exists()
    checkpoint.load_state(model_dir)  # the checkpoint "latest" names is whole (sizes and hashes checked on load)
    fillers[0].unlink()
    assert cli.main(argv) == 0
    assert losses(model_dir) == losses(tmp_path / "clean")  # resumed: the numbers of a run that never stopped
    assert sorted(p.name for p in (model_dir / "previews").iterdir()) == \
        sorted(p.name for p in (tmp_path / "clean" / "previews").iterdir())
