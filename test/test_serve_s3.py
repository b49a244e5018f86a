"""The studio over an s3:// root (moto on 127.0.0.1): the same listings, audio and generation as a local root."""
from __future__ import annotations

import pytest
import requests

from helpers.aws import BUCKET, client
from helpers.serve import make_dataset, running, train_model
from waveforms import storage
from waveforms.config import ServeConfig

pytestmark = pytest.mark.slow


def _listing(base: str) -> dict:
    """What a client sees: datasets with their tracks, models with their metric steps."""
    out = {}
    for d in requests.get(f"{base}/api/datasets", timeout=60).json():
        detail = requests.get(f"{base}/api/datasets/{d['id']}", timeout=60).json()
        out[("dataset", d["name"])] = sorted((t["id"], t["title"], t["split"]) for t in detail["tracks"])
    for m in requests.get(f"{base}/api/models", timeout=60).json():
        rows = requests.get(f"{base}/api/models/{m['id']}/metrics", timeout=60).json()
        out[("model", m["name"])] = [r["step"] for r in rows]
    return out


def _audio(base: str, path: str) -> bytes:
    r = requests.get(base + path, timeout=120)
    assert r.status_code == 200, r.text
    return r.content


def test_an_s3_root_serves_what_a_local_root_does(aws_env, tmp_path):
    local = tmp_path / "studio"
    train_model(make_dataset(local / "dataset"), local / "runs" / "tiny", steps=20)
    client("s3").create_bucket(Bucket=BUCKET)
    for f in storage.list_files(str(local)):
        storage.upload_file(f, f"s3://{BUCKET}/studio/" + f[len(str(local)) + 1:])
    with running(ServeConfig(roots=[str(local)], upload_dir=str(tmp_path / "up1"))) as on_disk, \
            running(ServeConfig(roots=[f"s3://{BUCKET}/studio"], upload_dir=str(tmp_path / "up2"))) as on_s3:
        want, got = _listing(on_disk), _listing(on_s3)
        assert got == want and set(got) == {("dataset", "dataset"), ("model", "runs/tiny")}
        assert got[("model", "runs/tiny")] == [5, 10, 15, 20]
        pairs = []
        for base in (on_disk, on_s3):
            (ds,) = requests.get(f"{base}/api/datasets", timeout=60).json()
            (model,) = requests.get(f"{base}/api/models", timeout=60).json()
            pairs.append((
                _audio(base, f"/api/datasets/{ds['id']}/tracks/t1/audio.wav?start=0.25&seconds=0.5"),
                _audio(base, f"/api/models/{model['id']}/generate.wav?seconds=0.2&temperature=1&seed=4"),
            ))
    assert pairs[0] == pairs[1]  # byte for byte: the span of the shard and the seeded generation
    assert len(pairs[0][0]) == 44 + 2 * 4000 and len(pairs[0][1]) == 44 + 2 * 1600  # 8 kHz, 16-bit mono
