"""Training checkpoints: weights, optimizer state, step and data state, written atomically.

Layout under ``MODEL_DIR/checkpoints``::

    latest               the name of the newest complete checkpoint (replaced atomically)
    ckpt-00000100/       weights.weights.h5, optimizer.npz, state.json

A checkpoint is written into a temporary folder, renamed to its final name, and
only then named in ``latest``; the previous one is removed after that. A kill at
any point leaves ``latest`` naming a complete checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from waveforms import storage
from waveforms.errors import UserError

log = logging.getLogger(__name__)

DIR = "checkpoints"
LATEST = "latest"
WEIGHTS = "weights.weights.h5"
OPTIMIZER = "optimizer.npz"
STATE = "state.json"
TMP_PREFIX = ".tmp-"


class CheckpointError(UserError):
    """A checkpoint that cannot be used to resume."""


def root(model_dir: str | Path) -> Path:
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
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = optimizer.variables
    if len(variables) != len(arrays):
        raise CheckpointError(f"optimizer state has {len(arrays)} arrays, the optimizer {len(variables)}")
    for var, value in zip(variables, arrays):
        var.assign(value)


def save(model_dir: str | Path, model, state: dict[str, Any]) -> Path:
    """Write a checkpoint of ``model`` (compiled, with its optimizer) and ``state`` (must hold ``step``)."""
    base = root(model_dir)
    base.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{int(state['step']):08d}"
    final = base / name
    if latest_name(model_dir) == name:
        return final  # this exact step is already the newest complete checkpoint
    tmp = base / f"{TMP_PREFIX}{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_weights(tmp / WEIGHTS)
    with open(tmp / OPTIMIZER, "wb") as fh:
        np.savez(fh, *optimizer_arrays(model.optimizer))
        fh.flush()
        os.fsync(fh.fileno())
    with open(tmp / STATE, "w") as fh:  # written last: its presence marks the folder complete
        json.dump(state, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(base)
    storage.write_text(str(base / LATEST), name + "\n")
    prune(model_dir, keep=name)
    return final


def prune(model_dir: str | Path, keep: str) -> None:
    """Remove every checkpoint and leftover temporary folder except ``keep``."""
    for path in root(model_dir).iterdir():
        if path.is_dir() and path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def latest_name(model_dir: str | Path) -> str | None:
    pointer = root(model_dir) / LATEST
    if not pointer.exists():
        return None
    return pointer.read_text().strip() or None


def load_state(model_dir: str | Path) -> dict[str, Any] | None:
    """The newest checkpoint's state, or None when there is none."""
    name = latest_name(model_dir)
    if name is None:
        return None
    path = root(model_dir) / name / STATE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path.parent} is unreadable ({exc}); rerun with --fresh") from exc


def restore(model_dir: str | Path, model) -> dict[str, Any] | None:
    """Load the newest checkpoint into ``model`` and its optimizer; return its state (None if none)."""
    state = load_state(model_dir)
    if state is None:
        return None
    path = root(model_dir) / latest_name(model_dir)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(path / WEIGHTS)
        with np.load(path / OPTIMIZER) as npz:
            arrays = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); rerun with --fresh") from exc
    set_optimizer_arrays(model.optimizer, model, arrays)
    return state


def clear(model_dir: str | Path) -> None:
    """Forget every checkpoint (``--fresh``)."""
    shutil.rmtree(root(model_dir), ignore_errors=True)
