"""Datasets and models that prove they are whole: shard and file sizes and SHA-256, checked on open,
by ``waveforms verify`` and by ``waveforms aws sync``; locally and on the moto S3 server."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.train import tone, tone_dataset, train_argv, write_dataset
from waveforms import storage
from waveforms.cli import main
from waveforms.dataset import Dataset, DatasetError, read_tracks
from waveforms.runtime.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


def three_tracks(root: Path, hashes: bool = True) -> Path:
    """Three tracks of different lengths in two shards: a, b in part-00000, c in part-00001."""
    tracks = [{"id": "a", "codes": tone(3000)}, {"id": "b", "codes": tone(5000, phase=3)},
              {"id": "c", "codes": tone(4000, phase=9)}]
    return write_dataset(root, tracks, sample_rate=8000, hashes=hashes)


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def corrupt(path: Path, at: int) -> None:
    """Flip one byte: same size, other bytes."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))


def verify_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "waveforms", "verify", *args], capture_output=True, text=True,
                          timeout=120, cwd=str(ROOT))


# --- local datasets ----------------------------------------------------------------------------------------

def test_a_truncated_shard_fails_on_open_naming_the_shard_and_a_track(tmp_path):
    data = three_tracks(tmp_path / "ds")
    truncate(data / "shards/part-00000.u8", 6000)  # a (0..3000) is whole, b (3000..8000) is cut
    with pytest.raises(DatasetError) as info:
        Dataset.open(str(data))
    msg = str(info.value)
    assert "shards/part-00000.u8 is 6000 bytes, the manifest records 8000" in msg
    assert "track b ends at byte 8000" in msg
    assert "part-00001" not in msg  # the whole shard is not blamed


def test_a_missing_shard_fails_on_open(tmp_path):
    data = three_tracks(tmp_path / "ds")
    (data / "shards/part-00001.u8").unlink()
    with pytest.raises(DatasetError, match=r"shards/part-00001.u8 is missing \(track c\)"):
        Dataset.open(str(data))


def test_a_longer_shard_than_recorded_is_not_whole_either(tmp_path):
    data = three_tracks(tmp_path / "ds")
    with open(data / "shards/part-00001.u8", "ab") as fh:
        fh.write(b"\0" * 10)
    with pytest.raises(DatasetError, match="part-00001.u8 is 4010 bytes, the manifest records 4000"):
        Dataset.open(str(data))


def test_a_short_read_names_the_track_and_shard_not_a_numpy_error(tmp_path):
    data = three_tracks(tmp_path / "ds")
    ds = Dataset.open(str(data))  # whole when opened; cut afterwards, as a sync in progress would
    truncate(data / "shards/part-00000.u8", 6000)
    b = next(t for t in ds.tracks if t["id"] == "b")
    np.testing.assert_array_equal(ds.read_window(b, 0, 3000), tone(5000, phase=3)[:3000])  # what is there
    with pytest.raises(DatasetError, match=r"track b in shard shards/part-00000.u8: read 500 of 2500 bytes "
                                           r"at byte 5500 .* cut short"):
        ds.read_window(b, 2500, 2500)
    (data / "shards/part-00000.u8").unlink()
    with pytest.raises(DatasetError, match=r"track b in shard shards/part-00000.u8: the shard is missing"):
        ds.read_window(b, 0, 10)


def test_the_manifest_records_size_and_sha256_of_the_shard_of_each_row(tmp_path):
    data = three_tracks(tmp_path / "ds")
    for row in rows(data):
        shard = (data / row["shard"]).read_bytes()
        assert row["shard_size"] == len(shard)
        assert row["shard_sha256"] == hashlib.sha256(shard).hexdigest()


