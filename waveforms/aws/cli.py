"""Run the pipeline on AWS EMR: launch, status, logs, terminate, sync."""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from waveforms import config as cfgmod
from waveforms.aws import cluster
from waveforms.aws.launch import launch
from waveforms.aws.sync import sync
from waveforms.runtime.errors import reported


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waveforms aws", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("launch", help="upload the package and configs, start an EMR cluster running the stages")
    p.add_argument("--config", required=True, help="TOML file with an [aws] table (and stage tables)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an [aws] key")
    p.add_argument("--dry-run", action="store_true", help="print the exact requests and the bootstrap script; call nothing")

    def cluster_cmd(name: str, text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=text)
        c.add_argument("cluster_id", help="EMR cluster id (j-...)")
        c.add_argument("--region", help="AWS region (default: --config's [aws] region, then boto3's)")
        c.add_argument("--config", help="TOML file whose [aws] region to use")
        return c

    cluster_cmd("status", "cluster state and its steps")
    logs = cluster_cmd("logs", "print step logs copied to the log URI")
    logs.add_argument("--step", help="only this step id")
    logs.add_argument("--file", action="append", choices=["stdout", "stderr", "controller", "syslog"],
                      help="which log files (default: stdout and stderr; repeatable)")
    logs.add_argument("--bootstrap", action="store_true", help="bootstrap-action logs of every node instead")
    cluster_cmd("terminate", "terminate the cluster")

    s = sub.add_parser("sync", help="copy a folder between S3 and local disk, only changed files")
    s.add_argument("src", help="s3://bucket/prefix or a local folder")
    s.add_argument("dst", help="a local folder or s3://bucket/prefix")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _region(args: argparse.Namespace) -> str | None:
    if args.region:
        return args.region
    if args.config:
        return cfgmod.load("aws", args.config).region
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return reported(f"waveforms aws {args.command}", lambda: _command(args))


def _command(args: argparse.Namespace) -> int:
    if args.command == "launch":
        cfg = cfgmod.load("aws", args.config, args.set)
        launch(cfg, args.config, dry_run=args.dry_run)
        return 0
    if args.command == "sync":
        result = sync(args.src, args.dst, progress=not args.no_progress)
        print(f"copied {len(result.copied)} file(s), {result.bytes} bytes; {result.unchanged} unchanged")
        return 0
    region = _region(args)
    if args.command == "status":
        return cluster.status(args.cluster_id, region)
    if args.command == "terminate":
        return cluster.terminate(args.cluster_id, region)
    names = tuple(args.file or ("stdout", "stderr"))
    return cluster.logs(args.cluster_id, region, args.step, names, args.bootstrap)
