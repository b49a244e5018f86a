"""The memorisation embedding's pure parts: level invariance, flat patches, the query offsets, the whitened
projection, the spec's comparison and the coloured-noise controls, against direct computations."""
from __future__ import annotations

import numpy as np
import pytest

from waveforms.evaluate.controls import coloured_noise, signal_controls
from waveforms.evaluate.embed import EmbeddingSpec, Projection, patch_features, second_starts, window_starts

SR = 16000
SPEC = EmbeddingSpec(sample_rate=SR)


def _music_like(n: int, seed: int = 0) -> np.ndarray:
    """Notes of a random melody with decaying envelopes over a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.01 * rng.normal(size=n)
    for start in np.arange(0, n / SR, 0.125):
        f = 110 * 2 ** (rng.integers(0, 36) / 12)
        env = np.where(t >= start, np.exp(-(t - start) * 8), 0.0)
        x += 0.2 * env * np.sin(2 * np.pi * f * (t - start))
    return x / np.abs(x).max() * 0.8


def test_patch_shape_and_level_invariance():
    x = _music_like(3 * SR)
    win = np.stack([x[:SR], x[SR:2 * SR]])
    f = patch_features(win, SPEC)
    assert f.shape == (2, SPEC.cells * SPEC.n_mels) == (2, 14 * 64)
    assert np.allclose(f.reshape(2, -1).mean(axis=1), 0, atol=1e-4) and np.allclose(f.std(axis=1), 1, atol=1e-3)
    quieter = patch_features(win * 10 ** (-6 / 20), SPEC)  # 6 dB quieter: the same patch
    assert np.abs(quieter - f).max() < 1e-3


def test_flat_patches_embed_as_zero_and_match_nothing():
    flat = np.stack([np.zeros(SR), np.full(SR, 0.3)])
    assert not patch_features(flat, SPEC).any()
    rng = np.random.default_rng(0)
    proj = Projection.fit(rng.normal(size=(500, 20)), 8)
    out = proj(np.vstack([np.zeros(20), rng.normal(size=20)]))
    assert not out[0].any() and np.linalg.norm(out[1]) == pytest.approx(1.0, abs=1e-5)


def test_projection_whitens_its_training_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 6)) * np.array([10.0, 5.0, 2.0, 1.0, 0.5, 0.1]) + 3.0
    proj = Projection.fit(x, 3)
    y = (x - proj.mean) @ proj.components.T
    assert np.allclose(np.cov(y.T), np.eye(3), atol=1e-6)
    expected = np.diag(1 / x[:, :3].std(axis=0, ddof=1)) @ np.eye(3, 6)  # the top axes, over their spread
    assert np.allclose(np.abs(proj.components), expected, atol=0.01 * expected.max())


@pytest.mark.parametrize("n_seconds", [2, 5])
@pytest.mark.parametrize("offset_ms", [0, 7, 130, 249, 251, 499])
def test_some_query_start_of_every_second_lies_near_the_grid(n_seconds, offset_ms):
    """A clip cut at ``offset_ms`` past a grid point of its source: each second has a start within half a
    query step of a grid point, wholly inside the clip."""
    n = n_seconds * SR
    groups = second_starts(n, SPEC)
    assert len(groups) == n_seconds
    step = SPEC.query_step_s * SR
    for k, g in enumerate(groups):
        assert np.all(g >= 0) and np.all(g + SPEC.window <= n)
        source = g + offset_ms * SR // 1000
        assert np.min(np.abs((source + SPEC.hop / 2) % SPEC.hop - SPEC.hop / 2)) <= step / 2
        assert np.all(np.abs(g - k * SR) <= SPEC.hop)


def test_window_grid():
    assert window_starts(SR - 1, SPEC).tolist() == []
    assert window_starts(3 * SR, SPEC).tolist() == [0, 8000, 16000, 24000, 32000]


def test_spec_round_trip_and_differences():
    d = SPEC.to_dict()
    assert EmbeddingSpec.from_dict({**d, "unknown": 1}) == SPEC
    other = EmbeddingSpec(sample_rate=SR, hop_s=0.25, dims=32)
    assert SPEC.differences(other) == ["hop_s", "dims"]
    assert d["method"] == "mel-patch" and d["version"] == 2


@pytest.mark.parametrize("kind,slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_coloured_noise_has_its_spectral_slope(kind, slope):
    x = coloured_noise(kind, 2 ** 18, np.random.default_rng(2))
    f = np.fft.rfftfreq(len(x))[1:]
    p = np.abs(np.fft.rfft(x))[1:] ** 2
    keep = (f > 1e-3) & (f < 0.4)
    fit = np.polyfit(np.log10(f[keep]), np.log10(p[keep]), 1)[0]
    assert fit == pytest.approx(slope, abs=0.1)
    assert x.std() == pytest.approx(0.25, rel=1e-6)


def test_signal_controls_cover_the_documented_kinds():
    c = signal_controls(SR, 2.0)
    assert set(c) == {"white", "pink", "brown", "silence", "sweep", "tone", "chord"}
    assert all(len(v) == 2 * SR and np.abs(v).max() <= 1.0 for v in c.values())
    assert not c["silence"].any()
