"""The mel maths in closed form: HTK mel scale, triangle edges and area, log-mel against a direct DFT."""
import numpy as np
import pytest

from waveforms.evaluate.mel import POWER_FLOOR, MelParams, filterbank, hz_to_mel, log_mel, mel_to_hz


def htk_mel(f):
    """The HTK mel scale, written out: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def band_edges(sample_rate, n_mels, fmin=30.0, fmax=None):
    """n_mels + 2 frequencies equally spaced in mel from fmin to fmax, found by bisection on htk_mel."""
    fmax = sample_rate / 2 if fmax is None else fmax
    targets = np.linspace(htk_mel(fmin), htk_mel(fmax), n_mels + 2)
    lo, hi = np.zeros_like(targets), np.full_like(targets, 1e6)
    for _ in range(200):  # invert the scale without using its inverse formula
        mid = (lo + hi) / 2
        below = htk_mel(mid) < targets
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def test_mel_scale_is_htk_and_its_inverse_undoes_it():
    f = np.array([0.0, 30.0, 700.0, 1000.0, 4000.0, 8000.0])
    np.testing.assert_allclose(hz_to_mel(f), htk_mel(f), rtol=1e-12)
    assert hz_to_mel(700.0) == pytest.approx(2595.0 * np.log10(2.0))
    assert hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.05)  # the scale's anchor: 1 kHz is about 1000 mel
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, atol=1e-9)


@pytest.mark.parametrize("sample_rate,n_fft,n_mels", [(16000, 1024, 64), (8000, 512, 40), (22050, 2048, 80)])
def test_each_band_is_a_triangle_on_mel_spaced_edges_scaled_to_unit_area(sample_rate, n_fft, n_mels):
    """Row m is 2 / (hi - lo) times the hat that rises from edge m to edge m+1 and falls to edge m+2 (in Hz)."""
    fb = filterbank(sample_rate, n_fft, n_mels)
    assert fb.shape == (n_mels, n_fft // 2 + 1) and fb.dtype == np.float32
    edges = band_edges(sample_rate, n_mels)
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft  # the rfft bin frequencies
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        hat = np.interp(freqs, [lo, mid, hi], [0.0, 1.0, 0.0], left=0.0, right=0.0)
        np.testing.assert_allclose(fb[m], hat * 2.0 / (hi - lo), rtol=1e-5, atol=1e-7)
        inside = (freqs > lo + 1e-6) & (freqs < hi - 1e-6)
        assert (fb[m][inside] > 0).all() and (fb[m][(freqs < lo - 1e-6) | (freqs > hi + 1e-6)] == 0).all()


def test_band_areas_are_one_hertz_weighted():
    """Summed over bins of width sample_rate / n_fft, each band integrates to 1 (up to the sampling of its edges)."""
    sample_rate, n_fft, n_mels = 16000, 2**16, 64  # fine bins: every band spans more than 100 of them
    fb = filterbank(sample_rate, n_fft, n_mels).astype(np.float64)
    area = fb.sum(axis=1) * sample_rate / n_fft
    np.testing.assert_allclose(area, 1.0, atol=2e-3)
    coarse = filterbank(sample_rate, 1024, n_mels).astype(np.float64)  # the evaluation's own resolution
    edges = band_edges(sample_rate, n_mels)
    wide = edges[2:] - edges[:-2] > 20 * sample_rate / 1024  # bands over 20 bins wide
    np.testing.assert_allclose((coarse.sum(axis=1) * sample_rate / 1024)[wide], 1.0, atol=0.02)
    assert wide.sum() >= 16  # the check covers the upper bands, 19 of 64 here


def direct_log_mel(x, sample_rate, n_mels=64):
    """Frames of n_fft samples every n_fft / 4, periodic Hann, power |DFT|^2 / n_fft by a DFT matrix, then dB."""
    n_fft = 2 ** int(round(np.log2(0.064 * sample_rate)))
    hop = n_fft // 4
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    k = np.arange(n_fft // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(n, k) / n_fft)
    starts = range(0, len(x) - n_fft + 1, hop)
    power = np.array([np.abs((x[s : s + n_fft] * window) @ dft) ** 2 / n_fft for s in starts])
    return 10.0 * np.log10(np.maximum(power @ filterbank(sample_rate, n_fft, n_mels).astype(np.float64).T, 1e-10))


def test_log_mel_equals_the_direct_formula():
    sample_rate = 8000
    rng = np.random.default_rng(0)
    t = np.arange(3000) / sample_rate
    x = (0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    got = log_mel(x, MelParams(sample_rate))
    want = direct_log_mel(x.astype(np.float64), sample_rate)
    assert got.shape == want.shape == (1 + (3000 - 512) // 128, 64)
    np.testing.assert_allclose(got, want, atol=1e-3)  # dB; float32 FFT against a float64 DFT
    loudest = got.mean(axis=0).argmax()
    edges = band_edges(sample_rate, 64)
    assert edges[loudest] < 440.0 < edges[loudest + 2]  # the tone lands in a band whose triangle holds 440 Hz


def test_log_mel_of_silence_is_the_floor_and_short_input_has_no_frames():
    params = MelParams(16000)
    silent = log_mel(np.zeros(params.n_fft + 3 * params.hop, np.float32), params)
    assert silent.shape == (4, 64)
    np.testing.assert_allclose(silent, 10.0 * np.log10(POWER_FLOOR), atol=1e-4)  # -100 dB, in float32
    assert log_mel(np.zeros(params.n_fft - 1, np.float32), params).shape == (0, 64)
    assert log_mel(np.zeros((3, params.n_fft), np.float32), params).shape == (3, 1, 64)
