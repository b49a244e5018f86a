"""WaveNet structure: causality, measured receptive field, the layer spec, artifact round trip."""
import json

import numpy as np
import pytest

from waveforms.config.dataset import SAMPLE_RATE
from waveforms.model import WaveNetConfig, build, load
from waveforms.model.presets import PRESETS
from waveforms.model.spec import read, spec
from waveforms.runtime.errors import UserError


def randomised(wavenet, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    model = wavenet.keras_model
    model.set_weights([rng.normal(0, scale, w.shape).astype("float32") for w in model.get_weights()])
    return wavenet


def logits(wavenet, codes):
    return np.asarray(wavenet.keras_model(codes, training=False))


@pytest.mark.parametrize("conditioned", [False, True])
def test_output_shape_and_shift_contract(conditioned):
    """(batch, time) codes -> (batch, time, 256) logits; output t sees inputs 0..t and nothing later."""
    w = randomised(build("tiny", num_genres=3 if conditioned else 0))
    rng = np.random.default_rng(1)
    n, t = 120, 70
    a = rng.integers(0, 256, (3, n))
    genre = np.array([0, 1, 2])
    run = (lambda codes: logits(w, [codes, genre])) if conditioned else (lambda codes: logits(w, codes))
    la = run(a)
    assert la.shape == (3, n, 256) and la.dtype == np.float32
    for first in (t + 1, n - 1):  # change inputs from ``first`` on: outputs before it stay put
        b = a.copy()
        b[:, first:] = (a[:, first:] + rng.integers(1, 256, (3, n - first))) % 256
        lb = run(b)
        np.testing.assert_allclose(la[:, :first], lb[:, :first], atol=1e-5)
        assert (np.abs(la[:, first] - lb[:, first]).max(axis=-1) > 1e-3).all()  # output ``first`` sees input ``first``
    c = a.copy()
    c[:, t] = (a[:, t] + 128) % 256  # one input changed: outputs t.. move, the ones before do not
    lc = run(c)
    np.testing.assert_allclose(la[:, :t], lc[:, :t], atol=1e-5)
    assert (np.abs(la[:, t] - lc[:, t]).max(axis=-1) > 1e-3).all()
    rf = w.receptive_field  # output t + rf - 1 is the last to see input t
    assert (np.abs(la[:, t + rf - 1] - lc[:, t + rf - 1]).max(axis=-1) > 0).all()
    np.testing.assert_allclose(la[:, t + rf :], lc[:, t + rf :], atol=1e-5)


def test_spec_lists_the_keras_layers_and_weights():
    """Every Keras layer with weights is in the spec with the same shapes, and the spec lists nothing else."""
    for preset in sorted(PRESETS):
        for genres in (0, 4):
            w = build(preset, num_genres=genres)
            sp = spec(w.config)
            keras_side = [(layer.name, tuple(tuple(a.shape) for a in layer.get_weights()))
                          for layer in w.keras_model.layers if layer.get_weights()]
            assert sorted(keras_side) == sorted((x.name, x.shapes) for x in sp.with_weights())
            assert sp.dilations == w.config.dilations
            assert (sp.genre_embedding is not None) == (genres > 0)
    with pytest.raises(ValueError, match="the spec says"):  # a model of another shape is refused, not misread
        read(build("tiny").keras_model, spec(build("small").config).input_conv)


def impulse_weights(wavenet, base_code):
    """Positive constant kernels, zero biases, and a zero embedding for ``base_code``.

    A sequence of ``base_code`` then gives exactly zero activations everywhere, and
    a different code at time 0 spreads strictly positive values to every output it
    can reach: no cancellation, no rounding against large values.
    """
    for layer in wavenet.keras_model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kernel = weights[0]
        fan_in = int(np.prod(kernel.shape[:-1]))
        new = [np.full(kernel.shape, np.sqrt(2.0 / fan_in), "float32")] + [np.zeros_like(w) for w in weights[1:]]
        if layer.name == "causal_in":
            new[0][:, base_code, :] = 0.0
        layer.set_weights(new)
    return wavenet


def measured_receptive_field(wavenet, length):
    """Change the input at time 0 and see which outputs move."""
    impulse_weights(wavenet, base_code=128)
    base = np.full((1, length), 128)
    poked = base.copy()
    poked[0, 0] = 3
    diff = np.abs(logits(wavenet, base) - logits(wavenet, poked)).max(axis=-1)[0]
    moved = np.nonzero(diff > 0)[0]
    assert moved[0] == 0  # output 0 sees input 0 (it predicts sample 1)
    assert np.all(np.diff(moved) == 1)  # a contiguous field
    return int(moved[-1]) + 1


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_receptive_field_formula_matches_impulse(preset):
    w = build(preset)
    cfg = w.config
    formula = (cfg.kernel_size - 1) * sum(cfg.dilations) + (cfg.initial_kernel - 1) + 1
    assert w.receptive_field == formula
    assert measured_receptive_field(w, formula + 64) == formula


def test_really_dilated():
    cfg = build("default").config
    assert cfg.dilations == [2**i for i in range(10)] * 2
    assert build("default").receptive_field == 2048
    assert build("large").receptive_field == 5 * 1023 + 2


def test_config_keys_derive_dilations_and_read_the_older_form():
    cfg = WaveNetConfig(stacks=3, layers_per_stack=5, kernel_size=3)
    assert cfg.dilations == [1, 2, 4, 8, 16] * 3
    assert cfg.receptive_field == 2 * 31 * 3 + 1 + 1
    assert WaveNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    older = {  # model.json's config before stacks and layers_per_stack existed
        "dilations": [1, 2, 4, 8, 16, 32, 64, 128] * 2, "kernel_size": 2, "initial_kernel": 2,
        "residual_channels": 24, "dilation_channels": 24, "skip_channels": 64, "quantization": 256,
        "sample_rate": SAMPLE_RATE, "num_genres": 0, "genre_channels": 16,
    }
    assert WaveNetConfig.from_dict(older) == WaveNetConfig(**PRESETS["small"])
    assert "quantization" not in cfg.to_dict() and cfg.to_dict()["mu"] == 255 and cfg.classes == 256
    assert WaveNetConfig.from_dict({"quantization": 128}).mu == 127  # model.json before mu named the codes
    for bad in ({**older, "stacks": 3}, {**older, "dilations": [1, 2, 4, 1, 2]}, {**older, "dilations": []},
                {"layers": 3}, {"stacks": 0}, {"quantization": 256, "mu": 127}):
        with pytest.raises(UserError):
            WaveNetConfig.from_dict(bad)


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("conditioned", [False, True])
def test_training_model_gives_the_full_models_last_outputs(preset, conditioned):
    """Unpadded training model on RF - 1 + T codes == the causal model's outputs RF - 1 .. RF - 2 + T."""
    w = randomised(build(preset, num_genres=3 if conditioned else 0), seed=4)
    t = w.training_model()
    rf = w.receptive_field
    rng = np.random.default_rng(2)
    for n_out in (1, 37):
        codes = rng.integers(0, 256, (3, rf - 1 + n_out))
        inputs = [codes, np.array([2, 0, 1])] if conditioned else codes
        full, cropped = logits(w, inputs), np.asarray(t(inputs, training=False))
        assert cropped.shape == (3, n_out, 256)
        scale = np.abs(full).max()
        np.testing.assert_allclose(cropped, full[:, rf - 1 :], atol=1e-5 * scale, rtol=0)  # float32 sums in another order


@pytest.mark.parametrize("conditioned", [False, True])
def test_training_model_has_the_full_models_weights_in_order(conditioned, tmp_path):
    """Same names, shapes and order: weights and weight files move between the two models."""
    w = randomised(build("small", num_genres=3 if conditioned else 0))
    t = w.training_model()
    named = lambda model: [(layer.name, [tuple(a.shape) for a in layer.get_weights()])  # noqa: E731
                           for layer in model.layers if layer.get_weights()]
    assert named(t) == named(w.keras_model)
    for a, b in zip(t.get_weights(), w.keras_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a training model's weight file (as checkpoints store them) loads into a fresh one
    t.save_weights(tmp_path / "w.weights.h5")
    fresh = build("small", num_genres=3 if conditioned else 0).training_model()
    fresh.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(fresh.get_weights(), w.keras_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_save_load_round_trip(tmp_path):
    w = randomised(build("tiny", num_genres=3))
    w.meta.update(dataset_id="abc", genres=["a", "b", "c"])
    w.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["receptive_field"] == w.receptive_field
    assert meta["sample_rate"] == SAMPLE_RATE and meta["mu"] == 255 and meta["dataset_id"] == "abc"
    assert meta["config"]["dilations"] == [1, 2, 4, 8]
    assert "waveforms_version" in meta and "git_commit" in meta
    w2 = load(tmp_path / "m")
    codes = np.random.default_rng(3).integers(0, 256, (2, 40))
    genre = np.array([0, 2])
    np.testing.assert_allclose(logits(w2, [codes, genre]), logits(w, [codes, genre]), atol=1e-6)
    assert w2.genres == ["a", "b", "c"]
