"""``/api/models``: trained and training runs, metrics (also live, as Server-Sent Events), previews."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from waveforms import storage
from waveforms.evaluate import report
from waveforms.runtime.progress import bits
from waveforms.serve.discovery import Entry
from waveforms.serve.openapi import errors
from waveforms.serve.state import Studio, read_json, read_rows, studio
from waveforms.storage.versions import NewerFormat
from waveforms.train import metrics_log

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/models", tags=["models"])
SSE_POLL_S = 0.5
SSE_KEEPALIVE_S = 15.0
ACTIVE_S = 120.0  # a run without model.json whose metrics changed this recently is "training"
NO_MODEL_TEXT = {404: "no model with this id"}
NO_MODEL = errors(texts=NO_MODEL_TEXT)


def _mtime(uri: str) -> float | None:
    if storage.is_s3(uri):
        return None
    try:
        import os

        return os.stat(uri).st_mtime
    except OSError:
        return None


def _status(entry: Entry, meta: dict | None) -> str:
    if meta is not None:
        return "trained"
    changed = _mtime(entry.file("metrics.jsonl"))
    return "training" if changed is not None and time.time() - changed < ACTIVE_S else "incomplete"


def _rows(uri: str) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl under today's key names (``val_probe_bits_per_sample``)."""
    return [metrics_log.upgraded(r) for r in read_rows(uri)]


def _evaluation(doc: Any, where: str) -> dict[str, Any] | None:
    """An evaluation (evaluation.json, or model.json's copy) under today's key names; None when absent, or
    written by a newer waveforms (logged)."""
    if not isinstance(doc, dict):
        return None
    try:
        return report.upgraded(doc, where)
    except NewerFormat as exc:
        log.warning("skipped %s", exc)
        return None


def _model_json(uri: str) -> dict[str, Any] | None:
    meta = read_json(uri)
    if isinstance(meta, dict) and isinstance(meta.get("evaluation"), dict):
        meta = {**meta, "evaluation": _evaluation(meta["evaluation"], f"{uri} (evaluation)")}
    return meta


def _training(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps, last loss, and the best validation loss on the probe batches (nats and bits) from the rows."""
    val = [r for r in rows if isinstance(r.get("val_loss"), (int, float))]
    best = min(val, key=lambda r: r["val_loss"]) if val else None
    last = rows[-1] if rows else {}
    return {
        "rows": len(rows), "step": last.get("step"), "loss": last.get("loss"), "wall_time": last.get("wall_time"),
        "samples_per_s": last.get("samples_per_s"),
        "best_val_loss": best["val_loss"] if best else None, "best_val_step": best.get("step") if best else None,
        "best_val_probe_bits_per_sample": bits(best["val_loss"]) if best else None,
    }


def _summary(st: Studio, entry: Entry) -> dict[str, Any]:
    meta = read_json(entry.file("model.json"))
    cfg = (meta or {}).get("config") or (read_json(entry.file("config.json")) or {}).get("config") or {}
    name = entry.rel if entry.rel != "." else entry.root.rstrip("/").rpartition("/")[2]
    ds = st.dataset_by_source_id((meta or {}).get("dataset_id", ""))
    return {"id": entry.id, "name": name, "root": entry.root, "status": _status(entry, meta),
            "preset": (meta or {}).get("preset") or cfg.get("preset"),
            "sample_rate": (meta or {}).get("sample_rate"), "receptive_field": (meta or {}).get("receptive_field"),
            "genres": (meta or {}).get("genres", []), "dataset": ds.id if ds else None,
            "parent": (meta or {}).get("parent"),
            "has_evaluation": storage.exists(entry.file("evaluation.json"))}


@router.get("")
def list_models(st: Studio = Depends(studio)) -> list[dict[str, Any]]:
    """Every model folder under the roots, trained or still training."""
    return [_summary(st, e) for e in st.catalog.list("model")]


@router.get("/{model}", responses=NO_MODEL)
def model_detail(model: str, st: Studio = Depends(studio)) -> dict[str, Any]:
    """model.json, a training summary from metrics.jsonl, evaluation.json when present, previews, checkpoints."""
    entry = st.entry("model", model)
    evaluation = entry.file("evaluation.json")
    return {**_summary(st, entry), "model_json": _model_json(entry.file("model.json")),
            "training": _training(_rows(entry.file("metrics.jsonl"))),
            "evaluation": _evaluation(read_json(evaluation), evaluation),
            "previews": st.catalog.files(entry, "previews", ".wav"),
            "checkpoints": st.catalog.files(entry, "checkpoints", "")}


@router.get("/{model}/metrics", responses=NO_MODEL)
def metrics(model: str, st: Studio = Depends(studio)) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl (step, loss, val_loss and val_probe_bits_per_sample where measured,
    samples_per_s, wall_time)."""
    return _rows(st.entry("model", model).file("metrics.jsonl"))


@router.get("/{model}/metrics/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, **errors(422, texts=NO_MODEL_TEXT)})
async def metrics_stream(model: str, request: Request, after: int = Query(0, ge=0),
                         st: Studio = Depends(studio)) -> StreamingResponse:
    """Server-Sent Events: one ``data:`` event per metrics row (from row ``after``), then new rows as they come.

    Each event's id is its row number, so a reconnecting EventSource resumes after the last one it saw.
    """
    entry = st.entry("model", model)
    last = request.headers.get("last-event-id", "")
    start = int(last) + 1 if last.isascii() and last.isdigit() else after
    uri = entry.file("metrics.jsonl")

    async def events():
        sent, quiet = start, 0.0
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            rows = await asyncio.to_thread(_rows, uri)
            for i in range(sent, len(rows)):
                yield f"id: {i}\ndata: {json.dumps(rows[i])}\n\n"
            if len(rows) > sent:
                sent, quiet = len(rows), 0.0
            elif quiet >= SSE_KEEPALIVE_S:
                yield ": keep-alive\n\n"
                quiet = 0.0
            await asyncio.sleep(SSE_POLL_S)
            quiet += SSE_POLL_S

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{model}/previews", responses=NO_MODEL)
def previews(model: str, st: Studio = Depends(studio)) -> list[dict[str, Any]]:
    """The preview WAVs training wrote (MODEL_DIR/previews/*.wav), with their sidecar JSON when present."""
    entry = st.entry("model", model)
    names = st.catalog.files(entry, "previews", ".wav")
    return [{"name": n, "info": read_json(entry.file("previews", n + ".json"))} for n in names]


@router.get("/{model}/previews/{name}", response_class=Response,
            responses={200: {"content": {"audio/wav": {}}},
                       **errors(texts={404: "no model with this id, or no preview of that name in it"})})
def preview_wav(model: str, name: str, st: Studio = Depends(studio)) -> Response:
    """One preview WAV, by a name from the previews list (any other name is 404)."""
    entry = st.entry("model", model)
    if name not in st.catalog.files(entry, "previews", ".wav"):
        raise HTTPException(404, f"no preview {name!r}")
    return Response(storage.read_bytes(entry.file("previews", name)), media_type="audio/wav")
