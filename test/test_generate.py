"""Fast cached generation against the full Keras model and a naive generator."""
import json
import re
import wave

import numpy as np
import pytest

from helpers.naive import naive_generate
from waveforms.audio import mulaw
from waveforms.model import build
from waveforms.model import sampling as gen
from waveforms.model.fastgen import FastWeights, Sampler, sample_code
from waveforms.model.presets import PRESETS
from waveforms.runtime.errors import UserError


def randomised(wavenet, seed=0, scale=0.08):
    rng = np.random.default_rng(seed)
    model = wavenet.keras_model
    model.set_weights([rng.normal(0, scale, w.shape).astype("float32") for w in model.get_weights()])
    return wavenet


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("conditioned", [False, True])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_fast_probabilities_equal_full_model(preset, conditioned):
    w = randomised(build(preset, num_genres=4 if conditioned else 0))
    streams = 2 if preset in ("default", "large") else 9  # 9 streams also exercise the blocked kernel
    codes = np.random.default_rng(1).integers(0, 256, (streams, 400))
    genres = np.arange(streams) % 4
    inputs = [codes, genres] if conditioned else codes
    full = softmax(np.asarray(w.keras_model(inputs, training=False), dtype=np.float64))
    sampler = Sampler(FastWeights.from_keras(w.keras_model, w.config), streams, genres if conditioned else None)
    fast = softmax(sampler.feed(codes, record=True).astype(np.float64))
    np.testing.assert_allclose(fast, full, atol=2e-5, rtol=1e-3)


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_greedy_matches_naive_generator(preset):
    w = randomised(build(preset), scale=0.3)
    prime = np.random.default_rng(2).integers(0, 256, 50)
    n = 300 if preset == "tiny" else 120
    fast = gen.generate(w, n, prime=prime, temperature=0)
    naive = naive_generate(w, n, prime=prime, temperature=0)
    assert fast.shape == (1, n) and fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, naive)
    assert len(np.unique(fast)) > 3  # not a constant sequence: the comparison means something


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (1.0, 0.9), (0.8, 0.5)])
def test_sampling_matches_naive_with_same_seed(temperature, top_p):
    w = randomised(build("tiny"), scale=0.3)
    fast = gen.generate(w, 200, temperature=temperature, top_p=top_p, seed=7, streams=3)
    naive = naive_generate(w, 200, temperature=temperature, top_p=top_p, seed=7, streams=3)
    np.testing.assert_array_equal(fast, naive)
    assert len(np.unique(fast)) > 3


def nucleus(p, top_p):
    """The nucleus distribution, written independently: sort, keep the head reaching top_p, renormalise."""
    order = np.argsort(-p, kind="stable")
    head = order[:np.searchsorted(np.cumsum(p[order]), top_p * p.sum()) + 1]
    q = np.zeros_like(p)
    q[head] = p[head]
    return q / q.sum()


def test_top_p_rule_is_exact():
    p = np.array([0.05, 0.5, 0.02, 0.3, 0.13] + [1e-9] * 251)
    logits = np.log(p).astype(np.float32)
    u = np.random.default_rng(1).random(40000)
    for temperature, top_p in [(1.0, 0.75), (1.0, 0.9), (2.0, 0.9), (0.5, 0.95)]:
        t = np.exp(np.log(p) / temperature)
        want = nucleus(t / t.sum(), top_p)
        draws = np.array([sample_code(logits, temperature, x, top_p) for x in u])
        freq = np.bincount(draws, minlength=256) / len(u)
        assert set(np.flatnonzero(freq)) == set(np.flatnonzero(want)), (temperature, top_p)
        np.testing.assert_allclose(freq, want, atol=0.01)
    assert np.count_nonzero(nucleus(p, 0.75)) == 2  # the expectation itself truncates: {0.5, 0.3}
    # top_p = 1 keeps every code, however improbable
    assert sample_code(logits, 1.0, 0.9999999999, 1.0) == 255
    assert sample_code(logits, 1.0, 0.9999999999, 0.999) == 4


def test_top_p_out_of_range_is_a_clear_error():
    w = build("tiny")
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(UserError, match=f"top_p = {bad:g} is not allowed"):
            gen.generate(w, 10, top_p=bad)


