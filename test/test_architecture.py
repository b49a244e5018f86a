"""The architecture keys of [train]: presets as named sets of them, overrides from TOML and --set, model.json."""
import dataclasses
import json
import wave

import numpy as np
import pytest

from helpers.train import tone_dataset, train_argv
from waveforms import config
from waveforms.cli import main
from waveforms.model import WaveNetConfig, build, load
from waveforms.model.fastgen import FastWeights, Sampler
from waveforms.model.presets import ARCHITECTURE_KEYS, PRESETS, architecture


def test_the_architecture_keys_agree_in_the_model_the_train_table_and_every_preset():
    """The keys are declared in three places; a key added, dropped or renamed in one of them fails here."""
    keys = list(ARCHITECTURE_KEYS)
    assert [f.name for f in dataclasses.fields(WaveNetConfig)][:len(keys)] == keys
    train = {f.name: f for f in dataclasses.fields(config.TrainConfig)}
    names = list(train)
    at = names.index("preset") + 1
    assert names[at:at + len(keys)] == keys
    assert [n for n, f in train.items() if f.metadata["help"].endswith("; 0 = from the preset")] == keys
    assert train["preset"].metadata["choices"] == tuple(PRESETS)
    for key in keys:
        assert getattr(config.TrainConfig(), key) == 0  # 0: the preset's value
        assert train[key].metadata["min"] == 0 and train[key].metadata["max"] >= 8
    assert {k: getattr(WaveNetConfig(), k) for k in keys} == PRESETS["default"]  # the model's defaults
    for name, preset in PRESETS.items():
        assert list(preset) == keys, name  # each preset names every key, in order
        assert dataclasses.asdict(build(name).config) == {**dataclasses.asdict(WaveNetConfig()), **preset}


def test_a_key_overrides_its_presets_value_from_a_file_and_from_set(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\npreset = "default"\nstacks = 3\nskip_channels = 48\n')
    cfg = config.load("train", f, ["stacks=1", "kernel_size=3"])
    keys = architecture(cfg.preset, {k: getattr(cfg, k) for k in ARCHITECTURE_KEYS})
    assert keys == {**PRESETS["default"], "stacks": 1, "kernel_size": 3, "skip_channels": 48}
    wn = WaveNetConfig(**keys)
    assert wn.dilations == [2**i for i in range(10)] and wn.receptive_field == 2 * 1023 + 1 + 1
    with pytest.raises(config.ConfigError, match=r"stacks = 17 is not allowed; allowed: 0\.\.16"):
        config.load("train", sets=["stacks=17"])
    with pytest.raises(config.ConfigError, match=r"residual_channels = -1 is not allowed"):
        config.load("train", sets=["residual_channels=-1"])


def test_a_model_built_from_keys_trains_records_them_and_generates(tmp_path):
    data = tone_dataset(tmp_path / "ds")
    model_dir = tmp_path / "model"
    f = tmp_path / "arch.toml"
    f.write_text("[train]\nstacks = 2\nlayers_per_stack = 3\nresidual_channels = 8\n")
    sets = ["dilation_channels=12", "skip_channels=20", "kernel_size=3"]
    argv = train_argv(data, model_dir, "--steps", "3", "--config", str(f), *(a for s in sets for a in ("--set", s)))
    assert main(argv) == 0
    meta = json.loads((model_dir / "model.json").read_text())
    want = {**PRESETS["tiny"], "stacks": 2, "layers_per_stack": 3, "residual_channels": 8, "dilation_channels": 12,
            "skip_channels": 20, "kernel_size": 3}
    assert {k: meta["config"][k] for k in ARCHITECTURE_KEYS} == want
    assert meta["config"]["dilations"] == [1, 2, 4] * 2
    assert meta["receptive_field"] == 2 * 14 + 1 + 1
    wavenet = load(model_dir)
    weights = {layer.name: [a.shape for a in layer.get_weights()] for layer in wavenet.keras_model.layers}
    assert weights["dilated_5"] == [(3, 8, 24), (24,)] and weights["skip_0"] == [(1, 12, 20), (20,)]

    # the fast generator reads the recorded architecture: its probabilities are the full model's
    codes = np.random.default_rng(0).integers(0, 256, (2, 120))
    full = np.asarray(wavenet.keras_model(codes, training=False), dtype=np.float64)
    fast = Sampler(FastWeights.from_keras(wavenet.keras_model, wavenet.config), 2).feed(codes, record=True)
    soft = lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(soft(fast.astype(np.float64)), soft(full), atol=2e-5, rtol=1e-3)

    out = tmp_path / "gen.wav"
    assert main(["generate", "--model", str(model_dir), "--seconds", "0.1", "--output", str(out), "--seed", "2"]) == 0
    with wave.open(str(out)) as wav:
        assert wav.getframerate() == 8000 and wav.getnframes() == 800
