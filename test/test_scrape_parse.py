"""Pure parts of the scraper: markup, licences, robots, MP3 sniffing, ids, manifest repair, tracks.csv."""
from __future__ import annotations

import html
import json

import pytest

from waveforms.scrape import licence as lic
from waveforms.scrape.download import has_mp3_audio, looks_like_mp3
from waveforms.scrape.fma_dataset import parse_tracks_csv
from waveforms.scrape.fma_site import parse_genre_page, parse_licence
from waveforms.scrape.manifest import Manifest
from waveforms.scrape.output import track_relpath
from waveforms.scrape.robots import parse_content_signals

INFO = {"id": 42, "title": "It's <a> & b", "url": "https://fma.example/music/a/single/x/",
        "fileUrl": "https://files.example/storage/tracks/abc.mp3", "albumTitle": "-"}

# Hand-written in the two shapes the site produces: the server's single-quoted
# attribute with \/ slashes, and a browser-saved page's HTML-escaped attribute.
SINGLE = (
    "<div class=\"play-item gcol\" data-track-info='{\"id\":42,\"title\":\"It\\u0027s \\u003Ca\\u003E \\u0026 b\","
    "\"url\":\"https:\\/\\/fma.example\\/music\\/a\\/single\\/x\\/\",\"fileUrl\":\"https:\\/\\/files.example"
    "\\/storage\\/tracks\\/abc.mp3\",\"albumTitle\":\"-\"}'></div>"
)
ESCAPED = '<div class="play-item" data-track-info="' + html.escape(json.dumps(INFO), quote=True) + '"></div>'
PAGINATION = (
    '<div class="pagination-full"><span><b>1</b> - <b>2</b> of <b>588</b></span>'
    '<a href="/genre/Rock?pageSize=2&amp;page=2" class="inline-flex pagination-next">next</a></div>'
)


@pytest.mark.parametrize("item", [SINGLE, ESCAPED])
def test_parse_genre_page_both_quotings(item):
    page = parse_genre_page(f"<html><body>{item}{item.replace('42', '43')}{PAGINATION}</body></html>",
                            "https://fma.example/genre/Rock?page=1")
    assert page.tracks[0] == INFO
    assert [t["id"] for t in page.tracks] == [42, 43]
    assert page.next_url == "https://fma.example/genre/Rock?pageSize=2&page=2"
    assert page.total == 588 and page.bad == []


def test_parse_genre_page_broken_json_and_last_page():
    page = parse_genre_page("<div class='play-item' data-track-info='{\"id\":1,'></div>", "https://x/")
    assert page.tracks == [] and len(page.bad) == 1 and page.next_url is None


def test_parse_licence_prefers_creative_commons():
    text = ('<a rel="license" href="/License_Guide">guide</a>'
            '<a class="x" rel="license noopener noreferrer" href="https://creativecommons.org/publicdomain/zero/1.0/">')
    assert parse_licence(text) == "https://creativecommons.org/publicdomain/zero/1.0/"
    assert parse_licence("<a href='https://creativecommons.org/licenses/by/4.0'>no rel</a>") is None


@pytest.mark.parametrize("url,code", [
    ("https://creativecommons.org/licenses/by/4.0", "CC-BY-4.0"),
    ("https://creativecommons.org/licenses/by-nc-sa/3.0/us/", "CC-BY-NC-SA-3.0"),
    ("http://creativecommons.org/publicdomain/zero/1.0/", "CC0"),
    ("https://example.org/licenses/by/4.0", None),
    (None, None),
])
def test_licence_codes(url, code):
    assert lic.code_from_url(url) == code


def test_licence_filter_patterns():
    by, nc = "https://creativecommons.org/licenses/by/4.0/", "https://creativecommons.org/licenses/by-nc-nd/4.0/"
    assert lic.matches(by, ["CC-BY"]) and not lic.matches(nc, ["CC-BY"])
    assert lic.matches(nc, ["CC-BY-NC*"]) and not lic.matches(by, ["CC-BY-NC*"])
    assert lic.matches(by, ["cc-by-4.0"]) and not lic.matches(by, ["CC-BY-3.0"])
    assert not lic.matches(None, ["CC-BY"]) and lic.matches(None, [])
    assert lic.url_from_name("Attribution-NonCommercial-NoDerivatives 4.0 International") == \
        "https://creativecommons.org/licenses/by-nc-nd/4.0/"


def test_content_signal_groups():
    text = ("User-agent: *\nContent-Signal: search=yes, ai-train=no\nAllow: /\n\n"
            "User-agent: waveforms-scraper\nContent-Signal: ai-train=yes\n")
    assert parse_content_signals(text, "waveforms-scraper/0.1 (+x)")["ai-train"] == "yes"
    assert parse_content_signals(text, "otherbot/1.0")["ai-train"] == "no"
    assert parse_content_signals("Content-Signal: ai-train=no\nUser-agent: *\nDisallow:\n", "a/1") == {"ai-train": "no"}
    assert parse_content_signals("User-agent: *\nDisallow: /x\n", "a/1") == {}


def test_mp3_sniffing():
    frame = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(400)
    assert looks_like_mp3(frame) and looks_like_mp3(b"ID3\x04\x00\x00\x00\x00\x00\x00")
    assert not looks_like_mp3(b"<!DOCTYPE html>") and not looks_like_mp3(b"\xff\xff\xff\xff")
    assert has_mp3_audio(b"ID3\x04\x00\x00\x00\x00\x00\x00" + frame)
    assert not has_mp3_audio(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(100))


def test_track_paths_only_from_safe_ids():
    assert track_relpath(123) == "tracks/000123.mp3" and track_relpath("7") == "tracks/000007.mp3"
    assert track_relpath("1e3") == "tracks/1e3.mp3"
    for bad in ("../../etc/x", "1/../2", "", "-1", -1, "..", ".hidden", "a b"):
        with pytest.raises(ValueError, match="track id must"):
            track_relpath(bad)


def test_manifest_drops_a_cut_last_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"id": 1, "path": "tracks/000001.mp3"}\n{"id": 2, "pa')
    m = Manifest(str(tmp_path))
    assert [r["id"] for r in m.load()] == [1]
    assert path.read_text() == '{"id": 1, "path": "tracks/000001.mp3"}\n'
    m.append({"id": 3})
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == [1, 3]


def test_tracks_csv_two_row_header():
    text = (",track,artist,track\n,genre_top,name,license\ntrack_id,,,\n"
            '2,Hip-Hop,"AWOL, Inc",Attribution 3.0\n')
    rows = parse_tracks_csv(text.splitlines(keepends=True))
    assert rows[2]["genre"] == "Hip-Hop" and rows[2]["artist"] == "AWOL, Inc"
    assert rows[2]["licence"] == "https://creativecommons.org/licenses/by/3.0/"
