"""The studio's HTTP API on a real uvicorn server (127.0.0.1, a free port) over a tone dataset and a tiny model."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import requests

from helpers.serve import RATE, TRACK_INFO, add_previews_and_evaluation, make_dataset, running, train_model
from helpers.train import tone
from helpers.waiting import wait_for
from waveforms.audio import mulaw
from waveforms.config import ServeConfig, generation

# JSON files in the older keys only (model.json, metrics.jsonl, a checkpoint's state.json); no weights
LEGACY = Path(__file__).parent / "data" / "legacy-tiny-model"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from waveforms.cli import main

    root = tmp_path_factory.mktemp("studio")
    data = make_dataset(root / "dataset")
    train_model(data, root / "runs" / "tiny")
    add_previews_and_evaluation(root / "runs" / "tiny")
    assert main(["generate", "--model", str(root / "runs" / "tiny"), "--seconds", "0.5", "--seed", "3",
                 "--temperature", "0.9", "--top-p", "0.95", "--output", str(root / "generated" / "seed3.wav")]) == 0
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret-model").mkdir()
    (outside / "secret-model" / "model.json").write_text("{}")
    (outside / "secret.wav").write_bytes(b"RIFF secret")
    os.symlink(outside / "secret-model", root / "linked-model")  # a symlinked folder leaving the root
    os.symlink(outside / "secret.wav", root / "runs" / "tiny" / "previews" / "leak.wav")  # a file leaving it
    return root


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def base(root, uploads):
    cfg = ServeConfig(roots=[str(root)], upload_dir=str(uploads), max_upload_mb=1.0,
                      max_generate_seconds=600.0, max_generations=2)
    with running(cfg) as url:
        yield url


def get(base: str, path: str, **kw) -> requests.Response:
    return requests.get(base + path, timeout=60, **kw)


def ids(base: str) -> tuple[str, str]:
    (ds,) = get(base, "/api/datasets").json()
    (model,) = get(base, "/api/models").json()
    return ds["id"], model["id"]


def test_datasets_list_tracks_and_set_aside_files(base):
    listed = get(base, "/api/datasets").json()
    assert [d["name"] for d in listed] == ["dataset"] and listed[0]["sample_rate"] == RATE
    detail = get(base, f"/api/datasets/{listed[0]['id']}").json()
    got = {t["id"]: (t["title"], t["artist"], t["licence"], t["split"], t["duration_s"]) for t in detail["tracks"]}
    assert got == {tid: (*info, "val" if tid == "t3" else "train", 2.0) for tid, info in TRACK_INFO.items()}
    assert detail["set_aside"] == [{"id": "broken", "file": "broken.mp3", "reason": "decode-failed",
                                    "detail": "Invalid data"}]


def test_track_audio_is_the_decoded_span(base):
    ds, _ = ids(base)
    r = get(base, f"/api/datasets/{ds}/tracks/t1/audio.wav?start=0.25&seconds=0.5")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()) == (RATE, 2, 1, 4000)
        pcm = np.frombuffer(w.readframes(4000), "<i2")
    codes = tone(2 * RATE, phase=7)[2000:6000]  # track t1: the tone at phase 7
    expected = np.rint(mulaw.decode(codes) * 32767).astype("<i2")
    np.testing.assert_array_equal(pcm, expected)
    assert get(base, f"/api/datasets/{ds}/tracks/t1/audio.wav?seconds=600").status_code == 400
    assert get(base, f"/api/datasets/{ds}/tracks/nope/audio.wav").status_code == 404


def test_model_detail_metrics_previews_and_evaluation(base, root):
    _, model = ids(base)
    detail = get(base, f"/api/models/{model}").json()
    rows = [json.loads(line) for line in (root / "runs/tiny/metrics.jsonl").read_text().splitlines()]
    assert detail["status"] == "trained" and detail["preset"] == "tiny" and detail["parent"] is None
    assert detail["model_json"]["sample_rate"] == RATE
    assert detail["training"]["step"] == rows[-1]["step"] == 30
    best = min(r["val_loss"] for r in rows if "val_loss" in r)
    assert detail["training"]["best_val_loss"] == pytest.approx(best)
    assert detail["training"]["best_val_probe_bits_per_sample"] == pytest.approx(best / np.log(2))
    assert all(r["val_probe_bits_per_sample"] == pytest.approx(r["val_loss"] / np.log(2)) for r in rows if "val_loss" in r)
    assert detail["evaluation"]["fd_mel"] == {"generated": 12.5, "halves": 1.5, "noise": 80.0}
    assert detail["evaluation"]["val_split_bits_per_sample"] == pytest.approx(2.5 / np.log(2))
    assert detail["dataset"] == ids(base)[0]  # the model's training data, by its dataset id
    assert get(base, f"/api/models/{model}/metrics").json() == rows
    # training's own previews (one per validation) and the one the fixture added; not the symlink leaving the root
    made = sorted(p.name for p in (root / "runs/tiny/previews").iterdir() if not p.is_symlink())
    assert made == ["step-000030.wav", "step_000010.wav", "step_000020.wav", "step_000030.wav"]
    assert sorted(p["name"] for p in get(base, f"/api/models/{model}/previews").json()) == made
    wav_bytes = get(base, f"/api/models/{model}/previews/step-000030.wav").content
    assert wav_bytes == (root / "runs/tiny/previews/step-000030.wav").read_bytes()


def test_files_written_before_the_renames_are_read_under_todays_names(tmp_path):
    """metrics.jsonl rows, evaluation.json and model.json's evaluation as earlier versions wrote them; an
    evaluation.json of a newer version is left out."""
    old, newer = tmp_path / "root" / "old", tmp_path / "root" / "newer"
    for model in (old, newer):
        shutil.copytree(LEGACY, model)  # its metrics rows say val_bits_per_sample
    meta = json.loads((old / "model.json").read_text())
    meta["evaluation"] = {"val_bits_per_sample": 3.25, "val_nats": 2.25, "fd_mel": None, "file": "evaluation.json"}
    (old / "model.json").write_text(json.dumps(meta))
    (old / "evaluation.json").write_text(json.dumps({"format": "waveforms-evaluation", "version": 1,
                                                     "val_nats": 2.25, "val_bits_per_sample": 3.25}))
    (newer / "evaluation.json").write_text(json.dumps({"format": "waveforms-evaluation", "format_version": 3}))
    row = json.loads((LEGACY / "metrics.jsonl").read_text())
    with running(ServeConfig(roots=[str(tmp_path / "root")], upload_dir=str(tmp_path / "uploads"))) as url:
        models = {m["name"]: m["id"] for m in get(url, "/api/models").json()}
        detail = get(url, f"/api/models/{models['old']}").json()
        rows = get(url, f"/api/models/{models['old']}/metrics").json()
        assert get(url, f"/api/models/{models['newer']}").json()["evaluation"] is None
    assert detail["evaluation"] == {"format": "waveforms-evaluation", "format_version": 1, "val_nats": 2.25,
                                    "val_split_bits_per_sample": 3.25}
    assert detail["model_json"]["evaluation"]["val_split_bits_per_sample"] == 3.25
    assert "val_bits_per_sample" not in detail["model_json"]["evaluation"]
    probe = row.pop("val_bits_per_sample")
    assert rows == [{**row, "val_probe_bits_per_sample": probe}]
    assert detail["training"]["best_val_probe_bits_per_sample"] == pytest.approx(probe)


def test_metrics_stream_sends_rows_then_new_ones(base, root):
    _, model = ids(base)
    path = root / "runs/tiny/metrics.jsonl"
    n = len(path.read_text().splitlines())
    got = []
    with requests.get(f"{base}/api/models/{model}/metrics/stream?after={n - 2}", stream=True, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines(decode_unicode=True)
        new = {"step": 999, "loss": 0.125, "wall_time": 1.0}
        for line in lines:
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if len(got) == 2:
                    with open(path, "a") as fh:
                        fh.write(json.dumps(new) + "\n")
                if len(got) == 3:
                    break
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert got == rows[n - 2:] and got[-1] == new


def test_generate_streams_the_same_bytes_as_the_cli(base, root):
    _, model = ids(base)
    url = f"{base}/api/models/{model}/generate.wav?seconds=0.5&seed=3&temperature=0.9&top_p=0.95"
    r = requests.get(url, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    body = r.content
    assert body == (root / "generated" / "seed3.wav").read_bytes()
    other = get(base, f"/api/models/{model}/generate.wav?seconds=0.5&seed=4&temperature=0.9&top_p=0.95").content
    assert other[:44] == body[:44] and other != body
    untruncated = get(base, f"/api/models/{model}/generate.wav?seconds=0.5&seed=3&temperature=0.9").content
    assert untruncated != body  # top_p reaches the sampler
    sidecar = get(base, f"/api/models/{model}/generate.json?seconds=0.5&seed=3&temperature=0.9&top_p=0.95").json()
    assert sidecar["samples"] == 4000 and sidecar["settings"]["seed"] == 3 and sidecar["settings"]["top_p"] == 0.95
    assert get(base, "/api/sampling").json() == {"temperature": generation.TEMPERATURE,
                                                 "top_p": generation.TOP_P}


def test_generated_wavs_are_listed_with_sidecars(base, root):
    (item,) = get(base, "/api/generated").json()
    assert item["name"] == "generated/seed3.wav" and item["sidecar"]["settings"]["seed"] == 3
    assert get(base, f"/api/generated/{item['id']}/audio.wav").content == (root / "generated/seed3.wav").read_bytes()


def test_ten_hours_and_bad_settings_are_refused(base):
    _, model = ids(base)
    r = get(base, f"/api/models/{model}/generate.wav?seconds=36000")
    assert r.status_code == 400 and "10 hours" in r.json()["detail"] and "at most 600" in r.json()["detail"]
    r = get(base, f"/api/models/{model}/generate.wav?seconds=1&genre=rock")
    assert r.status_code == 400 and "not conditioned on genre" in r.json()["detail"]
    assert get(base, f"/api/models/{model}/generate.wav?seconds=-1").status_code == 422
    for bad in ("0", "1.5", "nan"):
        assert get(base, f"/api/models/{model}/generate.wav?seconds=1&top_p={bad}").status_code == 422


def active(base: str) -> int:
    return get(base, "/api/status").json()["generations_active"]


def test_busy_server_answers_429_and_a_disconnect_stops_generation(base):
    _, model = ids(base)
    before = get(base, "/api/status").json()
    # 600 s is 9.6 MB: more than the socket buffers hold, so an unread stream stays unfinished
    streams = [requests.get(f"{base}/api/models/{model}/generate.wav?seconds=600&seed={s}", stream=True, timeout=60)
               for s in (11, 12)]
    try:
        for r in streams:
            assert r.status_code == 200 and len(next(r.iter_content(chunk_size=44))) == 44
        busy = get(base, f"/api/models/{model}/generate.wav?seconds=1&seed=13")
        assert busy.status_code == 429 and busy.headers["retry-after"] == "5"
    finally:
        for r in streams:
            r.close()
    wait_for(lambda: active(base) == 0, 20, "the stopped streams' generations to end", every=0.1)
    after = get(base, "/api/status").json()
    assert after["generations_active"] == 0
    assert after["generations_stopped_early"] == before["generations_stopped_early"] + 2


@pytest.mark.parametrize("path", [
    "/api/datasets/..%2F..%2Fetc", "/api/datasets/%2e%2e", "/api/datasets/%2Fetc%2Fpasswd",
    "/api/models/..%2fdataset", "/api/models/{model}/previews/..%2F..%2Fmodel.json",
    "/api/models/{model}/previews/leak.wav", "/api/models/{model}/previews/%2Fetc%2Fpasswd",
    "/api/datasets/{ds}/tracks/..%2F..%2Fmanifest.jsonl/audio.wav", "/api/generated/..%2Fgenerated%2Fseed3.wav/audio.wav",
    "/static/..%2F..%2Fcli.py", "/api/models/generate.wav?prime=..%2F..%2Fx",
])
def test_traversal_is_404(base, path):
    ds, model = ids(base)
    r = get(base, path.format(ds=ds, model=model))
    assert r.status_code == 404, r.text


def test_symlinks_leaving_the_root_are_not_served(base):
    _, model = ids(base)
    assert [m["name"] for m in get(base, "/api/models").json()] == ["runs/tiny"]  # not linked-model
    assert get(base, f"/api/models/{model}/previews/leak.wav").status_code == 404
    r = get(base, f"/api/models/{model}/generate.wav?seconds=0.1&prime=0123456789abcdef0123456789abcdef")
    assert r.status_code == 404


def test_prime_upload_gives_the_cli_prime_audio(base, root, uploads, sine_mp3, tmp_path):
    _, model = ids(base)
    mp3 = sine_mp3(tmp_path / "prime.mp3", 440.0, 0.5)
    with open(mp3, "rb") as fh:
        r = requests.post(f"{base}/api/primes?model={model}", files={"file": ("prime.mp3", fh, "audio/mpeg")},
                          timeout=60)
    assert r.status_code == 201, r.text
    prime = r.json()
    assert abs(prime["samples"] - RATE // 2) < 80 and prime["filename"] == "prime.mp3"
    body = get(base, f"/api/models/{model}/generate.wav?seconds=0.25&seed=5&prime={prime['id']}").content
    out = tmp_path / "cli.wav"
    from waveforms.cli import main

    assert main(["generate", "--model", str(root / "runs/tiny"), "--seconds", "0.25", "--seed", "5",
                 "--prime", str(mp3), "--output", str(out)]) == 0
    assert body == out.read_bytes()
    assert not [p for p in uploads.iterdir() if p.name.startswith("upload-")]  # temp files gone


def test_bad_and_huge_uploads_are_clear_4xx(base, uploads, tmp_path):
    _, model = ids(base)
    text = tmp_path / "notes.txt"
    text.write_text("not audio at all\n" * 100)
    with open(text, "rb") as fh:
        r = requests.post(f"{base}/api/primes?model={model}", files={"file": ("notes.txt", fh)}, timeout=60)
    assert r.status_code == 415 and "not an audio file" in r.json()["detail"]
    huge = os.urandom(2 << 20)
    r = requests.post(f"{base}/api/primes?model={model}", files={"file": ("big.mp3", huge)}, timeout=60)
    assert r.status_code == 413 and "at most 1 MiB" in r.json()["detail"]
    assert not [p for p in uploads.iterdir() if p.name.startswith("upload-")]


def test_only_the_newest_max_primes_uploads_are_kept(root, sine_mp3, tmp_path):
    uploads = tmp_path / "uploads"
    cfg = ServeConfig(roots=[str(root)], upload_dir=str(uploads), max_primes=2)
    with running(cfg) as url:
        _, model = ids(url)
        made = []
        for i, freq in enumerate((330.0, 440.0, 550.0)):
            with open(sine_mp3(tmp_path / f"p{i}.mp3", freq, 0.25), "rb") as fh:
                r = requests.post(f"{url}/api/primes?model={model}", files={"file": (f"p{i}.mp3", fh)}, timeout=60)
            assert r.status_code == 201, r.text
            made.append(r.json()["id"])
        first, *kept = made
        assert sorted(p.name for p in (uploads / "primes").iterdir()) == sorted(
            f"{pid}{ext}" for pid in kept for ext in (".u8", ".json"))
        assert get(url, f"/api/models/{model}/generate.wav?seconds=0.05&seed=1&prime={first}").status_code == 404
        for pid in kept:
            r = get(url, f"/api/models/{model}/generate.wav?seconds=0.05&seed=1&prime={pid}")
            assert r.status_code == 200 and r.content[:4] == b"RIFF"


def test_token_is_required_on_every_request(root, tmp_path):
    cfg = ServeConfig(roots=[str(root)], token="s3cret", upload_dir=str(tmp_path))
    with running(cfg) as url:
        for path in ("/", "/api/datasets", "/docs", "/static/app.js", "/api/status"):
            assert requests.get(url + path, timeout=30).status_code == 401
            assert requests.get(url + path, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
        ok = requests.get(url + "/api/datasets", headers={"Authorization": "Bearer s3cret"}, timeout=30)
        assert ok.status_code == 200 and ok.json()[0]["name"] == "dataset"


def test_cli_refuses_an_open_host_without_a_token(root):
    r = subprocess.run([sys.executable, "-m", "waveforms", "serve", "--root", str(root), "--host", "0.0.0.0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--token" in r.stderr


def test_docs_and_app_are_served(base):
    assert "/api/models/{model}/generate.wav" in get(base, "/openapi.json").json()["paths"]
    assert get(base, "/docs").status_code == 200
    page = get(base, "/").text
    assert "<audio" in page and "/static/vendor/uPlot" in page
