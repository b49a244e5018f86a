"""The studio's one error body and the schema that lists every status each route returns.

Every error response, whatever its status, is an :class:`ApiError`: ``detail`` is a
sentence naming what is wrong, and a 422 adds ``errors``, one entry per parameter
that failed validation. Routes declare their error statuses with :func:`errors`;
:func:`install` finishes the schema: it drops the 422 FastAPI adds to every route
with parameters where none of them can fail validation (plain strings), writes the
server's own caps into the parameters that declare one (:func:`capped_by`), and, when
the server has a token, declares the bearer scheme and a 401 on every operation.
"""
from __future__ import annotations

from typing import Any, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from waveforms.config import ServeConfig

STATUS_HINT = {  # used when a route gives no description of its own
    400: "a setting is outside the server's limits or does not suit this model",
    401: "missing or wrong bearer token",
    404: "no such id (ids come from the listings; anything else is unknown)",
    409: "the model has no model.json yet (still training)",
    413: "the upload is larger than the server's max_upload_mb",
    415: "the upload is not audio ffmpeg can read",
    422: "a parameter failed validation",
    429: "the server's max_generations generations are running; retry after Retry-After seconds",
}
HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}},
}
FASTAPI_422 = "#/components/schemas/HTTPValidationError"
CAP = "x-capped-by"  # in a parameter's schema until finish() turns it into the server's maximum


class FieldError(BaseModel):
    """One parameter that failed validation."""

    loc: list[str | int] = Field(description='where it is, e.g. ["query", "seconds"]')
    msg: str = Field(description="what is wrong with it")
    type: str = Field(description="the kind of failure, e.g. greater_than")


class ApiError(BaseModel):
    """The body of every error response."""

    detail: str = Field(description="what is wrong, in a sentence")
    errors: list[FieldError] = Field(default_factory=list, description="on a 422: each parameter that failed")


def errors(*statuses: int, texts: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` entries for these error statuses, each with the :class:`ApiError` body.

    ``texts`` gives a status a description of its own (say, 404: "no model with this id").
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses) | set(texts or {})):
        out[status] = {"model": ApiError, "description": (texts or {}).get(status, STATUS_HINT[status])}
        if status in HEADERS:
            out[status]["headers"] = HEADERS[status]
    return out


def capped_by(setting: str) -> dict[str, str]:
    """``json_schema_extra`` for a query parameter whose maximum is the ServeConfig ``setting``."""
    return {CAP: setting}


def given_or_capped(request: Request, name: str, value: float, cap: float) -> float:
    """``value``; when the request leaves ``name`` out, its default lowered to ``cap`` (as the schema's default is)."""
    return value if name in request.query_params else min(value, cap)


async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 in the shared error shape: each failing parameter, and a sentence naming them."""
    found = [FieldError(loc=[p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
                        msg=str(e.get("msg", "")), type=str(e.get("type", ""))) for e in exc.errors()]
    detail = "; ".join(f"{' '.join(map(str, f.loc))}: {f.msg}" for f in found) or "the request is not valid"
    return JSONResponse(ApiError(detail=detail, errors=found).model_dump(), status_code=422)


def finish(schema: dict[str, Any], cfg: ServeConfig) -> dict[str, Any]:
    """Drop FastAPI's default 422s (routes that can fail validation declare theirs), write in the caps,
    and with a token, declare it and add 401s."""
    token = bool(cfg.token)
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            for param in operation.get("parameters", []):
                setting = param["schema"].pop(CAP, None)
                if setting is not None:
                    cap = float(getattr(cfg, setting))
                    param["schema"]["maximum"] = cap
                    param["schema"]["default"] = min(param["schema"].get("default", cap), cap)
                    param["description"] = f"at most the server's {setting}"
            responses = operation["responses"]
            ref = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if ref.get("$ref") == FASTAPI_422:
                del responses["422"]
            if token:
                responses["401"] = {"description": STATUS_HINT[401], "headers": HEADERS[401],
                                    "content": {"application/json": {
                                        "schema": {"$ref": "#/components/schemas/ApiError"}}}}
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    if token:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                    "description": "the server's --token"}}
        schema["security"] = [{"bearer": []}]
    return schema


def install(app: FastAPI, cfg: ServeConfig) -> None:
    """Serve the finished schema at /openapi.json and answer validation failures with :class:`ApiError`."""
    app.add_exception_handler(RequestValidationError, validation_failed)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish(get_openapi(title=app.title, version=app.version,
                                                    description=app.description, routes=app.routes), cfg)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
