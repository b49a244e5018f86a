"""The ``verify`` stage: whether a dataset or a model folder, local or ``s3://``, is whole.

A dataset's shards are checked against the sizes and SHA-256 its manifest
records (:mod:`waveforms.dataset.integrity`); a model folder's ``model.keras``
against ``model.json``, and its newest checkpoint's files against their
``state.json``. Sizes come from one listing; hashes read every file once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from waveforms import storage
from waveforms.dataset import Dataset, integrity
from waveforms.runtime.errors import UserError
from waveforms.storage import checksums, versions
from waveforms.storage.tracks import MANIFEST


@dataclass
class Report:
    """What a verification found: problems (empty when whole) and notes on what could not be checked."""

    root: str
    kind: str  # "dataset" or "model"
    files: int = 0
    bytes: int = 0
    hashed: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [f"{self.kind} {self.root}: {self.files} files, {self.bytes} bytes; "
                 f"{self.hashed} checked by SHA-256, every size against its record"]
        lines += [f"  damaged: {p}" for p in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("whole" if self.whole else f"NOT WHOLE: {len(self.problems)} problem(s)")
        return "\n".join(lines)


def dataset_report(root: str, hashes: bool = True, workers: int = 4, only: set[str] | None = None,
                   client=None) -> Report:
    """Check every shard of the dataset at ``root`` by size and, with ``hashes``, by SHA-256.

    ``only``: hash just these shards (relative names; e.g. those a sync copied); sizes are always all checked.
    """
    ds = Dataset.open(root, check=False)
    table, problems = integrity.shards(ds.tracks)
    sizes = integrity.listing(root, table, client)
    damaged = integrity.size_problems(table, sizes)
    report = Report(root, "dataset", files=len(table), bytes=sum(s or 0 for s in sizes.values()),
                    problems=problems + list(damaged.values()))
    if hashes:
        todo = {n: s for n, s in table.items() if n not in damaged and s.sha256 and (only is None or n in only)}
        report.problems += integrity.hash_problems(root, todo, workers, client)
        report.hashed = len(todo)
    missing = integrity.unhashed(table)
    if missing:
        report.notes.append(f"{len(missing)} of {len(table)} shards have no recorded SHA-256 (written before the "
                            "transform recorded them): only their sizes were checked; transform into a new "
                            "folder to record them")
    return report


def _json(uri: str) -> dict[str, Any]:
    try:
        data = json.loads(storage.read_text(uri))
    except ValueError as exc:
        raise UserError(f"{uri} is damaged: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{uri} is damaged: not a JSON object")
    return data


def model_records(root: str) -> dict[str, dict[str, Any]]:
    """Relative path -> ``{"size", "sha256"}`` for ``model.keras`` and the newest checkpoint's files."""
    from waveforms.model import checkpoint  # the model part loads TensorFlow: not for a dataset's check
    from waveforms.model.artifact import FORMAT_VERSION, META_FILE, MODEL_FILE, records

    meta_uri = storage.join(root, META_FILE)
    meta = _json(meta_uri)
    versions.check(meta, meta_uri, FORMAT_VERSION)
    out = {MODEL_FILE: records(meta).get(MODEL_FILE, {})}
    name = checkpoint.latest_name(root)
    if name:
        base = f"{checkpoint.DIR}/{name}"
        state = _json(storage.join(root, base, checkpoint.STATE))
        recorded = state.get(checkpoint.FILES_KEY) or {}
        for f in checkpoint.files(state):
            if f != checkpoint.STATE:
                out[f"{base}/{f}"] = recorded.get(f, {})
    return out


def model_report(root: str, hashes: bool = True, only: set[str] | None = None, client=None) -> Report:
    """Check ``model.keras`` and the newest checkpoint of the model folder ``root`` against their records."""
    wanted = model_records(root)
    found = storage.list_sizes(root, client)
    report = Report(root, "model", files=len(wanted))
    unrecorded = []
    for rel, record in wanted.items():
        uri = storage.join(root, rel)
        size = found.get(uri)
        report.bytes += size or 0
        check = hashes and (only is None or rel in only) and size is not None
        problem = checksums.problem(uri, record if check else {"size": record.get("size")}, "its record",
                                    size=size, client=client)
        report.hashed += bool(check and record.get("sha256"))
        if problem:
            report.problems.append(f"{rel}: {problem}")
        if not record.get("sha256"):
            unrecorded.append(rel)
    if unrecorded:
        report.notes.append(f"no recorded SHA-256 for {', '.join(unrecorded)} (saved before hashes were "
                            "recorded): only checked to be there")
    return report


def kind(root: str) -> str:
    """"dataset" or "model", from the commit file the folder holds; UserError for anything else."""
    if storage.exists(storage.join(root, MANIFEST)):
        return "dataset"
    from waveforms.model.artifact import META_FILE  # imports keras: only when the folder is not a dataset

    if storage.exists(storage.join(root, META_FILE)):
        return "model"
    raise UserError(f"nothing to verify at {root}: neither a dataset ({MANIFEST}) nor a model ({META_FILE})")


def report(root: str, hashes: bool = True, workers: int = 4) -> Report:
    """Verify the dataset or model at ``root``."""
    with storage.s3_failures(root, UserError, f"cannot verify {root}"):
        if kind(root) == "dataset":
            return dataset_report(root, hashes, workers)
        return model_report(root, hashes)


def run(cfg) -> int:
    """The ``verify`` stage: print what is wrong, or that all is whole; 1 when anything is damaged."""
    found = report(cfg.data, cfg.hashes, cfg.workers)
    print(found.text())
    return 0 if found.whole else 1