def test_seed_determinism_and_chunking(monkeypatch):
    w = randomised(build("tiny"), scale=0.3)
    a = gen.generate(w, 1000, temperature=1.0, seed=3, streams=2)
    monkeypatch.setattr(gen, "CHUNK", 77)
    b = gen.generate(w, 1000, temperature=1.0, seed=3, streams=2)
    c = gen.generate(w, 1000, temperature=1.0, seed=4, streams=2)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.3
    assert (a[0] != a[1]).mean() > 0.3  # streams are independent


def test_blocked_streams_equal_single_stream():
    w = randomised(build("small"), scale=0.3)
    prime = np.random.default_rng(5).integers(0, 256, 30)
    one = gen.generate(w, 300, prime=prime, temperature=0, streams=1)
    many = gen.generate(w, 300, prime=prime, temperature=0, streams=16)
    assert (many == one).all()


def test_sampling_rule_is_exact():
    logits = np.log(np.array([0.5, 0.3, 0.2] + [1e-9] * 253, dtype=np.float32))
    u = np.random.default_rng(0).random(60000)
    draws = np.array([sample_code(logits, 1.0, x) for x in u])
    freq = np.bincount(draws, minlength=256)[:3] / len(u)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.01)
    # temperature 2 flattens: p ∝ p^(1/2)
    draws = np.array([sample_code(logits, 2.0, x) for x in u[:30000]])
    want = np.sqrt([0.5, 0.3, 0.2]) / np.sqrt([0.5, 0.3, 0.2]).sum()
    np.testing.assert_allclose(np.bincount(draws, minlength=3)[:3] / 30000, want, atol=0.015)
    assert sample_code(logits, 0.0, 0.99) == 0


def test_genre_checks():
    w = build("tiny", num_genres=2)
    w.meta["genres"] = ["rock", "jazz"]
    with pytest.raises(UserError, match=re.escape("this model is conditioned on genre; choose one of ['rock', 'jazz']")):
        gen.generate(w, 10)
    out = gen.generate(w, 10, genre="jazz", temperature=0)
    assert out.shape == (1, 10)
    with pytest.raises(UserError, match=re.escape("unknown genre 'pop'; the model knows ['rock', 'jazz']")):
        gen.generate(w, 10, genre="pop")
    with pytest.raises(UserError, match="this model is not conditioned on genre; drop --genre"):
        gen.generate(build("tiny"), 10, genre="jazz")


def test_trained_tone_model_generates_the_tone():
    """A tiny model trained on a 500 Hz tone at 8 kHz generates audio peaking at 500 Hz."""
    import keras

    keras.utils.set_random_seed(0)
    rate, freq = 8000, 500.0
    w = build("tiny", sample_rate=rate)
    rf, t_len = w.receptive_field, 256
    tone = mulaw.encode(0.6 * np.sin(2 * np.pi * freq * np.arange(rate * 4) / rate))
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(tone) - rf - t_len, 512)
    windows = np.stack([tone[s : s + rf + t_len] for s in starts]).astype(np.int32)
    x, y = windows[:, :-1], windows[:, rf:]
    model = w.training_model()
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit(x, y, batch_size=32, epochs=12, verbose=0)
    assert hist.history["loss"][-1] < 1.5
    w.keras_model.set_weights(model.get_weights())
    out = gen.generate(w, rate, prime=tone[:rf], temperature=0.5, seed=0)[0]
    audio = mulaw.decode(out)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    peak_hz = np.argmax(spectrum[1:]) + 1  # 1 s of audio: bin k is k Hz
    assert abs(peak_hz - freq) <= 5


