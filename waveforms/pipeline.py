"""What crosses stages, one layer above them: ``generate --evaluate`` and train's ``evaluate_at_end``.

The stages depend one way (evaluate reads generate's sampler; no stage imports a later
one), so the runs that join two stages live here, and the stage registry names
:func:`train` and :func:`generate` as those stages' runners.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from waveforms import config as cfgmod
from waveforms import generate as generate_stage
from waveforms import train as train_stage
from waveforms.evaluate import report
from waveforms.evaluate.index_format import index_uri
from waveforms.evaluate.likelihood import VAL_BITS
from waveforms.evaluate.memorisation import LoadedIndex, check
from waveforms.runtime.errors import UserError
from waveforms.storage import OutputDir


def memorisation_checks(cfg: cfgmod.GenerateConfig, wavenet, codes: np.ndarray, names: list[str]) -> dict:
    """``--evaluate``: each stream's nearest training audio per second, from the model's dataset's index."""
    data = wavenet.meta.get("dataset", "")
    if not data:
        raise UserError("--evaluate needs the model's dataset (model.json names none)")
    loaded = LoadedIndex.open(index_uri(data))
    return {name: {"memorisation": check(loaded, {name: codes[k]}, wavenet.sample_rate, wavenet.mu)}
            for k, name in enumerate(names)}


def generate(cfg: cfgmod.GenerateConfig) -> int:
    """The ``generate`` stage, with the memorisation check in each sidecar when ``cfg.evaluate``."""
    return generate_stage.run(cfg, memorisation_checks if cfg.evaluate else None)


def evaluate_trained(model_dir: str, data: str) -> dict[str, Any]:
    """Evaluate a freshly trained model and record ``val_split_bits_per_sample``, ``val_nats`` and ``fd_mel``
    in its model.json."""
    from waveforms.model.artifact import update_metadata  # TensorFlow, loaded by the evaluation anyway

    cfg = cfgmod.load("evaluate", flags={"model": model_dir, "data": data})
    with OutputDir(model_dir) as out:
        result = report.evaluate(cfg, out)
        report.write(result, out)
    update_metadata(model_dir, evaluation={VAL_BITS: result[VAL_BITS],
                                           "val_nats": result["val_nats"], "fd_mel": result["fd_mel"],
                                           "file": report.JSON_FILE})
    return result


def train(cfg: cfgmod.TrainConfig) -> int:
    """The ``train`` stage, then the evaluate stage on the final model when ``cfg.evaluate_at_end``."""
    code = train_stage.run(cfg)
    if cfg.evaluate_at_end:
        evaluate_trained(cfg.model_dir, cfg.data)
    return code
