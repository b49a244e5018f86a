"""Local training: window alignment, sampling, a tiny WaveNet learning a tone, artifact and metrics."""
import json
import math

import numpy as np
import pytest

from helpers.train import tone_dataset, train_argv, write_dataset
from waveforms.config import TrainConfig
from waveforms.dataset import Dataset, regions
from waveforms.model import build, load
from waveforms.runtime.errors import UserError
from waveforms.train import run
from waveforms.train.windows import WindowSampler, split_window


def random_tracks(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [{"id": f"r{i}", "codes": rng.integers(0, 256, n, dtype=np.uint8)} for i, n in enumerate(lengths)]


def find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index of ``needle`` in ``haystack`` (unique for random data), by brute force."""
    view = np.lib.stride_tricks.sliding_window_view(haystack, len(needle))
    hits = np.flatnonzero((view == needle).all(axis=1))
    assert len(hits) == 1
    return int(hits[0])


def test_windows_are_input_and_shifted_targets_of_one_track_range(tmp_path):
    tracks = random_tracks([3000, 5000])
    ds = Dataset.open(str(write_dataset(tmp_path / "ds", tracks)))
    rf, window = 17, 50
    train, _, _ = regions(ds, rf + window)
    sampler = WindowSampler(ds, train, rf, window, batch_size=6, seed=3)
    x, y = sampler.batch(0)
    assert x.shape == (6, rf + window - 1) and y.shape == (6, window)
    full = {t["id"]: t["codes"] for t in tracks}
    for xi, yi in zip(x, y):
        source = next(c for c in full.values() if len(np.flatnonzero(
            (np.lib.stride_tricks.sliding_window_view(c, len(xi)) == xi).all(axis=1))))
        start = find(source, xi.astype(np.uint8))
        # the target of cropped output j is the sample after the full model's output rf-1+j
        np.testing.assert_array_equal(yi, source[start + rf:start + rf + window])
    # batches are a function of (seed, step) alone
    x2, y2 = WindowSampler(ds, train, rf, window, batch_size=6, seed=3).batch(0)
    np.testing.assert_array_equal(x, x2)
    assert not np.array_equal(sampler.batch(1)[0], x)


def test_training_model_output_j_is_full_model_output_rf_minus_1_plus_j():
    wavenet = build("tiny")
    rf = wavenet.receptive_field
    w = np.random.default_rng(0).integers(0, 256, (2, rf + 30))
    x, y = split_window(w, rf)
    cropped = np.asarray(wavenet.training_model()(x))
    full = np.asarray(wavenet.keras_model(x))
    assert cropped.shape[1] == y.shape[1] == 30
    np.testing.assert_allclose(cropped, full[:, rf - 1:], atol=1e-5)


def test_tracks_are_drawn_in_proportion_to_their_length(tmp_path):
    ds = Dataset.open(str(write_dataset(tmp_path / "ds", random_tracks([1100, 4100]))))
    train, _, _ = regions(ds, 100)
    sampler = WindowSampler(ds, train, 10, 90, batch_size=1, seed=0)
    picks = np.random.default_rng(1).choice(2, size=20000, p=sampler.probs)
    # windows start anywhere in [0, n - 100]: 1001 vs 4001 positions
    assert abs(np.mean(picks == 1) - 4001 / 5002) < 0.01


def test_without_val_tracks_the_end_of_each_track_is_held_out(tmp_path):
    ds = Dataset.open(str(write_dataset(tmp_path / "ds", random_tracks([2000, 3000, 120]))))
    train, val, how = regions(ds, 150)
    assert "held out" in how
    assert len(train) == len(val) == 2  # the track shorter than a window is skipped
    for t, v in zip(train, val):
        assert t.track is v.track and t.start == 0 and t.end == v.start and v.end == t.track["num_samples"]
        assert v.size == max(150, t.track["num_samples"] // 10)


def test_tracks_shorter_than_a_window_are_a_clear_error(tmp_path):
    data = write_dataset(tmp_path / "ds", random_tracks([500, 600]))
    cfg = TrainConfig(data=str(data), model_dir=str(tmp_path / "m"), preset="tiny", window=1000, steps=2)
    with pytest.raises(UserError, match="long enough"):
        run(cfg)


def tiny_cfg(tmp_path, data, **kw):
    base = dict(data=str(data), model_dir=str(tmp_path / "model"), preset="tiny", steps=60, batch_size=4,
                window=64, learning_rate=0.01, log_every=10, val_every=20, checkpoint_every=20, seed=1)
    return TrainConfig(**{**base, **kw})


def test_tiny_model_learns_a_tone_and_writes_the_artifact(tmp_path):
    data = tone_dataset(tmp_path / "ds", sample_rate=8000)
    cfg = tiny_cfg(tmp_path, data)
    assert run(cfg) == 0
    out = tmp_path / "model"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(10, 61, 10))
    assert rows[0]["loss"] > 2.5  # starts near ln 256 = 5.55
    assert rows[-1]["loss"] < 2.5 < math.log(256)
    val = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in val] == [20, 40, 60]
    assert val[-1]["val_loss"] < 2.5
    assert val[-1]["val_probe_bits_per_sample"] == pytest.approx(val[-1]["val_loss"] / math.log(2))
    assert all(r["samples_per_s"] > 0 and r["wall_time"] > 0 for r in rows)
    meta = json.loads((out / "model.json").read_text())
    assert meta["dataset_id"] == "test-ds" and meta["sample_rate"] == 8000 and meta["genres"] == []
    assert meta["training"]["steps"] == 60 and meta["training"]["engine"] == "local"
    assert json.loads((out / "config.json").read_text())["config"]["steps"] == 60
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # the saved full model predicts the tone's next sample (output t -> sample t+1)
    wavenet = load(out)
    assert wavenet.sample_rate == 8000
    track = Dataset.open(str(data)).split("val")[0]
    codes = Dataset.open(str(data)).read_track(track)[:400].astype(np.int32)
    pred = np.asarray(wavenet.keras_model(codes[None, :-1]))[0].argmax(-1)
    rf = wavenet.receptive_field
    assert np.mean(np.abs(pred[rf:] - codes[rf + 1:]) <= 1) > 0.9


def test_genre_conditioning_saves_the_vocabulary(tmp_path):
    data = tone_dataset(tmp_path / "ds", n_tracks=4, genres=("rock", "jazz"))
    run(tiny_cfg(tmp_path, data, steps=5, condition_on_genre=True))
    wavenet = load(tmp_path / "model")
    assert wavenet.genres == ["jazz", "rock"] and wavenet.config.num_genres == 2
    assert len(wavenet.keras_model.inputs) == 2


def test_nan_loss_stops_with_a_clear_error(tmp_path, monkeypatch):
    import keras

    monkeypatch.setattr(keras.Model, "train_on_batch", lambda self, x, y: float("nan"))
    data = tone_dataset(tmp_path / "ds")
    with pytest.raises(UserError, match="loss became nan at step 1"):
        run(tiny_cfg(tmp_path, data))


def test_early_stopping_on_validation_loss(tmp_path, monkeypatch):
    from waveforms.train import loop

    losses = iter([1.0, 0.9, 0.95, 0.97, 0.99, 0.5])
    monkeypatch.setattr(loop, "mean_loss", lambda model, batches: next(losses))
    data = tone_dataset(tmp_path / "ds")
    run(tiny_cfg(tmp_path, data, steps=60, val_every=10, early_stopping_patience=3))
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    # best at step 20, then three checks without improvement: stop at step 50
    assert meta["training"]["stopped_early"] is True and meta["training"]["steps"] == 50


def test_time_budget_stops_training_and_keeps_a_complete_artifact(tmp_path):
    data = tone_dataset(tmp_path / "ds")
    run(tiny_cfg(tmp_path, data, steps=1_000_000, max_minutes=0.05))
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    steps = meta["training"]["steps"]
    assert 0 < steps < 1_000_000
    rows = [json.loads(line) for line in (tmp_path / "model" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == steps and rows[-1]["wall_time"] >= 3.0
    assert (tmp_path / "model" / "model.keras").exists()


def test_init_from_fine_tunes_a_model_and_records_its_parent(tmp_path, capsys):
    from waveforms.cli import main
    from waveforms.model import load

    first, second = tone_dataset(tmp_path / "a", n_tracks=3), tone_dataset(tmp_path / "b", n_tracks=2, seconds=0.5)
    parent_dir, child_dir = tmp_path / "parent", tmp_path / "child"
    assert main(train_argv(first, parent_dir, "--steps", "30", "--set", "stacks=2")) == 0
    parent = load(str(parent_dir))
    # a learning rate of ~0: the child's saved weights are the parent's, whatever the preset flag says
    assert main(train_argv(second, child_dir, "--steps", "2", "--init-from", str(parent_dir), "--preset", "small",
                           "--set", "learning_rate=1e-12", "--set", "preview_every=-1")) == 0
    child = load(str(child_dir))
    assert child.config == parent.config and child.config.stacks == 2
    for a, b in zip(parent.keras_model.get_weights(), child.keras_model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    pmeta = json.loads((parent_dir / "model.json").read_text())
    lineage = json.loads((child_dir / "model.json").read_text())["parent"]
    assert lineage == {"path": str(parent_dir), "id": pmeta["files"]["model.keras"]["sha256"], "dataset": str(first),
                       "dataset_id": pmeta["dataset_id"], "preset": "tiny", "steps": 30}
    assert json.loads((parent_dir / "model.json").read_text()).get("parent") is None
    capsys.readouterr()
    # refused: a conflicting architecture key, another sample rate, no model there
    assert main(train_argv(second, tmp_path / "x", "--init-from", str(parent_dir), "--set", "stacks=3")) == 1
    assert ("init_from = " + str(parent_dir) + ": the architecture comes from that model, but stacks = 3 "
            "(the model has 2); drop these keys") in capsys.readouterr().err
    other_rate = tone_dataset(tmp_path / "c", n_tracks=2, sample_rate=16000)
    assert main(train_argv(other_rate, tmp_path / "y", "--init-from", str(parent_dir))) == 1
    assert "the model was trained at 8000 Hz but" in capsys.readouterr().err
    assert main(train_argv(second, tmp_path / "z", "--init-from", str(tmp_path / "nothing"))) == 1
    assert "no model at" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not (tmp_path / "x" / "model.json").exists()
