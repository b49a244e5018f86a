"""The fma-site source against the local FMA-format mirror, with and without faults."""
from __future__ import annotations

import pytest

from helpers.faulty_mirror import FaultyMirror
from helpers.scrape import CC_BY, CC_BY_NC_SA, config, make_tracks, read_jsonl, sha256
from waveforms import cli
from waveforms.demo.mirror import Mirror
from waveforms.scrape import run
from waveforms.scrape.fma_site import ScrapeRefused
from waveforms.scrape.manifest import FIELDS


@pytest.fixture
def mirror(tones):
    with FaultyMirror(make_tracks(tones)) as m:
        yield m


def file_requests(m: Mirror) -> list[str]:
    return [r["path"] for r in m.requests_for("/files/")]


def test_crawl_downloads_tracks_with_manifest(mirror, tones, tmp_path):
    out = tmp_path / "raw"
    assert run(config(mirror, out, genres=["Electronic", "Folk"])) == 0
    rows = read_jsonl(out / "manifest.jsonl")
    assert sorted(r["id"] for r in rows) == ["1", "2", "3", "4", "5", "6"]
    by_id = {r["id"]: r for r in rows}
    for i, src in enumerate(tones, start=1):
        r = by_id[str(i)]
        assert list(r)[: len(FIELDS)] == list(FIELDS)
        assert r["path"] == f"tracks/{i:06d}.mp3"
        assert (out / r["path"]).read_bytes() == src.read_bytes()
        assert r["sha256"] == sha256(src) and r["size"] == src.stat().st_size
        assert r["title"] == f"Tone {i}" and r["source"] == "fma-site"
        assert r["genre"] == ("Electronic" if i <= 4 else "Folk")
        assert r["licence"] == (CC_BY_NC_SA if i == 5 else CC_BY)
        assert r["album"] == (None if i % 2 else "Test Album")
        assert r["file_url"].startswith(mirror.url + "/files/")
        assert r["page_url"].startswith(mirror.url + "/music/")
    assert by_id["2"]["artist"] == 'Sine & Co\'s "Band"'  # survives both attribute quotings
    assert sorted(p.name for p in (out / "tracks").iterdir()) == [f"{i:06d}.mp3" for i in range(1, 7)]
    assert not (out / "errors.jsonl").exists()
    assert '"stage": "scrape"' in (out / "config.json").read_text()
    # pagination followed: 2 per page -> pages 1 and 2 of Electronic, page 1 of Folk
    pages = [r["key"] for r in mirror.requests_for("/genre/")]
    assert pages == ["/genre/Electronic?page=1", "/genre/Electronic?page=2", "/genre/Folk?page=1"]
    assert all(r["ua"].startswith("waveforms-scraper/") for r in mirror.log)


def test_rerun_skips_complete_files_and_refetches_a_damaged_one(mirror, tones, tmp_path):
    out = tmp_path / "raw"
    assert run(config(mirror, out)) == 0
    first = len(file_requests(mirror))
    assert first == 4
    (out / "tracks" / "000002.mp3").write_bytes(b"ID3 damaged")
    assert run(config(mirror, out)) == 0
    assert file_requests(mirror)[first:] == [mirror.file_key(2)]
    assert sha256(out / "tracks" / "000002.mp3") == sha256(tones[1])
    rows = read_jsonl(out / "manifest.jsonl")
    assert sorted(r["id"] for r in rows) == ["1", "2", "3", "4"]  # one line per id after the rerun


def test_a_manifest_written_before_size_resumes_without_fetching_again(mirror, tones, tmp_path):
    import json

    from waveforms.transform.sources import list_inputs

    out = tmp_path / "raw"
    assert run(config(mirror, out)) == 0
    first = len(file_requests(mirror))
    rows = read_jsonl(out / "manifest.jsonl")  # as an earlier scrape wrote them: "bytes", not "size"
    old = [{("bytes" if k == "size" else k): v for k, v in r.items()} for r in rows]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    assert {r["id"]: r["size"] for r in list_inputs(str(out))} == {r["id"]: r["size"] for r in rows}
    assert run(config(mirror, out)) == 0
    assert file_requests(mirror)[first:] == []  # every file checked against its old row and kept
    assert read_jsonl(out / "manifest.jsonl") == old


