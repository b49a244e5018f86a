"""The index stage: window embeddings of real music on Spark, copies found, novelty not flagged,
incremental adds, and the same index from a standalone cluster."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.evaluate import MUSIC_DIR, START_S, excerpt
from waveforms.audio import file_to_codes, mulaw
from waveforms.config import load
from waveforms.evaluate.index import build
from waveforms.evaluate.index_format import read_manifest
from waveforms.evaluate.memorisation import LoadedIndex, check

SR = 16000


@pytest.fixture(scope="module")
def built(music_dataset, spark_session) -> Path:
    build(load("index", flags={"data": str(music_dataset), "master": "local[2]"}))
    return music_dataset / "index"


def test_manifest_lists_training_tracks_and_every_window(built, music_dataset):
    from waveforms.dataset import Dataset

    ds = Dataset.open(str(music_dataset))
    manifest = read_manifest(str(built))
    train = sorted(str(t["id"]) for t in ds.split("train"))
    assert sorted(t["id"] for t in manifest["tracks"]) == train and "hr3-jungle" not in train
    windows = sum((int(t["num_samples"]) - SR) // (SR // 2) + 1 for t in ds.split("train"))
    assert manifest["vectors"] == windows
    assert sorted(p.name for p in built.iterdir()) == sorted(["index.json", "config.json", *manifest["files"].values()])
    assert 0 < manifest["threshold"] < 1


def test_reencoded_quieter_shifted_excerpt_is_found(built, tmp_path):
    loaded = LoadedIndex.open(str(built))
    start = 7.004  # seconds into the dataset's excerpt of the track, a few ms off the 0.5 s grid
    mp3 = excerpt(MUSIC_DIR / "hr3-desert.ogg", tmp_path / "copy.mp3", START_S + start, 5.0, bitrate="64k",
                  gain_db=-3.0, rate=44100)
    result = check(loaded, {"copy": file_to_codes(str(mp3), SR)}, SR)
    seconds = result["seconds"]
    assert len(seconds) == 5
    for s in seconds:
        assert s["track_id"] == "hr3-desert"
        assert abs(s["offset_s"] - (start + s["second"])) <= 0.5
        assert s["match"] and s["similarity"] >= loaded.threshold
    assert result["match_fraction"] == 1.0


def test_noise_and_sweep_are_not_flagged(built):
    loaded = LoadedIndex.open(str(built))
    rng = np.random.default_rng(3)
    noise = mulaw.encode(np.clip(rng.normal(0.0, 0.3, 5 * SR), -1, 1))
    t = np.arange(5 * SR) / SR
    sweep = mulaw.encode(0.5 * np.sin(2 * np.pi * np.cumsum(100.0 * 60.0 ** (t / 5)) / SR))
    result = check(loaded, {"noise": noise, "sweep": sweep}, SR)
    assert len(result["seconds"]) == 10
    assert not any(s["match"] for s in result["seconds"]), result["seconds"]
    assert result["match_fraction"] == 0.0


def _subset(src: Path, dst: Path, drop: set[str]) -> Path:
    """A copy of a dataset without the tracks in ``drop`` (the shards are shared)."""
    dst.mkdir(parents=True)
    (dst / "shards").symlink_to(src / "shards")
    lines = [line for line in (src / "manifest.jsonl").read_text().splitlines(keepends=True)
             if not any(f'"id": "{d}"' in line for d in drop)]
    (dst / "manifest.jsonl").write_text("".join(lines))
    return dst


def test_incremental_add_keeps_projection_and_vectors(built, music_dataset, tmp_path):
    data = _subset(music_dataset, tmp_path / "ds", {"hr3-desert", "hr3-motion"})
    out = tmp_path / "index"
    first = build(load("index", flags={"data": str(data), "output": str(out), "master": "local[2]"})).manifest
    old = LoadedIndex.open(str(out))
    shutil.copy(music_dataset / "manifest.jsonl", data / "manifest.jsonl")
    second = build(load("index", flags={"data": str(data), "output": str(out), "master": "local[2]"})).manifest
    new = LoadedIndex.open(str(out))
    assert second["added"] == 2 and first["added"] == 5
    assert second["files"]["pca"] == first["files"]["pca"] and second["threshold"] == first["threshold"]
    assert second["vectors"] == read_manifest(str(built))["vectors"]
    n = first["vectors"]
    assert np.array_equal(new.index.reconstruct_n(0, n), old.index.reconstruct_n(0, n))
    assert np.array_equal(new.track[:n], old.track) and np.array_equal(new.offset_s[:n], old.offset_s)
    assert {second["tracks"][i]["id"] for i in new.track[n:]} == {"hr3-desert", "hr3-motion"}
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.json", "config.json", *second["files"].values()])
    again = build(load("index", flags={"data": str(data), "output": str(out), "master": "local[2]"})).manifest
    assert again["added"] == 0 and again["vectors"] == second["vectors"]


@pytest.mark.slow
def test_standalone_cluster_builds_the_same_index(built, music_dataset, standalone, tmp_path):
    url = standalone()
    build(load("index", flags={"data": str(music_dataset), "output": str(tmp_path / "index"), "master": url}))
    from waveforms.runtime.spark import get_session

    get_session("local[2]", "waveforms-tests")
    local, remote = LoadedIndex.open(str(built)), LoadedIndex.open(str(tmp_path / "index"))
    assert local.manifest["threshold"] == pytest.approx(remote.manifest["threshold"], abs=1e-6)
    queries = local.index.reconstruct_n(0, local.index.ntotal)
    _, a = local.index.search(queries, 5)
    _, b = remote.index.search(queries, 5)
    assert np.array_equal(local.track[a], remote.track[b]) and np.array_equal(local.offset_s[a], remote.offset_s[b])


def test_manifest_records_the_embedding_and_its_calibration(built):
    from waveforms.evaluate.embed import EmbeddingSpec

    manifest = read_manifest(str(built))
    assert manifest["embedding"] == EmbeddingSpec(sample_rate=SR).to_dict()
    calib = manifest["calibration"]
    assert set(calib["negative"]) == {"white", "pink", "brown", "silence", "sweep", "tone", "chord", "untrained-model"}
    assert calib["negative"]["silence"] == 0.0
    assert calib["negative_max"] < manifest["threshold"]
    assert calib["cross_track"] < manifest["threshold"]
    # the copies: up to 8 tracks (the 7 training tracks here), 5 seconds each, all found
    assert calib["copy_seconds"] == 5 * len(manifest["tracks"]) == 35
    assert calib["copies_found"] == calib["copy_seconds"], calib
    assert calib["copy_min"] > manifest["threshold"] and calib["margin"] == pytest.approx(
        calib["copy_min"] - calib["negative_max"], abs=1e-5)



def test_the_calibration_is_logged_as_one_sentence_not_a_record():
    from waveforms.evaluate.calibrate import summary

    calib = {"threshold": 0.85651, "threshold_percentile": 99.9, "calibration_windows": 2000, "calibration": {
        "cross_track_percentile": 99.9, "cross_track": 0.757, "cross_track_windows": 2000,
        "negative": {"white": 0.629, "silence": 0.0, "untrained-model": 0.64}, "negative_max": 0.64,
        "copy": {"codec": "mp3"}, "copy_seconds": 39, "copies_found": 38, "copy_min": 0.967, "margin": 0.327}}
    assert summary(calib) == ("threshold 0.8565: cross-track p99.9 0.7570 (2,000 windows), highest negative control "
                              "0.6400 (untrained-model); 38 of 39 copy seconds found, lowest 0.9670, margin 0.3270")
    calib["calibration"].update(copy_seconds=0, copies_found=0, copy_min=None, margin=None)
    assert summary(calib).endswith("(untrained-model); no copies measured")

def test_other_embedding_settings_rebuild_the_index(built, music_dataset, tmp_path):
    out = tmp_path / "index"
    shutil.copytree(built, out)
    before = read_manifest(str(out))
    after = build(load("index", flags={"data": str(music_dataset), "output": str(out), "master": "local[2]"},
                       sets=["dims=16", "hop_s=0.25"])).manifest
    assert after["embedding"]["dims"] == 16 and after["embedding"]["hop_s"] == 0.25
    assert after["added"] == len(before["tracks"]) and after["files"]["pca"] != before["files"]["pca"]
    assert after["vectors"] == sum((int(t["num_samples"]) - SR) // (SR // 4) + 1 for t in before["tracks"])
    assert LoadedIndex.open(str(out)).index.d == 16


def test_an_index_of_another_embedding_is_refused_with_a_clear_message(built, tmp_path):
    import json

    from waveforms.runtime.errors import UserError

    out = tmp_path / "old"
    shutil.copytree(built, out)
    manifest = json.loads((out / "index.json").read_text())
    manifest["embedding"]["version"] = 1
    (out / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"mel-patch version 1; this version embeds with mel-patch version 2: rebuild"):
        LoadedIndex.open(str(out))
    del manifest["embedding"]
    (out / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="records no embedding spec"):
        LoadedIndex.open(str(out))
