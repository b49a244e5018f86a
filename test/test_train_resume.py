"""Checkpoints: SIGKILL during training resumes where it stopped; a kill while saving keeps the last one."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from helpers.train import sigkill_when, tone_dataset, train_argv
from waveforms.model import checkpoint, load

STEPS = 120
FLAGS = ("--steps", str(STEPS), "--window", "1500", "--seed", "5",
         "--set", "checkpoint_every=20", "--set", "log_every=10", "--set", "val_every=40")


def cli(*args):
    return [sys.executable, "-m", "waveforms", *args]


def metrics(model_dir):
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


def weights(model_dir):
    return load(model_dir).keras_model.get_weights()


def saved_step(model_dir) -> int:
    """The newest checkpoint's step while training runs (0 before the first one)."""
    return (checkpoint.load_state(model_dir) or {}).get("step", 0)


def write_state(model_dir, step: int) -> None:
    name = f"ckpt-{step:08d}"
    (model_dir / "checkpoints" / name).mkdir(parents=True)
    (model_dir / "checkpoints" / name / "state.json").write_text(json.dumps({"step": step}))
    (model_dir / "checkpoints" / "latest").write_text(name + "\n")


def test_a_reader_of_a_live_run_follows_latest_when_the_named_checkpoint_is_pruned(tmp_path, monkeypatch):
    """The trainer commits step 10 and prunes step 5 between the reader's two reads."""
    import shutil

    from waveforms import storage

    write_state(tmp_path, 5)
    read_text = storage.read_text

    def trainer_moves_on(uri, *args, **kwargs):
        if uri.endswith("ckpt-00000005/state.json") and (tmp_path / "checkpoints" / "ckpt-00000005").exists():
            write_state(tmp_path, 10)
            shutil.rmtree(tmp_path / "checkpoints" / "ckpt-00000005")
        return read_text(uri, *args, **kwargs)

    monkeypatch.setattr(storage, "read_text", trainer_moves_on)
    assert checkpoint.load_state(tmp_path) == {"step": 10}
    # a pointer to a checkpoint that is gone, with nothing newer, stays a clear error
    (tmp_path / "checkpoints" / "latest").write_text("ckpt-00000011\n")
    with pytest.raises(checkpoint.CheckpointError, match="ckpt-00000011 is unreadable"):
        checkpoint.load_state(tmp_path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tone_dataset(tmp_path_factory.mktemp("resume") / "ds", n_tracks=3, seconds=2.0)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "model"
    subprocess.run(cli(*train_argv(data, out, *FLAGS)), check=True, capture_output=True, timeout=300)
    return out


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(data, uninterrupted, tmp_path):
    out = tmp_path / "model"
    argv = cli(*train_argv(data, out, *FLAGS))
    sigkill_when(argv, lambda: saved_step(out) >= 40)
    assert not (out / "model.keras").exists()
    killed_at = checkpoint.load_state(out)["step"]
    assert 40 <= killed_at < STEPS
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from step {killed_at}" in rerun.stderr
    rows, whole = metrics(out), metrics(uninterrupted)
    assert [r["step"] for r in rows] == [r["step"] for r in whole] == list(range(10, STEPS + 1, 10))
    # deterministic ops, per-step batches and restored optimizer state: the same numbers bit for bit
    assert [r["loss"] for r in rows] == [r["loss"] for r in whole]
    for a, b in zip(weights(out), weights(uninterrupted)):
        np.testing.assert_array_equal(a, b)
    assert json.loads((out / "model.json").read_text())["training"]["steps"] == STEPS


def test_fresh_starts_over(data, tmp_path):
    out = tmp_path / "model"
    subprocess.run(cli(*train_argv(data, out, "--steps", "20", "--set", "checkpoint_every=10")), check=True,
                   capture_output=True, timeout=300)
    rerun = subprocess.run(cli(*train_argv(data, out, "--steps", "10", "--fresh")), capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" not in rerun.stderr
    assert [r["step"] for r in metrics(out)] == [10]
    assert checkpoint.load_state(out)["step"] == 10


CRASHING_SAVE = """
import os, signal, sys
import numpy as np
from waveforms.cli import main
real = np.savez
def savez(fh, *arrays):
    if "ckpt-00000020" in str(getattr(fh, "name", "")):
        fh.write(b"half an optimizer")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(fh, *arrays)
np.savez = savez
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(data, tmp_path):
    out = tmp_path / "model"
    args = train_argv(data, out, "--steps", "30", "--set", "checkpoint_every=10", "--set", "log_every=10")
    crashed = subprocess.run([sys.executable, "-c", CRASHING_SAVE, *args], capture_output=True, timeout=300)
    assert crashed.returncode == -signal.SIGKILL
    # the half-written checkpoint is a temporary folder; latest still names the complete one
    leftovers = [p.name for p in (out / "checkpoints").iterdir()]
    assert any(name.startswith(".tmp-ckpt-00000020") for name in leftovers)
    assert checkpoint.latest_name(out) == "ckpt-00000010"
    from waveforms.config import TrainConfig
    from waveforms.train.common import compile_model, prepare

    setup = prepare(TrainConfig(data=str(data), model_dir=str(out), preset="tiny", window=64))
    model = compile_model(setup.wavenet.training_model(), setup.cfg)
    before = [w.copy() for w in model.get_weights()]
    assert checkpoint.restore(out, model)["step"] == 10
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.optimizer.iterations.numpy() == 10
    rerun = subprocess.run(cli(*args), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from step 10" in rerun.stderr
    assert sorted(os.listdir(out / "checkpoints")) == ["ckpt-00000030", "latest"]
    assert [r["step"] for r in metrics(out)] == [10, 20, 30]


def test_a_metrics_line_torn_by_a_kill_is_dropped_on_resume(tmp_path):
    from waveforms.train.metrics_log import MetricsLog

    log = MetricsLog(tmp_path, tensorboard=False)
    for step in (10, 20, 30):
        log.append({"step": step, "loss": 1.0 / step})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 40, "lo')
    assert [r["step"] for r in log.rows()] == [10, 20, 30]
    log.truncate(20)  # resuming from the step-20 checkpoint
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == [
        json.dumps({"loss": 0.1, "step": 10}), json.dumps({"loss": 0.05, "step": 20})]


STOP_AFTER_SAVE = """
import os, signal, sys
from waveforms.cli import main
from waveforms.model import checkpoint
real = checkpoint.save
def save(out, model, state, ema=None):
    name = real(out, model, state, ema=ema)
    if state["step"] == 60:
        os.kill(os.getpid(), signal.SIGKILL)
    return name
checkpoint.save = save
sys.exit(main(sys.argv[1:]))
"""


def training_state(data, model_dir):
    """The last checkpoint's training weights, optimizer state and moving average of the weights."""
    from waveforms.config import TrainConfig
    from waveforms.train.common import compile_model, prepare

    setup = prepare(TrainConfig(data=str(data), model_dir=str(model_dir), preset="tiny", window=1500))
    model = compile_model(setup.wavenet.training_model(), setup.cfg)
    checkpoint.restore(model_dir, model)
    return model.get_weights(), checkpoint.optimizer_arrays(model.optimizer), checkpoint.load_ema(model_dir)


def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_weights_average_and_previews(data, uninterrupted,
                                                                                          tmp_path):
    out = tmp_path / "model"
    args = train_argv(data, out, *FLAGS)
    killed = subprocess.run([sys.executable, "-c", STOP_AFTER_SAVE, *args], capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert checkpoint.load_state(out)["step"] == 60 and checkpoint.load_state(out)["ema"] is True
    assert not (out / "model.keras").exists()
    rerun = subprocess.run(cli(*args), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from step 60" in rerun.stderr
    rows, whole = metrics(out), metrics(uninterrupted)
    assert [r["step"] for r in rows] == [r["step"] for r in whole] == list(range(10, STEPS + 1, 10))
    for key in ("loss", "val_loss", "lr", "preview"):
        assert [r.get(key) for r in rows] == [r.get(key) for r in whole], key
    # weights, optimizer state and the moving average: bit for bit
    for got, want in zip(training_state(data, out), training_state(data, uninterrupted)):
        assert len(got) == len(want) > 0
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(weights(out), weights(uninterrupted)):  # the saved model: the moving average
        np.testing.assert_array_equal(a, b)
    # previews at each validation, before and after the kill, the same audio as the uninterrupted run's
    names = sorted(p.name for p in (out / "previews").iterdir())
    assert names == sorted(p.name for p in (uninterrupted / "previews").iterdir()) == [
        f"step_{s:06d}.wav" for s in (40, 80, 120)]
    for name in names:
        assert (out / "previews" / name).read_bytes() == (uninterrupted / "previews" / name).read_bytes()
