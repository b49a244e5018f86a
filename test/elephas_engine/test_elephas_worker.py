"""The elephas workers' model cache and the schedule offset, in this process (no Spark)."""
import keras
import numpy as np
import pytest

from waveforms.config import TrainConfig
from waveforms.model import build
from waveforms.train.common import compile_model
from waveforms.train.elephas import worker as ew
from waveforms.train.elephas.engine import custom_objects  # noqa: E402


def lr_at(optimizer, step):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return float(inner._learning_rate(step))


def test_shifted_schedule_resumes_the_inner_schedule_at_the_offset_and_round_trips():
    inner = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=100)
    shifted = ew.ShiftedSchedule(inner, offset=30)
    for step in (0, 5, 69):
        assert float(shifted(step)) == pytest.approx(float(inner(step + 30)))
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(shifted))
    assert isinstance(again, ew.ShiftedSchedule) and float(again(10)) == pytest.approx(float(inner(40)))


def compiled_master(lr_schedule="cosine", **kw):
    cfg = TrainConfig(preset="tiny", lr_schedule=lr_schedule, learning_rate=0.01, steps=100, **kw)
    return compile_model(build("tiny").training_model(), cfg, total_steps=100)


def test_a_worker_builds_its_model_once_and_starts_each_epoch_afresh_at_the_run_s_step():
    master = compiled_master()
    json = master.to_json()
    args = (master.loss, [], custom_objects())
    first = ew.worker_model(json, ew.shifted_optimizer_config(master.optimizer, 0), *args)
    x = np.random.default_rng(0).integers(0, 256, (8, 200)).astype(np.int32)
    y = np.zeros((8, first.compute_output_shape(x.shape)[1]), np.int32)
    first.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(first.optimizer.iterations.numpy()) == 2
    traced = first.train_function
    second = ew.worker_model(json, ew.shifted_optimizer_config(master.optimizer, 12), *args)
    assert second is first and second.train_function is traced  # nothing rebuilt, compiled or traced
    assert int(second.optimizer.iterations.numpy()) == 0  # a fresh optimizer, as elephas gives each epoch
    assert all(not np.any(v.numpy()) for v in second.optimizer.variables if "momentum" in v.path or "velocity" in v.path)
    assert lr_at(second.optimizer, 0) == pytest.approx(lr_at(master.optimizer, 12))  # the run's schedule, at step 12
    assert ew.cache_info() == {"models": 1, "builds": 1, "uses": 2}
    other = compile_model(build("tiny", residual_channels=8).training_model(), TrainConfig(preset="tiny"))
    third = ew.worker_model(other.to_json(), ew.shifted_optimizer_config(other.optimizer, 0), other.loss, [],
                            custom_objects())
    assert third is not first and ew.cache_info()["models"] == 1  # a new model replaces the old one


def test_a_constant_learning_rate_ships_unchanged():
    config = ew.shifted_optimizer_config(keras.optimizers.Adam(learning_rate=0.01), 50)
    assert config["config"]["learning_rate"] == pytest.approx(0.01)


def test_a_mixed_precision_master_ships_a_loss_scaled_optimizer_whose_schedule_is_shifted():
    master = compiled_master(precision="float16")
    config = ew.shifted_optimizer_config(master.optimizer, 7)
    model = ew.worker_model(master.to_json(), config, master.loss, [], {**custom_objects(),
                            type(master.optimizer.inner_optimizer._learning_rate).__name__:
                            type(master.optimizer.inner_optimizer._learning_rate)})
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert lr_at(model.optimizer, 0) == pytest.approx(lr_at(master.optimizer, 7))
    assert model.layers[-1].dtype_policy.name == "float32" and model.layers[3].dtype_policy.name == "mixed_float16"


def test_a_bfloat16_master_ships_a_bfloat16_worker_model_with_float32_logits_and_no_loss_scale():
    master = compiled_master(precision="bfloat16")
    config = ew.shifted_optimizer_config(master.optimizer, 7)
    model = ew.worker_model(master.to_json(), config, master.loss, [], {**custom_objects(),
                            type(master.optimizer._learning_rate).__name__: type(master.optimizer._learning_rate)})
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert lr_at(model.optimizer, 0) == pytest.approx(lr_at(master.optimizer, 7))
    assert model.layers[-1].dtype_policy.name == "float32" and model.layers[3].dtype_policy.name == "mixed_bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)
    x = np.random.default_rng(0).integers(0, 256, (4, 200)).astype(np.int32)
    y = np.zeros((4, model.compute_output_shape(x.shape)[1]), np.int32)
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert all(w.dtype == np.float32 for w in model.get_weights())
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
