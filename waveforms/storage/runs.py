"""Run ids and the clean-up after a commit, shared by the stages that write versioned files.

A stage writes its new files under names holding a fresh :func:`run_id`, commits by
writing the manifest that names them, and only then removes what no manifest names
(:func:`delete_unreferenced`): a reader of either manifest finds every file it names.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Callable

from waveforms import storage


def run_id() -> str:
    """``YYYYMMDD-HHMMSS-xxxxxx``: UTC start time, then 6 random hex digits (unique across concurrent runs)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def delete_unreferenced(folder: str, referenced: Callable[[str], bool], client=None) -> list[str]:
    """After a commit: delete every file below ``folder`` whose path relative to it ``referenced`` rejects.

    Returns the relative paths deleted. Call it only once the new manifest is written.
    """
    deleted = []
    for uri in storage.list_files(folder, client=client):
        rel = (uri[len(folder.rstrip("/")) + 1:] if storage.is_s3(folder)
               else Path(uri).relative_to(folder).as_posix())
        if not referenced(rel):
            storage.delete(uri, client)
            deleted.append(rel)
    return deleted