def test_transient_faults_are_retried(mirror, tones, tmp_path):
    mirror.faults.once[mirror.file_key(1)] = ["429", "500", "reset"]
    mirror.faults.once[mirror.file_key(2)] = ["truncate", "503"]
    mirror.faults.once[mirror.page_key("Electronic", 2)] = ["500"]
    out = tmp_path / "raw"
    assert run(config(mirror, out)) == 0
    assert {r["id"] for r in read_jsonl(out / "manifest.jsonl")} == {"1", "2", "3", "4"}
    assert sha256(out / "tracks/000001.mp3") == sha256(tones[0])
    assert sha256(out / "tracks/000002.mp3") == sha256(tones[1])
    assert file_requests(mirror).count(mirror.file_key(1)) == 4
    assert file_requests(mirror).count(mirror.file_key(2)) == 3
    assert not (out / "errors.jsonl").exists()
    # the retried downloads' temporaries are gone: the run removes its .partial folder when it finishes
    assert not (out / ".partial").exists()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "manifest.jsonl", "tracks"]


def test_permanent_faults_are_recorded_and_the_run_goes_on(mirror, tmp_path):
    mirror.faults.always[mirror.file_key(1)] = "html-type"
    mirror.faults.always[mirror.file_key(2)] = "not-mp3"
    mirror.faults.always[mirror.file_key(3)] = "404"
    mirror.faults.always[mirror.file_key(4)] = "truncate"
    mirror.faults.always[mirror.file_key(6)] = "500"
    out = tmp_path / "raw"
    assert run(config(mirror, out, genres=["Electronic", "Folk"], max_retries=2)) == 0
    assert [r["id"] for r in read_jsonl(out / "manifest.jsonl")] == ["5"]
    reasons = {e["id"]: e["reason"] for e in read_jsonl(out / "errors.jsonl")}
    assert reasons == {"1": "content-type", "2": "not-mp3", "3": "http-404", "4": "truncated", "6": "http-500"}
    assert sorted(p.name for p in (out / "tracks").iterdir()) == ["000005.mp3"]


def test_nothing_fetched_exits_non_zero(mirror, tmp_path):
    for i in range(1, 5):
        mirror.faults.always[mirror.file_key(i)] = "404"
    assert run(config(mirror, tmp_path / "raw")) == 1


def test_malformed_pages_are_recorded(mirror, tmp_path):
    mirror.faults.always[mirror.page_key("Electronic", 1)] = "bad-json"
    mirror.faults.always[mirror.page_key("Folk", 1)] = "malformed"
    out = tmp_path / "raw"
    assert run(config(mirror, out, genres=["Electronic", "Folk", "Nope"])) == 0
    assert sorted(r["id"] for r in read_jsonl(out / "manifest.jsonl")) == ["3", "4"]
    errors = read_jsonl(out / "errors.jsonl")
    assert sorted(e["reason"] for e in errors) == ["bad-track-info", "bad-track-info", "http-404", "malformed-page"]
    assert any("/genre/Nope" in e["url"] for e in errors if e["reason"] == "http-404")


def test_hostile_handles_and_ids_cannot_escape(tones, tmp_path):
    tracks = make_tracks(tones)[:3]
    tracks[0].handle = "../../etc/x"
    tracks[1].handle = "..\\..\\evil"
    tracks[1].title = "../../../tmp/pwn"
    with Mirror(tracks) as m:
        out = tmp_path / "out" / "raw"
        assert run(config(m, out)) == 0
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "out/raw/config.json", "out/raw/manifest.jsonl",
        "out/raw/tracks/000001.mp3", "out/raw/tracks/000002.mp3", "out/raw/tracks/000003.mp3",
    ]