def test_verify_catches_a_same_size_corruption_by_hash(tmp_path):
    data = three_tracks(tmp_path / "ds")
    whole = verify_cli(str(data))
    assert whole.returncode == 0, whole.stderr
    assert "2 checked by SHA-256" in whole.stdout and whole.stdout.strip().endswith("whole")
    corrupt(data / "shards/part-00001.u8", 1234)
    Dataset.open(str(data))  # the sizes still agree: opening cannot tell
    damaged = verify_cli("--data", str(data))
    assert damaged.returncode == 1
    assert "damaged: shards/part-00001.u8 is corrupt: its SHA-256 is not the manifest's (track c)" in damaged.stdout
    assert "part-00000" not in damaged.stdout.replace("part-00000.u8 ", "")  # only the corrupt one is named
    assert "Traceback" not in damaged.stderr
    sizes_only = verify_cli(str(data), "--set", "hashes=false")
    assert sizes_only.returncode == 0 and "0 checked by SHA-256" in sizes_only.stdout


def test_verify_lists_every_damaged_shard_and_exits_non_zero(tmp_path, capsys):
    data = three_tracks(tmp_path / "ds")
    truncate(data / "shards/part-00000.u8", 100)
    (data / "shards/part-00001.u8").unlink()
    assert main(["verify", str(data)]) == 1
    out = capsys.readouterr().out
    assert "damaged: shards/part-00000.u8 is 100 bytes, the manifest records 8000" in out
    assert "damaged: shards/part-00001.u8 is missing (track c)" in out
    assert "NOT WHOLE: 2 problem(s)" in out


