"""S3 outages have a bound in time (``s3_outage_s``): an outage shorter than it is ridden out, announced in one
line and its end in another; a longer one stops the stage with a clear error, leaving training a checkpoint to
resume from and transform nothing under a final name; the rerun continues.

The bound is tested in seconds: the retry loop's clock and sleep are injected where no network is involved,
and the runs through a real outage (a gate in front of moto that refuses connections) set a bound of a few
seconds and a short backoff, the behaviour the default 600 s bound has over minutes."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from helpers.aws import BUCKET, client
from helpers.outage_gate import OutageGate
from helpers.train import tone_dataset
from waveforms import storage
from waveforms.config import TrainConfig
from waveforms.storage import s3retry

START = re.compile(r"S3 unreachable since (\d\d:\d\d:\d\d), retrying until (\d\d:\d\d:\d\d)")
END = re.compile(r"S3 answers again, after (\d+ min )?\d+ s unreachable")


class FakeTime:
    """A monotonic clock that only the injected sleep moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing_until(fake: FakeTime, until: float, result: str = "body"):
    """An operation that fails with a refused connection until ``fake`` reaches ``until``; counts its calls."""
    calls = []

    def operation() -> str:
        calls.append(fake.now)
        if fake.now < until:
            raise ConnectionRefusedError(111, "Connection refused")
        return result

    return operation, calls


def seconds_between(a: str, b: str) -> int:
    h1, m1, s1 = map(int, a.split(":"))
    h2, m2, s2 = map(int, b.split(":"))
    return ((h2 - h1) * 3600 + (m2 - m1) * 60 + (s2 - s1)) % 86400


def outage_lines(caplog) -> tuple[list[str], list[str]]:
    messages = [r.getMessage() for r in caplog.records if r.name == "waveforms.storage.s3retry"]
    return [m for m in messages if START.search(m)], [m for m in messages if END.search(m)]


def test_an_outage_longer_than_the_bound_stops_the_call_after_the_bound(caplog):
    fake = FakeTime()
    operation, calls = failing_until(fake, float("inf"))
    with caplog.at_level(logging.WARNING, "waveforms.storage.s3retry"), s3retry.bounded(600):
        with pytest.raises(s3retry.StorageError) as stopped:
            s3retry.call("GET s3://b/k", operation, sleep=fake.sleep, clock=fake.clock)
    elapsed = calls[-1] - calls[0]
    assert 600 <= elapsed <= 600 + 1e-6  # retried to the bound, not past it (the last wait is cut to fit)
    assert len(calls) > s3retry.ATTEMPTS  # not the 6 attempts of old: about 600 / 8 s waits
    assert max(fake.slept) <= s3retry.BACKOFF_CAP_S
    message = str(stopped.value)
    assert message.startswith(f"GET s3://b/k: {len(calls)} attempts failed with network faults; the last: "
                              "ConnectionRefusedError")
    assert "S3 was unreachable for 10 min 0 s, longer than s3_outage_s = 600 s allows" in message
    starts, ends = outage_lines(caplog)
    assert len(starts) == 1 and not ends  # one line for the whole outage, not one per attempt
    since, until = START.search(starts[0]).groups()
    assert seconds_between(since, until) == 600


def test_an_outage_shorter_than_the_bound_is_ridden_out_and_its_end_logged_once(caplog):
    fake = FakeTime()
    operation, calls = failing_until(fake, fake.now + 125)
    with caplog.at_level(logging.WARNING, "waveforms.storage.s3retry"), s3retry.bounded(600):
        assert s3retry.call("GET s3://b/k", operation, sleep=fake.sleep, clock=fake.clock) == "body"
        # another operation of the same process during the same outage does not announce it again
        other, _ = failing_until(fake, fake.now + 10)
        s3retry.call("GET s3://b/other", other, sleep=fake.sleep, clock=fake.clock)
    starts, ends = outage_lines(caplog)
    assert len(starts) == 2 and len(ends) == 2  # two outages, each announced once and ended once
    assert "after 2 min" in ends[0]
    assert calls[-1] - calls[0] >= 125


