"""What an EMR step executes, run here: spark-submit of the uploaded step.py against moto S3.

The launch goes to the moto server; the test then takes the transform step's
arguments exactly as EMR stores them, swaps only what differs on this machine
(YARN -> local[2], the cluster's venv -> this interpreter, the s3:// step.py ->
its downloaded copy, since this Spark has no S3 filesystem) and runs them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from helpers.aws import BUCKET, TrippingProxy, client, keys, write_config
from helpers.waiting import wait_for

from waveforms import storage
from waveforms.aws import cli, plan, step

TONES = {"tone-a": (440, 2.0), "tone-b": (660, 1.5)}  # id: (Hz, seconds)
RATE = 8000


def make_mp3(path: Path, freq: int, seconds: float) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency={freq}:duration={seconds}:sample_rate=44100",
         "-ac", "2", "-b:a", "128k", str(path)],
        check=True, timeout=60,
    )


def local_args(args: list[str], step_file: Path) -> list[str]:
    """The EMR step's args with only the machine-specific parts swapped."""
    swap = {
        "yarn": "local[2]",
        f"spark.pyspark.python={plan.VENV_PYTHON}": f"spark.pyspark.python={sys.executable}",
        f"spark.pyspark.driver.python={plan.VENV_PYTHON}": f"spark.pyspark.driver.python={sys.executable}",
    }
    out = [swap.get(a, a) for a in args]
    out[out.index(next(a for a in out if a.endswith("/code/step.py")))] = str(step_file)
    spark_submit = Path(sys.executable).parent / "spark-submit"
    assert out[0] == "spark-submit"
    return [str(spark_submit), *out[1:]]


