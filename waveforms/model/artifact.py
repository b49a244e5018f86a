"""``WaveNet``: a Keras model plus the config that rebuilds it, saved as a versioned artifact.

A model folder holds ``model.keras`` (weights and graph) and ``model.json``
(format version, WaveNet config, receptive field, sample rate, mu, dataset id,
genre names, package version and git commit, training summary, and the size and
SHA-256 of ``model.keras``, checked before it is loaded). The folder may
be local or ``s3://``; ``model.json`` is always written (uploaded) last, so a
folder with a ``model.json`` always has its ``model.keras``.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waveforms import __version__, storage
from waveforms.model.presets import WaveNetConfig, resolve
from waveforms.model.wavenet import build_keras, build_training_keras
from waveforms.runtime.errors import UserError, disk_full
from waveforms.storage import OutputDir, checksums, versions

FORMAT = "waveforms-model"
FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
META_FILE = "model.json"
FILES_KEY = "files"  # model.json: {"model.keras": {"size", "sha256"}}, written after model.keras


def git_commit() -> str:
    """The source tree's commit, or "" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@dataclass
class WaveNet:
    config: WaveNetConfig
    keras_model: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.keras_model is None:
            self.keras_model = build_keras(self.config)

    @property
    def receptive_field(self) -> int:
        return self.config.receptive_field

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def mu(self) -> int:
        return self.config.mu

    @property
    def genres(self) -> list[str]:
        return list(self.meta.get("genres", []))

    def training_model(self):
        """A model with these weights that computes only the outputs whose receptive field is full.

        It takes ``receptive_field - 1 + T`` codes and returns the ``T`` logits the
        full model gives at its last ``T`` positions, with unpadded convolutions
        (see :func:`waveforms.model.wavenet.build_training_keras`); its weights
        have the full model's order and shapes.
        """
        model = build_training_keras(self.config)
        model.set_weights(self.keras_model.get_weights())
        return model

    def metadata(self) -> dict[str, Any]:
        return {
            **self.meta,
            "format": FORMAT,
            versions.KEY: FORMAT_VERSION,
            "config": self.config.to_dict(),
            "receptive_field": self.receptive_field,
            "sample_rate": self.sample_rate,
            "mu": self.mu,
            "waveforms_version": __version__,
            "git_commit": self.meta.get("git_commit") or git_commit(),
        }

    def save(self, path: str | Path | OutputDir) -> None:
        """Write model.keras then model.json into folder ``path`` (local or s3://), each atomically."""
        if not isinstance(path, OutputDir):
            with OutputDir(path) as out:
                return self.save(out)
        out = path
        out.local.mkdir(parents=True, exist_ok=True)
        tmp = out.path(f".{MODEL_FILE}.part.keras")
        try:
            with disk_full(out.path(MODEL_FILE)):
                self.keras_model.save(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(out.path(MODEL_FILE))
        meta = {**self.metadata(), FILES_KEY: {MODEL_FILE: checksums.record(out.path(MODEL_FILE))}}
        storage.write_text(str(out.path(META_FILE)), json.dumps(meta, indent=2, sort_keys=True) + "\n")
        out.upload(MODEL_FILE, META_FILE)


def update_metadata(path: str | Path, **fields: Any) -> dict[str, Any]:
    """Set ``fields`` in the model.json of the model folder ``path`` (local or s3://), rewritten atomically."""
    uri = storage.join(str(path), META_FILE)
    meta = {**json.loads(storage.read_text(uri)), **fields}
    storage.write_text(uri, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def build(preset_or_config: str | WaveNetConfig | dict[str, Any], **overrides: Any) -> WaveNet:
    """A new, untrained WaveNet from a preset name or config; ``overrides`` set config fields."""
    cfg = resolve(preset_or_config)
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cfg)})
    if unknown:
        raise UserError(f"unknown WaveNet config key {unknown[0]!r}")
    return WaveNet(dataclasses.replace(cfg, **overrides))


def load(path: str | Path) -> WaveNet:
    """Load a model folder written by :meth:`WaveNet.save`, local or ``s3://``."""
    if storage.is_s3(str(path)):
        uri = str(path)
        if not storage.exists(storage.join(uri, META_FILE)):
            raise UserError(f"no model at {uri} ({META_FILE} not found)")
        with tempfile.TemporaryDirectory(prefix="waveforms-model-") as tmp:
            for name in (META_FILE, MODEL_FILE):  # model.json names a model.keras that is already there
                try:
                    storage.download_file(storage.join(uri, name), Path(tmp, name))
                except Exception as exc:  # botocore's ClientError: the object is gone
                    raise UserError(f"cannot read {storage.join(uri, name)}: {exc}") from exc
            return _load_local(Path(tmp), uri)
    return _load_local(Path(path), str(path))


def _load_local(path: Path, origin: str) -> WaveNet:
    import keras

    meta_file = path / META_FILE
    if not meta_file.exists():
        raise UserError(f"no model at {origin} ({META_FILE} not found)")
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError as exc:
        raise UserError(f"{storage.join(origin, META_FILE)} is damaged: not JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{storage.join(origin, META_FILE)}: not a {FORMAT} model")
    versions.check(meta, storage.join(origin, META_FILE), FORMAT_VERSION)
    cfg = WaveNetConfig.from_dict(meta["config"])
    model_file = storage.join(origin, MODEL_FILE)
    problem = checksums.problem(path / MODEL_FILE, records(meta).get(MODEL_FILE, {}), META_FILE)
    if problem:
        raise UserError(f"{model_file} is damaged: {problem}; copy or train the model again")
    try:
        keras_model = keras.saving.load_model(path / MODEL_FILE, compile=False)
    except Exception as exc:  # a zip, HDF5 or config error: whatever Keras says, the file is not a model
        raise UserError(f"{model_file} cannot be loaded as a Keras model: {type(exc).__name__}: {exc}") from exc
    return WaveNet(cfg, keras_model, meta)


def records(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The size and SHA-256 records ``model.json`` holds, by file name ({} for models saved before them)."""
    files = meta.get(FILES_KEY)
    return dict(files) if isinstance(files, dict) else {}
