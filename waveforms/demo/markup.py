"""The FMA site's markup as the mirror serves it: genre pages, track pages, robots.txt.

Modelled on real captures of freemusicarchive.org: ``div.play-item`` with a
``data-track-info`` JSON attribute (single-quoted as the live site sends it, or
HTML-escaped as a browser saves it), ``a.pagination-next``, ``div.pagination-full``
and track pages with ``a[rel=license]``.
"""
from __future__ import annotations

import html
import json
import re
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from waveforms.demo.mirror import Mirror, MirrorTrack


def slug(text: str) -> str:
    """Lower-case words joined by hyphens, as FMA builds its URLs."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def attr_single(info: dict) -> str:
    """JSON in a single-quoted attribute, as the live site sends it (``\\/`` slashes)."""
    text = json.dumps(info, separators=(",", ":"), ensure_ascii=False).replace("/", "\\/")
    for ch, esc in (("&", "\\u0026"), ("'", "\\u0027"), ("<", "\\u003C"), (">", "\\u003E")):
        text = text.replace(ch, esc)
    return f"data-track-info='{text}'"


def attr_escaped(info: dict) -> str:
    """JSON HTML-escaped in a double-quoted attribute, as a browser's saved page has it."""
    text = json.dumps(info, separators=(",", ":"), ensure_ascii=False).replace("/", "\\/")
    return f'data-track-info="{html.escape(text, quote=True)}"'


def page_html(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{html.escape(title)} - Free Music Archive</title></head>\n<body>\n{body}\n</body></html>\n"
    )


def genre_page_html(m: "Mirror", genre: str, page: int, size: int) -> str:
    ids = m.listings[genre]
    total = len(ids)
    start = (page - 1) * size
    items = []
    for tid in ids[start : start + size]:
        t = m.tracks[tid]
        info = m.track_info(t)
        attr = attr_single(info) if page % 2 else attr_escaped(info)
        items.append(
            f'<div class="play-item gcol grid w-full gid-{slug(genre)} tid-{tid}" {attr}>\n'
            f'  <span class="ptxt-track"><a href="{html.escape(info["url"])}">{html.escape(t.title)}</a></span>\n'
            f'  <span class="ptxt-artist"><a href="{html.escape(info["artistUrl"])}">{html.escape(t.artist)}</a></span>\n'
            f"</div>"
        )
    link = lambda n: (  # noqa: E731
        f"{m.url}/genre/{quote(genre, safe='')}?sort=date&amp;d=0&amp;pageSize={size}&amp;page={n}"
    )
    pages = max(1, -(-total // size))
    nav = [f'<span class="bg-blue text-white">{page}</span>' if n == page else f'<a href="{link(n)}">{n}</a>'
           for n in range(1, pages + 1)]
    if page < pages:
        nav.append(f'<a href="{link(page + 1)}" class="inline-flex pagination-next" title="Next"><span>&gt;</span></a>')
    shown_end = min(start + size, total)
    pagination = (
        '<div class="pagination-full flex flex-wrap gap-4 mt-4">\n'
        f'<div class="flex mr-auto items-center"><span class="flex gap-1"><b>{start + 1}</b> - '
        f"<b>{shown_end}</b> of <b>{total}</b></span></div>\n"
        f'<div class="font-[500] flex flex-wrap items-center gap-1">{"".join(nav)}</div>\n</div>'
    )
    body = f'<h1>{html.escape(genre)}</h1>\n<div class="play-list">\n' + "\n".join(items) + "\n</div>\n" + pagination
    return page_html(genre, body)


def track_page_html(t: "MirrorTrack") -> str:
    lic = ""
    if t.licence:
        lic = (
            f'<div class="licence">This track is licensed under a '
            f'<a rel="license" href="{html.escape(t.licence)}" target="_blank">Creative Commons licence</a>.</div>'
        )
    body = f'<h1>{html.escape(t.title)}</h1>\n<p class="artist">{html.escape(t.artist)}</p>\n{lic}'
    return page_html(f"{t.artist} - {t.title}", body)


def robots_txt(disallow: list[str], content_signal: str = "") -> str:
    lines = ["User-agent: *"]
    lines += [f"Disallow: {p}" for p in disallow] or ["Allow: /"]
    if content_signal:
        lines.append(f"Content-Signal: {content_signal}")
    return "\n".join(lines) + "\n"
