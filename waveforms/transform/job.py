"""The Spark job: input records → shards of mu-law codes + manifest rows.

Each partition decodes its tracks one by one and appends their codes to one
shard, named by run, partition and attempt, written locally or to S3 (one
boto3 client per partition). Only small rows travel back to the driver, which
commits the dataset by writing ``manifest.jsonl`` last. Shards of failed task
attempts are never referenced and are deleted after the commit.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Iterable, Iterator

from waveforms import config as cfgmod
from waveforms import storage
from waveforms.audio import AudioError, AudioSettings, decode_to
from waveforms.dataset import format as ds
from waveforms.dataset import integrity
from waveforms.runtime import progress, spark
from waveforms.runtime.errors import DiskFullError, UserError, disk_full
from waveforms.storage import checksums, jsonl, runs, s3retry, versions
from waveforms.storage.tracks import ERRORS, MANIFEST
from waveforms.transform.sources import list_inputs

log = logging.getLogger(__name__)

TASKS_PER_CORE = 16
STOPS = (DiskFullError, s3retry.StorageError)  # faults of the node or the network, not of a track: the stage stops


def json_id(obj: Any) -> str:
    """A short id of a JSON-able value: 16 hex digits of the SHA-256 of its sorted JSON (files are
    :func:`waveforms.storage.checksums.digest`'s)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(record: dict[str, Any]) -> str:
    """What identifies an input's content: its checksum when known, else its size."""
    return str(record.get("sha256") or record.get("size") or "")


def _local_copy(uri: str, scratch: str, client) -> tuple[str, bool]:
    if not storage.is_s3(uri):
        return uri, False
    fd, path = tempfile.mkstemp(dir=scratch, suffix=os.path.splitext(uri)[1])
    os.close(fd)
    storage.download_file(uri, path, client)
    return path, True


def process_partition(
    records: Iterable[dict[str, Any]], settings: AudioSettings, out_root: str, run_id: str, partition: int, attempt: int,
    outage_s: float = s3retry.OUTAGE_S,
) -> Iterator[dict[str, Any]]:
    """Decode ``records`` into one shard; yield a manifest row or an error row per record, or one ``stop`` row
    (a full disk, S3 unreachable for ``outage_s``: see :data:`STOPS`) after removing its partial shard."""
    try:
        with s3retry.bounded(outage_s):
            rows = _partition(records, settings, out_root, run_id, partition, attempt)
    except STOPS as exc:
        yield {"kind": "stop", "error": type(exc).__name__, "message": str(exc)}
        return
    yield from rows
    yield {"kind": "stats", "partition": partition, "peak_rss_mib": peak_rss_mib()}


def _partition(records: Iterable[dict[str, Any]], settings: AudioSettings, out_root: str, run_id: str, partition: int,
               attempt: int) -> list[dict[str, Any]]:
    client = storage.s3_client() if storage.is_s3(out_root) else None
    name = f"{ds.SHARDS}/part-{run_id}-{partition:05d}-{attempt}.u8"
    final = storage.join(out_root, name)
    scratch = tempfile.mkdtemp(prefix="waveforms-transform-")
    local_shard = final if client is None else os.path.join(scratch, "shard.u8")
    os.makedirs(os.path.dirname(local_shard), exist_ok=True)
    rows: list[dict[str, Any]] = []
    offset = 0
    try:
        with disk_full(local_shard, "writing the shard", also=(scratch,)), open(local_shard, "wb") as shard:
            for rec in records:
                meta = {k: v for k, v in rec.items() if k not in ("uri", "size")}
                try:
                    path, temporary = _local_copy(rec["uri"], scratch, client)
                except STOPS:
                    raise
                except Exception as exc:  # an unreadable object or file
                    rows.append({"kind": "error", "id": rec["id"], "input": rec["uri"], "reason": "unreadable",
                                 "detail": str(exc)[-1000:]})
                    continue
                try:
                    info = decode_to(path, settings, shard, scratch)
                except AudioError as exc:
                    shard.truncate(offset)
                    shard.seek(offset)
                    rows.append({"kind": "error", "id": rec["id"], "input": rec["uri"], "reason": exc.reason,
                                 "detail": exc.detail[-1000:]})
                    continue
                finally:
                    if temporary:
                        os.unlink(path)
                rows.append({**meta, **info, "kind": "track", "input": rec["uri"], "input_fingerprint": fingerprint(rec),
                             "shard": name, "offset": offset, "sample_rate": settings.sample_rate, "mu": settings.mu})
                offset += info["num_samples"]
        if offset:
            record = checksums.record(local_shard)  # the shard as written, before it travels
            for row in rows:
                if row["kind"] == "track":
                    row.update({integrity.SIZE_KEY: record["size"], integrity.HASH_KEY: record["sha256"]})
        if client is not None and offset:
            storage.upload_file(local_shard, final, client)
        elif client is None and offset == 0:
            os.unlink(local_shard)  # every track of the partition was set aside
    except BaseException:
        if client is None and os.path.exists(local_shard):
            os.unlink(local_shard)  # a partial shard: never under its name, and its space back
        raise
    finally:
        if client is not None and os.path.exists(local_shard):
            os.unlink(local_shard)
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (VmHWM; reset by exec, unlike ru_maxrss), or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _spark_map(records: list[dict[str, Any]], cfg: cfgmod.TransformConfig, settings: AudioSettings,
               run_id: str) -> list[dict[str, Any]]:
    sc = spark.stage_context(cfg.master, "waveforms-transform", cfg.spark_conf)
    # Many small tasks, longest first, keep every core busy to the end (the
    # last task is short); each partition writes one shard.
    n = cfg.partitions or min(len(records), TASKS_PER_CORE * sc.defaultParallelism)
    done = sc.accumulator(0)  # tracks finished; the driver sees a task's count when the task ends
    out_root, outage_s = cfg.output, cfg.s3_outage_s

    def task(index: int, part: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        attempt = ctx.attemptNumber() if ctx else 0
        return process_partition(progress.counted(part, done), settings, out_root, run_id, index, attempt, outage_s)

    ordered = sorted(records, key=lambda r: -int(r.get("size") or 0))
    with progress.watching(progress.Progress("transform", len(ordered), "tracks"), lambda: done.value):
        return sc.parallelize(ordered, max(n, 1)).mapPartitionsWithIndex(task).collect()


def _existing(cfg: cfgmod.TransformConfig, settings_id: str) -> list[dict[str, Any]]:
    """Rows of a previous dataset at the output made with the same settings (for incremental runs).

    Rows in a shard that is missing or of the wrong size are left out, so their
    tracks are transformed again; a kept shard with no recorded hash gets one.
    """
    try:
        old = ds.Dataset.open(cfg.output, check=False)
    except ds.DatasetError:
        return []
    rows = [row for row in old.tracks if row.get("settings_id") == settings_id]
    table, _ = integrity.shards(rows)
    sizes = integrity.listing(cfg.output, table)
    damaged = integrity.size_problems(table, sizes)
    for problem in damaged.values():
        log.warning("transform: %s: its tracks are transformed again", problem)
    rows = [row for row in rows if row["shard"] not in damaged]
    digests = {name: checksums.sha256(storage.join(cfg.output, name))
               for name in {row["shard"] for row in rows if not row.get(integrity.HASH_KEY)}}
    for row in rows:
        if row["shard"] in digests:
            row.update({integrity.SIZE_KEY: sizes[row["shard"]], integrity.HASH_KEY: digests[row["shard"]]})
    return rows


def run(cfg: cfgmod.TransformConfig) -> int:
    """The ``transform`` stage."""
    with s3retry.bounded(cfg.s3_outage_s):
        return _run(cfg)


def _stop(results: list[dict[str, Any]], cfg: cfgmod.TransformConfig, run_id: str) -> None:
    """Raise the first ``stop`` row's error (a full disk, S3 unreachable) before anything is committed; this
    run's shards of a local output go (their space back), those on S3 are removed by the next run's commit."""
    stops = [r for r in results if r["kind"] == "stop"]
    if not stops:
        return
    if not storage.is_s3(cfg.output):
        for path in storage.list_files(storage.join(cfg.output, ds.SHARDS)):
            if os.path.basename(path).startswith(f"part-{run_id}-"):
                storage.delete(path)
    error = {cls.__name__: cls for cls in STOPS}.get(stops[0]["error"], UserError)
    more = f" ({len(stops)} tasks stopped)" if len(stops) > 1 else ""
    raise error(f"{stops[0]['message']}{more}; nothing was committed to {cfg.output}")


def _run(cfg: cfgmod.TransformConfig) -> int:
    cfgmod.validate(cfg)  # the same checks as the CLI's, for configs built in Python
    started = time.time()
    settings = AudioSettings.from_config(cfg)
    settings_id = json_id(settings.to_dict())
    inputs = list_inputs(cfg.input)
    old = {r["id"]: r for r in _existing(cfg, settings_id)}
    kept, todo = [], []
    for rec in inputs:
        prev = old.get(rec["id"])
        if prev and prev.get("input_fingerprint") == fingerprint(rec):
            kept.append(prev)
        else:
            todo.append(rec)
    run_id = runs.run_id()
    log.info("transform: %d inputs, %d already in the dataset, %d to process", len(inputs), len(kept), len(todo))
    results = _spark_map(todo, cfg, settings, run_id) if todo else []
    _stop(results, cfg, run_id)
    tracks = [r for r in results if r["kind"] == "track"] + kept
    errors = [r for r in results if r["kind"] == "error"]
    rss = [r["peak_rss_mib"] for r in results if r["kind"] == "stats" and r["peak_rss_mib"] is not None]
    for row in tracks + errors:
        row.pop("kind", None)
    if not tracks:
        _write_errors(cfg.output, errors)
        raise UserError(f"no track could be transformed ({len(errors)} set aside; see {cfg.output}/errors.jsonl)")
    dataset_id = json_id({"settings": settings_id, "inputs": sorted((t["id"], t["input_fingerprint"]) for t in tracks)})
    for t in tracks:
        t.update(id=str(t["id"]), dataset_id=dataset_id, settings_id=settings_id,
                 split=ds.split_for(t["id"], cfg.val_fraction))
    tracks.sort(key=lambda t: t["id"])
    summary = {
        "format": ds.FORMAT, versions.KEY: ds.FORMAT_VERSION, "dataset_id": dataset_id, "sample_rate": cfg.sample_rate,
        "mu": cfg.mu, "settings": settings.to_dict(), "tracks": len(tracks), "errors": len(errors),
        "samples": sum(t["num_samples"] for t in tracks), "val_tracks": sum(t["split"] == "val" for t in tracks),
        "seconds": round(sum(t["num_samples"] for t in tracks) / cfg.sample_rate, 2),
        "wall_s": round(time.time() - started, 2),
        "executor_peak_rss_mib": max(rss, default=None),
    }
    _write_errors(cfg.output, errors)
    storage.write_text(storage.join(cfg.output, "config.json"), cfgmod.to_json(cfg, "transform"))
    storage.write_text(storage.join(cfg.output, ds.SUMMARY), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    storage.write_text(storage.join(cfg.output, MANIFEST), ds.manifest_text(tracks))  # the commit point
    shards = {t["shard"] for t in tracks}  # after the commit: shards of failed attempts and replaced datasets
    runs.delete_unreferenced(storage.join(cfg.output, ds.SHARDS), lambda rel: f"{ds.SHARDS}/{rel}" in shards)
    log.info("transform: %d tracks (%.1f s of audio), %d set aside, dataset %s in %.1f s", len(tracks),
             summary["seconds"], len(errors), dataset_id, summary["wall_s"])
    print(f"dataset: {cfg.output} ({len(tracks)} tracks, {summary['seconds']:.1f} s, {len(errors)} set aside)")
    return 0


def _write_errors(root: str, errors: list[dict[str, Any]]) -> None:
    storage.write_text(storage.join(root, ERRORS), jsonl.dumps(errors))
