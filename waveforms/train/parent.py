"""Fine-tuning: a run that starts from another model's architecture and weights (``init_from``).

The parent's saved weights are its averaged ones when it kept a moving
average (the artifact holds those). The optimizer and the learning-rate
schedule start fresh; the data must be sampled and mu-law coded as the
parent's was, since the weights read codes, not audio.
"""
from __future__ import annotations

from typing import Any

from waveforms.config import TrainConfig
from waveforms.dataset import Dataset
from waveforms.model import WaveNet, build, load
from waveforms.model.artifact import FILES_KEY, MODEL_FILE
from waveforms.model.presets import ARCHITECTURE_KEYS
from waveforms.runtime.errors import UserError


def conflicts(cfg: TrainConfig, parent: WaveNet) -> list[str]:
    """The architecture keys set in ``cfg`` (non-zero) that differ from the parent's."""
    return [f"{k} = {getattr(cfg, k)} (the model has {getattr(parent.config, k)})" for k in ARCHITECTURE_KEYS
            if getattr(cfg, k) and getattr(cfg, k) != getattr(parent.config, k)]


def from_parent(cfg: TrainConfig, ds: Dataset, genres: list[str]) -> tuple[WaveNet, dict[str, Any]]:
    """A new WaveNet with the parent's architecture and weights, and the lineage for model.json."""
    parent = load(cfg.init_from)
    where = f"init_from = {cfg.init_from}"
    differ = conflicts(cfg, parent)
    if differ:
        raise UserError(f"{where}: the architecture comes from that model, but {', '.join(differ)}; "
                        "drop these keys")
    if parent.sample_rate != ds.sample_rate:
        raise UserError(f"{where}: the model was trained at {parent.sample_rate} Hz but {cfg.data} holds "
                        f"{ds.sample_rate} Hz audio; transform the data at {parent.sample_rate} Hz")
    if parent.mu != ds.mu:
        raise UserError(f"{where}: the model reads mu-law codes with mu = {parent.mu} but {cfg.data} was coded "
                        f"with mu = {ds.mu}; transform the data with mu = {parent.mu}")
    if parent.config.num_genres != len(genres):
        raise UserError(f"{where}: the model is conditioned on {parent.config.num_genres} genres, this run on "
                        f"{len(genres)} (condition_on_genre and the dataset's genres must match the model's)")
    wavenet = build(parent.config)
    wavenet.keras_model.set_weights(parent.keras_model.get_weights())
    lineage = {"path": cfg.init_from, "id": (parent.meta.get(FILES_KEY) or {}).get(MODEL_FILE, {}).get("sha256"),
               "dataset": parent.meta.get("dataset"), "dataset_id": parent.meta.get("dataset_id"),
               "preset": parent.meta.get("preset"), "steps": (parent.meta.get("training") or {}).get("steps")}
    return wavenet, lineage
