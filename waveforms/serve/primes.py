"""``POST /api/primes``: an uploaded audio file becomes mu-law codes that start a generation.

The upload is size-capped, checked to be audio by decoding its header (ffprobe),
decoded with ffmpeg exactly like the model's training data (its dataset's
transform settings), and stored as codes under the upload folder; the uploaded
file itself is always removed. Only the newest ``max_primes`` primes are kept.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass

import anyio
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, UploadFile

from waveforms import storage
from waveforms.audio import AudioSettings, file_to_codes
from waveforms.runtime.errors import UserError
from waveforms.serve.openapi import errors
from waveforms.serve.state import Studio, read_json, studio

router = APIRouter(prefix="/api/primes", tags=["primes"])
PRIME_ID = re.compile(r"[0-9a-f]{32}")
COPY_CHUNK = 1 << 20
STRAY_S = 3600  # a leftover without its json (a crash mid-store) older than this is removed


@dataclass
class Prime:
    codes: np.ndarray
    sample_rate: int
    mu: int


def _paths(st: Studio, prime_id: str) -> tuple[str, str]:
    base = os.path.join(st.upload_dir, "primes", prime_id)
    return base + ".u8", base + ".json"


def load(st: Studio, prime_id: str) -> Prime:
    """A stored prime by id (404 for anything that is not one)."""
    if not PRIME_ID.fullmatch(prime_id):
        raise HTTPException(404, f"no prime {prime_id!r}")
    codes_path, info_path = _paths(st, prime_id)
    info = read_json(info_path)
    try:  # pruning may remove the files at any moment
        if info is None:
            raise FileNotFoundError(info_path)
        codes = np.fromfile(codes_path, dtype=np.uint8)
    except OSError:
        raise HTTPException(404, f"no prime {prime_id!r}") from None
    return Prime(codes, int(info["sample_rate"]), int(info["mu"]))


def prune(st: Studio) -> None:
    """Keep the newest ``max_primes`` primes (json modification time, then name); remove both files of the rest.

    Files without a json (codes or temporary files left by a crash mid-store) go once older than an hour.
    Another request may prune at the same time, so files already gone are fine.
    """
    folder = os.path.join(st.upload_dir, "primes")
    stamps = {}
    for entry in os.scandir(folder):
        with contextlib.suppress(FileNotFoundError):
            if entry.is_file(follow_symlinks=False):
                stamps[entry.name] = entry.stat().st_mtime_ns
    primes = sorted((t, name[:-5]) for name, t in stamps.items() if name.endswith(".json"))
    doomed = [pid + ext for _, pid in primes[:max(0, len(primes) - st.cfg.max_primes)] for ext in (".json", ".u8")]
    stored = {pid for _, pid in primes}
    cutoff = time.time_ns() - STRAY_S * 10**9
    doomed += [name for name, t in stamps.items()
               if not name.endswith(".json") and name.removesuffix(".u8") not in stored and t < cutoff]
    for name in doomed:  # the json first: from then on load() answers 404
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))


def check_matches(prime: Prime, wavenet) -> None:
    if prime.sample_rate != wavenet.sample_rate or prime.mu != wavenet.mu:
        raise UserError(f"this prime was decoded at {prime.sample_rate} Hz, mu {prime.mu}; the model uses "
                        f"{wavenet.sample_rate} Hz, mu {wavenet.mu}: upload it again for this model")


def probe_audio(path: str) -> bool:
    """Whether ffprobe finds an audio stream in the file."""
    try:
        out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                              "stream=codec_type", "-of", "csv=p=0", path],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip().startswith("audio")


def settings_for(st: Studio, model_entry):
    """The transform settings of the model's dataset when it is served, else the defaults at the model's rate."""
    meta = read_json(model_entry.file("model.json"))
    if meta is None:
        raise HTTPException(409, "this model has no model.json yet (still training)")
    ds = st.dataset_by_source_id(meta.get("dataset_id", ""))
    summary = (read_json(ds.file("dataset.json")) or {}) if ds else {}
    known = {k: v for k, v in (summary.get("settings") or {}).items() if k in AudioSettings.__dataclass_fields__}
    known.update(sample_rate=int(meta["sample_rate"]), mu=int(meta["mu"]), min_seconds=0.0)
    return AudioSettings.from_config(**known)


@router.post("", status_code=201, responses=errors(409, 413, 415, texts={
    400: "the body is not valid multipart/form-data", 404: "no model with this id",
    422: "no multipart field file, or the upload is empty, undecodable or silent"}))
async def upload_prime(request: Request, file: UploadFile, model: str = "",
                       st: Studio = Depends(studio)) -> dict:
    """Upload an audio file (multipart field ``file``) for model ``model``; returns the prime's id.

    Not multipart: 400. Over the size cap: 413. Not audio: 415. No file, or undecodable or silent: 422.
    """
    cap = int(st.cfg.max_upload_mb * (1 << 20))
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap + 64 * 1024:
        raise HTTPException(413, f"upload too large: at most {st.cfg.max_upload_mb:g} MiB")
    settings = settings_for(st, st.entry("model", model))
    fd, tmp = tempfile.mkstemp(prefix="upload-", dir=st.upload_dir)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := await file.read(COPY_CHUNK):
                size += len(chunk)
                if size > cap:
                    raise HTTPException(413, f"upload too large: at most {st.cfg.max_upload_mb:g} MiB")
                out.write(chunk)
        if size == 0:
            raise HTTPException(422, "the upload is empty")
        if not await anyio.to_thread.run_sync(probe_audio, tmp):
            raise HTTPException(415, f"{file.filename or 'the upload'} is not an audio file ffmpeg can read")
        codes = await anyio.to_thread.run_sync(_decode, tmp, settings)
    finally:
        await file.close()
        os.unlink(tmp)
    keep = int(st.cfg.max_prime_seconds * settings.sample_rate)
    codes = codes[-keep:]
    prime_id = uuid.uuid4().hex
    codes_path, info_path = _paths(st, prime_id)
    info = {"id": prime_id, "sample_rate": settings.sample_rate, "mu": settings.mu, "samples": int(len(codes)),
            "seconds": round(len(codes) / settings.sample_rate, 3), "filename": os.path.basename(file.filename or "")}

    def store() -> None:  # the codes, then the json that makes the prime visible, then pruning
        storage.write_bytes(codes_path, codes.tobytes())  # atomically, like every local write
        storage.write_text(info_path, json.dumps(info))
        prune(st)

    await anyio.to_thread.run_sync(store)
    return info


def _decode(path: str, settings) -> np.ndarray:
    try:
        return file_to_codes(path, settings.sample_rate, settings.mu, settings)
    except UserError as exc:
        raise HTTPException(422, str(exc).replace(path, "the upload")) from exc
