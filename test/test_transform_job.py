"""The Spark transform: local mode, incremental runs, bad files, S3 on moto, a standalone cluster."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.delay_proxy import CUT_SEED, DelayProxy, Faults
from helpers.waiting import wait_for
from waveforms.config import TransformConfig
from waveforms.transform import Dataset, read_tracks, run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def music(sine_mp3, tmp_path_factory):
    d = tmp_path_factory.mktemp("music")
    sine_mp3(d / "one tone.mp3", 300, 2.0, 44100, 2)
    sine_mp3(d / "größe.mp3", 500, 1.5, 22050, 1)
    sine_mp3(d / "three.mp3", 700, 2.5, 48000, 2)
    (d / "corrupt.mp3").write_bytes(np.random.default_rng(1).bytes(30000))
    (d / "empty.mp3").write_bytes(b"")
    data = (d / "three.mp3").read_bytes()
    (d / "truncated.mp3").write_bytes(data[: len(data) // 40])  # a few frames: decodes, too short
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "anullsrc=r=44100:cl=mono:d=2", str(d / "silent.mp3")], check=True)
    return d


def cfg(inp, out, **kw):
    return TransformConfig(input=str(inp), output=str(out), master="local[2]", sample_rate=8000, **kw)


def tracks_of(path):
    return {tid: (samples.copy(), meta) for tid, samples, meta in read_tracks(str(path))}


def test_folder_to_dataset_with_bad_files_set_aside(spark, music, tmp_path):
    out = tmp_path / "ds"
    assert run(cfg(music, out, val_fraction=0.5)) == 0
    got = tracks_of(out)
    assert sorted(got) == ["größe", "one_tone", "three"]
    for tid, secs in [("one_tone", 2.0), ("größe", 1.5), ("three", 2.5)]:
        samples, meta = got[tid]
        assert abs(len(samples) - secs * 8000) <= 0.01 * secs * 8000
        assert meta["num_samples"] == len(samples) and meta["sample_rate"] == 8000
        assert meta["split"] in ("train", "val")
    errors = {e["id"]: e for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert set(errors) == {"corrupt", "empty", "truncated", "silent"}
    assert errors["silent"]["reason"] == "silent" and errors["truncated"]["reason"] == "too-short"
    assert errors["corrupt"]["reason"] == "decode-failed" and errors["corrupt"]["detail"]
    # one byte per sample: the shards hold exactly the samples
    shard_bytes = sum(p.stat().st_size for p in (out / "shards").iterdir())
    assert shard_bytes == sum(len(s) for s, _ in got.values())
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["tracks"] == 3 and summary["errors"] == 4
    assert len(summary["dataset_id"]) >= 8 and {m["dataset_id"] for _, m in got.values()} == {summary["dataset_id"]}
    assert sum(m["split"] == "val" for _, m in got.values()) == summary["val_tracks"]
    assert json.loads((out / "config.json").read_text())["config"]["sample_rate"] == 8000
    # windows are ranged reads
    ds = Dataset.open(str(out))
    t = next(x for x in ds.tracks if x["id"] == "three")
    np.testing.assert_array_equal(ds.read_window(t, 100, 50), got["three"][0][100:150])


def test_incremental_equals_fresh(spark, music, tmp_path):
    part = tmp_path / "part"
    part.mkdir()
    for name in ("one tone.mp3", "größe.mp3"):
        shutil.copy(music / name, part / name)
    inc = tmp_path / "inc"
    run(cfg(part, inc))
    first = json.loads((inc / "manifest.jsonl").read_text().splitlines()[0])
    shutil.copy(music / "three.mp3", part / "three.mp3")
    run(cfg(part, inc))
    fresh = tmp_path / "fresh"
    run(cfg(part, fresh))
    a, b = tracks_of(inc), tracks_of(fresh)
    assert sorted(a) == sorted(b) == ["größe", "one_tone", "three"]
    ignore = {"shard", "offset"}
    for tid in a:
        np.testing.assert_array_equal(a[tid][0], b[tid][0])
        assert {k: v for k, v in a[tid][1].items() if k not in ignore} == {
            k: v for k, v in b[tid][1].items() if k not in ignore}
    # the old track was not processed again: it still lives in the first run's shard
    again = {m["id"]: m for m in map(json.loads, (inc / "manifest.jsonl").read_text().splitlines())}
    assert again[first["id"]]["shard"] == first["shard"]
    assert len(list((inc / "shards").iterdir())) == len({m["shard"] for m in again.values()})


def test_nothing_usable_is_a_clear_error_and_writes_no_manifest(spark, music, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(music / "corrupt.mp3", bad / "x.mp3")
    from waveforms.runtime.errors import UserError

    with pytest.raises(UserError, match="no track could be transformed"):
        run(cfg(bad, tmp_path / "out"))
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
    assert (tmp_path / "out" / "errors.jsonl").exists()


@pytest.mark.slow
def test_killed_run_leaves_the_previous_dataset_readable(spark, sine_mp3, music, tmp_path):
    out = tmp_path / "ds"
    run(cfg(music, out))
    before = tracks_of(out)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(12):
        sine_mp3(many / f"long{i}.mp3", 200 + 50 * i, 20.0, 44100, 2)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.Popen([sys.executable, "-m", "waveforms", "transform", "--input", str(many), "--output",
                             str(out), "--master", "local[1]", "--sample-rate", "8000"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    old_shards = {m["shard"] for _, m in before.values()}
    wait_for(lambda: not all(f"shards/{p.name}" in old_shards for p in (out / "shards").iterdir()), 120,
             "the new run's first task to open its shard", every=0.1, alive=lambda: proc.poll() is None)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    after = tracks_of(out)  # still a valid, complete dataset: the old one
    assert sorted(after) == sorted(before)
    for tid in before:
        np.testing.assert_array_equal(after[tid][0], before[tid][0])


@pytest.fixture
def moto_s3(aws_env):
    """An S3 client of the session's moto server, with an empty bucket "music"."""
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="music")
    return s3


