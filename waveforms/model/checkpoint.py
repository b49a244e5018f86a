"""Training checkpoints: weights, optimizer state, step and data state, written atomically.

Layout under ``MODEL_DIR/checkpoints`` (a local folder or an ``s3://`` prefix)::

    latest               the name of the newest complete checkpoint (replaced atomically)
    ckpt-00000100/       weights.weights.h5, optimizer.npz, [ema.npz,] state.json

``ema.npz`` (the moving average of the weights, when training keeps one) is
there when ``state.json`` has ``"ema": true``. ``state.json`` also records the
size and SHA-256 of the other files (``"files"``), checked before they are loaded,
and its ``format_version`` (checkpoints written before it have none and resume).

A checkpoint is written into a temporary folder of the local working copy,
renamed to its final name, and only then named in ``latest``. For an S3 target
its files are uploaded next, then ``latest`` (each PUT is atomic); older
checkpoints are removed after that. A kill at any point leaves ``latest``
naming a complete checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from waveforms import storage
from waveforms.runtime.errors import UserError, disk_full, need_space
from waveforms.storage import OutputDir, checksums, versions

log = logging.getLogger(__name__)

DIR = "checkpoints"
LATEST = "latest"
WEIGHTS = "weights.weights.h5"
OPTIMIZER = "optimizer.npz"
STATE = "state.json"
EMA = "ema.npz"
FILES = (WEIGHTS, OPTIMIZER, STATE)  # upload order: state.json last within a checkpoint
TMP_PREFIX = ".tmp-"
FILES_KEY = "files"  # state.json: {file: {"size", "sha256"}} of the checkpoint's other files
FORMAT_VERSION = 1

class CheckpointError(UserError):
    """A checkpoint that cannot be used to resume."""


def root(model_dir: str | Path) -> Path:
    """The checkpoint folder of a local model folder (for an OutputDir: its working copy, ``out.local``)."""
    if storage.is_s3(str(model_dir)):
        raise ValueError(f"{model_dir}: open it as an OutputDir and pull() to get a local copy")
    return Path(model_dir) / DIR


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def optimizer_arrays(optimizer) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in optimizer.variables]


def set_optimizer_arrays(optimizer, model, arrays: list[np.ndarray]) -> None:
    """Restore the optimizer's variables from ``arrays`` (as :func:`optimizer_arrays` wrote them).

    Adam's variables are the step counter, a learning-rate scalar when the
    rate is a constant (none under a schedule), then the two moments of each
    weight. A checkpoint made under the other kind of rate still resumes: the
    counter and the moments carry over, the learning rate is the config's.
    """
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = list(optimizer.variables)
    if len(variables) != len(arrays):
        saved = [a for a in arrays[1:] if np.ndim(a)]
        slots = [v for v in variables[1:] if len(v.shape)]
        if len(saved) != len(slots) or any(tuple(a.shape) != tuple(v.shape) for a, v in zip(saved, slots)):
            raise CheckpointError(f"optimizer state has {len(arrays)} arrays, the optimizer {len(variables)}")
        variables, arrays = [variables[0], *slots], [arrays[0], *saved]
    for var, value in zip(variables, arrays):
        var.assign(value)


def files(state: dict[str, Any] | None) -> tuple[str, ...]:
    """The files of a checkpoint with ``state``, in upload order (state.json last)."""
    return (WEIGHTS, OPTIMIZER, EMA, STATE) if state and state.get("ema") else FILES


def _write_npz(path: Path, arrays: list[np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, *arrays)
        fh.flush()
        os.fsync(fh.fileno())


def _read_npz(path: Path) -> list[np.ndarray]:
    with np.load(path) as npz:
        return [npz[f"arr_{i}"] for i in range(len(npz.files))]


def save(out: OutputDir, model, state: dict[str, Any], ema: list[np.ndarray] | None = None) -> str:
    """Write a checkpoint of ``model`` (compiled, with its optimizer) and ``state`` (must hold ``step``).

    ``ema``: the moving-average weights, stored as ``ema.npz`` (and ``"ema": true`` in the state).
    """
    state = {**state, "ema": ema is not None, versions.KEY: FORMAT_VERSION}
    base = root(out.local)
    base.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{int(state['step']):08d}"
    final = base / name
    if latest_name(out.local) == name:
        return name  # this exact step is already the newest complete checkpoint
    tmp = base / f"{TMP_PREFIX}{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    need_space(final, _weights_file_bytes(model), "writing the checkpoint")  # h5py crashes on a full disk
    try:
        with disk_full(final, "writing the checkpoint"):
            _write_folder(tmp, model, state, ema)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back; "latest" names the last whole one
        raise
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(base)
    storage.write_text(str(base / LATEST), name + "\n")
    out.upload(*(f"{DIR}/{name}/{f}" for f in files(state)), f"{DIR}/{LATEST}")
    prune(out, keep=name)
    return name


def _write_folder(tmp: Path, model, state: dict[str, Any], ema: list[np.ndarray] | None) -> None:
    """The checkpoint's files in folder ``tmp``, ``state.json`` (with the others' sizes and hashes) last."""
    tmp.mkdir()
    model.save_weights(tmp / WEIGHTS)
    _write_npz(tmp / OPTIMIZER, optimizer_arrays(model.optimizer))
    if ema is not None:
        _write_npz(tmp / EMA, ema)
    state[FILES_KEY] = {f: checksums.record(tmp / f) for f in files(state) if f != STATE}
    with open(tmp / STATE, "w") as fh:  # written last: its presence marks the folder complete
        json.dump(state, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)


def _weights_file_bytes(model) -> int:
    """An upper bound on the size of ``model``'s weights file: the arrays, about 2.9 kB of HDF5 per variable
    (measured: 81 kB for tiny's 28, 274 kB for small's 100) counted as 4 kB, and 64 kB."""
    arrays = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)
    return arrays + 4096 * len(model.weights) + 65536


def prune(out: OutputDir, keep: str) -> None:
    """Remove every checkpoint and leftover temporary folder except ``keep``."""
    out.remove_except(DIR, keep=(keep, LATEST))


def latest_name(model_dir: str | Path) -> str | None:
    """The newest complete checkpoint's name in ``model_dir`` (a local folder or s3://), or None."""
    pointer = storage.join(str(model_dir), DIR, LATEST)
    if not storage.exists(pointer):
        return None
    return storage.read_text(pointer).strip() or None


