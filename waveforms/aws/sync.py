"""Copy a folder (a dataset, a model) between S3 and a local disk, only what changed.

An object is unchanged when its size matches and its S3 ETag equals the one
computed from the local file: the MD5 for single-part uploads, and for
multipart uploads the MD5 of the parts' MD5s with boto3's default 8 MiB parts
(an object uploaded with other part sizes is simply copied again). Nothing is
deleted at the destination.

After copying, every copied file's size is checked at the destination; a
dataset's copied shards and a model's copied files are also checked against
the SHA-256 their manifest or ``model.json`` records, on the local side (the
destination of a download, the source of an upload). A copy that is not
whole is a :class:`SyncError` naming each damaged file.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from waveforms import storage, verify
from waveforms.aws.session import aws_errors
from waveforms.runtime.errors import UserError

PART_SIZE = 8 * 1024 * 1024  # boto3 TransferConfig default threshold and chunk size


class SyncError(UserError):
    """A sync that cannot be done (bad locations, missing source)."""


@dataclass(frozen=True)
class Entry:
    size: int
    etag: str = ""  # S3 only


@dataclass
class SyncResult:
    copied: list[str] = field(default_factory=list)  # relative paths
    unchanged: int = 0
    bytes: int = 0


def local_etag(path: str | Path, part_size: int = PART_SIZE) -> str:
    """The ETag S3 gives ``path`` when boto3 uploads it with ``part_size`` parts."""
    digests = []
    with open(path, "rb") as fh:
        while chunk := fh.read(part_size):
            digests.append(hashlib.md5(chunk).digest())
    size = Path(path).stat().st_size
    if size < part_size:
        return (digests[0] if digests else hashlib.md5(b"").digest()).hex()
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".part")


def list_local(root: str) -> dict[str, Entry]:
    base = Path(root)
    return {
        p.relative_to(base).as_posix(): Entry(p.stat().st_size)
        for p in sorted(base.rglob("*"))
        if p.is_file() and not _is_temporary(p.name)
    }


def list_s3(uri: str, client) -> dict[str, Entry]:
    bucket, prefix = storage.split_s3(uri)
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    out: dict[str, Entry] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):]
            if ".." in rel.split("/"):
                raise SyncError(f"refusing to copy s3://{bucket}/{obj['Key']}: '..' in its key")
            if rel and not rel.endswith("/"):
                out[rel] = Entry(obj["Size"], obj["ETag"].strip('"'))
    return out


def unchanged(local_file: Path, local: Entry, remote: Entry | None) -> bool:
    """Whether the S3 object ``remote`` holds exactly the bytes of ``local_file``."""
    if remote is None or remote.size != local.size:
        return False
    return remote.etag == local_etag(local_file)


def plan(src: str, dst: str, client) -> tuple[list[tuple[str, int]], int]:
    """(relative path, size) pairs to copy from ``src`` to ``dst``, and the unchanged count."""
    if storage.is_s3(src) == storage.is_s3(dst):
        raise SyncError(f"sync copies between S3 and a local folder; got {src!r} and {dst!r}")
    if storage.is_s3(src):
        source = list_s3(src, client)
        if not source:
            raise SyncError(f"nothing to copy: no objects under {src}")
        dest = list_local(dst) if Path(dst).is_dir() else {}

        def same(rel: str) -> bool:
            return rel in dest and unchanged(Path(dst, rel), dest[rel], source[rel])

    else:
        if not Path(src).is_dir():
            raise SyncError(f"source folder not found: {src}")
        source, dest = list_local(src), list_s3(dst, client)

        def same(rel: str) -> bool:
            return unchanged(Path(src, rel), source[rel], dest.get(rel))

    todo = [(rel, entry.size) for rel, entry in source.items() if not same(rel)]
    return todo, len(source) - len(todo)


def sync(src: str, dst: str, progress: bool = True, client=None) -> SyncResult:
    """Copy the changed files below ``src`` to ``dst`` (one of them ``s3://``)."""
    client = client or storage.s3_client()
    with aws_errors(f"listing {src} and {dst}"):
        todo, same = plan(src, dst, client)
    result = SyncResult(unchanged=same)
    total = sum(size for _, size in todo)
    with aws_errors(f"copying {src} to {dst}"), tqdm(
        total=total, unit="B", unit_scale=True, desc="sync", disable=not progress
    ) as bar:
        for rel, size in todo:
            source, target = storage.join(src, rel), storage.join(dst, rel)
            if storage.is_s3(src):
                storage.download_file(source, target, client, callback=bar.update)
            else:
                storage.upload_file(source, target, client, callback=bar.update)
            result.copied.append(rel)
            result.bytes += size
    with aws_errors(f"verifying {dst}"):
        problems = verify_copy(src, dst, todo, client)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise SyncError(f"copied {len(todo)} file(s) to {dst}, but the copy is not whole: "
                        f"{'; '.join(problems[:5])}{more}")
    return result


def verify_copy(src: str, dst: str, copied: list[tuple[str, int]], client) -> list[str]:
    """What is wrong with the copy: each copied file's size at ``dst``, then, for a dataset or model,
    the SHA-256 of the copied shards or model files (read on the local side) against its records."""
    found = list_s3(dst, client) if storage.is_s3(dst) else list_local(dst)
    problems = [f"{rel}: {found[rel].size if rel in found else 'no'} bytes at the destination, {size} at the source"
                for rel, size in copied if rel not in found or found[rel].size != size]
    local = dst if storage.is_s3(src) else src
    names = set(found)
    if "manifest.jsonl" in names and "dataset.json" in names:
        report = verify.dataset_report(local, only={rel for rel, _ in copied})
    elif "model.json" in names:
        report = verify.model_report(local, only={rel for rel, _ in copied})
    else:
        return problems
    return problems + [p if storage.is_s3(src) else f"{p} (at the source, {src})" for p in report.problems]
