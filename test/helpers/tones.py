"""Sine tones as MP3, made with ffmpeg: the audio of the scrape, transform and studio tests and benchmarks."""
from __future__ import annotations

from pathlib import Path

from waveforms.demo.music import ffmpeg_mp3


def sine_mp3(out: Path, freq: float = 440.0, seconds: float = 1.0, rate: int = 22050, channels: int = 1) -> Path:
    """A sine tone as MP3."""
    src = ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}"]
    return ffmpeg_mp3(src + ["-ac", str(channels)], out, seconds, bitrate="64k")