def test_transform_step_runs_end_to_end_on_s3(aws_env, tmp_path, capsys):
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for track, (freq, seconds) in TONES.items():
        mp3 = tmp_path / f"{track}.mp3"
        make_mp3(mp3, freq, seconds)
        storage.upload_file(mp3, f"s3://{BUCKET}/wf/raw/{track}.mp3")
    cfg = write_config(
        tmp_path / "emr.toml",
        f"\n[transform]\nsample_rate = {RATE}\nmin_seconds = 0.5\nval_fraction = 0.0\n",
        stages='["transform"]',
    )
    proc = run_only_step(cfg, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    from waveforms.transform import read_tracks

    tracks = {meta.get("id", tid): (samples, meta) for tid, samples, meta in read_tracks(f"s3://{BUCKET}/wf/dataset")}
    assert sorted(tracks) == sorted(TONES)
    for track, (freq, seconds) in TONES.items():
        samples, meta = tracks[track]
        assert meta["sample_rate"] == RATE
        assert abs(len(samples) - seconds * RATE) < 0.05 * seconds * RATE
        assert samples.dtype.name == "uint8"


def run_only_step(cfg: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Launch ``cfg`` on moto, then run its single step's args here with spark-submit."""
    assert cli.main(["launch", "--config", str(cfg)]) == 0
    emr = client("emr")
    cluster_id = emr.list_clusters()["Clusters"][0]["Id"]
    (emr_step,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    args = emr_step["Config"]["Args"]
    step_file = tmp_path / "step.py"
    storage.download_file(next(a for a in args if a.endswith("/code/step.py")), step_file)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    return subprocess.run(local_args(args, step_file), env=env, capture_output=True, text=True, timeout=400)


def test_generate_step_reads_the_model_from_s3_and_writes_the_wav_there(aws_env, tmp_path):
    from waveforms.aws.sync import sync
    from waveforms.model import build

    client("s3").create_bucket(Bucket=BUCKET)
    wavenet = build("tiny")
    wavenet.save(tmp_path / "model")
    sync(str(tmp_path / "model"), f"s3://{BUCKET}/wf/model", progress=False)
    cfg = write_config(tmp_path / "emr.toml", "\n[generate]\nseconds = 0.05\nseed = 3\n", stages='["generate"]')
    proc = run_only_step(cfg, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    storage.download_file(f"s3://{BUCKET}/wf/generated/generated.wav", tmp_path / "out.wav")
    with wave.open(str(tmp_path / "out.wav")) as wav:
        assert wav.getframerate() == wavenet.sample_rate
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        assert wav.getnframes() == round(0.05 * wavenet.sample_rate)
    assert storage.exists(f"s3://{BUCKET}/wf/generated/generated.wav.json")


def test_train_step_writes_the_model_to_s3_and_resumes_from_it(aws_env, tmp_path, caplog):
    import json
    import logging

    from helpers.train import tone_dataset, train_argv

    from waveforms.aws.sync import sync
    from waveforms.model import load
    from waveforms.model import checkpoint

    client("s3").create_bucket(Bucket=BUCKET)
    data, model = f"s3://{BUCKET}/wf/dataset", f"s3://{BUCKET}/wf/model"
    sync(str(tone_dataset(tmp_path / "ds", n_tracks=3)), data, progress=False)
    storage.write_text(f"s3://{BUCKET}/wf/code/train.toml", "[train]\nlog_every = 5\ncheckpoint_every = 5\n")
    config = ["--config", f"s3://{BUCKET}/wf/code/train.toml"]

    assert step.main([*config, *train_argv(data, model, "--steps", "10")]) == 0
    prefix = "wf/model/"
    found = {k[len(prefix):] for k in keys() if k.startswith(prefix)}
    assert {"model.json", "model.keras", "metrics.jsonl", "config.json", "loss.png", "checkpoints/latest",
            *(f"checkpoints/ckpt-00000010/{f}" for f in (checkpoint.WEIGHTS, checkpoint.OPTIMIZER, checkpoint.STATE)),
            } <= found
    assert checkpoint.load_state(model)["step"] == 10
    assert load(model).meta["training"]["steps"] == 10

    with caplog.at_level(logging.INFO):
        assert step.main([*config, *train_argv(data, model, "--steps", "15")]) == 0
    assert "resuming from step 10" in caplog.text  # the checkpoint came back from S3
    rows = [json.loads(line) for line in storage.read_text(f"{model}/metrics.jsonl").splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15]
    assert checkpoint.latest_name(model) == "ckpt-00000015"
    assert load(model).meta["training"]["steps"] == 15
    assert not [k for k in keys() if "ckpt-00000010" in k]


def test_step_reports_a_bad_stage_config(aws_env, tmp_path, capsys):
    client("s3").create_bucket(Bucket=BUCKET)
    storage.write_text(f"s3://{BUCKET}/c.toml", "[train]\nsteps = 'many'\n")
    code = step.main(["--config", f"s3://{BUCKET}/c.toml", "train", "--data", "x"])
    assert code == 2
    assert "steps" in capsys.readouterr().err


def train_on_s3(tmp_path: Path) -> tuple[str, str, list[str]]:
    """A dataset on S3 and a step config that logs and checkpoints every 5 steps."""
    from helpers.train import tone_dataset

    from waveforms.aws.sync import sync

    client("s3").create_bucket(Bucket=BUCKET)
    data, model = f"s3://{BUCKET}/wf/dataset", f"s3://{BUCKET}/wf/model"
    sync(str(tone_dataset(tmp_path / "ds", n_tracks=3)), data, progress=False)
    storage.write_text(f"s3://{BUCKET}/wf/code/train.toml",
                       "[train]\nlog_every = 5\ncheckpoint_every = 5\npreview_every = -1\n")
    return data, model, ["--config", f"s3://{BUCKET}/wf/code/train.toml"]


def metric_steps(model: str) -> list[int]:
    import json

    return [json.loads(line)["step"] for line in storage.read_text(f"{model}/metrics.jsonl").splitlines()]


@pytest.mark.slow
def test_a_train_run_that_fails_midway_runs_again_in_the_step_and_resumes_from_the_checkpoint(
        aws_env, moto_url, tmp_path, monkeypatch, caplog):
    """S3 goes away right after the first checkpoint is committed, and comes back once the step sees the failure
    (the run gives up on the outage after 2 s, its ``s3_outage_s``: the default, 600 s, would hold the test for
    ten minutes)."""
    import logging

    from helpers.train import train_argv

    from waveforms.model import load
    from waveforms.model import checkpoint

    data, model, config = train_on_s3(tmp_path)
    proxy = TrippingProxy(moto_url, trip=f"PUT /{BUCKET}/wf/model/checkpoints/latest ".encode())

    class RestoreOnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "failed" in record.getMessage():
                proxy.restore()

    handler = RestoreOnRetry()
    logging.getLogger("waveforms.aws.step").addHandler(handler)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        with caplog.at_level(logging.INFO):
            code = step.main([*config, "--attempts", "3", "--retry-wait", "0",
                              *train_argv(data, model, "--steps", "20", "--fresh", "--set", "s3_outage_s=2")])
    finally:
        logging.getLogger("waveforms.aws.step").removeHandler(handler)
        proxy.close()
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    assert code == 0
    assert proxy.tripped.is_set()
    assert "attempt 1 of 3 failed" in caplog.text and "attempt 2 of 3 failed" not in caplog.text
    assert "resuming from step 5" in caplog.text  # the retry did not start over, despite --fresh
    assert metric_steps(model) == [5, 10, 15, 20]
    assert checkpoint.latest_name(model) == "ckpt-00000020"
    assert load(model).meta["training"]["steps"] == 20


@pytest.mark.slow
def test_a_killed_train_step_submitted_again_continues_from_its_checkpoint(aws_env, tmp_path):
    """The step's own command line, run with spark-submit and SIGKILLed (a lost master, or a step added
    again after a failure): the same command run again resumes and finishes."""
    import signal
    import time

    from helpers.train import train_argv

    from waveforms.model import checkpoint

    data, model, config = train_on_s3(tmp_path)
    step_file = Path(step.__file__)
    argv = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]", str(step_file), *config,
            "--attempts", "2", *train_argv(data, model, "--steps", "40")]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: (checkpoint.load_state(model) or {}).get("step", 0) >= 10, 300,
                 "checkpoint 10 on S3", every=0.1, alive=lambda: proc.poll() is None)
        os.killpg(proc.pid, signal.SIGKILL)  # spark-submit, its JVM and the Python driver
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = checkpoint.load_state(model)["step"]
    assert 10 <= killed_at < 40 and not storage.exists(f"{model}/model.json")

    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from step {killed_at}" in again.stdout + again.stderr
    assert metric_steps(model) == list(range(5, 41, 5))
    assert checkpoint.load_state(model)["step"] == 40


def test_a_config_error_is_not_retried(aws_env, tmp_path, capsys):
    client("s3").create_bucket(Bucket=BUCKET)
    storage.write_text(f"s3://{BUCKET}/c.toml", "[train]\nsteps = 0\n")
    code = step.main(["--config", f"s3://{BUCKET}/c.toml", "--attempts", "3", "train", "--data", "x"])
    assert code == 2
    assert capsys.readouterr().err.count("config error") == 1
