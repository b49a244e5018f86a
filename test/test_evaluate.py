"""The evaluate stage: bits per sample against a direct numpy computation, the Fréchet mel distance
against its closed form and its yardsticks on real music, and evaluation.json end to end."""
from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest

from waveforms.evaluate.frechet import GaussianStats, frechet_distance
from waveforms.evaluate.likelihood import region_windows, val_nll, val_windows, windows_nll
from waveforms.evaluate.report import clip_stats, heldout_stats, noise_codes
from waveforms.dataset import Dataset, Region

SR = 16000


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # a rotation leaves the distance unchanged
    c1, c2 = q @ np.diag(s1 ** 2) @ q.T, q @ np.diag(s2 ** 2) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert frechet_distance(q @ mu1, c1, q @ mu2, c2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)


def test_gaussian_stats_streamed_equal_numpy():
    x = np.random.default_rng(1).normal(size=(500, 4))
    stats = GaussianStats(4).update(x[:123]).update(x[123:])
    assert np.allclose(stats.mean, x.mean(axis=0)) and np.allclose(stats.cov, np.cov(x.T))


def test_fd_mel_orders_noise_music_and_halves(music_dataset):
    ds = Dataset.open(str(music_dataset))
    heldout, even, odd = heldout_stats(ds, 16000)
    train = {t["id"]: ds.read_track(t) for t in ds.split("train")[:3]}
    music = clip_stats(train, SR, 255)
    noise = clip_stats({"noise": noise_codes(20, SR, 0)}, SR, 255)
    fd_noise, fd_music, fd_halves = (frechet_distance(a.mean, a.cov, heldout.mean, heldout.cov) for a in (noise, music, even))
    fd_halves = frechet_distance(even.mean, even.cov, odd.mean, odd.cov)
    assert fd_noise > fd_music > fd_halves > 0
    assert heldout.n == even.n + odd.n


def _direct_nll(model, codes: np.ndarray, window: int, rf: int) -> tuple[float, int]:
    """Sum of -log softmax(logits)[next code] over each chunk's targets from chunk start + rf."""
    total, count, n = 0.0, 0, len(codes)
    for c in range(0, n, window):
        if c + rf >= min(c + window, n):
            continue
        s = min(c, n - window)
        logits = np.asarray(model(codes[None, s:s + window - 1].astype(np.int32)), dtype=np.float64)[0]
        logp = logits - logits.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        for p in range(c + rf, min(c + window, n)):
            total -= logp[p - s - 1, codes[p]]
            count += 1
    return total, count


def test_val_nll_equals_a_direct_computation(music_dataset):
    from waveforms.model import build

    wavenet = build("tiny", sample_rate=SR)
    rng = np.random.default_rng(0)
    wavenet.keras_model.set_weights([rng.normal(0, 0.3, w.shape) for w in wavenet.keras_model.get_weights()])
    ds = Dataset.open(str(music_dataset))
    (val,) = ds.split("val")
    window = 3000
    result = val_nll(wavenet, ds, window, batch_size=8)
    total, count = _direct_nll(wavenet.keras_model, ds.read_track(val), window, wavenet.receptive_field)
    assert result["val_samples"] == count == int(val["num_samples"]) - math.ceil(int(val["num_samples"]) / window) * wavenet.receptive_field
    assert result["val_windows"] == len(val_windows(ds, window, wavenet.receptive_field)) == math.ceil(int(val["num_samples"]) / window)
    assert result["val_nats"] == pytest.approx(total / count, rel=1e-5)
    assert result["val_split_bits_per_sample"] == pytest.approx(total / count / math.log(2), rel=1e-5)


def test_windows_nll_over_a_training_region_equals_a_direct_computation(music_dataset):
    from waveforms.model import build

    wavenet = build("tiny", sample_rate=SR)
    rng = np.random.default_rng(1)
    wavenet.keras_model.set_weights([rng.normal(0, 0.3, w.shape) for w in wavenet.keras_model.get_weights()])
    ds = Dataset.open(str(music_dataset))
    track = ds.split("train")[0]
    window, n = 2500, int(track["num_samples"])
    wins = region_windows([Region(track, 0, n)], window, wavenet.receptive_field)
    total, count = windows_nll(wavenet, ds, wins, batch_size=4)
    want_total, want_count = _direct_nll(wavenet.keras_model, ds.read_track(track), window, wavenet.receptive_field)
    assert len(wins) == math.ceil(n / window) and count == want_count
    assert total == pytest.approx(want_total, rel=1e-5)


def test_evaluate_cli_writes_json_and_png(music_dataset, spark_session, tmp_path, capsys):
    from waveforms.cli import main
    from waveforms.model import build

    data = tmp_path / "dataset"  # a copy without the index other tests may have built in the session's dataset
    shutil.copytree(music_dataset, data, ignore=shutil.ignore_patterns("index"))
    assert main(["index", "--data", str(data), "--master", "local[2]"]) == 0
    wavenet = build("tiny", sample_rate=SR)
    wavenet.meta.update({"dataset": str(data), "dataset_id": Dataset.open(str(data)).dataset_id})
    model_dir = tmp_path / "model"
    wavenet.save(str(model_dir))
    assert main(["evaluate", "--model", str(model_dir), "--clips", "2", "--seconds", "2",
                 "--output", str(tmp_path / "ev")]) == 0
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert (tmp_path / "ev" / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    err = capsys.readouterr().err.splitlines()  # not a terminal: plain progress lines
    windows = [line for line in err if line.startswith("index: embedding: ")]
    assert len(windows) == 1 and re.fullmatch(r"index: embedding: (\d+)/\1 windows", windows[0]), windows
    assert [line for line in err if line.startswith("evaluate: ")] == [
        "evaluate: 0/4 phases · validation bits per sample", "evaluate: 1/4 phases · clips",
        "evaluate: 2/4 phases · Fréchet mel distance", "evaluate: 3/4 phases · memorisation",
        "evaluate: 4/4 phases · done"]
    assert set(result) == {"format", "format_version", "model_dir", "dataset", "dataset_id", "val_nats",
                           "val_split_bits_per_sample", "val_windows", "val_samples", "fd_mel", "memorisation", "clips",
                           "created"}
    assert result["format"] == "waveforms-evaluation" and result["format_version"] == 2
    assert result["clips"] == ["evaluation_0.wav", "evaluation_1.wav"]
    assert set(result["fd_mel"]) == {"generated", "halves", "noise", "frames_generated", "frames_heldout"}
    assert result["fd_mel"]["frames_generated"] == 2 * 2 * 59
    mem = result["memorisation"]
    assert mem["threshold_percentile"] == 99.9 and len(mem["seconds"]) == 4
    assert set(mem["seconds"][0]) == {"clip", "second", "track_id", "title", "artist", "licence", "offset_s",
                                      "similarity", "match"}
    # an untrained model's output is no copy of any training second
    assert mem["match_fraction"] == 0.0
    # generate --evaluate appends the same check to the sidecar
    out = tmp_path / "gen.wav"
    assert main(["generate", "--model", str(model_dir), "--seconds", "2", "--output", str(out), "--evaluate"]) == 0
    sidecar = json.loads(out.with_name("gen.wav.json").read_text())
    assert [s["second"] for s in sidecar["memorisation"]["seconds"]] == [0, 1]
