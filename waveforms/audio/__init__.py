"""Audio files to mu-law codes: ffmpeg decode → mono → resample → trim silence → normalise → mu-law.

The transform decodes every track with :func:`decode_to`; generation, evaluation and the
studio decode a prime or a clip with :func:`file_to_codes` and :func:`load_prime`.

ffmpeg streams 16-bit PCM through a pipe (no temporary WAV). The first pass
spools the PCM to a scratch file while measuring peak, energy and the first
and last samples above the silence threshold; the second pass applies the
gain, encodes and writes codes chunk by chunk. Memory stays a few chunks
whatever the track length.

:mod:`.mulaw` holds the companding every stage shares; :mod:`.clips` the WAV and sidecar a generation writes.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from waveforms import storage
from waveforms.audio import mulaw
from waveforms.config import TransformConfig
from waveforms.runtime.errors import UserError

log = logging.getLogger(__name__)

CHUNK = 1 << 18  # samples per read (512 KiB of PCM)


@dataclass(frozen=True)
class AudioSettings:
    """What decides a track's codes: the transform config's fields of the same names."""

    sample_rate: int
    mu: int
    normalise: str  # peak | rms | none
    target_peak: float
    target_rms_db: float
    trim_silence: bool
    silence_threshold_db: float
    min_seconds: float
    resampler: str  # soxr | swr

    @classmethod
    def from_config(cls, cfg: TransformConfig | None = None, **overrides) -> "AudioSettings":
        """The settings of ``cfg`` (default: the transform defaults), with ``overrides``."""
        cfg = dataclasses.replace(cfg or TransformConfig(), **overrides)
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict:
        return asdict(self)


class AudioError(Exception):
    """A track that cannot become training data; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def ffmpeg_command(path: str, s: AudioSettings) -> list[str]:
    resample = f"aresample={s.sample_rate}:resampler={s.resampler}"
    if s.resampler == "soxr":
        resample += ":precision=20"
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path, "-vn", "-sn", "-dn",
        "-ac", "1", "-af", resample, "-f", "s16le", "-acodec", "pcm_s16le",
        # Fill ffmpeg's I/O buffer before writing: flushing every packet (the
        # default) costs a pipe write and a context switch per few hundred
        # samples, about a third of the CPU of decoding itself.
        "-flush_packets", "0", "pipe:1",
    ]


@dataclass
class Stats:
    n: int = 0
    peak: int = 0
    first: int = -1  # first sample above the threshold
    last: int = -1  # last sample above the threshold
    sumsq: float = 0.0  # energy, of the whole track


def _spool(proc: subprocess.Popen, spool: BinaryIO, threshold: int, energy: bool) -> Stats:
    st = Stats()
    while True:
        raw = proc.stdout.read(CHUNK * 2)
        if not raw:
            break
        if len(raw) % 2:  # a dangling byte can only come at the very end
            raw = raw[:-1]
        x = np.frombuffer(raw, dtype="<i2")
        spool.write(raw)
        lo, hi = int(x.min()), int(x.max())
        st.peak = max(st.peak, -lo, hi)
        if energy:
            xf = x.astype(np.float32)
            st.sumsq += float(np.dot(xf, xf))
        if threshold >= 0 and max(-lo, hi) > threshold:
            loud = np.flatnonzero((x > threshold) | (x < -threshold))
            if st.first < 0:
                st.first = st.n + int(loud[0])
            st.last = st.n + int(loud[-1])
        st.n += x.size
    return st


def code_table(gain: float, mu: int) -> np.ndarray:
    """mu-law code of every int16 value times ``gain``: encoding becomes one table look-up per sample."""
    return mulaw.encode(np.arange(-32768, 32768, dtype=np.float32) * np.float32(gain), mu)


