"""``waveforms <stage>``: flags and config files to a typed config, then the stage.

Precedence: defaults < ``--config FILE`` < flags < ``--set key=value``. The flags
and their help come from the config fields' metadata (``waveforms.config.opt``).
"""
from __future__ import annotations

import argparse
import os
import sys
import typing
from typing import Any, Callable, Sequence

from waveforms import config as cfgmod
from waveforms import stages
from waveforms.runtime import progress, tflog
from waveforms.runtime.errors import reported
from waveforms.storage.s3retry import OUTAGE_KEY, bounded, report_faults

# The subcommands whose flags come from their config table; ``own_parser`` stages (aws) follow them.
CLI_STAGES = tuple(s.name for s in stages.REGISTRY if not s.own_parser)


def stage_runner(stage: str) -> Callable[[Any], int]:
    """The registered runner of ``stage``, imported now (stages load TensorFlow or Spark only when they run)."""
    return stages.resolve(stages.stage(stage).runner)


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
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, with timestamps and module names")
    parser.add_argument("--log-file", metavar="PATH", default="",
                        help="also write the whole log (debug level, with timestamps) to PATH")
    sub = parser.add_subparsers(dest="stage", required=True)
    for s in sorted(stages.REGISTRY, key=lambda s: s.own_parser):
        if s.own_parser:  # the stage parses the rest of the command line itself
            sub.add_parser(s.name, help=s.help, add_help=False).add_argument("stage_args", nargs=argparse.REMAINDER)
        else:
            p = sub.add_parser(s.name, help=s.help, description=s.help)
            add_stage_flags(p, s.name)
            if s.positional:
                p.add_argument("positional", nargs="?", metavar=s.positional.upper(), help=f"as --{s.positional}")
    return parser


def stage_config(stage: str, args: argparse.Namespace) -> Any:
    flags = {key: value for key, value in vars(args).items()
             if key not in ("config", "set", "stage", "verbose", "log_file", "positional") and value is not None}
    if getattr(args, "positional", None):
        flags[stages.stage(stage).positional] = args.positional
    return cfgmod.load(stage, args.config, args.set, flags)


def run_stage(stage: str, args: argparse.Namespace) -> int:
    """The stage, configured from ``args``, with S3 outages retried for its ``s3_outage_s``; a stage without
    the key (serve: a request should fail within seconds, not wait out an outage) keeps the attempts alone."""
    cfg = stage_config(stage, args)
    with bounded(getattr(cfg, OUTAGE_KEY, 0.0)):
        return stage_runner(stage)(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    own_parser = stages.stage(args.stage).own_parser
    if extra and not own_parser:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        progress.setup_logging(args.verbose, args.log_file)
    except OSError as exc:
        print(f"waveforms {args.stage}: cannot write the log file {args.log_file}: {exc.strerror}", file=sys.stderr)
        return 2
    # Before TensorFlow loads: its C++ log (even its E lines, e.g. oneDNN's note on
    # string tensors) is not the stage's output; -v or a TF_CPP_MIN_LOG_LEVEL of
    # the user's own brings it back. Python errors are reported either way.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.verbose else "3")
    tflog.quiet_import()  # TensorFlow 2.20+ reads that level only after its start-up lines; this applies it
    try:
        if own_parser:
            return int(stage_runner(args.stage)(args.stage_args + extra) or 0)
        return reported(f"waveforms {args.stage}", lambda: run_stage(args.stage, args))
    finally:
        report_faults()  # once, at the end: "S3: 37 transient faults, all retried"


if __name__ == "__main__":
    sys.exit(main())
