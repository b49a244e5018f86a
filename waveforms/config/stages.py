"""The config tables, one per registered stage (:mod:`waveforms.stages`), keys that are gone, and the keys with CLI flags."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from waveforms import stages
from waveforms.config.metadata import fields
from waveforms.config.training import ElephasConfig

STAGES: tuple[str, ...] = stages.NAMES  # the tables a config file may hold

STAGE_CONFIGS: dict[str, type] = {s.name: stages.resolve(s.config) for s in stages.REGISTRY}

# Keys that are gone, per stage, with what to use instead.
REMOVED: dict[str, dict[str, str]] = {  # by config class name
    "ScrapeConfig": {
        "total_limit": "total_limit is gone: limit now counts tracks in total for every source "
                       "(per_genre_limit caps each genre on fma-site); use limit",
    },
    "TrainConfig": {
        f.name: f"{f.name} is an elephas key: put it in [train.elephas] or use --set elephas.{f.name}=..."
        for f in dataclasses.fields(ElephasConfig)
    },
    "AwsConfig": {
        "shard_cache_gb": "[aws] shard_cache_gb is gone: shard_cache_gb is a [train] key; move it to the [train] "
                          "table (an EMR train step that does not set it caches on the core nodes' data volume, "
                          "half of core_volume_gb)",
    },
    "ElephasConfig": {
        key: f"elephas.{key} moved to [train] {key} (both Spark engines read it; the --{key} flag is unchanged)"
        for key in ("master", "workers")
    },
}

# Keys that were renamed, per stage: old key -> (new key, the old value's type, old value -> new value or None
# for "leave the new key as it is"). An old config keeps working.
RENAMED: dict[str, dict[str, tuple[str, type, Callable[[Any], Any]]]] = {  # by config class name
    "TrainConfig": {
        "mixed_precision": ("precision", bool, lambda on: "float16" if on else None),
    },
}


def cli_options(stage: str) -> list[tuple[str, str, dataclasses.Field, Any]]:
    """``(flag, dotted key, field, type)`` for each key of ``stage`` that has a CLI flag."""
    return [(f.metadata["flag"], key, f, tp) for key, f, tp in fields(STAGE_CONFIGS[stage]) if f.metadata.get("flag")]
