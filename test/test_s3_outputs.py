"""Every stage writes straight to S3 (moto on 127.0.0.1): model folders, checkpoints, metrics, WAVs, sidecars.

Each S3 result is compared with the same run written to a local folder: training
and sampling are deterministic, so the two must agree exactly.
"""
from __future__ import annotations

import json
import subprocess
import sys
import wave

import numpy as np
import pytest

from helpers.aws import BUCKET, client, keys
from helpers.train import sigkill_when, tone, tone_dataset, train_argv
from waveforms import storage
from waveforms.cli import main
from waveforms.model import build, checkpoint, load
from waveforms.storage import OutputDir

pytestmark = pytest.mark.slow

CKPT_FILES = (checkpoint.WEIGHTS, checkpoint.OPTIMIZER, checkpoint.EMA, checkpoint.STATE)  # EMA: on by default


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tone_dataset(tmp_path_factory.mktemp("s3out") / "ds", n_tracks=3, seconds=2.0)


@pytest.fixture
def bucket(aws_env):
    client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


def names(prefix: str) -> set[str]:
    """Keys below ``prefix/`` in the test bucket, relative to it."""
    return {k[len(prefix) + 1:] for k in keys() if k.startswith(prefix + "/")}


def rows(uri_or_path) -> list[dict]:
    text = storage.read_text(str(uri_or_path))
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def assert_same_weights(a, b) -> None:
    wa, wb = a.keras_model.get_weights(), b.keras_model.get_weights()
    assert len(wa) == len(wb) > 0
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)


def test_train_writes_model_checkpoints_and_metrics_to_s3(bucket, data, tmp_path):
    uri = f"s3://{bucket}/run/model"
    flags = ("--steps", "12", "--seed", "3", "--set", "log_every=4", "--set", "checkpoint_every=8")
    assert main(train_argv(data, uri, *flags)) == 0
    assert main(train_argv(data, tmp_path / "local", *flags)) == 0

    found = names("run/model")
    ckpt = {f"checkpoints/ckpt-00000012/{f}" for f in CKPT_FILES}
    assert {"model.json", "model.keras", "metrics.jsonl", "config.json", "loss.png", "checkpoints/latest",
            "previews/step_000012.wav"} | ckpt <= found
    assert {n for n in found if n.startswith("checkpoints/")} == ckpt | {"checkpoints/latest"}  # step 8 pruned
    assert any(n.startswith("tensorboard/events.") for n in found)
    assert not [n for n in found if ".part" in n or ".tmp" in n]
    assert checkpoint.latest_name(uri) == "ckpt-00000012"
    assert checkpoint.load_state(uri)["step"] == 12

    remote, local = rows(f"{uri}/metrics.jsonl"), rows(tmp_path / "local" / "metrics.jsonl")
    assert [r["step"] for r in remote] == [4, 8, 12]
    assert [r["loss"] for r in remote] == [r["loss"] for r in local]

    model = load(uri)
    assert model.meta["training"]["steps"] == 12
    assert_same_weights(model, load(tmp_path / "local"))
    untrained = build("tiny", sample_rate=model.sample_rate).keras_model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(model.keras_model.get_weights(), untrained))


def test_model_save_and_load_round_trip_on_s3(bucket):
    w = build("tiny", sample_rate=8000)
    rng = np.random.default_rng(4)
    w.keras_model.set_weights([rng.normal(0, 0.1, x.shape).astype("float32") for x in w.keras_model.get_weights()])
    w.save(f"s3://{bucket}/m")
    assert names("m") == {"model.json", "model.keras"}
    back = load(f"s3://{bucket}/m")
    assert back.config == w.config and back.sample_rate == 8000
    assert_same_weights(back, w)
    from waveforms.runtime.errors import UserError

    with pytest.raises(UserError, match=f"no model at s3://{bucket}/nothing"):
        load(f"s3://{bucket}/nothing")


