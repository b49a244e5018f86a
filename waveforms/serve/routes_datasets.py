"""``/api/datasets``: transformed datasets, their tracks, set-aside files and track audio."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from waveforms import storage
from waveforms.serve import wav
from waveforms.serve.openapi import capped_by, errors, given_or_capped
from waveforms.serve.state import Studio, read_json, read_rows, studio

router = APIRouter(prefix="/api/datasets", tags=["datasets"])
TRACK_KEYS = ("title", "artist", "genre", "licence", "duration_s", "split", "num_samples")
NO_DATASET = "no dataset with this id, or its manifest cannot be read"


def _summary(st: Studio, entry) -> dict[str, Any]:
    info = read_json(entry.file("dataset.json")) or {}
    return {"id": entry.id, "name": entry.rel if entry.rel != "." else entry.root.rstrip("/").rpartition("/")[2],
            "root": entry.root, **{k: info.get(k) for k in ("dataset_id", "sample_rate", "mu", "tracks", "errors",
                                                           "seconds", "val_tracks", "settings")}}


@router.get("")
def list_datasets(st: Studio = Depends(studio)) -> list[dict[str, Any]]:
    """Every dataset found under the roots."""
    return [_summary(st, e) for e in st.catalog.list("dataset")]


@router.get("/{dataset}", responses=errors(texts={404: NO_DATASET}))
def dataset_detail(dataset: str, st: Studio = Depends(studio)) -> dict[str, Any]:
    """A dataset's summary, its tracks (title, artist, genre, licence, duration, split) and set-aside files."""
    entry = st.entry("dataset", dataset)
    ds = st.dataset(entry)
    tracks = [{"id": str(t["id"]), **{k: t.get(k) for k in TRACK_KEYS}} for t in ds.tracks]
    errors = [{"id": r.get("id"), "file": storage.basename(str(r.get("input") or "")),
               "reason": r.get("reason"), "detail": r.get("detail")}
              for r in read_rows(entry.file("errors.jsonl"))]
    return {**_summary(st, entry), "tracks": tracks, "set_aside": errors}


@router.get("/{dataset}/tracks/{track}/audio.wav", response_class=Response,
            responses={200: {"content": {"audio/wav": {}}},
                       **errors(422, texts={400: "seconds is over the server's max_audio_seconds",
                                            404: NO_DATASET + "; or no track with this id in it"})})
def track_audio(dataset: str, track: str, request: Request, start: float = Query(0.0, ge=0, allow_inf_nan=False),
                seconds: float = Query(10.0, gt=0, allow_inf_nan=False,
                                       json_schema_extra=capped_by("max_audio_seconds")),
                st: Studio = Depends(studio)) -> Response:
    """A span of one track, decoded from the shards: 16-bit PCM WAV (``seconds`` is capped)."""
    entry = st.entry("dataset", dataset)
    seconds = given_or_capped(request, "seconds", seconds, st.cfg.max_audio_seconds)
    if seconds > st.cfg.max_audio_seconds:
        raise HTTPException(400, f"seconds must be at most {st.cfg.max_audio_seconds:g} (asked for {seconds:g})")
    ds = st.dataset(entry)
    row = next((t for t in ds.tracks if str(t["id"]) == track), None)
    if row is None:
        raise HTTPException(404, f"no track {track!r} in this dataset")
    rate, n = int(row["sample_rate"]), int(row["num_samples"])
    first = n if start * rate >= n else int(round(start * rate))  # a start past the end (even 1e308) is the end
    length = min(int(round(seconds * rate)), n - first)
    codes = ds.read_window(row, first, length)
    return Response(wav.wav_bytes(codes, rate, int(row.get("mu", 255))), media_type="audio/wav",
                    headers={"Cache-Control": "max-age=3600"})
