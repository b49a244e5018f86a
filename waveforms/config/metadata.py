"""Field declarations: :func:`opt` and what its metadata says (allowed values, leaf keys)."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from typing import Any, Iterator, Sequence


def opt(default: Any, *, help: str, choices: Sequence[Any] | None = None, min: float | None = None,
        max: float | None = None, gt: float | None = None, lt: float | None = None, unit: str = "",
        flag: str | None = None, choices_also: str | None = None) -> Any:
    """A config field: its default, help, unit, allowed values and (optional) CLI flag.

    ``min``/``max`` are inclusive bounds, ``gt``/``lt`` exclusive ones; ``choices`` apply to
    each item of a list; ``choices_also`` names a dict field whose keys are also allowed.
    """
    meta = {"help": help, "choices": tuple(choices) if choices else None, "min": min, "max": max,
            "gt": gt, "lt": lt, "unit": unit, "flag": flag, "choices_also": choices_also}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


def s3_outage() -> Any:
    """The ``s3_outage_s`` key, one declaration for every stage that reads or writes S3."""
    from waveforms.storage.s3retry import OUTAGE_S

    return opt(OUTAGE_S, min=0, unit="s",
               help="how long an S3 operation failing with network faults (S3 or the path to it down) is retried "
                    "before the stage stops with an error (training leaves a checkpoint to resume from); the "
                    "outage's start and end are logged once each; 0 = only the 6 attempts of each operation")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def allowed(f: dataclasses.Field) -> str:
    """What a field accepts, in words (empty when any value of its type will do)."""
    m = f.metadata
    if m.get("choices"):
        return ", ".join(map(str, m["choices"]))
    if m.get("min") is not None and m.get("max") is not None:
        return f"{m['min']:g}..{m['max']:g}"
    parts = [f"{op} {m[k]:g}" for k, op in (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))
             if m.get(k) is not None]
    return " and ".join(parts)


def fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(dotted key, field, type)`` for every leaf key of a stage config, sub-sections included."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            yield from fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f, hints[f.name]