def test_duplicate_listing_downloaded_once(mirror, tmp_path):
    mirror.listings["Electronic"].insert(3, 1)  # track 1 on page 1 and page 2
    mirror.listings["Folk"].append(2)  # and track 2 in another genre
    out = tmp_path / "raw"
    assert run(config(mirror, out, genres=["Electronic", "Folk"])) == 0
    ids = [r["id"] for r in read_jsonl(out / "manifest.jsonl")]
    assert sorted(ids) == ["1", "2", "3", "4", "5", "6"]
    assert len(file_requests(mirror)) == 6


def test_limits_per_genre_and_total(mirror, tmp_path):
    assert run(config(mirror, tmp_path / "a", genres=["Electronic", "Folk"], per_genre_limit=1)) == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "a/manifest.jsonl")] == ["1", "5"]
    assert run(config(mirror, tmp_path / "b", genres=["Electronic", "Folk"], per_genre_limit=3, limit=4)) == 0
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "b/manifest.jsonl")) == ["1", "2", "3", "5"]


def test_licence_filter(mirror, tmp_path):
    out = tmp_path / "raw"
    assert run(config(mirror, out, genres=["Electronic", "Folk"], licences=["CC-BY-NC*"])) == 0
    assert [r["id"] for r in read_jsonl(out / "manifest.jsonl")] == ["5"]
    assert len(file_requests(mirror)) == 1
    assert run(config(mirror, tmp_path / "x", genres=["Folk"], licences=["CC-BY"])) == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "x/manifest.jsonl")] == ["6"]


def test_robots_disallow_is_obeyed(mirror, tmp_path):
    mirror.robots.disallow = ["/files/"]
    out = tmp_path / "raw"
    assert run(config(mirror, out)) == 1
    assert file_requests(mirror) == []
    assert {e["reason"] for e in read_jsonl(out / "errors.jsonl")} == {"robots-disallowed"}


def test_content_signal_ai_train_no_refuses(mirror, tmp_path):
    mirror.robots.content_signal = "search=yes, ai-train=no, use=reference"
    with pytest.raises(ScrapeRefused, match="fma-dataset"):
        run(config(mirror, tmp_path / "raw"))
    assert [r["path"] for r in mirror.log] == ["/robots.txt"]
    code = cli.main(["scrape", "--base-url", mirror.url, "--genre", "Electronic", "--out", str(tmp_path / "c")])
    assert code == 1


def test_cli_flags_and_slow_stall_timeout(mirror, tones, tmp_path):
    mirror.faults.once[mirror.file_key(3)] = ["stall"]
    mirror.faults.stall_s = 3.0  # well past the 1 s read timeout, which replies on a loaded machine stay within
    out = tmp_path / "raw"
    code = cli.main([
        "scrape", "--base-url", mirror.url, "--genre", "Electronic", "--limit", "3", "--out", str(out),
        "--rate", "100", "--set", "page_size=3", "--set", "timeout_s=1", "--set", "backoff_factor=0.01",
    ])
    assert code == 0
    assert sorted(r["id"] for r in read_jsonl(out / "manifest.jsonl")) == ["1", "2", "3"]
    assert file_requests(mirror).count(mirror.file_key(3)) == 2  # timed out once, then fetched


@pytest.mark.parametrize("source, flag", [("fma-site", "--base-url"), ("fma-dataset", "--mirror")])
def test_a_site_url_that_is_not_http_is_a_clear_error(tmp_path, capsys, source, flag):
    out = tmp_path / "raw"
    code = cli.main(["scrape", "--source", source, flag, "ftp://127.0.0.1/fma/", "--genre", "Rock", "--out", str(out)])
    assert code == 1
    assert f"{flag}: not an http(s) URL: 'ftp://127.0.0.1/fma/'" in capsys.readouterr().err
    assert not out.exists()  # nothing was created


def test_redirect_to_other_scheme_refused(mirror, tmp_path):
    from waveforms.scrape.http import FetchError, check_url

    for bad in ("file:///etc/passwd", "ftp://x/y.mp3", "javascript:alert(1)", "//host/x"):
        with pytest.raises(FetchError):
            check_url(bad)