def test_a_single_fault_is_no_outage_and_a_zero_bound_keeps_the_attempts(caplog):
    fake = FakeTime()
    operation, calls = failing_until(fake, fake.now + 0.001)
    with caplog.at_level(logging.WARNING, "waveforms.storage.s3retry"), s3retry.bounded(600):
        assert s3retry.call("GET s3://b/k", operation, sleep=fake.sleep, clock=fake.clock) == "body"
    assert len(calls) == 2 and outage_lines(caplog) == ([], [])
    forever, calls = failing_until(fake, float("inf"))
    with s3retry.bounded(0), pytest.raises(s3retry.StorageError, match=r"^GET s3://b/k: 6 attempts failed") as err:
        s3retry.call("GET s3://b/k", forever, sleep=fake.sleep, clock=fake.clock)
    assert len(calls) == s3retry.ATTEMPTS and "unreachable for" not in str(err.value)
    assert s3retry.outage_bound() == s3retry.OUTAGE_S == 600  # bounded() restores the default


@pytest.fixture
def bucket(aws_env):
    client("s3").create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}"


@pytest.fixture
def quick_backoff(monkeypatch):
    """Retries every 0.05-0.2 s, so that runs notice the end of an outage of a second or two at once."""
    monkeypatch.setattr(s3retry, "BACKOFF_S", 0.05)
    monkeypatch.setattr(s3retry, "BACKOFF_CAP_S", 0.2)


def down_for(gate: OutageGate, seconds: float, when=lambda: True) -> threading.Thread:
    """A thread that takes ``gate`` down once ``when()`` holds, for ``seconds`` (None: for good)."""
    def run() -> None:
        deadline = time.monotonic() + 120
        while not when() and time.monotonic() < deadline:
            time.sleep(0.02)
        gate.down()
        if seconds is not None:
            time.sleep(seconds)
            gate.up()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_reads_through_a_real_outage_continue_within_the_bound_and_stop_past_it(bucket, moto_url, monkeypatch,
                                                                               quick_backoff, caplog):
    data = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    storage.write_bytes(f"{bucket}/o/x.bin", data)
    with OutageGate(moto_url) as gate, caplog.at_level(logging.WARNING, "waveforms.storage.s3retry"):
        monkeypatch.setenv("AWS_ENDPOINT_URL", gate.url)
        s3 = storage.s3_client()
        assert storage.read_range(f"{bucket}/o/x.bin", 10, 100, s3) == data[10:110]  # a kept-alive connection
        with s3retry.bounded(30):
            down_for(gate, 1.5).join(0.01)
            t0 = time.monotonic()
            assert storage.read_bytes(f"{bucket}/o/x.bin", s3) == data
            assert time.monotonic() - t0 >= 1.0  # it did wait for the gate
        starts, ends = outage_lines(caplog)
        assert len(starts) == 1 and len(ends) == 1
        gate.down()
        with s3retry.bounded(1.0), pytest.raises(s3retry.StorageError, match=r"GET s3://.*/o/x.bin: \d+ attempts "
                                                                                r"failed .*longer than s3_outage_s = 1 s"):
            storage.read_bytes(f"{bucket}/o/x.bin", s3)


# --- training through an outage -------------------------------------------------------------------------------

STEPS = 40
SETTINGS = dict(preset="tiny", steps=STEPS, batch_size=4, window=64, learning_rate=0.01, seed=5, log_every=1,
                val_every=20, checkpoint_every=20, preview_every=-1, reads_in_flight=4, ema_decay=0.0)


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    return tone_dataset(tmp_path_factory.mktemp("outage") / "ds", n_tracks=3, seconds=2.0)


def upload(local, uri: str) -> None:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.upload_file(path, f"{uri}/{path.relative_to(local).as_posix()}")


def losses(model_dir) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


def has_step(model_dir, step: int):
    def check() -> bool:
        try:
            return any(json.loads(line)["step"] >= step for line in (model_dir / "metrics.jsonl").read_text().splitlines())
        except (OSError, ValueError):
            return False
    return check


