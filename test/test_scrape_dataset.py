"""The fma-dataset source against a tiny archive pair with the real layout, served locally."""
from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from helpers.faulty_mirror import FaultyMirror
from helpers.scrape import read_jsonl
from waveforms.config import ScrapeConfig
from waveforms.scrape import run

TRACKS_CSV = '''\
,album,artist,set,set,track,track,track
,title,name,split,subset,genre_top,license,title
track_id,,,,,,,
2,AWOL - A Way Of Life,AWOL,training,small,Hip-Hop,Attribution-NonCommercial-ShareAlike 3.0 International,Food
3,AWOL - A Way Of Life,AWOL,validation,small,Hip-Hop,Attribution-NonCommercial-ShareAlike 3.0 International,Electric Ave
5,"Songs, Vol. 1",Kurt Vile,test,small,Folk,Creative Commons Zero 1.0,"Quote ""this"""
10,Other,Someone,training,small,Rock,Attribution 4.0 International,Broken
99134,Gone,Nobody,training,small,Rock,Attribution 4.0 International,Silent
'''


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def archives(tones, tmp_path_factory):
    d = tmp_path_factory.mktemp("fma")
    meta = d / "fma_metadata.zip"
    with zipfile.ZipFile(meta, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("fma_metadata/tracks.csv", TRACKS_CSV)
        zf.writestr("fma_metadata/genres.csv", "genre_id,title\n")
    clips = {2: tones[0], 3: tones[1], 5: tones[2], 10: tones[3]}
    small = d / "fma_small.zip"
    with zipfile.ZipFile(small, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("fma_small/README.txt", "tiny test archive\n")
        sums = []
        for tid, mp3 in clips.items():
            data = mp3.read_bytes()
            name = f"{tid // 1000:03d}/{tid:06d}.mp3"
            zf.writestr(f"fma_small/{name}", data)
            digest = hashlib.sha1(data if tid != 10 else b"something else").hexdigest()
            sums.append(f"{digest}  {name}")
        zf.writestr("fma_small/099/099134.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00")  # a tag, no audio
        zf.writestr("fma_small/checksums", "\n".join(sums) + "\n")
    assert zipfile.ZipFile(small).getinfo("fma_small/000/000002.mp3").compress_type == zipfile.ZIP_BZIP2
    return {"fma_metadata.zip": meta, "fma_small.zip": small, "clips": clips}


@pytest.fixture
def server(archives):
    with FaultyMirror([], archives={k: v for k, v in archives.items() if k.endswith(".zip")}) as m:
        yield m


def cfg(server, archives, out, **kw) -> ScrapeConfig:
    sums = {"fma_metadata": sha1(archives["fma_metadata.zip"]), "fma_small": sha1(archives["fma_small.zip"])}
    base = dict(source="fma-dataset", mirror=server.url + "/fma/", out=str(out), archive="fma_small",
                requests_per_second=100.0, backoff_factor=0.01, archive_sha1=sums, limit=0)
    return ScrapeConfig(**{**base, **kw})


def test_dataset_manifest_from_tracks_csv(server, archives, tmp_path):
    out = tmp_path / "raw"
    assert run(cfg(server, archives, out)) == 0
    rows = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert sorted(rows) == ["2", "3", "5"]
    rows = {int(k): r for k, r in rows.items()}
    for tid in rows:
        assert (out / rows[tid]["path"]).read_bytes() == archives["clips"][tid].read_bytes()
        assert rows[tid]["path"] == f"tracks/{tid:06d}.mp3" and rows[tid]["source"] == "fma-dataset"
    assert rows[2]["genre"] == "Hip-Hop" and rows[2]["split"] == "training" and rows[3]["split"] == "validation"
    assert rows[2]["licence"] == "https://creativecommons.org/licenses/by-nc-sa/3.0/"
    assert rows[5]["licence"] == "https://creativecommons.org/publicdomain/zero/1.0/"
    assert rows[5]["album"] == "Songs, Vol. 1" and rows[5]["title"] == 'Quote "this"'
    assert rows[5]["file_url"].endswith("/fma/fma_small.zip#fma_small/000/000005.mp3")
    errors = {e["id"]: e["reason"] for e in read_jsonl(out / "errors.jsonl")}
    assert errors == {"10": "clip-checksum", "99134": "empty-clip"}
    # a second run reuses the cached archives and the extracted files
    n = len(server.log)
    assert run(cfg(server, archives, out)) == 0
    assert server.log[n:] == []
    assert len(read_jsonl(out / "manifest.jsonl")) == 3


def test_genre_and_licence_filters(server, archives, tmp_path):
    out = tmp_path / "raw"
    assert run(cfg(server, archives, out, genres=["Hip-Hop"], limit=1)) == 0
    assert [r["id"] for r in read_jsonl(out / "manifest.jsonl")] == ["2"]
    out2 = tmp_path / "raw2"
    assert run(cfg(server, archives, out2, licences=["CC0"])) == 0
    assert [r["id"] for r in read_jsonl(out2 / "manifest.jsonl")] == ["5"]


def test_wrong_archive_checksum_fails_cleanly(server, archives, tmp_path):
    out = tmp_path / "raw"
    c = cfg(server, archives, out)
    c.archive_sha1["fma_small"] = "0" * 40
    assert run(c) == 1
    errors = read_jsonl(out / "errors.jsonl")
    assert [e["reason"] for e in errors] == ["checksum"]
    assert sorted(p.name for p in (out / ".archives").iterdir()) == ["fma_metadata.zip"]
    assert not (out / "manifest.jsonl").exists()


def test_interrupted_archive_download_resumes_with_range(server, archives, tmp_path):
    out = tmp_path / "raw"
    data = archives["fma_small.zip"].read_bytes()
    cache = out / ".archives"
    cache.mkdir(parents=True)
    (cache / "fma_small.zip.part").write_bytes(data[: len(data) // 2])
    server.faults.once["/fma/fma_metadata.zip"] = ["truncate"]
    assert run(cfg(server, archives, out)) == 0
    small = [r for r in server.log if r["path"] == "/fma/fma_small.zip"]
    assert [r["range"] for r in small] == [f"bytes={len(data) // 2}-"]
    meta = [r for r in server.log if r["path"] == "/fma/fma_metadata.zip"]
    # cut after half its body, then resumed from the bytes that had arrived
    meta_data = archives["fma_metadata.zip"].read_bytes()
    assert len(meta) == 2 and meta[0]["range"] is None
    resumed = re.fullmatch(r"bytes=(\d+)-", meta[1]["range"] or "")
    assert resumed and 0 < int(resumed.group(1)) <= len(meta_data) // 2, meta[1]["range"]
    assert (cache / "fma_metadata.zip").read_bytes() == meta_data
    assert (cache / "fma_small.zip").read_bytes() == data
    assert sorted(r["id"] for r in read_jsonl(out / "manifest.jsonl")) == ["2", "3", "5"]