@pytest.mark.slow
@pytest.mark.parametrize("faults", [None, Faults(body_every=7, headers_every=11, slowdown_every=5, cut_continue=True),
                                    Faults(cut_chunks=3, seed=CUT_SEED, cut_continue=True)],
                         ids=["clean", "faulty-s3", "random-cuts"])
def test_s3_in_s3_out_equals_local(spark, music, tmp_path, moto_s3, moto_url, faults):
    """Also through an S3 that cuts responses (at fixed places, or 1 chunk in 3 at a seeded random byte),
    answers SlowDown and drops 100-continue connections: the same dataset, and no hang (a PUT's 100-continue exchange once made botocore spin on EOF forever)."""
    for name in ("one tone.mp3", "three.mp3", "corrupt.mp3"):
        moto_s3.upload_file(str(music / name), "music", f"raw/{name}")
    with DelayProxy(moto_url, 0.0, faults=faults or Faults()) as proxy:
        # a fresh process, as a user would start it: Spark's executors inherit the S3 settings from the environment
        env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
               "AWS_ENDPOINT_URL": proxy.url}
        out = subprocess.run([sys.executable, "-m", "waveforms", "transform", "--input", "s3://music/raw", "--output",
                              "s3://music/ds", "--master", "local[2]", "--sample-rate", "8000"], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        injected = proxy.stats()["faults"]
    assert "expect_continue_seen" not in injected  # no PUT asks for 100-continue
    if faults:
        assert sum(injected.values()) >= 3, injected
    verify = subprocess.run([sys.executable, "-m", "waveforms", "verify", "s3://music/ds"], env={**os.environ},
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    keys = {o["Key"] for o in moto_s3.list_objects_v2(Bucket="music", Prefix="ds/")["Contents"]}
    assert {"ds/manifest.jsonl", "ds/errors.jsonl", "ds/dataset.json"} <= keys
    remote = tracks_of("s3://music/ds")
    local_in = tmp_path / "in"
    local_in.mkdir()
    for name in ("one tone.mp3", "three.mp3", "corrupt.mp3"):
        shutil.copy(music / name, local_in / name)
    run(cfg(local_in, tmp_path / "ds"))
    local = tracks_of(tmp_path / "ds")
    assert sorted(remote) == sorted(local) == ["one_tone", "three"]
    for tid in local:
        np.testing.assert_array_equal(remote[tid][0], local[tid][0])


@pytest.mark.slow
def test_standalone_cluster_is_byte_identical_to_local(spark, music, standalone, tmp_path):
    run(cfg(music, tmp_path / "local"))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    out = subprocess.run([sys.executable, "-m", "waveforms", "transform", "--input", str(music), "--output",
                          str(tmp_path / "cluster"), "--master", standalone(), "--sample-rate", "8000",
                          "--set", "partitions=3"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = tracks_of(tmp_path / "local"), tracks_of(tmp_path / "cluster")
    assert sorted(a) == sorted(b) == ["größe", "one_tone", "three"]
    for tid in a:
        assert a[tid][0].tobytes() == b[tid][0].tobytes()


def _children(pid):
    """Children of every thread of ``pid`` (the JVM starts Python from other threads than its main one)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _descendants(pid):
    out, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def _cmd(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_a_killed_task_is_retried_without_duplicating_tracks(sine_mp3, tmp_path):
    """SIGKILL the Python worker of a running task: Spark retries it; each track appears once."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        sine_mp3(src / f"long{i}.mp3", 200 + 100 * i, 240.0, 44100, 1)
    out = tmp_path / "ds"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.Popen([sys.executable, "-m", "waveforms", "transform", "--input", str(src), "--output",
                             str(out), "--master", "local[2,4]", "--sample-rate", "8000", "--set", "partitions=4"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    def kill_a_running_task() -> int | None:
        for pid in _descendants(proc.pid):
            # a task worker: forked by the pyspark daemon, and running ffmpeg right now
            if "pyspark.daemon" in _cmd(pid) and any("ffmpeg" in _cmd(c) for c in _children(pid)):
                os.kill(pid, signal.SIGKILL)
                return pid
        return None

    wait_for(kill_a_running_task, 180, "a running task", every=0.02, alive=lambda: proc.poll() is None)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [f"long{i}" for i in range(4)]
    assert any(not r["shard"].endswith("-0.u8") for r in rows)  # a retried attempt wrote its own shard
    for r in rows:
        assert abs(r["num_samples"] - 240 * 8000) < 0.01 * 240 * 8000
    on_disk = {f"shards/{p.name}" for p in (out / "shards").iterdir()}
    assert on_disk == {r["shard"] for r in rows}  # the killed attempt's partial shard is gone
