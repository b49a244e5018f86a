"""A local disk that fills up mid-stage (a small tmpfs, mounted for the test): every writer stops with a
:class:`~waveforms.runtime.errors.DiskFullError` naming the path and the free space, leaves no partial file under a
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
from waveforms.runtime.errors import DiskFullError

FULL = r"no space left on the disk while {what} {path}[^ ]* \(([\d.]+ k?B) free of ([\d.]+ [kM]B)(?:; it needs about [\d.]+ k?B)?\); free some space there and rerun"


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
    assert total in ("65.5 kB", "1.0 MB", "8.4 MB"), total  # the small disk's size


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


# --- transform: its temporary files and its output ---------------------------------------------------------

def test_a_transform_task_whose_scratch_disk_fills_stops_and_leaves_no_shard(small_disk, sine_mp3, tmp_path,
                                                                              monkeypatch):
    """One partition, as an executor runs it: the decode's spool fills the scratch disk."""
    import tempfile

    from waveforms.audio import AudioSettings
    from waveforms.config import TransformConfig
    from waveforms.transform.job import process_partition

    mp3 = sine_mp3(tmp_path / "a.mp3", 440.0, 3.0, 44100, 2)
    records = [{"id": "a", "uri": str(mp3), "size": mp3.stat().st_size}]
    scratch = small_disk(64)  # the spool of 3 s at 16 kHz takes 96 kB
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "ds"
    settings = AudioSettings.from_config(TransformConfig())
    rows = list(process_partition(records, settings, str(out), "run1", 0, 0))
    assert [r["kind"] for r in rows] == ["stop"] and rows[0]["error"] == "DiskFullError"
    check_message(rows[0]["message"], "writing the shard", scratch)  # the full one of the two disks it wrote to
    assert not [p for p in out.rglob("*") if p.is_file()]  # the partial shard is gone
    assert not [p for p in scratch.rglob("*")]  # and the scratch folder
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # space again
    rows = list(process_partition(records, settings, str(out), "run2", 0, 0))
    assert [r["kind"] for r in rows] == ["track", "stats"]
    assert (out / rows[0]["shard"]).stat().st_size == rows[0]["num_samples"]
    assert abs(rows[0]["num_samples"] - 3 * 16000) < 160  # 3 s at 16 kHz, give or take the decoder's edges


@pytest.mark.slow
def test_a_transform_whose_output_disk_fills_commits_nothing_and_a_rerun_completes(small_disk, sine_mp3, spark,
                                                                                    tmp_path):
    from waveforms.config import TransformConfig
    from waveforms.transform import run

    raw = tmp_path / "raw"
    raw.mkdir()
    for i, hz in enumerate((300, 500, 700, 900)):
        sine_mp3(raw / f"t{i}.mp3", hz, 2.0, 22050, 1)
    disk = small_disk(1024)
    filler = fill(disk, leave=40_000)  # two 16 kB shards fit, not four
    out = disk / "ds"
    cfg = TransformConfig(input=str(raw), output=str(out), master="local[2]", sample_rate=8000, partitions=4)
    with pytest.raises(DiskFullError) as stopped:
        run(cfg)
    check_message(str(stopped.value), "writing the shard", out / "shards")
    assert str(stopped.value).endswith(f"nothing was committed to {out}")
    assert not (out / "manifest.jsonl").exists()
    assert not [p for p in (out / "shards").iterdir()]  # this run's shards are gone, whole or not
    assert not partials(disk)
    filler.unlink()
    assert run(cfg) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["t0", "t1", "t2", "t3"]
    assert sum((out / s).stat().st_size for s in {r["shard"] for r in rows}) == sum(r["num_samples"] for r in rows)


# --- the index's parts ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_index_whose_disk_fills_while_writing_its_parts_commits_nothing_and_a_rerun_builds_it(small_disk, spark,
                                                                                                  tmp_path):
    from waveforms.config import load
    from waveforms.evaluate.index import run
    from waveforms.evaluate.index_format import MANIFEST

    data = tone_dataset(tmp_path / "ds", n_tracks=5, seconds=4.0)
    disk = small_disk(1024)
    out = disk / "index"
    cfg = load("index", flags={"data": str(data), "output": str(out), "master": "local[2]"},
               sets=["window_s=0.25", "hop_s=0.05", "dims=4", "sample_windows=100", "calibration_windows=10",
                     "copy_tracks=1"])
    out.mkdir()
    filler = fill(disk, leave=4096)  # one page: the first part fits, the next does not
    with pytest.raises(DiskFullError) as stopped:
        run(cfg)
    check_message(str(stopped.value), "writing", out)
    assert not (out / MANIFEST).exists() and not partials(disk)
    filler.unlink()
    assert run(cfg) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["vectors"] > 0 and len(manifest["tracks"]) == 4  # the training tracks (the last is val)


@pytest.mark.slow
def test_a_checkpoint_or_model_that_does_not_fit_is_a_clear_error_and_the_last_whole_one_stays(small_disk):
    """h5py (the weights) and Keras's zip (model.keras) meet the full disk too."""
    from waveforms.config import TrainConfig
    from waveforms.model import build, checkpoint, load
    from waveforms.storage import OutputDir
    from waveforms.train.common import compile_model

    wavenet = build("tiny")
    model = compile_model(wavenet.training_model(), TrainConfig(preset="tiny"))
    disk = small_disk(1024)
    out = OutputDir(disk / "model")
    checkpoint.save(out, model, {"step": 1})
    filler = fill(disk, leave=4096)
    with pytest.raises(DiskFullError) as stopped:
        checkpoint.save(out, model, {"step": 2})
    check_message(str(stopped.value), "writing the checkpoint", disk / "model" / "checkpoints" / "ckpt-00000002")
    assert checkpoint.latest_name(out.local) == "ckpt-00000001" and not partials(disk)
    assert checkpoint.load_state(out.local)["step"] == 1  # whole: its files' sizes and hashes check
    with pytest.raises(DiskFullError) as stopped:
        wavenet.save(out)
    check_message(str(stopped.value), "writing", disk / "model" / "model.keras")
    assert not (disk / "model" / "model.keras").exists() and not partials(disk)
    filler.unlink()
    assert checkpoint.save(out, model, {"step": 2}) == "ckpt-00000002"
    wavenet.save(out)
    assert load(disk / "model").config == wavenet.config
