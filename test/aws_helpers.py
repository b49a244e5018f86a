"""Constants and helpers of the AWS tests; the moto server and ``aws_env`` are fixtures in conftest.py."""
from __future__ import annotations

import textwrap
from pathlib import Path

import boto3

SECRET = "wAvEfOrMsTeStSeCrEt0123456789abcdefSECRET"  # must never appear in output or requests
REGION = "us-east-1"
BUCKET = "waveforms-test"


def client(service: str):
    return boto3.session.Session(region_name=REGION).client(service)


def keys(bucket: str = BUCKET) -> list[str]:
    """All object keys in ``bucket`` (empty when the bucket does not exist)."""
    s3 = client("s3")
    if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        return []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def write_config(path: Path, body: str = "", bucket: str = BUCKET, stages: str = '["transform", "train"]') -> Path:
    """An emr config with an [aws] table (plus ``body``, e.g. stage tables)."""
    path.write_text(
        textwrap.dedent(
            f"""
            [aws]
            region = "{REGION}"
            bucket = "{bucket}"
            prefix = "wf"
            core_instance_count = 2
            stages = {stages}
            """
        )
        + textwrap.dedent(body)
    )
    return path
