"""The ``fma-site`` source: crawl FMA genre pages, read licences, download the MP3s.

Markup read (as the live site serves it): each track is a ``div.play-item`` whose
``data-track-info`` attribute holds a JSON object (``id``, ``handle``, ``url``,
``title``, ``artistName``, ``albumTitle`` ("-" for singles), ``fileUrl``, ...),
single-quoted or HTML-escaped; the next page is ``a.pagination-next``; the track
page carries the licence as ``a[rel=license]``.
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Iterator
from urllib.parse import quote, urljoin, urlsplit

from bs4 import BeautifulSoup

from waveforms.config import ScrapeConfig
from waveforms.runtime.errors import UserError
from waveforms.scrape import licence as lic
from waveforms.scrape.download import download
from waveforms.scrape.http import FetchError, Http, check_url
from waveforms.scrape.job import Job
from waveforms.scrape.manifest import record
from waveforms.scrape.output import track_relpath

log = logging.getLogger(__name__)
SOURCE = "fma-site"


class ScrapeRefused(UserError):
    """The site asks not to be crawled for this purpose."""


@dataclass
class GenrePage:
    tracks: list[dict[str, Any]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # play-items whose JSON could not be read
    next_url: str | None = None
    total: int | None = None


def genre_url(base_url: str, genre: str, page: int, page_size: int) -> str:
    size = max(1, min(200, page_size))
    return f"{base_url.rstrip('/')}/genre/{quote(genre, safe='')}?sort=date&d=0&pageSize={size}&page={page}"


def parse_genre_page(html: str, page_url: str) -> GenrePage:
    """Track-info objects, unreadable items, next-page URL and total count of one genre page."""
    soup = BeautifulSoup(html, "html.parser")
    page = GenrePage()
    for div in soup.select("div.play-item"):
        raw = div.get("data-track-info")
        if raw is None:
            continue
        try:
            info = json.loads(raw)
        except json.JSONDecodeError as exc:
            page.bad.append(f"{exc}: {str(raw)[:80]!r}")
            continue
        if isinstance(info, dict):
            page.tracks.append(info)
        else:
            page.bad.append(f"not an object: {str(raw)[:80]!r}")
    nxt = soup.select_one("a.pagination-next[href]")
    if nxt is not None:
        page.next_url = urljoin(page_url, str(nxt["href"]))
    counts = soup.select("div.pagination-full b")
    if len(counts) >= 3 and counts[2].get_text(strip=True).isdigit():
        page.total = int(counts[2].get_text(strip=True))
    return page


def parse_licence(html: str) -> str | None:
    """The licence URL of a track page (a creativecommons.org link preferred)."""
    soup = BeautifulSoup(html, "html.parser")
    links = [str(a["href"]).strip() for a in soup.select('a[rel~="license"][href]')]
    for href in links:
        if lic.code_from_url(href):
            return href
    return links[0] if links else None


def track_id(info: dict[str, Any]) -> int:
    """The numeric id of a track-info object; anything else is rejected."""
    value = info.get("id")
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise FetchError("bad-track-info", f"track id is not a number: {value!r}")
    return int(value)


def same_site(url: str, base_url: str) -> bool:
    return urlsplit(url).netloc == urlsplit(base_url).netloc


def iter_genre(http: Http, job: Job, genre: str, seen: set[int]) -> Iterator[dict[str, Any]]:
    """Track-info objects of a genre, page after page, each track id once per run."""
    cfg = job.cfg
    url: str | None = genre_url(cfg.base_url, genre, 1, cfg.page_size)
    visited: set[str] = set()
    while url and url not in visited:
        visited.add(url)
        try:
            html = http.get_text(url)
        except FetchError as exc:
            job.fail(exc.reason, exc.detail, url=url, advance=False)
            return
        page = parse_genre_page(html, url)
        for bad in page.bad:
            job.fail("bad-track-info", bad, url=url)
        if not page.tracks and not page.bad:
            job.fail("malformed-page", "no play-items found", url=url, advance=False)
            return
        for info in page.tracks:
            try:
                tid = track_id(info)
            except FetchError as exc:
                job.fail(exc.reason, exc.detail, url=url)
                continue
            if tid in seen:
                job.duplicate()
                continue
            seen.add(tid)
            yield {**info, "_genre": genre}
        url = page.next_url
        if url and not same_site(url, cfg.base_url):
            job.fail("off-site-link", f"next page on another site: {url}", url=url, advance=False)
            return


def fetch_track(http: Http, job: Job, info: dict[str, Any]) -> None:
    """Licence check, download and manifest line for one track; failures are recorded."""
    cfg = job.cfg
    tid = track_id(info)
    rel = track_relpath(tid)
    if job.complete(tid, rel):
        return
    file_url = check_url(str(info.get("fileUrl") or ""))
    page_url = str(info.get("url") or "")
    licence = None
    if cfg.fetch_licence or cfg.licences:
        try:
            licence = parse_licence(http.get_text(check_url(page_url)))
        except FetchError as exc:
            if cfg.licences:
                raise FetchError("licence-unknown", f"track page: {exc}", page_url) from exc
            job.note("licence-page", f"licence not recorded: {exc}", track_id=tid, url=page_url)
    if not lic.matches(licence, cfg.licences):
        job.filtered(tid, f"licence {licence!r}")
        return
    album = info.get("albumTitle")
    row = record(
        id=tid,
        title=info.get("title"),
        artist=info.get("artistName"),
        album=None if album in (None, "", "-") else album,
        genre=info.get("_genre"),
        licence=licence,
        page_url=page_url or None,
        file_url=file_url,
        path=rel,
        source=SOURCE,
    )
    have = job.adopt(tid, rel)
    if have:
        row.update(have)
        job.downloaded(row, reused=True)
        return
    if http.robots.ai_train_refused(file_url):
        raise FetchError("content-signal", f"{file_url}: robots.txt says ai-train=no", file_url)
    got = download(http, file_url, job.out.temp_path(f"{tid:06d}"), cfg.max_file_bytes)
    job.out.store(got.path, rel)
    row.update(size=got.size, sha256=got.sha256)
    job.downloaded(row)


def _safe_fetch(http: Http, job: Job, info: dict[str, Any]) -> None:
    try:
        fetch_track(http, job, info)
    except FetchError as exc:
        job.fail(exc.reason, exc.detail, track_id=info.get("id"), url=exc.url or str(info.get("fileUrl", "")))
    except Exception as exc:  # one odd track must not end the run
        log.exception("track %s", info.get("id"))
        job.fail("error", repr(exc), track_id=info.get("id"))


def check_site(http: Http, base_url: str) -> None:
    """Refuse to crawl a site whose robots.txt cannot be read or says ai-train=no."""
    root = base_url.rstrip("/") + "/"
    if http.robots.unavailable(root):
        raise UserError(f"robots.txt of {base_url} could not be read; not crawling (RFC 9309)")
    if http.robots.ai_train_refused(root):
        raise ScrapeRefused(
            f"{base_url}/robots.txt carries 'Content-Signal: ai-train=no': the site asks that its "
            "content not be collected for AI training, so no audio will be downloaded from it. "
            "Use the FMA research dataset instead: waveforms scrape --source fma-dataset --archive fma_small"
        )


def crawl(cfg: ScrapeConfig, job: Job, http: Http) -> None:
    if not cfg.genres:
        raise UserError("fma-site: give at least one --genre")
    check_site(http, cfg.base_url)
    seen: set[int] = set()
    total_cap = cfg.limit if cfg.limit > 0 else None
    workers = max(1, cfg.download_concurrency)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="download")
    try:
        for genre in cfg.genres:
            start = job.kept
            tracks = iter_genre(http, job, genre, seen)
            while True:
                want = cfg.per_genre_limit - (job.kept - start) if cfg.per_genre_limit > 0 else 2 * workers
                if total_cap is not None:
                    want = min(want, total_cap - job.kept)
                if want <= 0:
                    break
                batch = list(islice(tracks, want))
                if not batch:
                    break
                list(pool.map(lambda info: _safe_fetch(http, job, info), batch))
            if total_cap is not None and job.kept >= total_cap:
                break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run(cfg: ScrapeConfig, job: Job, http: Http) -> None:
    crawl(cfg, job, http)