def test_verify_of_nothing_is_a_clear_error(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "waveforms verify: error: nothing to verify at" in err and "manifest.jsonl" in err


def test_a_dataset_without_hashes_opens_with_a_note_and_is_checked_by_size(tmp_path, caplog):
    data = three_tracks(tmp_path / "old", hashes=False)
    assert all("shard_sha256" not in r for r in rows(data))
    with caplog.at_level(logging.WARNING, logger="waveforms.dataset.format"):
        ds = Dataset.open(str(data))
    assert len(ds.tracks) == 3
    assert "records no SHA-256 for 2 of its 2 shards" in caplog.text
    out = verify_cli(str(data))
    assert out.returncode == 0, out.stdout
    assert "2 of 2 shards have no recorded SHA-256" in out.stdout
    truncate(data / "shards/part-00000.u8", 7999)  # its tracks reach byte 8000
    with pytest.raises(DatasetError, match="part-00000.u8 is 7999 bytes, too short for track b, which ends at "
                                           "byte 8000"):
        Dataset.open(str(data))


def test_train_on_a_truncated_dataset_stops_before_any_step_without_a_traceback(tmp_path):
    data = tone_dataset(tmp_path / "ds", n_tracks=3, seconds=1.0)
    truncate(data / "shards/part-00000.u8", 8000 + 4000)  # t1 (8000..16000) is cut in half
    model = tmp_path / "model"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    run = subprocess.run([sys.executable, "-m", "waveforms", *train_argv(data, model, "--steps", "5")],
                         capture_output=True, text=True, timeout=300, env=env, cwd=str(ROOT))
    assert run.returncode == 1
    assert "waveforms train: error: dataset at" in run.stderr
    assert "shards/part-00000.u8 is 12000 bytes, the manifest records 16000" in run.stderr
    assert "track t1 ends at byte 16000" in run.stderr
    assert "Traceback" not in run.stderr and "broadcast" not in run.stderr
    assert not (model / "metrics.jsonl").exists() and not (model / "checkpoints").exists()


# --- the transform -----------------------------------------------------------------------------------------

def test_the_transform_records_shard_hashes_and_repairs_a_damaged_shard(spark, sine_mp3, tmp_path):
    from waveforms.config import TransformConfig
    from waveforms.transform import run

    raw = tmp_path / "raw"
    raw.mkdir()
    for i, freq in enumerate((300, 500, 700)):
        sine_mp3(raw / f"tone{i}.mp3", freq, 1.5)
    out = tmp_path / "ds"
    cfg = TransformConfig(input=str(raw), output=str(out), master="local[2]", sample_rate=8000, partitions=2)
    run(cfg)
    first = rows(out)
    shards = {r["shard"] for r in first}
    assert len(shards) == 2
    for r in first:
        body = (out / r["shard"]).read_bytes()
        assert (r["shard_size"], r["shard_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert main(["verify", str(out)]) == 0
    before = {tid: codes.copy() for tid, codes, _ in read_tracks(str(out))}

    damaged = first[0]["shard"]
    truncate(out / damaged, 10)
    with pytest.raises(DatasetError, match=damaged):
        Dataset.open(str(out))
    run(cfg)  # incremental: the tracks of the damaged shard are transformed again, the others kept
    second = {r["id"]: r for r in rows(out)}
    for r in first:
        if r["shard"] == damaged:
            assert second[r["id"]]["shard"] != damaged
        else:
            assert second[r["id"]]["shard"] == r["shard"]
    assert not (out / damaged).exists()
    after = {tid: codes for tid, codes, _ in read_tracks(str(out))}
    assert sorted(after) == sorted(before)
    for tid, codes in before.items():  # the transform is deterministic: the repaired tracks are the same codes
        np.testing.assert_array_equal(after[tid], codes)
    assert main(["verify", str(out)]) == 0


# --- S3 (moto) ---------------------------------------------------------------------------------------------

def upload(local: Path, uri: str) -> None:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.upload_file(path, storage.join(uri, path.relative_to(local).as_posix()))


def test_truncated_missing_and_corrupt_shards_on_s3(aws_env, tmp_path, capsys):
    from helpers.aws import BUCKET, client

    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    data = three_tracks(tmp_path / "ds")
    uri = f"s3://{BUCKET}/wf/ds"
    upload(data, uri)
    ds = Dataset.open(uri)
    assert main(["verify", uri]) == 0
    assert "2 checked by SHA-256" in capsys.readouterr().out

    key = "wf/ds/shards/part-00000.u8"
    body = (data / "shards/part-00000.u8").read_bytes()
    s3.put_object(Bucket=BUCKET, Key=key, Body=body[:6000])  # an interrupted copy
    with pytest.raises(DatasetError, match="part-00000.u8 is 6000 bytes, the manifest records 8000"):
        Dataset.open(uri)
    b = next(t for t in ds.tracks if t["id"] == "b")  # opened while whole: the ranged GET comes back short
    with pytest.raises(DatasetError, match="track b in shard shards/part-00000.u8: read 1000 of 2000 bytes"):
        ds.read_window(b, 2000, 2000)
    with pytest.raises(DatasetError, match="track b in shard shards/part-00000.u8: cannot read bytes"):
        ds.read_window(b, 4000, 500)  # starts past the end of the object: S3 refuses the range

    s3.delete_object(Bucket=BUCKET, Key=key)
    with pytest.raises(DatasetError, match=r"part-00000.u8 is missing \(track a and 1 more\)"):
        Dataset.open(uri)
    with pytest.raises(DatasetError, match="track a in shard shards/part-00000.u8: cannot read bytes .*NoSuchKey"):
        ds.read_window(ds.tracks[0], 0, 10)

    bad = bytearray(body)
    bad[77] ^= 1
    s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(bad))  # same size, other bytes
    Dataset.open(uri)
    assert main(["verify", uri]) == 1
    assert "damaged: shards/part-00000.u8 is corrupt" in capsys.readouterr().out


def test_sync_verifies_what_it_copied(aws_env, tmp_path):
    from helpers.aws import BUCKET, client
    from waveforms.aws.sync import SyncError, sync

    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    data = three_tracks(tmp_path / "ds")
    (data / "dataset.json").write_text(json.dumps({"format": "waveforms-dataset", "version": 1}))
    uri = f"s3://{BUCKET}/wf/ds"
    assert len(sync(str(data), uri, progress=False).copied) == 4
    copy = tmp_path / "copy"
    assert len(sync(uri, str(copy), progress=False).copied) == 4
    assert Dataset.open(str(copy)).tracks == Dataset.open(str(data)).tracks

    body = (data / "shards/part-00001.u8").read_bytes()
    s3.put_object(Bucket=BUCKET, Key="wf/ds/shards/part-00001.u8", Body=body[::-1])  # damaged at the source
    with pytest.raises(SyncError, match=r"the copy is not whole: shards/part-00001.u8 is corrupt: its SHA-256 is "
                                        r"not the manifest's \(track c\)"):
        sync(uri, str(copy), progress=False)

    corrupt(data / "shards/part-00000.u8", 5)  # a damaged local dataset is not uploaded silently
    with pytest.raises(SyncError, match=r"shards/part-00000.u8 is corrupt.*\(at the source, "):
        sync(str(data), uri, progress=False)


# --- models and checkpoints --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_once(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    data = tone_dataset(root / "ds", n_tracks=2)
    assert main(train_argv(data, root / "model", "--steps", "2", "--set", "checkpoint_every=1")) == 0
    return root


@pytest.fixture
def trained(trained_once, tmp_path) -> Path:
    """A copy of a tiny model trained for 2 steps (its checkpoint included), and its dataset beside it."""
    shutil.copytree(trained_once, tmp_path, dirs_exist_ok=True)
    return tmp_path / "model"


def test_model_json_records_model_keras_and_a_damaged_one_is_a_clear_error(trained, capsys):
    from waveforms.model import load

    meta = json.loads((trained / "model.json").read_text())
    body = (trained / "model.keras").read_bytes()
    assert meta["files"]["model.keras"] == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert main(["verify", str(trained)]) == 0
    assert capsys.readouterr().out.strip().endswith("whole")

    corrupt(trained / "model.keras", len(body) // 2)
    with pytest.raises(UserError, match=r"model.keras is damaged: its SHA-256 differs from the one model.json "
                                        r"holds"):
        load(trained)
    assert main(["generate", "--model", str(trained), "--seconds", "0.01", "--output",
                 str(trained / "g.wav")]) == 1
    assert "model.keras is damaged" in capsys.readouterr().err
    assert main(["verify", str(trained)]) == 1
    assert "damaged: model.keras: its SHA-256 differs" in capsys.readouterr().out

    truncate(trained / "model.keras", 1000)
    with pytest.raises(UserError, match=r"model.keras is damaged: 1000 bytes, model.json says"):
        load(trained)


def test_a_damaged_model_saved_before_hashes_is_still_a_clear_error(trained):
    from waveforms.model import load

    meta = json.loads((trained / "model.json").read_text())
    del meta["files"]
    (trained / "model.json").write_text(json.dumps(meta))
    truncate(trained / "model.keras", 1000)  # no record to compare: Keras itself finds it unreadable
    with pytest.raises(UserError, match=r"model.keras cannot be loaded as a Keras model"):
        load(trained)
    (trained / "model.json").write_text("{not json")
    with pytest.raises(UserError, match=r"model.json is damaged: not JSON"):
        load(trained)


def test_a_damaged_checkpoint_is_a_clear_error_on_resume(trained, capsys):
    from waveforms.model import checkpoint

    name = checkpoint.latest_name(trained)
    ckpt = trained / "checkpoints" / name
    state = json.loads((ckpt / "state.json").read_text())
    for f in ("weights.weights.h5", "optimizer.npz"):
        body = (ckpt / f).read_bytes()
        assert state["files"][f] == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    corrupt(ckpt / "weights.weights.h5", (ckpt / "weights.weights.h5").stat().st_size - 100)
    data = trained.parent / "ds"
    assert main(train_argv(data, trained, "--steps", "4")) == 1
    err = capsys.readouterr().err
    assert f"checkpoint file {ckpt / 'weights.weights.h5'} is damaged: its SHA-256 differs" in err
    assert "rerun with --fresh" in err
    assert main(["verify", str(trained)]) == 1
    assert f"damaged: checkpoints/{name}/weights.weights.h5" in capsys.readouterr().out