def load_state(model_dir: str | Path) -> dict[str, Any] | None:
    """The newest checkpoint's state in ``model_dir`` (a local folder or s3://), or None when there is none.

    A run that is still training may commit a newer checkpoint and prune the
    one ``latest`` named between the two reads; the read then follows
    ``latest`` again, so a reader watching a live run never sees a pruned one.
    """
    name = latest_name(model_dir)
    while name is not None:
        path = storage.join(str(model_dir), DIR, name, STATE)
        try:
            state = json.loads(storage.read_text(path))
        except (OSError, ValueError, BotoCoreError, ClientError) as exc:  # ClientError: a pointer to a missing object
            newer = latest_name(model_dir)
            if newer is not None and newer > name:
                name = newer
                continue
            raise CheckpointError(f"checkpoint {storage.parent(path)} is unreadable ({exc}); rerun with --fresh") from exc
        versions.check(state, path, FORMAT_VERSION)
        return state
    return None


def pull(out: OutputDir) -> dict[str, Any] | None:
    """Bring the target's newest checkpoint into the working copy; return its state there (None if none)."""
    if out.remote:
        name = latest_name(out.uri)
        if name is not None:
            fetched = out.download(f"{DIR}/{name}/{STATE}")
            state = load_state(out.uri) if fetched else None
            wanted = files(state)
            fetched += out.download(*(f"{DIR}/{name}/{f}" for f in wanted if f != STATE))
            if len(fetched) != len(wanted):
                raise CheckpointError(f"checkpoint {out.target(DIR, name)} is incomplete; rerun with --fresh")
            out.download(f"{DIR}/{LATEST}")
    return load_state(out.local)


def restore(model_dir: str | Path, model) -> dict[str, Any] | None:
    """Load the newest checkpoint of the local ``model_dir`` into ``model`` and its optimizer; return its state
    (None if none)."""
    state = load_state(model_dir)
    if state is None:
        return None
    path = root(model_dir) / latest_name(model_dir)
    check_files(path, state, (WEIGHTS, OPTIMIZER))
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(path / WEIGHTS)
        arrays = _read_npz(path / OPTIMIZER)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); rerun with --fresh") from exc
    set_optimizer_arrays(model.optimizer, model, arrays)
    return state


def load_ema(model_dir: str | Path) -> list[np.ndarray] | None:
    """The newest checkpoint's moving-average weights in the local ``model_dir``, or None when it has none."""
    state = load_state(model_dir)
    if not state or not state.get("ema"):
        return None
    path = root(model_dir) / latest_name(model_dir) / EMA
    check_files(path.parent, state, (EMA,))
    try:
        return _read_npz(path)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path.parent} is unreadable ({exc}); rerun with --fresh") from exc


def check_files(path: Path, state: dict[str, Any], names: tuple[str, ...]) -> None:
    """CheckpointError naming the first of ``names`` in checkpoint ``path`` that differs from its record.

    Checkpoints written before the records were kept (no ``files`` in ``state.json``) are not checked.
    """
    recorded = state.get(FILES_KEY) or {}
    for name in names:
        if name in recorded:
            problem = checksums.problem(path / name, recorded[name], STATE)
            if problem:
                raise CheckpointError(f"checkpoint file {path / name} is damaged: {problem}; rerun with --fresh")


def clear(out: OutputDir) -> None:
    """Forget every checkpoint (``--fresh``), in the working copy and at the target."""
    out.remove(DIR)
