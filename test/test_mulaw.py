import numpy as np
import pytest

from waveforms.audio import mulaw


def reference_encode(x, mu=255):
    """Closed form written out independently: F(x) = sgn(x) ln(1 + mu|x|) / ln(1 + mu), then 256 bins."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1, 1)
    f = np.sign(x) * np.log(1 + mu * np.abs(x)) / np.log(1 + mu)
    return np.floor((f + 1) / 2 * mu + 0.5).astype(np.int64)


def test_encode_matches_closed_form():
    x = np.linspace(-1, 1, 20001)
    got = mulaw.encode(x).astype(np.int64)
    want = reference_encode(x)
    # float32 vs float64 and round-half-even can differ by one bin exactly at bin edges
    assert np.abs(got - want).max() <= 1
    assert (got == want).mean() > 0.999
    assert mulaw.encode(np.array([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]


def test_encode_clips_and_is_uint8():
    q = mulaw.encode(np.array([-5.0, 5.0, np.float32(0.5)]))
    assert q.dtype == np.uint8
    assert q[0] == 0 and q[1] == 255


def test_round_trip_error_bound():
    x = np.linspace(-1, 1, 100001).astype(np.float32)
    y = mulaw.decode(mulaw.encode(x))
    # the companded value is off by at most half a step (1/255); the inverse's slope there is
    # ln(256)(1+mu|x|)/mu, up to a factor 256**(1/255) within that half step
    bound = (1.0 / 255) * np.log(256) * (1 + 255 * np.abs(x)) / 255 * 256 ** (1 / 255) + 1e-6
    assert np.all(np.abs(y - x) <= bound)
    assert np.abs(y - x)[np.abs(x) < 0.01].max() < 1e-3  # small signals are kept finely


def test_decode_inverts_every_code():
    q = np.arange(256, dtype=np.uint8)
    assert (mulaw.encode(mulaw.decode(q)) == q).all()


def test_mulaw_encode_rejects_mu_outside_one_byte():
    assert mulaw.encode(np.array([-1.0, 0.0, 1.0]), mu=255).tolist() == [0, 128, 255]
    assert mulaw.encode(np.array([1.0]), mu=1).dtype == np.uint8
    for mu in (0, 256, 1023, -5):
        with pytest.raises(ValueError, match=f"mu must be an integer in 1..255.*got {mu}"):
            mulaw.encode(np.zeros(3), mu=mu)


def test_to_pcm16_is_the_decoded_value_scaled_rounded_and_clipped():
    codes = np.arange(256)
    y = 2.0 * codes / 255 - 1.0  # the closed form of the inverse, in float64
    x = np.sign(y) * ((1 + 255) ** np.abs(y) - 1) / 255
    expected = np.clip(np.round(x * 32767), -32768, 32767)
    got = mulaw.to_pcm16(codes.astype(np.uint8))
    assert got.dtype == np.dtype("<i2")
    assert np.abs(got.astype(np.int64) - expected).max() <= 1  # float32 decode vs float64
    assert (got[0], got[255]) == (-32767, 32767)
    assert np.all(np.diff(got.astype(np.int64)) > 0)