@pytest.mark.slow
def test_training_rides_out_a_short_outage_and_stops_resumably_after_a_long_one(bucket, moto_url, monkeypatch, tones,
                                                                                 tmp_path, quick_backoff, caplog, capsys):
    from waveforms import cli
    from waveforms.train import run

    upload(tones, f"{bucket}/ds")
    run(TrainConfig(data=f"{bucket}/ds", model_dir=str(tmp_path / "clean"), **SETTINGS))
    clean = losses(tmp_path / "clean")
    assert [s for s, _ in clean] == list(range(1, STEPS + 1))
    with OutageGate(moto_url) as gate:
        monkeypatch.setenv("AWS_ENDPOINT_URL", gate.url)
        # 2 s without S3 from step 5 on, with 30 s allowed: the run waits and goes on, computing the same losses
        short = tmp_path / "short"
        down_for(gate, 2.0, has_step(short, 5))
        with caplog.at_level(logging.WARNING, "waveforms.storage.s3retry"):
            run(TrainConfig(data=f"{bucket}/ds", model_dir=str(short), s3_outage_s=30, **SETTINGS))
        starts, ends = outage_lines(caplog)
        assert len(starts) == 1 and len(ends) == 1, (starts, ends)
        assert losses(short) == clean
        # S3 gone for good from step 5 on, 2 s allowed: the CLI stops with one clear line and a checkpoint
        long = tmp_path / "long"
        argv = ["train", "--data", f"{bucket}/ds", "--model-dir", str(long), "--set", "s3_outage_s=2",
                *[a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]]
        down_for(gate, None, has_step(long, 5))
        capsys.readouterr()
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        stopped = re.search(r"waveforms train: error: training stopped at step (\d+): (GET|LIST|HEAD) .*longer than "
                            r"s3_outage_s = 2 s allows.*; the same command resumes from the checkpoint at step (\d+) "
                            rf"in {long}", err)
        assert stopped, err[-3000:]
        assert "Traceback" not in err
        step, saved = int(stopped.group(1)), int(stopped.group(3))
        assert 5 <= step == saved < STEPS  # the checkpoint of the very step it stopped at
        assert not (long / "model.keras").exists()
        gate.up()
        assert cli.main(argv) == 0
    assert losses(long) == clean  # resumed where it stopped: the same losses as a run that never stopped


# --- transform through an outage -------------------------------------------------------------------------

@pytest.mark.slow
def test_transform_stops_past_the_bound_with_nothing_committed_and_a_rerun_completes(aws_env, sine_mp3, moto_url,
                                                                                      tmp_path):
    s3 = client("s3")
    s3.create_bucket(Bucket="music")
    for name, hz in (("one tone.mp3", 300), ("three.mp3", 700)):
        sine_mp3(tmp_path / name, hz, 2.0, 44100, 2)
        s3.upload_file(str(tmp_path / name), "music", f"raw/{name}")
    out = tmp_path / "ds"
    argv = [sys.executable, "-m", "waveforms", "transform", "--input", "s3://music/raw", "--output", str(out),
            "--master", "local[2]", "--sample-rate", "8000", "--set", "s3_outage_s=2"]
    # the driver looks for a manifest and lists the inputs; S3 is unreachable for the rest: the executors' downloads
    with OutageGate(moto_url, refuse=lambda head: not head.startswith((b"HEAD ", b"GET /music?list-type=2"))) as gate:
        env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
               "AWS_ENDPOINT_URL": gate.url}
        first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        refused = gate.refused
        assert first.returncode == 1, first.stderr[-3000:]
        assert refused >= 2
        assert re.search(r"waveforms transform: error: GET s3://music/raw/.*\.mp3.*attempts failed with network faults"
                         r".*longer than s3_outage_s = 2 s allows.*nothing was committed to", first.stderr), \
            first.stderr[-3000:]
        assert "Traceback" not in first.stderr
        assert not (out / "manifest.jsonl").exists()
        assert not [p for p in (out / "shards").rglob("*") if p.is_file()] if (out / "shards").exists() else True
        gate.refuse = None  # S3 is back
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["one_tone", "three"]
    assert not (out / "errors.jsonl").read_text().strip()  # no track was set aside as unreadable
