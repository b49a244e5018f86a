"""mixed_precision = true on a CPU: float16 compute, float32 logits, loss and weights; the artifact is float32."""
import json

import numpy as np

from helpers.train import tone_dataset
from waveforms.config import TrainConfig
from waveforms.sampling import generate
from waveforms.model import build, load
from waveforms.train import run  # noqa: E402
from waveforms.train.common import compile_model  # noqa: E402


def test_the_mixed_training_model_computes_in_float16_with_float32_logits_and_the_same_outputs():
    import keras

    full = build("tiny")
    plain = compile_model(full.training_model(), TrainConfig(preset="tiny"))
    mixed = compile_model(full.training_model(), TrainConfig(preset="tiny", mixed_precision=True))
    policies = {layer.name: layer.dtype_policy.name for layer in mixed.layers if layer.weights}
    logits = mixed.outputs[0]._keras_history[0]
    while not logits.weights:  # the crop after the logits layer
        assert logits.dtype_policy.name == "float32"
        logits = logits._inbound_nodes[0].input_tensors[0]._keras_history[0]
    assert policies.pop(logits.name) == "float32"
    assert set(policies.values()) == {"mixed_float16"}
    assert all(w.dtype == "float32" for w in mixed.weights)
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    x = np.random.default_rng(0).integers(0, 256, (2, full.receptive_field + 40)).astype(np.int32)
    out16, out32 = np.asarray(mixed(x)), np.asarray(plain(x))
    assert out16.dtype == np.float32
    np.testing.assert_allclose(out16, out32, atol=0.05)  # float16 rounding, the same weights


def test_a_mixed_precision_run_saves_a_float32_model_that_loads_and_generates(tmp_path):
    data = tone_dataset(tmp_path / "ds")
    out = tmp_path / "model"
    assert run(TrainConfig(data=str(data), model_dir=str(out), preset="tiny", steps=4, batch_size=2, window=32,
                           mixed_precision=True)) == 0
    wavenet = load(out)
    assert all(w.dtype == "float32" for w in wavenet.keras_model.weights)
    assert {layer.dtype_policy.name for layer in wavenet.keras_model.layers} == {"float32"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in rows)
    codes = generate(wavenet, 50, seed=0)
    assert codes.shape == (1, 50) and codes.dtype == np.uint8
