"""The training recipe: learning-rate schedules, the weights' moving average, initialisation, previews."""
import json
import math
import wave
from dataclasses import replace

import numpy as np
import pytest

from helpers.train import tone_dataset
from waveforms.config import TrainConfig
from waveforms.dataset import Dataset
from waveforms.model import checkpoint, load
from waveforms.train import run
from waveforms.train.common import compile_model, prepare
from waveforms.train.ema import EMA, decay_at
from waveforms.train.pace import MARGIN, Pace, refit
from waveforms.train.recipe import code_log_frequencies, initialise
from waveforms.train.schedules import ShiftedSchedule, WarmupStepDecay, learning_rate, lr_at

LR, STEPS = 2e-3, 1000


def cfg_for(**kw):
    return TrainConfig(**{"learning_rate": LR, "steps": STEPS, **kw})


@pytest.mark.parametrize("warmup", [0, 100])
def test_cosine_warms_up_then_decays_to_min_lr_ratio_at_steps(warmup):
    sched = learning_rate(cfg_for(lr_schedule="cosine", warmup_steps=warmup, min_lr_ratio=0.05))

    def expected(s):  # linear from lr/warmup to lr, then lr * (r + (1 - r) * (1 + cos(pi p)) / 2)
        if s < warmup:
            start = LR / warmup
            return start + (LR - start) * s / warmup
        p = min(s - warmup, STEPS - warmup) / (STEPS - warmup)
        return LR * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))

    for s in [0, 1, 50, 99, 100, 101, 400, 999, 1000, 5000]:
        assert lr_at(sched, s) == pytest.approx(expected(s), rel=1e-5), s
    assert lr_at(sched, STEPS) == pytest.approx(0.05 * LR, rel=1e-5)


def test_step_decay_and_constant_with_warmup():
    sched = learning_rate(cfg_for(lr_schedule="step", warmup_steps=10, lr_decay_every=100, lr_decay_factor=0.5,
                                  min_lr_ratio=0.2))
    for s, want in [(0, LR / 10), (4, LR / 2), (9, LR), (109, LR), (110, LR / 2), (210, LR / 4), (5000, LR / 5)]:
        assert lr_at(sched, s) == pytest.approx(want, rel=1e-6), s
    const = learning_rate(cfg_for(lr_schedule="constant", warmup_steps=4))
    assert [round(lr_at(const, s) / LR, 6) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # the old recipe: a plain float, as before
    assert learning_rate(cfg_for(lr_schedule="constant", warmup_steps=0)) == LR


def test_the_budget_schedule_is_fitted_once_past_the_warmup_and_a_tenth_of_the_budget():
    cfg = cfg_for(lr_schedule="cosine", warmup_steps=100, max_minutes=10.0, steps=10**9)
    # 0.4 s per step; at step 160, 60 s in, 540 s remain
    assert refit(cfg, 160, 60.0, 0.4, None) == 160 + int(MARGIN * 540 / 0.4)
    assert refit(cfg, 160, 59.0, 0.4, None) is None  # before a tenth of the budget
    assert refit(cfg, 160, 60.0, None, None) is None  # no pace measured yet
    assert refit(cfg_for(lr_schedule="cosine", warmup_steps=200, max_minutes=10.0), 160, 60.0, 0.4, None) is None
    assert refit(cfg_for(lr_schedule="cosine", max_minutes=10.0, steps=1000), 160, 60.0, 0.4, None) == 1000
    assert refit(cfg_for(lr_schedule="step", max_minutes=10.0), 160, 60.0, 0.4, None) is None
    assert refit(cfg_for(lr_schedule="cosine"), 160, 60.0, 0.4, None) is None  # no budget
    assert refit(cfg, 160, 599.9, 0.4, None) == 161  # never shorter than the next step


def test_the_budget_schedule_is_refitted_only_when_the_pace_moves_enough_to_matter():
    cfg = cfg_for(lr_schedule="cosine", warmup_steps=100, max_minutes=10.0, steps=10**9)
    fitted = refit(cfg, 160, 60.0, 0.4, None)  # 1,469 steps
    # at step 660, 260 s in: the pace held (0.4 s per step), or moved by 2% of the steps left: the fit stays
    assert refit(cfg, 660, 260.0, 0.4, fitted) is None
    assert refit(cfg, 660, 260.0, 0.4 * 1.02, fitted) is None
    # the machine slowed to 0.5 s per step: the fit moves to the steps the time left holds at that pace
    assert refit(cfg, 660, 260.0, 0.5, fitted) == 660 + int(MARGIN * 340 / 0.5)
    # ran faster than fitted (past its end): the schedule grows to the budget's end
    assert refit(cfg, 1500, 500.0, 0.2, fitted) == 1500 + int(MARGIN * 100 / 0.2)
    # near the end a move of a few steps is below 1% of the fitted length: no retrace for it
    assert refit(cfg, 1440, 590.0, 0.4, fitted) is None
    assert refit(cfg, 1440, 590.0, 0.37, fitted) is None


def test_a_stretched_schedule_is_the_cosine_built_for_the_fitted_length():
    cfg = cfg_for(lr_schedule="cosine", warmup_steps=100, steps=10**8)  # a budget run's unfitted length
    shifted = ShiftedSchedule(learning_rate(cfg))
    for total in (1469, 5000, None):
        shifted.fit_to(total)
        want = learning_rate(cfg, total)
        for s in (0, 50, 99, 100, 101, 700, 1468, 1469, 1500, 4999, 6000):
            assert float(shifted(s)) == pytest.approx(lr_at(want, s), rel=1e-4, abs=1e-10), (total, s)


def test_the_pace_leaves_out_one_off_intervals_and_follows_the_newest_window():
    pace = Pace(window_s=60.0)
    assert pace.seconds_per_step() is None
    pace.add(20, 38.0 + 8.0, one_off=True)  # the first steps, with the step's trace: not the pace
    assert pace.seconds_per_step() is None
    for _ in range(10):
        pace.add(20, 8.0)  # 0.4 s per step
    pace.add(20, 45.0, one_off=True)  # the preview generator's first compile
    assert pace.seconds_per_step() == pytest.approx(0.4)
    for _ in range(8):
        pace.add(20, 10.0)  # the machine slows to 0.5 s per step: the window (60 s) holds only the newest rows
    assert pace.seconds_per_step() == pytest.approx(0.5)
    pace.add(20, 12.0)
    pace.add(0, 5.0)  # an interval without steps is not a pace
    assert pace.seconds_per_step() == pytest.approx((5 * 10.0 + 12.0) / 120)


def test_step_schedule_survives_keras_serialisation():
    import keras

    sched = WarmupStepDecay(LR, 10, 100, 0.5, 0.1)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(sched))
    assert [float(again(s)) for s in (0, 50, 300)] == [float(sched(s)) for s in (0, 50, 300)]


