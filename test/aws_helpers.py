"""A moto server on 127.0.0.1 for the AWS tests, reached only through AWS_ENDPOINT_URL."""
from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

SECRET = "wAvEfOrMsTeStSeCrEt0123456789abcdefSECRET"  # must never appear in output or requests
REGION = "us-east-1"
BUCKET = "waveforms-test"


@pytest.fixture(scope="module")
def moto_url():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_url, monkeypatch, tmp_path):
    """Dummy credentials and the moto endpoint in the environment; a clean server per test."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWAVEFORMSTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_url


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
