"""The stage registry: every ``waveforms`` subcommand, its config table, its runner and its one-line help.

The CLI's subcommands, the config tables (``waveforms.config.STAGES`` and ``STAGE_CONFIGS``),
the stages an EMR cluster may run as steps and the stage table in ``docs/architecture.md``
are all read from :data:`REGISTRY`. To add a stage, add one :class:`Stage` here.

Config classes and runners are named by ``"module:attribute"`` path and imported only when
used, so this module imports nothing from the package: the config tables can read it, and
``waveforms --help`` loads no stage (and no TensorFlow or Spark).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One subcommand.

    ``runner`` takes the stage's validated config and returns an exit code; with
    ``own_parser`` it takes the raw argument list instead (``waveforms aws ...``).
    ``emr_step``: the stage may run as an EMR step (a choice of ``[aws] stages``).
    """

    name: str
    config: str
    runner: str
    help: str
    emr_step: bool = False
    own_parser: bool = False


REGISTRY: tuple[Stage, ...] = (
    Stage("scrape", "waveforms.config.dataset:ScrapeConfig", "waveforms.scrape:run",
          "download MP3s and their licences (FMA site, FMA dataset archives, a folder) into raw/", emr_step=True),
    Stage("transform", "waveforms.config.dataset:TransformConfig", "waveforms.transform:run",
          "decode, resample and mu-law encode raw/ on Spark into a dataset", emr_step=True),
    Stage("train", "waveforms.config.training:TrainConfig", "waveforms.pipeline:train",
          "train a WaveNet on a dataset into a model folder (optionally evaluate it)", emr_step=True),
    Stage("generate", "waveforms.config.generation:GenerateConfig", "waveforms.pipeline:generate",
          "sample new audio from a model into WAV files and sidecar JSON", emr_step=True),
    Stage("index", "waveforms.config.generation:IndexConfig", "waveforms.evaluate.index:run",
          "embed a dataset's training audio on Spark into a nearest-neighbour index"),
    Stage("evaluate", "waveforms.config.generation:EvaluateConfig", "waveforms.evaluate.report:run",
          "score a model: bits per sample, Frechet mel distance, memorisation, into evaluation.json"),
    Stage("aws", "waveforms.config.aws:AwsConfig", "waveforms.aws.cli:main",
          "run the pipeline on AWS EMR", own_parser=True),
    Stage("serve", "waveforms.config.serve:ServeConfig", "waveforms.serve:run",
          "the studio: browse datasets and models, generate in the browser"),
)

NAMES: tuple[str, ...] = tuple(s.name for s in REGISTRY)
EMR_STEPS: tuple[str, ...] = tuple(s.name for s in REGISTRY if s.emr_step)  # in pipeline order


def stage(name: str) -> Stage:
    """The registered stage called ``name``; ``KeyError`` naming the known ones otherwise."""
    for s in REGISTRY:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(NAMES)}")


def resolve(path: str) -> Any:
    """Import ``"module:attribute"`` and return the attribute."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def markdown_table() -> str:
    """The stage table of ``docs/architecture.md``."""
    rows = [f"| `{s.name}` | `{s.config.rpartition(':')[2]}` | `{s.runner}` | {'yes' if s.emr_step else ''} "
            f"| {s.help} |" for s in REGISTRY]
    return "\n".join(["| stage | config | runner | EMR step | help |", "|---|---|---|---|---|", *rows]) + "\n"
