"""MP3s made with ffmpeg, and the demo's mirror of openly licensed music.

``make demo`` serves Debian's hyperrogue-music (CC BY-SA 3.0), encoded to MP3,
as an FMA-format site on 127.0.0.1::

    python -m waveforms.demo.music --music-dir /usr/share/hyperrogue/music \\
        --cache CACHE --port 0 --url-file URL_FILE [--seconds S]
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

from waveforms import storage
from waveforms.demo.mirror import CC_BY_SA_3, Mirror, MirrorTrack

log = logging.getLogger(__name__)

# Artists of Debian's hyperrogue-music (see /usr/share/doc/hyperrogue-music/copyright).
HYPERROGUE_ARTISTS = {
    "hr3-": "Shawn Parrotte",
    "hr-domina-": "Lincoln Domina",
    "hr-savino-": "Will Savino",
}


def ffmpeg_mp3(src_args: list[str], out: Path, seconds: float, tags: dict[str, str] | None = None,
               bitrate: str = "128k") -> Path:
    """Encode with ffmpeg to ``out`` (written to a temporary name, then renamed); ``seconds`` <= 0: all of it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.mp3")
    meta = [a for k, v in (tags or {}).items() for a in ("-metadata", f"{k}={v}")]
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", *src_args, *(["-t", str(seconds)] if seconds > 0 else []),
           "-codec:a", "libmp3lame", "-b:a", bitrate, *meta, str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed for {out.name}: {proc.stderr.strip()[-300:]}")
    tmp.replace(out)
    return out


def hyperrogue_tracks(music_dir: Path, cache: Path, seconds: float = 0.0) -> list[MirrorTrack]:
    """Encode the hyperrogue-music Ogg files to MP3 (cached) and describe them as FMA tracks.

    Shawn Parrotte's pieces are listed under "Soundtrack", the others under "Ambient";
    every second Parrotte piece also appears under "Ambient" (as on FMA, a track may
    carry several genres). Files ffmpeg cannot decode are skipped with a warning.
    """
    tracks = []
    for n, ogg in enumerate(sorted(Path(music_dir).glob("*.ogg"))):
        artist = next((a for p, a in HYPERROGUE_ARTISTS.items() if ogg.name.startswith(p)), None)
        if artist is None:
            continue
        title = ogg.stem.split("-")[-1].replace("_", " ").title()
        genres = ["Soundtrack"] if ogg.name.startswith("hr3-") else ["Ambient"]
        if ogg.name.startswith("hr3-") and n % 2:
            genres.append("Ambient")
        mp3 = cache / (f"{ogg.stem}-{seconds:g}s.mp3" if seconds > 0 else f"{ogg.stem}.mp3")
        if not mp3.exists():
            tags = {"title": title, "artist": artist, "album": "HyperRogue", "genre": genres[0],
                    "copyright": f"CC BY-SA 3.0 {CC_BY_SA_3}"}
            try:
                ffmpeg_mp3(["-i", str(ogg)], mp3, seconds, tags)
            except RuntimeError as exc:
                log.warning("skipping %s: %s", ogg.name, exc)
                continue
        tracks.append(MirrorTrack(id=1000 + n, title=title, artist=artist, mp3=mp3, genres=genres,
                                  album="HyperRogue"))
    return tracks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m waveforms.demo.music", description=__doc__.splitlines()[0])
    p.add_argument("--music-dir", default="/usr/share/hyperrogue/music", help="folder of hyperrogue-music .ogg files")
    p.add_argument("--cache", default="mirror-cache", help="folder for the encoded MP3s (reused)")
    p.add_argument("--seconds", type=float, default=0.0, help="seconds of each piece to serve; 0 = the whole piece")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port")
    p.add_argument("--url-file", help="write the base URL here once listening")
    p.add_argument("--content-signal", default="", help="e.g. 'ai-train=no' to test the refusal")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tracks = hyperrogue_tracks(Path(args.music_dir), Path(args.cache), args.seconds)
    if not tracks:
        print(f"no usable .ogg files in {args.music_dir}", file=sys.stderr)
        return 1
    mirror = Mirror(tracks, host=args.host, port=args.port)
    mirror.robots.content_signal = args.content_signal
    genres = ", ".join(f"{g} ({len(ids)})" for g, ids in sorted(mirror.listings.items()))
    print(f"FMA-format mirror at {mirror.url}: {len(tracks)} tracks; genres {genres}", flush=True)
    if args.url_file:
        storage.write_text(args.url_file, mirror.url + "\n")
    try:
        mirror._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        mirror._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
