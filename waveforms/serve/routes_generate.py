"""Generation as a streamed WAV, its sidecar JSON, and the generated WAVs found under the roots."""
from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from waveforms import config as cfgmod
from waveforms import storage
from waveforms.audio.clips import sidecar
from waveforms.config import generation as sampling
from waveforms.runtime.errors import UserError
from waveforms.serve import primes, wav
from waveforms.serve.generation import Job
from waveforms.serve.openapi import capped_by, errors, given_or_capped
from waveforms.serve.state import Studio, read_json, studio

router = APIRouter(tags=["generate"])
RETRY_AFTER_S = 5
SECONDS = Query(2.0, gt=0, allow_inf_nan=False, json_schema_extra=capped_by("max_generate_seconds"))
TEMPERATURE = Query(sampling.TEMPERATURE, ge=0, allow_inf_nan=False, description="sampling temperature; 0 = greedy")
TOP_P = Query(sampling.TOP_P, gt=0, le=1, allow_inf_nan=False, description=sampling.TOP_P_HELP)
TOO_LONG = "seconds is over the server's max_generate_seconds"
NO_MODEL = "no model with this id"
NO_GENERATED = "no generated WAV with this id"
WAV_HEADERS = {"X-Samples": {"description": "samples the WAV holds", "schema": {"type": "integer"}}}


def _check(st: Studio, seconds: float) -> None:
    cap = st.cfg.max_generate_seconds
    if seconds > cap:
        hours = f" ({seconds / 3600:g} hours)" if seconds >= 3600 else ""
        raise HTTPException(400, f"seconds = {seconds:g}{hours} is too long: one request may generate at most "
                                 f"{cap:g} s of audio (the server's max_generate_seconds)")


def _settings(name: str, seconds: float, temperature: float, top_p: float, seed: int, genre: str,
              prime: str) -> dict[str, Any]:
    cfg = cfgmod.GenerateConfig(model=name, seconds=seconds, temperature=temperature, top_p=top_p, seed=seed,
                                genre=genre,
                                prime=f"prime:{prime}" if prime else "", output=f"{name}-seed{seed}.wav")
    return cfgmod.to_dict(cfg)


@router.get("/api/models/{model}/generate.wav", response_class=StreamingResponse,
            responses={200: {"content": {"audio/wav": {}}, "headers": WAV_HEADERS},
                       **errors(409, 422, 429, texts={
                           400: TOO_LONG + ", the model is not conditioned on that genre, "
                                           "or the prime was decoded for another sample rate or mu",
                           404: NO_MODEL + ", or no prime with this id (the oldest are removed)"})})
