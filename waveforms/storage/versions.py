"""Artifact format versions, under one key in every artifact, and reading older files under today's names.

``model.json``, a checkpoint's ``state.json``, ``dataset.json``, an index's
``index.json`` and ``evaluation.json`` each record ``format_version`` (the last three
wrote ``version`` before; it is read as ``format_version``). A file of a newer
version than this code knows is refused with :class:`NewerFormat`; an older one is
read, its renamed keys under their new names (:func:`renamed`).
"""
from __future__ import annotations

from typing import Any, Mapping

from waveforms.runtime.errors import UserError

KEY = "format_version"
OLD_KEY = "version"  # index.json, evaluation.json and dataset.json before KEY


class NewerFormat(UserError):
    """A file written by a newer waveforms than this one: its format version is above the newest known."""

    exit_code = 2


def version(doc: Mapping[str, Any]) -> int:
    """The format version ``doc`` records (``format_version``, else the older ``version``; 0 when neither)."""
    found = doc.get(KEY, doc.get(OLD_KEY, 0))
    try:
        return int(found)
    except (TypeError, ValueError):
        return 0


def check(doc: Mapping[str, Any], where: str, newest: int) -> int:
    """``doc``'s format version; :class:`NewerFormat` naming ``where`` when it is above ``newest``."""
    found = version(doc)
    if found > newest:
        raise NewerFormat(f"{where} has format_version {found}, newer than this waveforms reads "
                          f"(format_version {newest} at most): upgrade waveforms to read it")
    return found


def renamed(doc: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """``doc`` with each old key of ``names`` under its new name (where the new one is not there already)."""
    if not any(old in doc for old in names):
        return doc
    return {(names[k] if k in names and names[k] not in doc else k): v for k, v in doc.items()}
