"""Devices and numeric precision for training: the GPU when there is one; float32, bfloat16 or float16 compute.

``precision`` (a ``[train]`` key) is ``float32``, ``bfloat16``, ``float16`` or
``auto``. In bfloat16 and float16 the training model computes in that type with
float32 variables (Keras's ``mixed_bfloat16`` / ``mixed_float16`` policies),
except its final logits layer (and any weightless layer after it, such as the
crop), which computes in float32, so the logits and the loss are float32. Only
float16 scales the loss (its exponent range underflows small gradients;
bfloat16 has float32's range). Weights stay float32, so checkpoints and the
saved model are the same as a float32 run's, load on any machine and move
between precisions.

``auto`` is bfloat16 where the hardware computes it natively (x86 CPU flags
``avx512_bf16`` or ``amx_bf16``, Arm's ``bf16``, a GPU of compute capability
8.0 or higher) and float32 elsewhere.
"""
from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path
from typing import Any, Iterable

from waveforms.runtime.errors import UserError

log = logging.getLogger(__name__)
PRECISIONS = ("float32", "bfloat16", "float16", "auto")
POLICIES = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}  # compute type -> Keras policy
MIXED = POLICIES["float16"]
X86_BF16 = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo "flags" that compute bfloat16 products natively
ARM_BF16 = ("bf16",)  # /proc/cpuinfo "Features" on Arm (Graviton3/4, Neoverse V1/V2)
GPU_BF16 = (8, 0)  # compute capability from which NVIDIA GPUs have bfloat16 tensor cores (A100, L4, H100)


class PrecisionError(UserError):
    """A precision this engine or machine cannot train in."""

    kind = "precision error"


def cpu_flags(cpuinfo: str) -> set[str]:
    """The CPU feature flags listed in ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def native_bfloat16(cpuinfo: str, gpu_capabilities: Iterable[tuple[int, int]] = ()) -> bool:
    """Whether bfloat16 is native here: any GPU of capability >= 8.0, else the CPU flags in ``cpuinfo``."""
    gpus = list(gpu_capabilities)
    if gpus:
        return all(tuple(c) >= GPU_BF16 for c in gpus)
    return bool(cpu_flags(cpuinfo) & {*X86_BF16, *ARM_BF16})


def resolve(precision: str, cpuinfo: str, gpu_capabilities: Iterable[tuple[int, int]] = ()) -> str:
    """The compute type ``precision`` stands for on a machine with this ``cpuinfo`` and these GPUs."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision = {precision!r} is not known; one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bfloat16" if native_bfloat16(cpuinfo, gpu_capabilities) else "float32"


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags to read, so auto keeps float32 on the CPU
        return ""


def gpu_capabilities() -> list[tuple[int, int]]:
    """The compute capability of each GPU TensorFlow sees (empty on a CPU-only machine)."""
    import tensorflow as tf

    caps = []
    for gpu in tf.config.list_physical_devices("GPU"):
        cap = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        caps.append(tuple(cap) if cap else (0, 0))
    return caps


@functools.lru_cache(maxsize=None)
def effective(precision: str) -> str:
    """:func:`resolve` on this machine (read once per process); logs what ``auto`` chose and why."""
    configure_devices()
    caps = gpu_capabilities()
    chosen = resolve(precision, _read_cpuinfo(), caps)
    if precision == "auto":
        where = f"GPU capability {min(caps)}" if caps else f"CPU ({platform.machine()})"
        log.info("precision auto: %s on this %s", chosen, where)
    return chosen


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


def precision_model(model, precision: str, custom_objects: dict[str, Any] | None = None):
    """``model`` rebuilt to compute in ``precision`` (bfloat16 or float16) with float32 logits, holding the same
    (float32) weights; a float32 model as it is for ``float32``."""
    import keras

    if precision == "float32":
        return model
    config = model.get_config()
    float32 = _output_chain(model)
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            continue
        layer["config"]["dtype"] = _policy_config("float32" if layer["config"]["name"] in float32
                                                  else POLICIES[precision])
    mixed = keras.Model.from_config(config, custom_objects=custom_objects)
    mixed.set_weights(model.get_weights())
    return mixed


def precision_optimizer(optimizer, precision: str):
    """``optimizer`` for a model computing in ``precision``: with dynamic loss scaling for float16 only."""
    import keras

    return keras.optimizers.LossScaleOptimizer(optimizer) if precision == "float16" else optimizer


def mixed_precision_model(model, custom_objects: dict[str, Any] | None = None):
    """``model`` rebuilt under ``mixed_float16`` with float32 logits (:func:`precision_model` for float16)."""
    return precision_model(model, "float16", custom_objects)


def mixed_optimizer(optimizer):
    """``optimizer`` with dynamic loss scaling, for a float16 model."""
    return precision_optimizer(optimizer, "float16")
