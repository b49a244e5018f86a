"""The memorisation check on two whole corpora of real music that Debian ships: Shawn Parrotte's and
others' hyperrogue-music (CC BY-SA 3.0, Ogg Vorbis) and the Pingus soundtrack (GPL-2+, Impulse Tracker
modules in pingus-data, rendered by ffmpeg's libopenmpt). Re-encoded, re-levelled, shifted excerpts are
found at their track and offset; noise, tones, silence and an untrained model's output are not."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers.evaluate import excerpt, transform
from waveforms.audio import file_to_codes, mulaw
from waveforms.audio.clips import write_wav
from waveforms.config import load
from waveforms.dataset import Dataset
from waveforms.evaluate.embed import features_at, second_starts
from waveforms.evaluate.index import build
from waveforms.evaluate.memorisation import LoadedIndex, check

SR = 16000
CORPORA = {
    "hyperrogue": (Path("/usr/share/hyperrogue/music"), "*.ogg"),
    "pingus": (Path("/usr/share/games/pingus/data/music"), "*.it"),
}


def _input(name: str, folder: Path) -> Path:
    src, pattern = CORPORA[name]
    files = sorted(src.glob(pattern))
    if not files:
        pytest.fail(f"{src} holds no {pattern}: run make setup (Debian's hyperrogue-music and pingus-data)",
                    pytrace=False)
    folder.mkdir(parents=True)
    for f in files:
        if f.suffix == ".ogg":
            (folder / f.name).symlink_to(f)
        else:  # tracker modules: rendered to Ogg Vorbis, which the transform reads
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(f), "-ac", "1", "-ar", "22050",
                            "-codec:a", "libvorbis", "-q:a", "5", str(folder / f"{f.stem}.ogg")], check=True)
    return folder


@pytest.fixture(scope="module", params=sorted(CORPORA))
def corpus(request, tmp_path_factory, spark_session):
    root = tmp_path_factory.mktemp(request.param)
    data = transform(_input(request.param, root / "raw"), root / "dataset", val_fraction=0.1)
    manifest = build(load("index", flags={"data": str(data), "master": "local[2]"})).manifest
    print(f"\n{request.param}: {manifest['vectors']} vectors, {len(manifest['tracks'])} tracks, threshold "
          f"{manifest['threshold']}, calibration {manifest['calibration']}")
    return request.param, data, LoadedIndex.open(str(data / "index"))


def _unique_passages(loaded: LoadedIndex, ds: Dataset, count: int) -> list[tuple[dict, float]]:
    """``count`` 6 s passages (track, start s) from different tracks whose windows have no look-alike
    anywhere else in the corpus: at every offset a copy's second is tried at, each window more than 1 s
    away scores below the threshold (game music repeats its bars; a repeated bar is no test of offsets)."""
    spec, out, level = loaded.spec, [], loaded.threshold
    by_id = {str(t["id"]): t for t in ds.split("train")}
    for pos, entry in enumerate(loaded.manifest["tracks"]):
        t = by_id[str(entry["id"])]
        codes = ds.read_track(t)
        for start in np.arange(2.0, len(codes) / SR - 8.0, 2.0):
            a = int(start * SR)
            groups = second_starts(6 * SR, spec)  # every offset a copy's second is tried at
            starts = np.concatenate(groups)
            v = loaded.matcher.projection(features_at(codes[a:a + 6 * SR], starts, spec))
            sims, labels = loaded.index.search(v, 20)
            own = (start + starts / SR)[:, None]
            elsewhere = (loaded.track[labels] != pos) | (np.abs(loaded.offset_s[labels] - own) > 1.0)
            if np.all(np.linalg.norm(v, axis=1) > 0) and np.all(np.where(elsewhere, sims, -1) < level):
                out.append((t, float(start)))
                break
        if len(out) == count:
            return out
    return out


@pytest.mark.slow
def test_copies_are_found_at_their_track_and_offset(corpus, tmp_path):
    name, data, loaded = corpus
    ds = Dataset.open(str(data))
    passages = _unique_passages(loaded, ds, 3)
    assert len(passages) == 3
    for t, start in passages:
        wav = tmp_path / f"{t['id']}.wav"
        write_wav(wav, ds.read_track(t), SR)
        mp3 = excerpt(wav, tmp_path / f"{t['id']}.mp3", start + 0.007, 5.0, bitrate="96k", gain_db=-3.0, rate=44100)
        seconds = check(loaded, {"copy": file_to_codes(str(mp3), SR)}, SR)["seconds"]
        assert len(seconds) == 5
        for s in seconds:
            assert s["track_id"] == str(t["id"]), (name, t["id"], start, s)
            assert abs(s["offset_s"] - (start + 0.007 + s["second"])) <= 0.5, (name, start, s)
            assert s["match"], (name, start, s)


@pytest.mark.slow
def test_no_negative_control_is_flagged_and_the_margin_is_positive(corpus):
    name, _, loaded = corpus
    calib = loaded.manifest["calibration"]
    assert set(calib["negative"]) == {"white", "pink", "brown", "silence", "sweep", "tone", "chord", "untrained-model"}
    assert max(calib["negative"].values()) == calib["negative_max"] < loaded.threshold < calib["copy_min"]
    assert calib["margin"] == pytest.approx(calib["copy_min"] - calib["negative_max"], abs=1e-5) and calib["margin"] > 0
    # controls made here, apart from the calibration's: other seeds, levels and frequencies
    rng = np.random.default_rng(11)
    t = np.arange(4 * SR) / SR
    white = rng.uniform(-0.8, 0.8, len(t))
    brown = np.cumsum(rng.normal(size=len(t)))
    brown = 0.5 * (brown - brown.mean()) / np.abs(brown - brown.mean()).max()
    clips = {"white": white, "brown": brown, "silence": np.zeros(len(t)), "tones": 0.3 * np.sin(2 * np.pi * 1000 * t)
             + 0.3 * np.sin(2 * np.pi * 97 * t), "sweep": 0.5 * np.sin(2 * np.pi * (40 * t + 900 * t ** 2))}
    result = check(loaded, {k: mulaw.encode(np.clip(v, -1, 1)) for k, v in clips.items()}, SR)
    assert len(result["seconds"]) == 5 * 4
    assert not any(s["match"] for s in result["seconds"]), [s for s in result["seconds"] if s["match"]]
    assert result["margin"] == {k: calib[k] for k in ("copy_min", "negative_max", "margin")}
