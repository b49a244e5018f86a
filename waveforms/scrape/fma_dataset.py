"""The ``fma-dataset`` source: the FMA research archives (github.com/mdeff/fma).

Downloads ``fma_metadata.zip`` and the chosen audio archive (``fma_small`` ...
``fma_full``) from the published URL or a ``--mirror``, resuming with HTTP Range,
checks each archive's sha1 against the published value, extracts the BZIP2 zips
with :mod:`zipfile`, verifies each clip against the archive's ``checksums`` file,
and takes title, artist, album, genre, licence and split from ``tracks.csv``
(two header rows) into the same manifest as the other sources.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable

import requests
from urllib3.exceptions import HTTPError, MaxRetryError, ProtocolError

from waveforms import storage
from waveforms.config import ScrapeConfig
from waveforms.scrape import licence as lic
from waveforms.scrape.download import has_mp3_audio
from waveforms.scrape.http import FetchError, Http
from waveforms.scrape.job import Job
from waveforms.scrape.manifest import record
from waveforms.scrape.output import track_relpath
from waveforms.storage import checksums

log = logging.getLogger(__name__)
SOURCE = "fma-dataset"
PUBLISHED_SHA1 = {
    "fma_metadata": "f0df49ffe5f2a6008d7dc83c6915b31835dfe733",
    "fma_small": "ade154f733639d52e35e32f5593efe5be76c6d70",
    "fma_medium": "c67b69ea232021025fca9231fc1c7c1a063ab50b",
    "fma_large": "497109f4dd721066b5ce5e5f250ec604dc78939e",
    "fma_full": "0f0ace23fbe9ba30ecb7e95f763e435ea802b8ab",
}
KNOWN_EMPTY = frozenset({99134, 108925, 133297})  # clips without audio in fma_small and up
CLIP = re.compile(r"(?:^|/)(\d{3})/(\d{6})\.mp3$")
CHUNK = 1 << 20


def fetch_archive(http: Http, url: str, dest: Path, sha1: str | None) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` with Range; verify sha1.

    Raises ``FetchError("checksum")`` (and removes the download) on a mismatch.
    """
    if dest.exists():
        if sha1 is None or checksums.digest(dest, "sha1") == sha1:
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    retry = http.new_retry()
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else None
        resp = http.get(url, stream=True, headers=headers, ok=(200, 206, 416))
        with resp:
            if resp.status_code == 416:  # nothing left to send: the part is whole
                break
            mode = "ab"
            if resp.status_code == 206:
                m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != have:
                    raise FetchError("bad-range", f"Content-Range {resp.headers.get('Content-Range')!r}", url)
                log.info("resuming %s at byte %d", url, have)
            else:
                mode = "wb"
            expected = resp.headers.get("Content-Length")
            got = 0
            try:
                with open(part, mode) as fh:
                    # read1: keep every byte that arrived, even if the connection then drops
                    while chunk := resp.raw.read1(CHUNK):
                        fh.write(chunk)
                        got += len(chunk)
                if expected and expected.isdigit() and got != int(expected):
                    raise ProtocolError(f"{got} of {expected} bytes")
            except (requests.exceptions.RequestException, HTTPError, OSError) as exc:
                try:
                    retry = retry.increment(method="GET", url=url, error=ProtocolError(str(exc)))
                except MaxRetryError:
                    raise FetchError("truncated", f"{exc} (retries exhausted; rerun to resume)", url) from exc
                retry.sleep()
                continue
        break
    digest = checksums.digest(part, "sha1")
    if sha1 is not None and digest != sha1:
        part.unlink()
        raise FetchError("checksum", f"sha1 {digest} != published {sha1}; download removed", url)
    os.replace(part, dest)
    return dest


def parse_tracks_csv(lines: Iterable[str]) -> dict[int, dict[str, Any]]:
    """``tracks.csv`` (header rows: group, then field; then a ``track_id`` row) by track id."""
    reader = csv.reader(lines)
    try:
        top, sub = next(reader), next(reader)
    except StopIteration:
        return {}
    cols, group = [], ""
    for t, s in zip(top, sub):
        group = t or group
        cols.append(f"{group}.{s}")
    out: dict[int, dict[str, Any]] = {}
    for row in reader:
        if not row or not row[0].strip().isdigit():
            continue  # the "track_id,,,," index-name row, blank lines
        d = dict(zip(cols[1:], row[1:]))
        name = d.get("track.license") or ""
        out[int(row[0])] = {
            "title": d.get("track.title") or None,
            "artist": d.get("artist.name") or None,
            "album": d.get("album.title") or None,
            "genre": d.get("track.genre_top") or None,
            "licence_name": name or None,
            "licence": lic.url_from_name(name),
            "split": d.get("set.split") or None,
            "subset": d.get("set.subset") or None,
        }
    return out


