"""``waveforms <stage>``: flags and config files to a typed config, then the stage.

Precedence: defaults < ``--config FILE`` < flags < ``--set key=value``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Sequence

from waveforms import config as cfgmod
from waveforms.errors import UserError

# (flag, config key, type, help); nargs="append" for list-valued keys.
FLAGS: dict[str, list[tuple[str, str, Any, str]]] = {
    "scrape": [
        ("--source", "source", str, "fma-site | fma-dataset | dir"),
        ("--base-url", "base_url", str, "site root serving FMA markup"),
        ("--genre", "genres", "append", "genre slug (repeatable)"),
        ("--limit", "limit", int, "tracks per genre (fma-site) or in total"),
        ("--total-limit", "total_limit", int, "tracks in total across genres"),
        ("--out", "out", str, "output folder or s3://bucket/prefix"),
        ("--licence", "licences", "append", "keep only these licences, e.g. CC-BY, CC-BY-NC* (repeatable)"),
        ("--rate", "requests_per_second", float, "requests per second to the site"),
        ("--user-agent", "user_agent", str, "User-Agent naming the tool and a contact URL"),
        ("--archive", "archive", str, "fma-dataset archive: fma_small, fma_medium, fma_large, fma_full"),
        ("--mirror", "mirror", str, "fma-dataset base URL"),
        ("--input", "input", str, "dir source: folder or s3:// prefix of MP3s"),
    ],
    "transform": [
        ("--input", "input", str, "scraped folder, manifest, or s3:// prefix"),
        ("--output", "output", str, "dataset folder or s3:// prefix"),
        ("--master", "master", str, "Spark master URL"),
        ("--sample-rate", "sample_rate", int, "output sample rate in Hz"),
        ("--normalise", "normalise", str, "peak | rms | none"),
        ("--silence-threshold-db", "silence_threshold_db", float, "trim leading/trailing audio below this level"),
        ("--val-fraction", "val_fraction", float, "share of tracks held out for validation"),
    ],
    "train": [
        ("--data", "data", str, "dataset folder or s3:// prefix"),
        ("--model-dir", "model_dir", str, "where the model, checkpoints and metrics go"),
        ("--preset", "preset", str, "tiny | small | default | large"),
        ("--steps", "steps", int, "training steps (local engine)"),
        ("--batch-size", "batch_size", int, "windows per batch"),
        ("--window", "window", int, "predicted samples per window"),
        ("--engine", "engine", str, "local | elephas"),
        ("--mode", "mode", str, "elephas mode: synchronous | asynchronous | hogwild"),
        ("--frequency", "frequency", str, "elephas update frequency: epoch | batch"),
        ("--master", "master", str, "Spark master URL (elephas)"),
        ("--workers", "workers", int, "elephas workers (partitions)"),
        ("--epochs", "epochs", int, "elephas epochs"),
        ("--parameter-server", "parameter_server", str, "elephas parameter server: http | socket"),
        ("--port", "port", int, "elephas parameter server port (0 = a free one)"),
        ("--seed", "seed", int, "random seed"),
    ],
    "generate": [
        ("--model", "model", str, "model folder"),
        ("--seconds", "seconds", float, "seconds of audio per stream"),
        ("--output", "output", str, "output WAV (stream k > 0 gets a _k suffix)"),
        ("--temperature", "temperature", float, "sampling temperature; 0 = greedy"),
        ("--prime", "prime", str, "audio file whose samples start the sequence"),
        ("--seed", "seed", int, "random seed"),
        ("--streams", "streams", int, "independent streams generated together"),
        ("--genre", "genre", str, "genre for a genre-conditioned model"),
        ("--save-every", "save_every", float, "write the partial WAV every S seconds of audio"),
    ],
}

BOOL_FLAGS: dict[str, list[tuple[str, str, str]]] = {
    "train": [("--fresh", "fresh", "start over, ignoring checkpoints")],
}


def _stage_runner(stage: str) -> Callable[[Any], int]:
    if stage == "scrape":
        from waveforms.scrape import run
    elif stage == "transform":
        from waveforms.transform import run
    elif stage == "train":
        from waveforms.train import run
    else:
        from waveforms.generate import run
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waveforms", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage, flags in FLAGS.items():
        p = sub.add_parser(stage, help=f"run the {stage} stage")
        p.add_argument("--config", help="TOML config file (tables per stage)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
        for flag, key, tp, text in flags:
            if tp == "append":
                p.add_argument(flag, dest=key, action="append", default=None, help=text)
            else:
                p.add_argument(flag, dest=key, type=tp, default=None, help=text)
        for flag, key, text in BOOL_FLAGS.get(stage, []):
            p.add_argument(flag, dest=key, action="store_true", default=None, help=text)
    aws = sub.add_parser("aws", help="run the pipeline on AWS EMR", add_help=False)
    aws.add_argument("aws_args", nargs=argparse.REMAINDER)
    return parser


def stage_config(stage: str, args: argparse.Namespace) -> Any:
    flags = {key: getattr(args, key) for _, key, *_ in FLAGS[stage] + BOOL_FLAGS.get(stage, [])}
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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
