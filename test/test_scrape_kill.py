"""Kill a crawl (SIGKILL) in the middle of a download, run it again: nothing lost or fetched twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.faulty_mirror import FaultyMirror
from helpers.scrape import config, make_tracks, read_jsonl, sha256
from helpers.waiting import wait_for
from waveforms.scrape import run

ROOT = Path(__file__).resolve().parents[1]


def body_started(partial: Path) -> bool:
    """A temporary download holds bytes (a listed file may be renamed away before its size is read)."""
    for p in partial.glob("*.part"):
        try:
            if p.stat().st_size > 0:
                return True
        except FileNotFoundError:
            continue
    return False


@pytest.mark.slow
def test_sigkill_mid_download_then_resume(sine_mp3, tmp_path):
    tones = [sine_mp3(tmp_path / f"t{i}.mp3", 300.0 + 50 * i, 6.0) for i in range(4)]  # ~48 KB each
    tracks = make_tracks(tones)
    with FaultyMirror(tracks) as m:
        m.faults.always[m.file_key(3)] = "slow"  # 8 KiB every 0.5 s: about 3 s for the body
        m.faults.slow_delay_s = 0.5
        out = tmp_path / "raw"
        cmd = [sys.executable, "-m", "waveforms", "scrape", "--base-url", m.url, "--genre", "Electronic",
               "--out", str(out), "--rate", "200", "--set", "download_concurrency=1", "--set", "page_size=4"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        partial = out / ".partial"
        manifest = out / "manifest.jsonl"
        try:  # two complete manifest lines, and track 3's body on its way in
            wait_for(lambda: body_started(partial) and manifest.exists() and manifest.read_text().count("\n") == 2,
                     60, "the slow download of track 3", every=0.05, alive=lambda: proc.poll() is None)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        # killed mid-body: no file under the final name, manifest holds the two complete tracks
        assert not (out / "tracks" / "000003.mp3").exists()
        assert sorted(p.name for p in (out / "tracks").iterdir()) == ["000001.mp3", "000002.mp3"]
        lines = (out / "manifest.jsonl").read_text().splitlines()
        assert [json.loads(x)["id"] for x in lines] == ["1", "2"]
        before = [r["path"] for r in m.requests_for("/files/")]
        assert before == [m.file_key(1), m.file_key(2), m.file_key(3)]

        m.faults.always.clear()
        assert run(config(m, out, page_size=4)) == 0
        again = [r["path"] for r in m.requests_for("/files/")][len(before):]
        assert sorted(again) == sorted([m.file_key(3), m.file_key(4)])  # 1 and 2 not fetched again
    rows = read_jsonl(out / "manifest.jsonl")
    assert sorted(r["id"] for r in rows) == ["1", "2", "3", "4"]
    for r in rows:
        assert sha256(out / r["path"]) == sha256(tones[int(r["id"]) - 1]) == r["sha256"]
    # the killed run's partial body was cleared by the rerun, which removed its .partial folder at the end
    assert not (out / ".partial").exists()
    assert sorted(p.name for p in (out / "tracks").iterdir()) == [f"{i:06d}.mp3" for i in range(1, 5)]
