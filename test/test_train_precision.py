"""precision = float32 | bfloat16 | float16 | auto: compute types, float32 logits, loss, weights and artifact."""
import json

import numpy as np
import pytest

from helpers.train import tone_dataset
from waveforms import config
from waveforms.config import TrainConfig
from waveforms.model import build, checkpoint, load
from waveforms.model.sampling import generate
from waveforms.train import run  # noqa: E402
from waveforms.train.common import compile_model  # noqa: E402
from waveforms.train.precision import PrecisionError, cpu_flags, native_bfloat16, resolve

EPYC = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SKYLAKE = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx512f amx_tile amx_int8 amx_bf16\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sha2 crc32 atomics sve i8mm bf16 dgh rng\nCPU part\t: 0xd40\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid\n"


def test_cpu_flags_reads_x86_flags_and_arm_features():
    assert cpu_flags(EPYC) == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
    assert "bf16" in cpu_flags(GRAVITON3) and "0xd40" not in cpu_flags(GRAVITON3)
    assert cpu_flags("") == set()


@pytest.mark.parametrize("cpuinfo,gpus,want", [
    (EPYC, [], "bfloat16"),  # avx512_bf16
    (SAPPHIRE, [], "bfloat16"),  # amx_bf16
    (GRAVITON3, [], "bfloat16"),  # Arm bf16
    (SKYLAKE, [], "float32"),  # avx512 without bf16
    (GRAVITON2, [], "float32"),
    ("", [], "float32"),  # no /proc/cpuinfo
    (SKYLAKE, [(8, 0)], "bfloat16"),  # A100: the GPU decides, not the host CPU
    (SKYLAKE, [(9, 0), (8, 6)], "bfloat16"),
    (EPYC, [(7, 5)], "float32"),  # T4: no bfloat16 tensor cores
    (EPYC, [(8, 0), (7, 0)], "float32"),  # every GPU must have them
])
def test_auto_picks_bfloat16_only_where_the_hardware_computes_it(cpuinfo, gpus, want):
    assert native_bfloat16(cpuinfo, gpus) is (want == "bfloat16")
    assert resolve("auto", cpuinfo, gpus) == want


def test_an_explicit_precision_is_kept_and_an_unknown_one_refused():
    for p in ("float32", "bfloat16", "float16"):
        assert resolve(p, SKYLAKE) == p
    with pytest.raises(PrecisionError, match="precision = 'int8' is not known; one of float32, bfloat16"):
        resolve("int8", EPYC)


def test_the_old_mixed_precision_key_still_loads_as_float16(tmp_path):
    old = tmp_path / "old.toml"
    old.write_text("[train]\nmixed_precision = true\n")
    assert config.load("train", old).precision == "float16"
    assert config.load("train", sets=["mixed_precision=false"]).precision == "float32"  # today's default stays
    assert config.load("train", sets=["mixed_precision=false", "precision=bfloat16"]).precision == "bfloat16"
    with pytest.raises(config.ConfigError, match="mixed_precision: cannot read 'maybe' as bool"):
        config.load("train", sets=["mixed_precision=maybe"])
    with pytest.raises(config.ConfigError, match="precision = 'half' is not allowed; one of float32, bfloat16"):
        config.load("train", sets=["precision=half"])
    saved = config.to_json(TrainConfig(), "train").replace('"precision": "float32"', '"mixed_precision": true')
    assert config.from_json(saved).precision == "float16"  # a config.json written before the rename


def _policies(model):
    """The compute policy of each weighted layer, and the name of the logits layer (the last weighted one)."""
    weighted = [layer for layer in model.layers if layer.weights]
    return {layer.name: layer.dtype_policy.name for layer in weighted}, weighted[-1].name


