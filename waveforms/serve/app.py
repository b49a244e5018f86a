"""The studio's ASGI app: the JSON API, bearer-token check, and the browser app's static files."""
from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from waveforms import __version__
from waveforms.config import ServeConfig
from waveforms.serve import openapi, primes, routes_datasets, routes_generate, routes_models
from waveforms.serve.state import Studio

STATIC = Path(__file__).with_name("static")


def create_app(cfg: ServeConfig) -> FastAPI:
    """The app over ``cfg.roots``; with ``cfg.token`` every request needs ``Authorization: Bearer TOKEN``."""
    app = FastAPI(title="waveforms studio", version=__version__,
                  description="Hear, watch and compare the datasets, models and audio the pipeline makes.")
    app.state.studio = Studio.from_config(cfg)
    expected = f"Bearer {cfg.token}".encode() if cfg.token else b""

    @app.middleware("http")
    async def bearer_token(request: Request, call_next):
        if expected and not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected):
            return JSONResponse({"detail": openapi.STATUS_HINT[401]}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    for module in (routes_datasets, routes_models, routes_generate, primes):
        app.include_router(module.router)

    @app.get("/api/status", tags=["status"])
    def status() -> dict:
        """Roots, generation limit, generations running, and those stopped by a client going away."""
        st: Studio = app.state.studio
        return {"version": __version__, "roots": st.catalog.roots, "max_generations": st.limiter.limit,
                "generations_active": st.limiter.active, "generations_stopped_early": st.limiter.stopped_early,
                "max_generate_seconds": cfg.max_generate_seconds, "max_audio_seconds": cfg.max_audio_seconds,
                "max_upload_mb": cfg.max_upload_mb}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    openapi.install(app, cfg)
    return app
