"""JSON Lines, the format of every manifest, error list and metrics log.

One object per line, each line ended by ``\\n``. Appends write a whole line at
once, so a kill can only leave the *last* line torn: a last line without its
newline that is not valid JSON is such a tear and is dropped (the only bad line
a reader forgives). Any other bad line is an error naming the file and line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from waveforms.runtime.errors import UserError


def split_torn(text: str) -> tuple[str, str]:
    """``(complete, torn)``: ``torn`` is a last line cut short by a kill ("" when there is none)."""
    if not text or text.endswith("\n"):
        return text, ""
    head, _, last = text.rpartition("\n")
    try:
        json.loads(last)
    except json.JSONDecodeError:
        return head + "\n" if head else "", last
    return text + "\n", ""


def parse(
    text: str, where: str, required: Iterable[str] = (), error: type[Exception] = UserError
) -> list[dict[str, Any]]:
    """The objects of ``text``: blank lines and a torn last line skipped; ``error`` for anything else bad."""
    text, _ = split_torn(text)
    required = tuple(required)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}:{n}: not JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise error(f"{where}:{n}: not a JSON object")
        missing = [k for k in required if k not in row]
        if missing:
            raise error(f"{where}:{n}: missing {missing}")
        rows.append(row)
    return rows


def dumps(rows: Iterable[dict[str, Any]], sort_keys: bool = True) -> str:
    """Rows as JSON Lines text (UTF-8 kept as is; keys sorted unless ``sort_keys`` is false)."""
    return "".join(dumps_row(r, sort_keys) for r in rows)


def dumps_row(row: dict[str, Any], sort_keys: bool = True) -> str:
    return json.dumps(row, sort_keys=sort_keys, ensure_ascii=False) + "\n"


def append(path: str | Path, row: dict[str, Any], sort_keys: bool = True) -> None:
    """Append one row to a local file as a single write, then fsync."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(dumps_row(row, sort_keys))
        fh.flush()
        os.fsync(fh.fileno())