@pytest.mark.parametrize("precision,policy,atol", [("bfloat16", "mixed_bfloat16", 0.15), ("float16", "mixed_float16", 0.05)])
def test_the_training_model_computes_in_the_precision_with_float32_logits_and_the_same_outputs(precision, policy, atol):
    import keras

    full = build("tiny")
    plain = compile_model(full.training_model(), TrainConfig(preset="tiny"))
    mixed = compile_model(full.training_model(), TrainConfig(preset="tiny", precision=precision))
    policies, logits = _policies(mixed)
    assert policies.pop(logits) == "float32"
    assert set(policies.values()) == {policy}
    assert mixed.layers[-1].dtype_policy.name == "float32"  # the crop after the logits layer
    assert all(w.dtype == "float32" for w in mixed.weights)
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer) is (precision == "float16")
    x = np.random.default_rng(0).integers(0, 256, (2, full.receptive_field + 40)).astype(np.int32)
    low, high = np.asarray(mixed(x)), np.asarray(plain(x))
    assert low.dtype == np.float32
    # the same weights; bfloat16 keeps 8 significant bits (relative rounding 2^-9), float16 11
    np.testing.assert_allclose(low, high, atol=atol)
    assert not np.array_equal(low, high)  # it did compute in the lower precision


def _losses(model_dir):
    rows = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return np.array([r["loss"] for r in rows]), np.array([r["val_loss"] for r in rows if "val_loss" in r])


def test_bfloat16_follows_the_float32_curve_from_the_same_seed_closer_than_another_seed(tmp_path):
    data = tone_dataset(tmp_path / "ds", n_tracks=6, seconds=2.0)
    common = dict(data=str(data), preset="tiny", steps=80, batch_size=4, window=64, learning_rate=0.01,
                  warmup_steps=5, log_every=10, val_every=20, checkpoint_every=10**6, preview_every=-1)
    runs = {}
    for name, seed, precision in (("f32", 0, "float32"), ("bf16", 0, "bfloat16"), ("f32_seed1", 1, "float32")):
        assert run(TrainConfig(**common, model_dir=str(tmp_path / name), seed=seed, precision=precision)) == 0
        runs[name] = _losses(tmp_path / name)
    (f32, f32_val), (bf16, bf16_val), (other, other_val) = runs["f32"], runs["bf16"], runs["f32_seed1"]
    assert bf16[-1] < bf16[0] - 1.0  # it learns
    # the tolerance is the run-to-run noise: the float32 curves of two seeds, row by row (measured here:
    # training loss max 0.004 against 0.10, mean 0.0014 against 0.019; validation max 0.002 against 0.09)
    assert np.max(np.abs(bf16 - f32)) < np.max(np.abs(other - f32))
    assert np.mean(np.abs(bf16 - f32)) < 0.5 * np.mean(np.abs(other - f32))
    assert np.max(np.abs(bf16_val - f32_val)) < np.max(np.abs(other_val - f32_val))


def test_a_bfloat16_run_saves_a_float32_model_that_loads_in_float32_and_resumes_in_another_precision(tmp_path):
    data = tone_dataset(tmp_path / "ds")
    out = tmp_path / "model"
    common = dict(data=str(data), model_dir=str(out), preset="tiny", batch_size=2, window=32, checkpoint_every=4)
    assert run(TrainConfig(**common, steps=4, precision="bfloat16")) == 0
    wavenet = load(out)
    assert all(w.dtype == "float32" for w in wavenet.keras_model.weights)
    assert {layer.dtype_policy.name for layer in wavenet.keras_model.layers} == {"float32"}
    assert checkpoint.load_state(out)["precision"] == "bfloat16"
    codes = generate(wavenet, 50, seed=0)
    assert codes.shape == (1, 50) and codes.dtype == np.uint8
    # the float32 checkpoint of the bfloat16 run resumes in float32, and that one in bfloat16
    assert run(TrainConfig(**common, steps=8, precision="float32")) == 0
    assert run(TrainConfig(**common, steps=12, precision="bfloat16")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows][-1] == 12 and all(np.isfinite(r["loss"]) for r in rows)
    assert all(w.dtype == "float32" for w in load(out).keras_model.weights)
    # float16's optimizer carries a loss scale: that move is refused by name
    with pytest.raises(checkpoint.CheckpointError, match="written in bfloat16, whose optimizer state does not move "
                                                         "to float16"):
        run(TrainConfig(**common, steps=16, precision="float16"))
    assert checkpoint.load_state(out)["step"] == 12
