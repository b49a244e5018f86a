"""Ports for the servers a run starts (the all-reduce ranks, elephas's parameter server)."""
from __future__ import annotations

import socket


def free_port(host: str) -> int:
    """A TCP port free on ``host`` now (the OS's choice; another process may take it before it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
