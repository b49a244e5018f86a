"""The ``dir`` source: MP3s already in a folder or under an ``s3://`` prefix.

The manifest is built from the files and their ID3 tags (mutagen): title, artist,
album, genre, and a licence URL from a ``WCOP`` frame or a creativecommons.org
URL in the copyright text. Track ids come from the files' paths
(:func:`waveforms.storage.tracks.ids_for_paths`), as in a transform of the same folder.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from waveforms import storage
from waveforms.config import ScrapeConfig
from waveforms.runtime.errors import UserError
from waveforms.scrape.download import looks_like_mp3
from waveforms.scrape.job import Job
from waveforms.scrape.manifest import record
from waveforms.storage import checksums
from waveforms.storage.tracks import ids_for_paths, track_relpath

SOURCE = "dir"
CC_URL = re.compile(r"https?://creativecommons\.org/\S+")


def read_tags(path: Path) -> dict[str, Any]:
    """Title, artist, album, genre and licence URL from ID3 tags (missing ones are None)."""
    import mutagen
    from mutagen.id3 import ID3, ID3NoHeaderError

    out: dict[str, Any] = {k: None for k in ("title", "artist", "album", "genre", "licence")}
    try:
        easy = mutagen.File(path, easy=True)
    except mutagen.MutagenError:
        easy = None
    if easy is not None and easy.tags:
        for key in ("title", "artist", "album", "genre"):
            values = easy.tags.get(key)
            out[key] = values[0] if values else None
    try:
        tags = ID3(path)
    except (ID3NoHeaderError, mutagen.MutagenError):
        return out
    wcop = tags.getall("WCOP")
    if wcop:
        out["licence"] = wcop[0].url
    else:
        for frame in tags.getall("TCOP"):
            m = CC_URL.search(" ".join(map(str, frame.text)))
            if m:
                out["licence"] = m.group(0)
    return out


def run(cfg: ScrapeConfig, job: Job) -> None:
    if not cfg.input:
        raise UserError("dir source: give --input FOLDER or s3://bucket/prefix")
    root = cfg.input.rstrip("/")
    files = [u for u in storage.list_files(root) if u.lower().endswith(".mp3")]
    if not files:
        raise UserError(f"dir source: no .mp3 files under {cfg.input}")
    ids = ids_for_paths(uri[len(root):].lstrip("/") for uri in files)
    for uri in files:
        if cfg.limit > 0 and job.kept >= cfg.limit:
            break
        relsrc = uri[len(root):].lstrip("/")
        tid = ids[relsrc]
        rel = track_relpath(tid)
        if job.complete(tid, rel):
            continue
        tmp = job.out.temp_path(tid)
        try:
            if storage.is_s3(uri):
                storage.download_file(uri, tmp)
            else:
                shutil.copyfile(uri, tmp)
            with open(tmp, "rb") as fh:
                if not looks_like_mp3(fh.read(16)):
                    job.fail("not-mp3", f"{relsrc} does not start like an MP3", track_id=tid, url=uri)
                    continue
            tags = read_tags(tmp)
            row = record(id=tid, **tags, page_url=None, file_url=uri, path=rel,
                         **checksums.record(tmp), source=SOURCE)
            job.out.store(tmp, rel)
            job.downloaded(row)
        except OSError as exc:
            job.fail("read-error", f"{relsrc}: {exc}", track_id=tid, url=uri)
        finally:
            tmp.unlink(missing_ok=True)
