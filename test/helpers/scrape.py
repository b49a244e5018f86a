"""Shared pieces of the scrape tests: mirror tracks over the ``tones`` fixture, configs, readers."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from waveforms.config import ScrapeConfig
from waveforms.demo.mirror import Mirror, MirrorTrack

CC_BY = "https://creativecommons.org/licenses/by/4.0/"
CC_BY_NC_SA = "https://creativecommons.org/licenses/by-nc-sa/3.0/"


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
    """The rows of a JSON Lines file that must exist (a missing file is a failure, not an empty list)."""
    assert Path(path).is_file(), f"{path} was not written"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
