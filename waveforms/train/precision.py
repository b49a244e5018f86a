"""Devices and numeric precision for training: the GPU when there is one, and mixed_float16.

With ``mixed_precision = true`` the training model computes in float16 with
float32 variables (Keras's ``mixed_float16`` policy), except its final logits
layer (and any weightless layer after it, such as the crop), which computes in
float32, so the logits and the loss are float32; the optimizer scales the loss
against float16 underflow. Weights stay float32, so checkpoints and the saved
model are the same as a float32 run's and load on any machine.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)
MIXED = "mixed_float16"


def configure_devices() -> list[str]:
    """The GPUs TensorFlow sees (names), each set to grow its memory as needed.

    Growth lets several processes (elephas workers and the driver) share one GPU.
    Call before TensorFlow first uses a GPU; later calls change nothing.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # already initialised: its setting stays
            pass
    return [gpu.name for gpu in gpus]


def describe_devices() -> str:
    gpus = configure_devices()
    return f"GPU ({', '.join(gpus)})" if gpus else "CPU (no GPU visible to TensorFlow)"


def _policy_config(name: str) -> Any:
    import keras

    return keras.dtype_policies.serialize(keras.dtype_policies.DTypePolicy(name))


def _output_chain(model) -> set[str]:
    """Names of the layers from each output back to the nearest layer with weights (the logits layer)."""
    names: set[str] = set()
    for tensor in model.outputs:
        layer = tensor._keras_history[0]
        while True:
            names.add(layer.name)
            if layer.weights or not layer._inbound_nodes:
                break
            parents = layer._inbound_nodes[0].input_tensors
            if len(parents) != 1:
                break
            layer = parents[0]._keras_history[0]
    return names


def mixed_precision_model(model, custom_objects: dict[str, Any] | None = None):
    """``model`` rebuilt under ``mixed_float16`` with float32 logits, holding the same (float32) weights."""
    import keras

    config = model.get_config()
    float32 = _output_chain(model)
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            continue
        layer["config"]["dtype"] = _policy_config("float32" if layer["config"]["name"] in float32 else MIXED)
    mixed = keras.Model.from_config(config, custom_objects=custom_objects)
    mixed.set_weights(model.get_weights())
    return mixed


def mixed_optimizer(optimizer):
    """``optimizer`` with dynamic loss scaling, for a mixed-precision model."""
    import keras

    return keras.optimizers.LossScaleOptimizer(optimizer)