def read_metadata(path: Path) -> dict[int, dict[str, Any]]:
    with zipfile.ZipFile(path) as zf:
        member = next((n for n in zf.namelist() if n.endswith("tracks.csv")), None)
        if member is None:
            raise FetchError("bad-archive", f"{path.name} holds no tracks.csv")
        with zf.open(member) as raw:
            return parse_tracks_csv(io.TextIOWrapper(raw, encoding="utf-8", newline=""))


def read_checksums(zf: zipfile.ZipFile) -> dict[str, str]:
    """``sha1sum``-style ``checksums`` file of an audio archive: path-within-archive -> sha1."""
    member = next((n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "checksums"), None)
    if member is None:
        return {}
    out = {}
    for line in zf.read(member).decode("utf-8", "replace").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{40}", parts[0]):
            out[parts[1].lstrip("*").strip()] = parts[0]
    return out


def cache_dir(cfg: ScrapeConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    if storage.is_s3(cfg.out):
        return Path.home() / ".cache" / "waveforms"
    return Path(cfg.out) / ".archives"


def extract(cfg: ScrapeConfig, job: Job, archive: Path, url: str, tracks: dict[int, dict[str, Any]]) -> None:
    with zipfile.ZipFile(archive) as zf:
        sums = read_checksums(zf)
        members = sorted((n for n in zf.namelist() if CLIP.search(n)), key=lambda n: CLIP.search(n).group(2))
        for name in members:
            if cfg.limit > 0 and job.kept >= cfg.limit:
                return
            tid = int(CLIP.search(name).group(2))
            meta = tracks.get(tid, {})
            if cfg.genres and meta.get("genre") not in cfg.genres:
                continue
            if not lic.matches(meta.get("licence"), cfg.licences):
                job.filtered(tid, f"licence {meta.get('licence_name')!r}")
                continue
            rel = track_relpath(tid)
            if job.complete(tid, rel):
                continue
            data = zf.read(name)
            if tid in KNOWN_EMPTY or not has_mp3_audio(data):
                known = " (a known empty clip of the FMA dataset)" if tid in KNOWN_EMPTY else ""
                job.fail("empty-clip", f"{name}: {len(data)} bytes, no audio{known}", track_id=tid, url=url)
                continue
            rel_in = name.split("/", 1)[1] if "/" in name else name
            want = sums.get(rel_in) or sums.get(name)
            if want and hashlib.sha1(data).hexdigest() != want:
                job.fail("clip-checksum", f"{name}: sha1 differs from the archive's checksums", track_id=tid, url=url)
                continue
            tmp = job.out.temp_path(f"{tid:06d}")
            tmp.write_bytes(data)
            job.out.store(tmp, rel)
            row = record(
                id=tid, title=meta.get("title"), artist=meta.get("artist"), album=meta.get("album"),
                genre=meta.get("genre"), licence=meta.get("licence"), page_url=None,
                file_url=f"{url}#{name}", path=rel, size=len(data),
                sha256=hashlib.sha256(data).hexdigest(), source=SOURCE,
                licence_name=meta.get("licence_name"), split=meta.get("split"), subset=meta.get("subset"),
            )
            job.downloaded(row)


def run(cfg: ScrapeConfig, job: Job, http: Http) -> None:
    base = cfg.mirror.rstrip("/") + "/"
    cache = cache_dir(cfg)
    sha = {**PUBLISHED_SHA1, **cfg.archive_sha1}
    fetched: dict[str, Path] = {}
    for name in ("fma_metadata", cfg.archive):
        url = f"{base}{name}.zip"
        try:
            fetched[name] = fetch_archive(http, url, cache / f"{name}.zip", sha.get(name))
        except FetchError as exc:
            job.fail(exc.reason, exc.detail, url=url, advance=False)
            return
    try:
        tracks = read_metadata(fetched["fma_metadata"])
    except (FetchError, zipfile.BadZipFile, csv.Error, UnicodeDecodeError) as exc:
        job.fail("bad-metadata", str(exc), url=f"{base}fma_metadata.zip", advance=False)
        return
    extract(cfg, job, fetched[cfg.archive], f"{base}{cfg.archive}.zip", tracks)
