"""``waveforms <stage>``: flags and config files to a typed config, then the stage.

Precedence: defaults < ``--config FILE`` < flags < ``--set key=value``. The flags
and their help come from the config fields' metadata (``waveforms.config.opt``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from typing import Any, Callable, Sequence

from waveforms import config as cfgmod
from waveforms.errors import UserError

CLI_STAGES = ("scrape", "transform", "train", "generate", "index", "evaluate", "serve", "verify")


def _stage_runner(stage: str) -> Callable[[Any], int]:
    if stage == "scrape":
        from waveforms.scrape import run
    elif stage == "transform":
        from waveforms.transform import run
    elif stage == "train":
        from waveforms.train import run
    elif stage == "index":
        from waveforms.evaluate.index import run
    elif stage == "evaluate":
        from waveforms.evaluate.report import run
    elif stage == "serve":
        from waveforms.serve import run
    elif stage == "verify":
        from waveforms.verify import run
    else:
        from waveforms.generate import run
    return run


def flag_help(key: str, field: Any) -> str:
    """A flag's help: ``section:`` for sub-table keys, the field's help, unit and allowed values."""
    meta = field.metadata
    section = key.rpartition(".")[0]
    notes = [n for n in (meta.get("unit"), cfgmod.allowed(field)) if n]
    return (f"{section}: " if section else "") + meta["help"] + (f" [{'; '.join(notes)}]" if notes else "")


def add_stage_flags(p: argparse.ArgumentParser, stage: str) -> None:
    """``--config``, ``--set`` and one flag per config key that declares one."""
    p.add_argument("--config", help="TOML config file (tables per stage)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (sub-table keys with dots: elephas.mode=hogwild)")
    for flag, key, field, tp in cfgmod.cli_options(stage):
        if typing.get_origin(tp) is list:
            p.add_argument(flag, dest=key, action="append", default=None, help=flag_help(key, field))
        elif tp is bool:
            p.add_argument(flag, dest=key, action="store_true", default=None, help=flag_help(key, field))
        else:
            p.add_argument(flag, dest=key, type=tp, default=None, metavar=key.rpartition(".")[2].upper(),
                           help=flag_help(key, field))
    for key in cfgmod.REMOVED.get(cfgmod.STAGE_CONFIGS[stage].__name__, {}):
        flag = "--" + key.replace("_", "-")
        if not any(a.option_strings == [flag] for a in p._actions):  # removed keys fail with a hint
            p.add_argument(flag, dest=key, default=None, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waveforms", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage in CLI_STAGES:
        p = sub.add_parser(stage, help=f"run the {stage} stage")
        add_stage_flags(p, stage)
        if stage == "verify":
            p.add_argument("path", nargs="?", metavar="DATA", help="the dataset or model to check (as --data)")
    aws = sub.add_parser("aws", help="run the pipeline on AWS EMR", add_help=False)
    aws.add_argument("aws_args", nargs=argparse.REMAINDER)
    return parser


def stage_config(stage: str, args: argparse.Namespace) -> Any:
    flags = {key: value for key, value in vars(args).items()
             if key not in ("config", "set", "stage", "verbose", "path") and value is not None}
    if getattr(args, "path", None):
        flags["data"] = args.path
    return cfgmod.load(stage, args.config, args.set, flags)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.stage != "aws":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Before TensorFlow loads: its C++ log (even its E lines, e.g. oneDNN's note on
    # string tensors) is not the stage's output; -v or a TF_CPP_MIN_LOG_LEVEL of
    # the user's own brings it back. Python errors are reported either way.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.verbose else "3")
    if args.stage == "aws":
        from waveforms.aws.cli import main as aws_main

        return aws_main(args.aws_args + extra)
    try:
        cfg = stage_config(args.stage, args)
    except cfgmod.ConfigError as exc:
        print(f"waveforms {args.stage}: config error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(_stage_runner(args.stage)(cfg) or 0)
    except KeyboardInterrupt:
        print(f"waveforms {args.stage}: interrupted", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"waveforms {args.stage}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