def test_cli_writes_wavs_and_sidecars(tmp_path):
    from waveforms.cli import main

    w = randomised(build("tiny", sample_rate=8000), scale=0.3)
    w.save(tmp_path / "model")
    out = tmp_path / "gen.wav"
    assert main(["generate", "--model", str(tmp_path / "model"), "--seconds", "0.5", "--output", str(out),
                 "--streams", "2", "--seed", "1", "--save-every", "0.1"]) == 0
    for k in range(2):
        path = tmp_path / f"gen_{k}.wav"
        with wave.open(str(path)) as wav:
            assert wav.getframerate() == 8000 and wav.getsampwidth() == 2 and wav.getnchannels() == 1
            assert wav.getnframes() == 4000
        meta = json.loads((tmp_path / f"gen_{k}.wav.json").read_text())
        assert meta["stream"] == k and meta["settings"]["seed"] == 1
    assert not list(tmp_path.glob("*.part"))
    assert main(["generate", "--model", str(tmp_path / "nope"), "--output", str(out)]) == 1


def test_cli_prime_from_an_audio_file(tmp_path):
    import subprocess

    from waveforms.audio import load_prime
    from waveforms.cli import main

    w = randomised(build("tiny", sample_rate=8000), scale=0.3)
    w.save(tmp_path / "model")
    mp3 = tmp_path / "prime.mp3"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=44100:duration=1", "-ac", "2", str(mp3)], check=True)
    prime = load_prime(str(mp3), w)
    assert abs(len(prime) - 8000) < 80  # resampled to the model's rate like training data
    direct = gen.generate(w, 400, prime=prime, temperature=0)[0]
    out = tmp_path / "p.wav"
    assert main(["generate", "--model", str(tmp_path / "model"), "--seconds", "0.05", "--output", str(out),
                 "--temperature", "0", "--prime", str(mp3)]) == 0
    with wave.open(str(out)) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    expected = np.clip(np.rint(mulaw.decode(direct) * 32767), -32768, 32767).astype("<i2")
    np.testing.assert_array_equal(pcm, expected)
    unprimed = gen.generate(w, 400, temperature=0)[0]
    assert (unprimed != direct).any()
    assert main(["generate", "--model", str(tmp_path / "model"), "--output", str(out), "--prime",
                 str(tmp_path / "missing.mp3")]) == 1


def test_a_prime_is_decoded_with_the_transform_settings_of_the_model_s_dataset(tmp_path):
    """A model trained on a dataset made with rms normalisation and a custom silence threshold
    decodes a prime to exactly the codes the transform writes for that file."""
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers.train import tone_dataset
    from waveforms.audio import AudioSettings, file_to_codes, load_prime
    from waveforms.config import TrainConfig, TransformConfig
    from waveforms.model import load
    from waveforms.train import run
    from waveforms.transform.job import process_partition

    prime_file = tmp_path / "prime.mp3"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=330:sample_rate=44100:duration=2", "-af", "volume=0.5", str(prime_file)],
                   check=True)
    transform = TransformConfig(sample_rate=8000, normalise="rms", target_rms_db=-12.0, silence_threshold_db=-35.0)
    settings = AudioSettings.from_config(transform)
    rows = list(process_partition([{"id": "p", "uri": str(prime_file)}], settings, str(tmp_path / "ds2"), "r", 0, 0))
    row = next(r for r in rows if r["kind"] == "track")
    with open(tmp_path / "ds2" / row["shard"], "rb") as fh:
        fh.seek(row["offset"])
        expected = np.frombuffer(fh.read(row["num_samples"]), np.uint8)

    data = tone_dataset(tmp_path / "ds")  # 8 kHz; its dataset.json says how it was made
    (data / "dataset.json").write_text(json.dumps({"dataset_id": "test-ds", "settings": settings.to_dict()}))
    model_dir = tmp_path / "model"
    assert run(TrainConfig(data=str(data), model_dir=str(model_dir), preset="tiny", steps=2, batch_size=2,
                           window=32)) == 0
    wavenet = load(model_dir)
    assert wavenet.meta["transform"]["normalise"] == "rms"
    assert wavenet.meta["transform"]["silence_threshold_db"] == -35.0
    prime = load_prime(str(prime_file), wavenet)
    np.testing.assert_array_equal(prime, expected)
    defaults = file_to_codes(str(prime_file), 8000)  # peak normalisation: other codes
    assert len(defaults) != len(prime) or (defaults != prime).any()
    del wavenet.meta["transform"]  # a model from before model.json held them: the defaults, as before
    np.testing.assert_array_equal(load_prime(str(prime_file), wavenet), defaults)
