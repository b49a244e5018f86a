"""Typed configuration for each stage: defaults, TOML files and ``--set key=value``.

A config file is TOML with one table per registered stage (:mod:`waveforms.stages`):
``[scrape]``, ``[transform]``, ``[train]`` with its ``[train.elephas]`` sub-table,
``[generate]``, ``[index]``, ``[evaluate]``, ``[aws]`` and ``[serve]``; a stage reads
only its own table and rejects keys it does not know. Files list only what differs
from the defaults.

Each field's help, unit, allowed values and CLI flag are declared once, with
:func:`opt`; :func:`validate`, the CLI (``waveforms.cli``) and the key tables
of docs/config.md (``python -m waveforms.config --write-docs``) are derived from them.
:func:`load` checks a config once, where the file and flags become a typed config;
:func:`to_json` and :func:`from_json` carry it to another process unchanged.
"""
from __future__ import annotations

from waveforms.config.aws import PIPELINE, AwsConfig
from waveforms.config.dataset import ARCHIVES, ScrapeConfig, TransformConfig, VerifyConfig
from waveforms.config.generation import EvaluateConfig, GenerateConfig, IndexConfig
from waveforms.config.loading import (C, ConfigError, from_dict, from_json, load, parse_sets, read_file, to_dict, to_json,
                                      validate)
from waveforms.config.metadata import allowed, fields, opt
from waveforms.config.reference import TABLES_END, TABLES_START, generated_section, markdown_table, write_page
from waveforms.config.serve import ServeConfig
from waveforms.config.stages import REMOVED, STAGE_CONFIGS, STAGES, cli_options
from waveforms.config.training import ElephasConfig, TrainConfig

__all__ = [
    "STAGES", "PIPELINE", "ARCHIVES", "ConfigError", "opt",
    "ScrapeConfig", "TransformConfig", "ElephasConfig", "TrainConfig", "GenerateConfig", "IndexConfig",
    "EvaluateConfig", "AwsConfig", "ServeConfig", "VerifyConfig", "STAGE_CONFIGS", "REMOVED", "C",
    "allowed", "validate", "parse_sets", "read_file", "load", "to_dict", "from_dict", "to_json", "from_json", "fields", "cli_options",
    "markdown_table", "TABLES_START", "TABLES_END", "generated_section", "write_page",
]
