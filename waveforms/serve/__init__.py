"""The studio: ``waveforms serve`` runs an HTTP API and a browser app over the pipeline's outputs."""
from __future__ import annotations

import ipaddress

from waveforms.config import ServeConfig
from waveforms.runtime.errors import UserError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(cfg: ServeConfig) -> None:
    """Refuse settings that would expose the studio without a token."""
    if not cfg.roots:
        raise UserError("give at least one --root")
    if not is_loopback(cfg.host) and not cfg.token:
        raise UserError(f"--host {cfg.host} is reachable from other machines: also give --token T "
                        "(every request must then send 'Authorization: Bearer T')")


def run(cfg: ServeConfig) -> int:
    """Serve until interrupted."""
    import uvicorn

    from waveforms.serve.app import create_app  # FastAPI and uvicorn, loaded when the studio starts

    check(cfg)
    app = create_app(cfg)
    print(f"studio: http://{cfg.host}:{cfg.port}/ (API docs at /docs) over {', '.join(cfg.roots)}", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
