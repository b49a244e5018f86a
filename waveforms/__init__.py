"""waveforms: scrape music, transform it on Spark, train a WaveNet, generate audio.

The package's layers, bottom up (``docs/architecture.md``): ``runtime``, ``storage``, ``config`` and the stage
registry ``stages``; the formats ``dataset``, ``model`` and ``audio``; the stages ``scrape``, ``transform``,
``train``, ``generate``, ``evaluate`` and ``verify``; ``pipeline`` and ``serve`` above them; the entry points
``cli``, ``aws`` and ``demo``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

# The README's Python API names these two at the top: ``from waveforms import mulaw, sampling``.
_API = {"mulaw": "waveforms.audio.mulaw", "sampling": "waveforms.model.sampling"}


def __getattr__(name: str) -> ModuleType:
    if name in _API:
        return importlib.import_module(_API[name])
    raise AttributeError(f"module 'waveforms' has no attribute {name!r}")
