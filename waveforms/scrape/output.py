"""Where scraped files go: a local folder or ``s3://bucket/prefix``.

Files are written to a temporary name and only then moved (local: ``os.replace``)
or uploaded (S3: one PUT) to their final name, so a final name always holds a
complete, verified file. Local temporaries live in ``<out>/.partial/``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from waveforms import storage
from waveforms.storage import checksums
from waveforms.storage.tracks import track_relpath

__all__ = ["Output", "track_relpath"]

PARTIAL = ".partial"


class Output:
    """A local folder or S3 prefix with atomic file placement."""

    def __init__(self, root: str):
        self.root = str(root).rstrip("/") if storage.is_s3(root) else str(root)
        self.s3 = storage.is_s3(self.root)
        self._client = storage.s3_client() if self.s3 else None
        if self.s3:
            self._tmp = Path(tempfile.mkdtemp(prefix="waveforms-scrape-"))
        else:
            self._tmp = Path(self.root, PARTIAL)
            shutil.rmtree(self._tmp, ignore_errors=True)  # leftovers of a killed run
            self._tmp.mkdir(parents=True, exist_ok=True)

    def uri(self, rel: str) -> str:
        return storage.join(self.root, rel)

    def temp_path(self, name: str) -> Path:
        """A fresh temporary file path (never a final name)."""
        fd, path = tempfile.mkstemp(prefix=f"{name}.", suffix=".part", dir=self._tmp)
        os.close(fd)
        return Path(path)

    def store(self, tmp: Path, rel: str) -> None:
        """Move a complete temporary file to its final name."""
        if self.s3:
            try:
                storage.upload_file(tmp, self.uri(rel), self._client)
            finally:
                tmp.unlink(missing_ok=True)
            return
        final = Path(self.root, rel)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)

    def size(self, rel: str) -> int | None:
        """Size of the file at ``rel``, or None if it is absent."""
        if self.s3:
            from botocore.exceptions import ClientError

            bucket, key = storage.split_s3(self.uri(rel))
            try:
                return int(self._client.head_object(Bucket=bucket, Key=key)["ContentLength"])
            except ClientError:
                return None
        path = Path(self.root, rel)
        return path.stat().st_size if path.is_file() else None

    def problem(self, rel: str, expected: dict[str, Any]) -> str | None:
        """Why ``rel`` does not hold the file of the record ``expected`` (``{"size", "sha256"}``), or None.

        Locally the SHA-256 is recomputed; on S3 only the size is compared (reading every
        object back would cost a full download).
        """
        if self.s3:
            return checksums.size_problem(self.size(rel), expected, "the manifest")
        return checksums.problem(Path(self.root, rel), expected, "the manifest")

    def record(self, rel: str) -> dict[str, Any] | None:
        """``{"size", "sha256"}`` of a local file at ``rel``; None if absent or on S3."""
        if self.s3:
            return None
        path = Path(self.root, rel)
        return checksums.record(path) if path.is_file() else None

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)
