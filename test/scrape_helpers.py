"""Shared pieces of the scrape tests: sine-tone MP3s and a mirror over them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from waveforms.config import ScrapeConfig
from waveforms.demo.mirror import Mirror, MirrorTrack
from waveforms.demo.music import sine_mp3

CC_BY = "https://creativecommons.org/licenses/by/4.0/"
CC_BY_NC_SA = "https://creativecommons.org/licenses/by-nc-sa/3.0/"


@pytest.fixture(scope="session")
def tones(tmp_path_factory) -> list[Path]:
    """Six 1-second sine MP3s at different pitches (made once per session)."""
    d = tmp_path_factory.mktemp("tones")
    return [sine_mp3(d / f"tone{i}.mp3", 220.0 * (i + 1), 1.0) for i in range(6)]


def make_tracks(tones: list[Path]) -> list[MirrorTrack]:
    """Tracks 1..6: four in Electronic, two in Folk; track 5 is CC BY-NC-SA, the others CC BY."""
    out = []
    for i, mp3 in enumerate(tones, start=1):
        out.append(
            MirrorTrack(
                id=i,
                title=f"Tone {i}",
                artist="Sine & Co's \"Band\"" if i == 2 else f"Artist {i}",
                mp3=mp3,
                genres=["Electronic"] if i <= 4 else ["Folk"],
                album="-" if i % 2 else "Test Album",
                licence=CC_BY_NC_SA if i == 5 else CC_BY,
            )
        )
    return out


def config(mirror: Mirror, out: Path, **kw) -> ScrapeConfig:
    defaults = dict(
        base_url=mirror.url, genres=["Electronic"], out=str(out), page_size=2, limit=10,
        requests_per_second=200.0, backoff_factor=0.01, max_retries=4, timeout_s=5.0,
    )
    return ScrapeConfig(**{**defaults, **kw})


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
