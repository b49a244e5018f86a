"""JSON Lines: one object per line, read with line numbers in every error."""
from __future__ import annotations

import json
from typing import Any, Iterable

from waveforms.errors import UserError


def parse(text: str, where: str, required: Iterable[str] = (), error: type[Exception] = UserError) -> list[dict[str, Any]]:
    """The objects of ``text``; blank lines skipped; ``error`` for bad JSON or a missing ``required`` key."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}:{n}: not JSON: {exc}") from exc
        missing = [k for k in required if k not in row]
        if missing:
            raise error(f"{where}:{n}: missing {missing}")
        rows.append(row)
    return rows


def dumps(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