async def generate_wav(model: str, request: Request, seconds: float = SECONDS,
                       temperature: float = TEMPERATURE, top_p: float = TOP_P, seed: int = Query(0, ge=0),
                       genre: str = "", prime: str = "", download: bool = False,
                       st: Studio = Depends(studio)) -> Response:
    """New audio from a trained model, streamed as it is made: a WAV header, then PCM chunks.

    The header carries the final size (known from ``seconds``), so the stream is byte for byte the file
    ``waveforms generate --seed S`` writes; the same seed gives the same audio.
    """
    entry = st.entry("model", model)
    seconds = given_or_capped(request, "seconds", seconds, st.cfg.max_generate_seconds)
    _check(st, seconds)
    meta_text = _model_json(entry)
    prime_codes = primes.load(st, prime) if prime else None
    name = entry.rel.rpartition("/")[2] if entry.rel != "." else "model"
    headers = {"Cache-Control": "no-store"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{name}-seed{seed}.wav"'
    key = (entry.id, meta_text, seconds, temperature, top_p, seed, genre, prime)
    cached = st.results.get(key)
    if cached is not None:
        headers["X-Samples"] = str((len(cached) - 44) // 2)
        return Response(cached, media_type="audio/wav", headers=headers)
    if not st.limiter.try_acquire():
        raise HTTPException(429, f"{st.limiter.limit} generations are running; try again shortly",
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    try:
        loaded = await anyio.to_thread.run_sync(st.models.get, entry.uri, meta_text)
        if prime_codes is not None:
            primes.check_matches(prime_codes, loaded.wavenet)
        n = int(round(seconds * loaded.wavenet.sample_rate))
        job = await anyio.to_thread.run_sync(
            lambda: Job(loaded, n, temperature=temperature, top_p=top_p, seed=seed, genre=genre or None,
                        prime=None if prime_codes is None else prime_codes.codes))
    except UserError as exc:
        st.limiter.release(True)
        raise HTTPException(400, str(exc)) from exc
    except BaseException:
        st.limiter.release(True)
        raise
    rate, mu = loaded.wavenet.sample_rate, loaded.wavenet.mu

    async def body():
        parts = [wav.header(rate, n)]
        try:
            yield parts[0]
            while not job.finished:
                codes = await anyio.to_thread.run_sync(job.next_chunk)
                parts.append(wav.pcm(codes, mu))
                yield parts[-1]
                if await request.is_disconnected():
                    return
            st.results.put(key, b"".join(parts))
        finally:
            st.limiter.release(job.finished)

    headers["X-Samples"] = str(n)
    headers["Content-Length"] = str(44 + 2 * n)
    return StreamingResponse(body(), media_type="audio/wav", headers=headers)


@router.get("/api/models/{model}/generate.json", responses=errors(409, 422, texts={400: TOO_LONG, 404: NO_MODEL}))
def generate_sidecar(model: str, request: Request, seconds: float = SECONDS,
                     temperature: float = TEMPERATURE, top_p: float = TOP_P, seed: int = Query(0, ge=0),
                     genre: str = "", prime: str = "",
                     st: Studio = Depends(studio)) -> dict[str, Any]:
    """The sidecar JSON of a generation with these settings (as ``waveforms generate`` writes beside a WAV)."""
    entry = st.entry("model", model)
    seconds = given_or_capped(request, "seconds", seconds, st.cfg.max_generate_seconds)
    _check(st, seconds)
    meta = read_json(entry.file("model.json"))
    if meta is None:
        raise HTTPException(409, "this model has no model.json yet (still training)")
    name = entry.rel.rpartition("/")[2] if entry.rel != "." else "model"
    rate = int(meta["sample_rate"])
    return sidecar(name, meta, rate, int(round(seconds * rate)), _settings(name, seconds, temperature, top_p, seed, genre, prime))


def _model_json(entry) -> str:
    try:
        return storage.read_text(entry.file("model.json"))
    except Exception as exc:
        raise HTTPException(409, "this model has no model.json yet (still training); generate once it is saved") \
            from exc


@router.get("/api/sampling")
def sampling_defaults() -> dict[str, float]:
    """The sampling settings a generation gets when the request names none (the studio's form starts there)."""
    return {"temperature": sampling.TEMPERATURE, "top_p": sampling.TOP_P}


@router.get("/api/generated")
def list_generated(st: Studio = Depends(studio)) -> list[dict[str, Any]]:
    """Generated WAVs found under the roots (each with a sidecar JSON)."""
    return [{"id": e.id, "name": e.rel, "sidecar": read_json(e.uri + ".json")} for e in st.catalog.list("generated")]


@router.get("/api/generated/{item}/audio.wav", response_class=Response,
            responses={200: {"content": {"audio/wav": {}}}, **errors(texts={404: NO_GENERATED})})
def generated_wav(item: str, st: Studio = Depends(studio)) -> Response:
    """A generated WAV file."""
    return Response(storage.read_bytes(st.entry("generated", item).uri), media_type="audio/wav")


@router.get("/api/generated/{item}/sidecar.json", responses=errors(texts={404: NO_GENERATED}))
def generated_sidecar(item: str, st: Studio = Depends(studio)) -> Any:
    """A generated WAV's sidecar JSON."""
    return read_json(st.entry("generated", item).uri + ".json")