def decode_to(path: str, s: AudioSettings, out: BinaryIO, scratch_dir: str | None = None) -> dict:
    """Decode ``path`` and write its mu-law codes to ``out``; return the track's numbers.

    Raises :class:`AudioError` for files that are unreadable, empty, silent or too short.
    """
    if shutil.which("ffmpeg") is None:
        raise AudioError("no-ffmpeg", "ffmpeg is not installed (make setup installs it)")
    threshold = int(32768 * 10 ** (s.silence_threshold_db / 20)) if s.trim_silence else -1
    with tempfile.TemporaryFile(dir=scratch_dir) as spool:
        with tempfile.TemporaryFile(dir=scratch_dir) as err:
            proc = subprocess.Popen(ffmpeg_command(path, s), stdout=subprocess.PIPE, stderr=err)
            try:
                st = _spool(proc, spool, threshold, s.normalise == "rms" and not s.trim_silence)
            finally:
                proc.stdout.close()
                code = proc.wait()
            err.seek(0)
            message = err.read()[-2000:].decode("utf-8", "replace").strip()
        if code != 0:
            raise AudioError("decode-failed", message or f"ffmpeg exited with {code}")
        if st.n == 0:
            raise AudioError("empty", message or "no audio samples")
        if s.trim_silence:
            if st.first < 0:
                raise AudioError("silent", f"no sample above {s.silence_threshold_db} dBFS")
            start, stop = st.first, st.last + 1
        else:
            start, stop = 0, st.n
        if stop - start < s.min_seconds * s.sample_rate:
            raise AudioError("too-short", f"{(stop - start) / s.sample_rate:.2f} s after trimming")
        gain = _gain(st, spool, start, stop, s)
        table = code_table(gain, s.mu)
        spool.seek(start * 2)
        left = stop - start
        while left:
            x = np.frombuffer(spool.read(min(CHUNK, left) * 2), dtype="<i2")
            out.write(table[x.astype(np.int32) + 32768].tobytes())
            left -= x.size
    return {
        "num_samples": stop - start,
        "duration_s": round((stop - start) / s.sample_rate, 4),
        "trimmed_start_s": round(start / s.sample_rate, 4),
        "trimmed_end_s": round((st.n - stop) / s.sample_rate, 4),
        "gain": round(gain * 32768.0, 6),
    }


def _gain(st: Stats, spool: BinaryIO, start: int, stop: int, s: AudioSettings) -> float:
    """Factor from int16 samples to floats in [-1, 1], normalised as configured."""
    unit = 1.0 / 32768.0
    if s.normalise == "none" or st.peak == 0:
        return unit
    if s.normalise == "peak":
        return s.target_peak / st.peak
    if s.normalise == "rms":
        sumsq = st.sumsq
        if s.trim_silence:  # energy of the kept part only
            sumsq, left = 0.0, stop - start
            spool.seek(start * 2)
            while left:
                x = np.frombuffer(spool.read(min(CHUNK, left) * 2), dtype="<i2").astype(np.float32)
                sumsq += float(np.dot(x, x))
                left -= x.size
        rms = math.sqrt(sumsq / (stop - start)) * unit
        return unit * 10 ** (s.target_rms_db / 20) / max(rms, 1e-9)
    raise AudioError("bad-setting", f"normalise must be peak, rms or none, not {s.normalise!r}")


def file_to_codes(path: str, sample_rate: int, mu: int = 255, settings: AudioSettings | None = None) -> np.ndarray:
    """A whole file as mu-law codes, processed like training data (for priming generation)."""
    import io

    s = settings or AudioSettings.from_config(sample_rate=sample_rate, mu=mu, min_seconds=0.0)
    buf = io.BytesIO()
    try:
        decode_to(str(Path(path)), s, buf)
    except AudioError as exc:
        raise UserError(f"cannot use {path}: {exc}") from exc
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def prime_settings(wavenet) -> AudioSettings:
    """How primes are decoded: the model's dataset's transform settings (model.json's ``transform``).

    Models trained before model.json held them get the transform defaults. Either way the rate
    and mu are the model's, and no length minimum applies.
    """
    stored = wavenet.meta.get("transform") or {}
    known = {k: v for k, v in stored.items() if k in AudioSettings.__dataclass_fields__}
    if not stored:
        log.info("model.json names no transform settings: the prime is decoded with the transform defaults")
    return AudioSettings.from_config(**{**known, "sample_rate": wavenet.sample_rate, "mu": wavenet.mu,
                                        "min_seconds": 0.0})


def load_prime(path: str, wavenet) -> np.ndarray:
    """An audio file (local or s3://) as mu-law codes at the model's rate, processed like its training data."""
    if not storage.exists(path):
        raise UserError(f"prime file not found: {path}")
    with storage.local_copy(path) as local:
        return file_to_codes(str(local), wavenet.sample_rate, wavenet.mu, settings=prime_settings(wavenet))
