"""A run started before the training model was rewritten resumes under today's code.

``test/data/legacy-tiny-model`` is a real model folder written by the earlier
code (``tiny`` preset, 5 steps on :func:`helpers.train.tone_dataset`, constant
learning rate 0.01): its checkpoint names weights by Keras layer class, and its
``model.keras`` holds the same step-5 weights as the checkpoint.
"""
import json
import shutil
from pathlib import Path

import numpy as np

from helpers.train import tone_dataset, train_argv
from waveforms.cli import main
from waveforms.model import load

LEGACY = Path(__file__).parent / "data" / "legacy-tiny-model"


def test_the_earlier_models_checkpoint_resumes_with_its_weights_then_trains_on(tmp_path):
    data = tone_dataset(tmp_path / "data")
    model_dir = tmp_path / "model"
    shutil.copytree(LEGACY, model_dir)
    expected = load(LEGACY).keras_model.get_weights()

    # resuming at the checkpoint's own step trains nothing: the saved model is the checkpoint's weights
    assert main(train_argv(data, model_dir, "--steps", "5")) == 0
    restored = load(model_dir).keras_model.get_weights()
    assert [w.shape for w in restored] == [w.shape for w in expected]
    for got, want in zip(restored, expected):
        np.testing.assert_array_equal(got, want)

    # and it trains on from step 5 with the config's recipe
    assert main(train_argv(data, model_dir, "--steps", "9", "--set", "log_every=1")) == 0
    rows = [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["step"] > 5] == [6, 7, 8, 9]
    # the earlier run's row keeps its numbers under today's names
    (earlier,) = [json.loads(x) for x in (LEGACY / "metrics.jsonl").read_text().splitlines()]
    probe = earlier.pop("val_bits_per_sample")
    assert rows[0] == {**earlier, "val_probe_bits_per_sample": probe}
    assert all(np.isfinite(r["loss"]) for r in rows if r["step"] > 5)
    state = json.loads((model_dir / "checkpoints" / "ckpt-00000009" / "state.json").read_text())
    assert state["step"] == 9
    moved = load(model_dir).keras_model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(moved, expected))
