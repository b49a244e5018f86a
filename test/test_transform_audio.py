"""Per-track processing with real ffmpeg: rates, channels, codes, trimming, normalisation, bad files."""
import io
import subprocess

import numpy as np
import pytest

from waveforms.audio import AudioError, AudioSettings, decode_to, file_to_codes, mulaw
from waveforms.config.dataset import SAMPLE_RATE as SR


def ffmpeg(out, *source, codec=("-b:a", "128k")):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *source, *codec, str(out)], check=True)
    return out


def sine(out, freq=440.0, seconds=2.0, rate=44100, channels=1, volume=1.0):
    src = f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}"
    return ffmpeg(out, "-f", "lavfi", "-i", src, "-af", f"volume={volume}", "-ac", str(channels), "-ar", str(rate))


def codes_of(path, **kw):
    buf = io.BytesIO()
    info = decode_to(str(path), AudioSettings.from_config(**kw), buf)
    return np.frombuffer(buf.getvalue(), np.uint8), info


def dominant_hz(codes, rate):
    x = mulaw.decode(codes)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec[1:]) * rate / len(x) + rate / len(x)


@pytest.mark.parametrize("rate", [22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_duration_times_rate_samples_and_the_right_tone(tmp_path, rate, channels):
    mp3 = sine(tmp_path / "t.mp3", 440.0, 2.0, rate, channels)
    codes, info = codes_of(mp3, sample_rate=SR)
    assert codes.dtype == np.uint8
    assert abs(len(codes) - 2.0 * SR) <= 0.01 * 2.0 * SR
    assert info["num_samples"] == len(codes)
    assert abs(dominant_hz(codes, SR) - 440.0) < 3.0
    # peak normalisation to 0.95: the largest decoded magnitude is 0.95 within one mu-law step
    peak = np.abs(mulaw.decode(codes)).max()
    assert 0.92 < peak <= 0.99


def test_known_signal_codes(tmp_path):
    """A WAV at the default rate (lossless) of a known sine comes back as mu-law of that sine."""
    rate, n = SR, SR
    t = np.arange(n) / rate
    x = 0.5 * np.sin(2 * np.pi * 250 * t + 0.3)
    pcm = np.round(x * 32767).astype("<i2")
    wav = tmp_path / "k.wav"
    import wave

    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    codes, _ = codes_of(wav, sample_rate=SR, normalise="none", trim_silence=False)
    want = mulaw.encode(pcm / 32768.0)
    assert len(codes) == n
    assert np.abs(codes.astype(int) - want.astype(int)).max() <= 1


def test_silence_trimming_follows_the_threshold(tmp_path):
    quiet = ffmpeg(tmp_path / "q.wav", "-f", "lavfi", "-i",
                   f"anullsrc=r={SR}:cl=mono:d=1", codec=())
    tone = sine(tmp_path / "tone.wav", 300, 1.0, SR)
    both = tmp_path / "padded.mp3"
    ffmpeg(both, "-i", str(quiet), "-i", str(tone), "-i", str(quiet), "-filter_complex",
           "[0:a][1:a][2:a]concat=n=3:v=0:a=1")
    kept, info = codes_of(both, sample_rate=SR, silence_threshold_db=-50, min_seconds=0.5)
    assert abs(len(kept) - SR) < 800  # the tone, give or take MP3 padding and the fade-in of the sine
    assert info["trimmed_start_s"] > 0.9 and info["trimmed_end_s"] > 0.9
    untrimmed, _ = codes_of(both, sample_rate=SR, trim_silence=False)
    assert len(untrimmed) > 2.9 * SR
    with pytest.raises(AudioError) as err:  # a threshold above the music trims it all
        codes_of(sine(tmp_path / "soft.mp3", 300, 1.0, SR, volume=0.001), sample_rate=SR,
                 silence_threshold_db=-20)
    assert err.value.reason == "silent"


def test_rms_normalisation(tmp_path):
    mp3 = sine(tmp_path / "r.mp3", 500, 2.0, 44100, volume=0.1)
    codes, _ = codes_of(mp3, sample_rate=SR, normalise="rms", target_rms_db=-20)
    rms = np.sqrt(np.mean(mulaw.decode(codes).astype(np.float64) ** 2))
    assert abs(20 * np.log10(rms) - (-20)) < 0.5


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "decode-failed"),
        (lambda p: p.write_bytes(b"this is not audio at all\n" * 100), "decode-failed"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(20000)), "decode-failed"),
    ],
)
def test_bad_files_raise_with_reason(tmp_path, make, reason):
    p = tmp_path / "bad.mp3"
    make(p)
    with pytest.raises(AudioError) as err:
        codes_of(p, sample_rate=SR)
    assert err.value.reason == reason
    assert err.value.detail  # ffmpeg's message is kept


def test_silent_and_too_short(tmp_path):
    silent = ffmpeg(tmp_path / "s.mp3", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo:d=2")
    with pytest.raises(AudioError, match="silent"):
        codes_of(silent, sample_rate=SR)
    short = sine(tmp_path / "short.mp3", 440, 0.3, 44100)
    with pytest.raises(AudioError, match="too-short"):
        codes_of(short, sample_rate=SR, min_seconds=1.0)


def test_file_to_codes_primes_like_training_data(tmp_path):
    mp3 = sine(tmp_path / "p.mp3", 440, 1.0, 48000, 2)
    codes = file_to_codes(str(mp3), 8000)
    assert abs(len(codes) - 8000) < 80
    assert abs(dominant_hz(codes, 8000) - 440) < 3


@pytest.mark.slow  # a 30-minute track
def test_memory_does_not_grow_with_track_length(tmp_path):
    """Peak memory decoding a 30-minute track stays within 20% of a 1-minute one."""
    import sys

    code = ("import sys; from waveforms.audio import decode_to, AudioSettings;"
            "from waveforms.transform.job import peak_rss_mib;"
            "decode_to(sys.argv[1], AudioSettings.from_config(), open('/dev/null', 'wb'));"
            "print(peak_rss_mib())")
    peaks = []
    for minutes in (1, 30):
        src = tmp_path / f"{minutes}.wav"
        ffmpeg(src, "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=22050:duration={minutes * 60}",
               codec=())
        out = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True, check=True)
        peaks.append(float(out.stdout.split()[-1]))
    # 30 minutes of 16 kHz float32 would be 110 MiB on its own
    assert peaks[1] < 1.2 * peaks[0], peaks