def test_ema_follows_the_numpy_recurrence_with_its_warmup():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    ema = EMA(model, 0.99)
    rng = np.random.default_rng(0)
    ref = [w.astype(np.float64) for w in model.get_weights()]
    for t in range(1, 40):
        model.set_weights([w + rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
        ema.update()
        d = min(0.99, (1 + t) / (10 + t))
        assert decay_at(0.99, t) == d
        ref = [d * r + (1 - d) * w for r, w in zip(ref, model.get_weights())]
    for got, want in zip(ema.weights(), ref):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert ema.updates == 39 and decay_at(0.99, 10_000) == 0.99


def test_an_update_deferred_into_the_collective_step_gives_the_same_average_bit_for_bit():
    import keras

    from waveforms.train.collective import Collective, CollectiveStep

    def run_steps(deferred: bool):
        keras.utils.set_random_seed(5)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
        model.compile(optimizer=keras.optimizers.Adam(0.05))
        ema = EMA(model, 0.9)
        step = CollectiveStep(model, Collective(), ema=ema if deferred else None)
        rng = np.random.default_rng(1)
        read = []
        for t in range(12):
            step(rng.normal(size=(5, 4)).astype(np.float32), rng.integers(0, 3, size=5))
            assert not ema.deferred  # the step's graph applied the update deferred after the step before
            ema.defer() if deferred else ema.update()
            if t in (4, 9):  # reading applies the deferred update; the next step's graph then applies none
                read.append(ema.weights())
        return model.get_weights(), read + [ema.weights()], ema.updates

    weights, averages, updates = run_steps(deferred=True)
    want_weights, want_averages, want_updates = run_steps(deferred=False)
    assert updates == want_updates == 12
    for got, want in zip(weights + sum(averages, []), want_weights + sum(want_averages, [])):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(averages[0][0], averages[1][0])  # the average moved between the reads


def test_data_init_scales_the_residual_and_skip_1x1s_and_sets_the_logits_bias(tmp_path):
    import keras

    from waveforms.model.spec import spec

    data = tone_dataset(tmp_path / "ds")
    cfg = TrainConfig(data=str(data), preset="tiny", window=64)
    keras.utils.set_random_seed(3)
    plain = prepare(cfg)
    keras.utils.set_random_seed(3)
    setup = prepare(cfg)
    note = initialise(setup, "data")
    sp = spec(setup.wavenet.config)
    layers = len(sp.residuals)
    for res in sp.residuals:
        for w in (res.skip, res.residual):
            if w is not None:
                np.testing.assert_allclose(setup.wavenet.keras_model.get_layer(w.name).kernel.numpy(),
                                           plain.wavenet.keras_model.get_layer(w.name).kernel.numpy() / math.sqrt(layers),
                                           rtol=1e-6)
    np.testing.assert_array_equal(setup.wavenet.keras_model.get_layer(sp.input_conv.name).kernel.numpy(),
                                  plain.wavenet.keras_model.get_layer(sp.input_conv.name).kernel.numpy())
    # the logits bias: log of (count + 1) / total over the training tracks, minus its mean
    ds = Dataset.open(str(data))
    counts = np.ones(256)
    for t in ds.split("train"):
        counts += np.bincount(ds.read_track(t), minlength=256)
    logp = np.log(counts / counts.sum())
    bias = setup.wavenet.keras_model.get_layer(sp.logits.name).bias.numpy()
    np.testing.assert_allclose(bias, logp - logp.mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(code_log_frequencies(setup), logp, rtol=1e-9)
    assert note["marginal_entropy"] == pytest.approx(-(np.exp(logp) * logp).sum())
    assert initialise(plain, "keras") == {"init": "keras"}


LR_TINY = 0.01


def tiny(tmp_path, data, name="model", **kw):
    base = {"data": str(data), "model_dir": str(tmp_path / name), "preset": "tiny", "steps": 40, "batch_size": 4,
            "window": 64, "learning_rate": LR_TINY, "warmup_steps": 5, "log_every": 10, "val_every": 20,
            "checkpoint_every": 20, "seed": 4}
    return TrainConfig(**{**base, **kw})


def raw_and_ema(data, model_dir):
    """The last checkpoint's training weights and moving average."""
    setup = prepare(TrainConfig(data=str(data), model_dir=str(model_dir), preset="tiny", window=64))
    model = compile_model(setup.wavenet.training_model(), setup.cfg)
    checkpoint.restore(model_dir, model)
    return model.get_weights(), checkpoint.load_ema(model_dir)


def test_a_default_run_leaves_playable_previews_named_in_the_metrics(tmp_path):
    import tensorflow as tf

    data = tone_dataset(tmp_path / "ds", sample_rate=8000)
    assert run(tiny(tmp_path, data)) == 0
    out = tmp_path / "model"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    named = {r["step"]: r["preview"] for r in rows if "preview" in r}
    assert named == {20: "previews/step_000020.wav", 40: "previews/step_000040.wav"}  # at each validation
    assert all("val_loss" in r for r in rows if "preview" in r)
    for rel in named.values():
        with wave.open(str(out / rel)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 16000)
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        assert len(np.unique(pcm)) > 10  # sampled audio, not a constant
    tags = set()
    for f in (out / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            tags.update(v.tag for v in event.summary.value)
    assert any(t.startswith("preview") for t in tags)
    # the saved model is the moving average of the weights, not the last training weights
    raw, ema = raw_and_ema(data, out)
    saved = load(out).keras_model.get_weights()
    for a, b in zip(saved, ema):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(raw, ema))
    assert json.loads((out / "model.json").read_text())["training"]["ema_decay"] == 0.999


def test_previews_and_the_moving_average_do_not_change_the_training_trajectory(tmp_path):
    data = tone_dataset(tmp_path / "ds", sample_rate=8000)
    run(tiny(tmp_path, data, "with"))
    run(tiny(tmp_path, data, "without", preview_every=-1, ema_decay=0.0))
    assert not (tmp_path / "without" / "previews").exists()
    (raw_a, _), (raw_b, ema_b) = raw_and_ema(data, tmp_path / "with"), raw_and_ema(data, tmp_path / "without")
    assert ema_b is None
    for a, b in zip(raw_a, raw_b):
        np.testing.assert_array_equal(a, b)
    losses = [[json.loads(x).get("loss") for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
              for d in ("with", "without")]
    assert losses[0] == losses[1]
    # without the average, the saved model is the last training weights
    for a, b in zip(load(tmp_path / "without").keras_model.get_weights(), raw_b):
        np.testing.assert_array_equal(a, b)


def test_preview_every_sets_its_own_period_and_fresh_removes_old_previews(tmp_path):
    data = tone_dataset(tmp_path / "ds", sample_rate=8000)
    run(tiny(tmp_path, data, steps=30, preview_every=15, preview_seconds=0.25))
    out = tmp_path / "model"
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["step_000015.wav", "step_000030.wav"]
    with wave.open(str(out / "previews" / "step_000015.wav")) as w:
        assert w.getnframes() == 2000
    run(tiny(tmp_path, data, steps=10, preview_every=-1, fresh=True))
    assert not (out / "previews").exists()


def test_a_budget_run_fits_its_cosine_to_the_budget_and_logs_that_schedule(tmp_path):
    data = tone_dataset(tmp_path / "ds", sample_rate=8000)
    cfg = tiny(tmp_path, data, steps=10**6, max_minutes=0.4, log_every=5, val_every=10**5, checkpoint_every=10**5,
               preview_every=-1)
    assert run(cfg) == 0
    out = tmp_path / "model"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    state = checkpoint.load_state(out)
    fitted = state["schedule_steps"]
    assert state["step"] > 10 and fitted < 10**6  # fitted from the measured pace, well short of `steps`
    unfitted, final = learning_rate(cfg), learning_rate(cfg, fitted)
    # the rows follow the unfitted schedule until the first fit; the last one follows the last fit
    switch = next(i for i, r in enumerate(rows) if r["lr"] != pytest.approx(lr_at(unfitted, r["step"] - 1), rel=1e-5))
    assert switch > 0
    assert rows[-1]["lr"] == pytest.approx(lr_at(final, rows[-1]["step"] - 1), rel=1e-5)


@pytest.mark.parametrize("engine", ["local", "allreduce"])  # train_on_batch; the collective step (one rank)
def test_the_step_graph_applies_a_refit_schedule_s_rate(tmp_path, engine):
    """The schedule is evaluated inside the traced step: after a refit (a budget's), the next update applies the
    new schedule's rate, as a copy of the model and optimizer given that rate as a constant does."""
    from waveforms.storage import OutputDir
    from waveforms.train.collective import Collective
    from waveforms.train.common import mean_loss
    from waveforms.train.loop import Trainer

    data = tone_dataset(tmp_path / "ds", sample_rate=8000)
    cfg = tiny(tmp_path, data, lr_schedule="cosine", warmup_steps=0, steps=100, ema_decay=0.0, preview_every=-1)
    with OutputDir(cfg.model_dir) as out:
        trainer = Trainer(cfg, out, Collective(), engine, mean_loss)
        trainer.step(*trainer.batch(0))  # traced under the 100-step schedule
        trainer.use_schedule(2)  # refit: 2 steps in all, so step 1 is halfway down the cosine
        x, y = trainer.batch(1)
        weights = trainer.model.get_weights()
        state = checkpoint.optimizer_arrays(trainer.model.optimizer)
        trainer.step(x, y)
        got = trainer.model.get_weights()
        trainer.close()

    def stepped_at(rate: float) -> list[np.ndarray]:
        ref = compile_model(prepare(cfg).wavenet.training_model(),
                            replace(cfg, lr_schedule="constant", learning_rate=rate))
        ref.set_weights(weights)
        checkpoint.set_optimizer_arrays(ref.optimizer, ref, state)
        ref.train_on_batch(x, y)
        return ref.get_weights()

    refit, first = lr_at(learning_rate(cfg, 2), 1), lr_at(learning_rate(cfg), 1)
    low = cfg.min_lr_ratio
    assert refit == pytest.approx(cfg.learning_rate * (low + (1 - low) / 2), rel=1e-6) and first > 1.5 * refit
    for a, b in zip(got, stepped_at(refit)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert any(not np.allclose(a, b, rtol=1e-3, atol=1e-7) for a, b in zip(got, stepped_at(first)))


def test_a_checkpoint_made_with_a_rate_variable_resumes_under_the_schedule_and_back(tmp_path):
    """Until the schedule moved into the step, the loop's Adam had a rate variable (one array more in
    optimizer.npz); either layout restores into the other with the update counter and the moments carried."""
    data = tone_dataset(tmp_path / "ds", sample_rate=8000)
    cfg = tiny(tmp_path, data, lr_schedule="cosine")
    setup = prepare(cfg)
    x = np.random.default_rng(0).integers(0, 256, (2, setup.receptive_field - 1 + 64)).astype(np.int32)
    y = np.random.default_rng(1).integers(0, 256, (2, 64)).astype(np.int32)
    kinds = {"rate variable": replace(cfg, lr_schedule="constant", warmup_steps=0), "schedule": cfg}
    for saved_kind, loaded_kind in [("rate variable", "schedule"), ("schedule", "rate variable")]:
        saved = compile_model(setup.wavenet.training_model(), kinds[saved_kind], shift=True)
        for _ in range(3):
            saved.train_on_batch(x, y)
        arrays = checkpoint.optimizer_arrays(saved.optimizer)
        loaded = compile_model(setup.wavenet.training_model(), kinds[loaded_kind], shift=True)
        checkpoint.set_optimizer_arrays(loaded.optimizer, loaded, arrays)
        assert int(loaded.optimizer.iterations) == 3
        moments = [a for a in arrays[1:] if np.ndim(a)]
        assert len(arrays) - len(checkpoint.optimizer_arrays(loaded.optimizer)) == (1 if saved_kind == "rate variable"
                                                                                   else -1)
        for a, v in zip(moments, [v for v in loaded.optimizer.variables[1:] if len(v.shape)]):
            np.testing.assert_array_equal(a, v.numpy())