def test_generate_reads_model_and_prime_from_s3_and_writes_wav_and_sidecar_there(bucket, tmp_path):
    from waveforms.audio.clips import write_wav

    w = build("tiny", sample_rate=8000)
    rng = np.random.default_rng(5)
    w.keras_model.set_weights([rng.normal(0, 0.3, x.shape).astype("float32") for x in w.keras_model.get_weights()])
    w.save(f"s3://{bucket}/model")
    w.save(tmp_path / "model")
    write_wav(tmp_path / "prime.wav", tone(800, period=20), 8000)
    storage.upload_file(tmp_path / "prime.wav", f"s3://{bucket}/in/prime.wav")
    settings = ["--seconds", "0.25", "--seed", "2", "--streams", "2", "--save-every", "0.1"]

    assert main(["generate", "--model", f"s3://{bucket}/model", "--output", f"s3://{bucket}/out/x.wav",
                 "--prime", f"s3://{bucket}/in/prime.wav", *settings]) == 0
    assert main(["generate", "--model", str(tmp_path / "model"), "--output", str(tmp_path / "x.wav"),
                 "--prime", str(tmp_path / "prime.wav"), *settings]) == 0
    assert names("out") == {"x_0.wav", "x_0.wav.json", "x_1.wav", "x_1.wav.json"}
    for k in range(2):
        storage.download_file(f"s3://{bucket}/out/x_{k}.wav", tmp_path / f"s3_{k}.wav")
        with wave.open(str(tmp_path / f"s3_{k}.wav")) as got, wave.open(str(tmp_path / f"x_{k}.wav")) as want:
            assert got.getframerate() == 8000 and got.getsampwidth() == 2 and got.getnchannels() == 1
            assert got.getnframes() == 2000
            assert got.readframes(2000) == want.readframes(2000)  # the prime was read from S3, as locally
        meta = json.loads(storage.read_text(f"s3://{bucket}/out/x_{k}.wav.json"))
        assert meta["stream"] == k and meta["samples"] == 2000 and meta["sample_rate"] == 8000
        assert meta["model"] == f"s3://{bucket}/model"
        assert meta["settings"]["prime"] == f"s3://{bucket}/in/prime.wav"
    with wave.open(str(tmp_path / "s3_0.wav")) as a, wave.open(str(tmp_path / "s3_1.wav")) as b:
        assert a.readframes(2000) != b.readframes(2000)  # two streams, two different samples
    assert main(["generate", "--model", f"s3://{bucket}/missing", "--output", f"s3://{bucket}/out/y.wav"]) == 1
    assert main(["generate", "--model", f"s3://{bucket}/model", "--output", f"s3://{bucket}/out/y.wav",
                 "--prime", f"s3://{bucket}/in/missing.wav"]) == 1
    assert not [n for n in names("out") if n.startswith("y")]


STEPS = 120
RESUME_FLAGS = ("--steps", str(STEPS), "--window", "1500", "--seed", "5",
                "--set", "checkpoint_every=20", "--set", "log_every=10", "--set", "val_every=40")


def cli(*args):
    return [sys.executable, "-m", "waveforms", *args]


def polled_step(uri: str) -> int:
    """The uploaded checkpoint's step (0 if none)."""
    return (checkpoint.load_state(uri) or {}).get("step", 0)


def test_sigkill_then_rerun_resumes_from_the_last_uploaded_checkpoint(bucket, data, tmp_path):
    uri = f"s3://{bucket}/resume/model"
    whole = tmp_path / "whole"
    subprocess.run(cli(*train_argv(data, whole, *RESUME_FLAGS)), check=True, capture_output=True, timeout=300)
    argv = cli(*train_argv(data, uri, *RESUME_FLAGS))
    sigkill_when(argv, lambda: polled_step(uri) >= 40)

    found = names("resume/model")
    assert "model.json" not in found and "model.keras" not in found
    assert not [n for n in found if ".part" in n or ".tmp" in n]
    killed_at = checkpoint.load_state(uri)["step"]
    assert 40 <= killed_at < STEPS
    latest = checkpoint.latest_name(uri)
    assert {f"checkpoints/{latest}/{f}" for f in CKPT_FILES} <= found  # the pointer names whole objects
    with OutputDir(uri) as out:
        assert checkpoint.pull(out)["step"] == killed_at
        with np.load(out.path("checkpoints", latest, checkpoint.OPTIMIZER)) as npz:
            assert len(npz.files) > 0
    uploaded = [r["step"] for r in rows(f"{uri}/metrics.jsonl")]  # uploaded whole: every line complete
    assert uploaded == list(range(10, uploaded[-1] + 1, 10)) and uploaded[-1] >= killed_at

    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from step {killed_at}" in rerun.stderr
    resumed, reference = rows(f"{uri}/metrics.jsonl"), rows(whole / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in reference] == list(range(10, STEPS + 1, 10))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference]
    assert_same_weights(load(uri), load(whole))
    assert json.loads(storage.read_text(f"{uri}/model.json"))["training"]["steps"] == STEPS
    final = f"ckpt-{STEPS:08d}"
    assert {n for n in names("resume/model") if n.startswith("checkpoints/")} == {
        "checkpoints/latest", *(f"checkpoints/{final}/{f}" for f in CKPT_FILES)}
