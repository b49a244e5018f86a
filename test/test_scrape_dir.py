"""The dir source (local folder and s3://), and fma-site output to s3:// (moto server on 127.0.0.1)."""
from __future__ import annotations

import json
import subprocess

import pytest

from helpers.scrape import config, make_tracks, read_jsonl, sha256
from waveforms import storage
from waveforms.config import ScrapeConfig
from waveforms.demo.mirror import Mirror
from waveforms.demo.music import ffmpeg_mp3
from waveforms.scrape import run


@pytest.fixture
def music_dir(tmp_path):
    d = tmp_path / "music"
    ffmpeg_mp3(["-f", "lavfi", "-i", "sine=frequency=330:duration=1"], d / "000077.mp3", 1.0,
               {"title": "Seventy-Seven", "artist": "Tone Maker", "album": "Sines", "genre": "Test",
                "copyright": "CC BY 4.0 https://creativecommons.org/licenses/by/4.0/"})
    ffmpeg_mp3(["-f", "lavfi", "-i", "sine=frequency=440:duration=1"], d / "sub" / "My Song.mp3", 1.0, {})
    (d / "fake.mp3").write_text("<html>not audio</html>")
    (d / "notes.txt").write_text("ignored")
    return d


def test_dir_source_local(music_dir, tmp_path):
    out = tmp_path / "raw"
    assert run(ScrapeConfig(source="dir", input=str(music_dir), out=str(out), limit=0)) == 0
    rows = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert "000077" in rows and len(rows) == 2  # ids from file names, as a transform of the folder gives
    assert rows["000077"]["path"] == "tracks/000077.mp3"
    assert rows["sub_My_Song"]["path"] == "tracks/sub_My_Song.mp3"
    r = rows["000077"]
    assert (r["title"], r["artist"], r["album"], r["genre"]) == ("Seventy-Seven", "Tone Maker", "Sines", "Test")
    assert r["licence"] == "https://creativecommons.org/licenses/by/4.0/"
    assert r["path"] == "tracks/000077.mp3" and r["sha256"] == sha256(music_dir / "000077.mp3")
    other = rows["sub_My_Song"]
    assert other["title"] is None and (out / other["path"]).read_bytes() == (music_dir / "sub/My Song.mp3").read_bytes()
    assert [e["reason"] for e in read_jsonl(out / "errors.jsonl")] == ["not-mp3"]


@pytest.fixture
def s3(aws_env):
    """A bucket on the session's moto server (empty at the start of each test)."""
    storage.s3_client().create_bucket(Bucket="music")
    return "s3://music"


def test_site_to_s3_and_dir_from_s3(s3, tones, music_dir, tmp_path):
    with Mirror(make_tracks(tones)) as m:
        assert run(config(m, f"{s3}/raw")) == 0
        rows = [json.loads(x) for x in storage.read_text(f"{s3}/raw/manifest.jsonl").splitlines()]
        assert sorted(r["id"] for r in rows) == ["1", "2", "3", "4"]
        for r in rows:
            assert storage.read_bytes(f"{s3}/raw/{r['path']}") == tones[int(r["id"]) - 1].read_bytes()
        n = len(m.requests_for("/files/"))
        assert run(config(m, f"{s3}/raw")) == 0  # rerun: nothing downloaded again
        assert len(m.requests_for("/files/")) == n
    assert storage.exists(f"{s3}/raw/config.json")
    for f in storage.list_files(str(music_dir), ".mp3"):
        storage.upload_file(f, f"{s3}/in/" + f[len(str(music_dir)) + 1:])
    assert run(ScrapeConfig(source="dir", input=f"{s3}/in", out=str(tmp_path / "fromS3"), limit=0)) == 0
    manifest = tmp_path / "fromS3" / "manifest.jsonl"
    assert manifest.exists()
    rows = {r["id"]: r for r in read_jsonl(manifest)}
    assert sorted(rows) == ["000077", "sub_My_Song"]  # fake.mp3 is not audio
    assert rows["000077"]["title"] == "Seventy-Seven" and rows["000077"]["sha256"] == sha256(music_dir / "000077.mp3")
    other = rows["sub_My_Song"]
    assert (tmp_path / "fromS3" / other["path"]).read_bytes() == (music_dir / "sub" / "My Song.mp3").read_bytes()


def test_ffmpeg_mp3_encodes_the_whole_source_unless_told_a_length(tmp_path):
    def duration(path):
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                              str(path)], capture_output=True, text=True, check=True)
        return float(out.stdout)

    src = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050:duration=3"]
    whole = ffmpeg_mp3(src, tmp_path / "whole.mp3", 0.0)
    cut = ffmpeg_mp3(src, tmp_path / "cut.mp3", 1.0)
    assert duration(whole) == pytest.approx(3.0, abs=0.1)  # MP3 frames pad the end by a few ms
    assert duration(cut) == pytest.approx(1.0, abs=0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp3", "whole.mp3"]  # no temporary left
