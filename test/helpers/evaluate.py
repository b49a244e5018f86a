"""A small dataset of real music for the evaluate and index tests: excerpts of Debian's hyperrogue-music
(CC BY-SA 3.0) encoded to MP3 with ffmpeg, transformed on Spark."""
from __future__ import annotations

import subprocess
from pathlib import Path

MUSIC_DIR = Path("/usr/share/hyperrogue/music")
TRACKS = ("hr3-caves", "hr3-crossroads", "hr3-desert", "hr3-jungle", "hr3-icyland", "hr-savino-palace",
          "hr3-laboratory", "hr3-motion")
START_S = 30.0


def excerpt(src: Path, out: Path, start: float, seconds: float, bitrate: str = "128k", gain_db: float = 0.0,
            rate: int = 22050) -> Path:
    """``seconds`` of ``src`` from ``start`` as a mono MP3 at ``bitrate``, ``gain_db`` louder."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-ss", f"{start:.4f}", "-t", f"{seconds:.4f}",
                    "-i", str(src), "-ac", "1", "-ar", str(rate), "-af", f"volume={gain_db}dB", "-b:a", bitrate,
                    str(out)], check=True)
    return out


def music_input(folder: Path, seconds: float = 20.0, tracks=TRACKS) -> Path:
    """MP3 excerpts of the hyperrogue tracks in ``folder`` (the transform's input)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in tracks:
        excerpt(MUSIC_DIR / f"{name}.ogg", folder / f"{name}.mp3", START_S, seconds)
    return folder


def transform(input_dir: Path, output: Path, val_fraction: float = 0.2) -> Path:
    from waveforms.config import load
    from waveforms.transform import run

    cfg = load("transform", flags={"input": str(input_dir), "output": str(output), "master": "local[2]",
                                   "val_fraction": val_fraction, "partitions": 2})
    run(cfg)
    return output
