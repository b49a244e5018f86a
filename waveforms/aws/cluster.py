"""``waveforms aws status|logs|terminate CLUSTER_ID``.

Step logs follow EMR's layout under the cluster's log URI:
``LOG_URI/CLUSTER_ID/steps/STEP_ID/{stdout,stderr,controller,syslog}.gz`` and
``LOG_URI/CLUSTER_ID/node/INSTANCE_ID/bootstrap-actions/N/{stdout,stderr}.gz``;
EMR copies them to S3 about every five minutes.
"""
from __future__ import annotations

import gzip
import sys
from typing import Any, TextIO

from waveforms import storage
from waveforms.aws.session import AwsError, aws_errors, require_credentials, session


def _emr(region: str | None):
    sess = session(region)
    require_credentials(sess)
    return sess, sess.client("emr")


def _when(obj: dict[str, Any], key: str) -> str:
    value = obj.get("Status", {}).get("Timeline", {}).get(key)
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def describe(cluster_id: str, region: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The cluster description and its steps (oldest first)."""
    _, emr = _emr(region)
    with aws_errors(f"describing cluster {cluster_id}"):
        cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        pages = emr.get_paginator("list_steps").paginate(ClusterId=cluster_id)
        steps = [s for page in pages for s in page.get("Steps", [])]
    return cluster, list(reversed(steps))  # EMR lists newest first


def status(cluster_id: str, region: str | None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    cluster, steps = describe(cluster_id, region)
    state = cluster["Status"]["State"]
    reason = cluster["Status"].get("StateChangeReason", {}).get("Message", "")
    out.write(f"cluster {cluster_id}  {cluster.get('Name', '')}\n")
    out.write(f"state   {state}{'  (' + reason + ')' if reason else ''}\n")
    out.write(f"created {_when(cluster, 'CreationDateTime')}  ended {_when(cluster, 'EndDateTime')}\n")
    if cluster.get("MasterPublicDnsName"):
        out.write(f"master  {cluster['MasterPublicDnsName']}\n")
    if cluster.get("LogUri"):
        out.write(f"logs    {cluster['LogUri']}\n")
    out.write(f"{'step':<16} {'state':<12} {'started':<19}  name\n")
    for step in steps:
        out.write(f"{step['Id']:<16} {step['Status']['State']:<12} {_when(step, 'StartDateTime'):<19}  {step['Name']}\n")
    return 0


def terminate(cluster_id: str, region: str | None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    _, emr = _emr(region)
    with aws_errors(f"terminating cluster {cluster_id}"):
        emr.terminate_job_flows(JobFlowIds=[cluster_id])
        state = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
    out.write(f"cluster {cluster_id}: {state}\n")
    return 0


def log_root(log_uri: str, cluster_id: str) -> str:
    """``s3n://b/p/`` (as EMR reports it) -> ``s3://b/p/CLUSTER_ID``."""
    scheme, sep, rest = log_uri.partition("://")
    if not sep or scheme not in ("s3", "s3n", "s3a"):
        raise AwsError(f"cluster log URI is not on S3: {log_uri!r}")
    return storage.join(f"s3://{rest}", cluster_id)


def _text(uri: str, client) -> str:
    data = storage.read_bytes(uri, client)
    if uri.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def logs(
    cluster_id: str,
    region: str | None,
    step_id: str | None = None,
    names: tuple[str, ...] = ("stdout", "stderr"),
    bootstrap: bool = False,
    out: TextIO | None = None,
) -> int:
    """Print the step (or bootstrap) logs EMR has copied to S3 so far."""
    out = out or sys.stdout
    cluster, steps = describe(cluster_id, region)
    if not cluster.get("LogUri"):
        raise AwsError(f"cluster {cluster_id} has no log URI")
    root = log_root(cluster["LogUri"], cluster_id)
    s3 = session(region).client("s3")
    if bootstrap:
        sections = [("bootstrap actions", storage.join(root, "node"))]
    else:
        chosen = [s for s in steps if step_id in (None, s["Id"])]
        if step_id and not chosen:
            raise AwsError(f"cluster {cluster_id} has no step {step_id}")
        sections = [(f"{s['Id']} {s['Name']} [{s['Status']['State']}]", storage.join(root, "steps", s["Id"])) for s in chosen]
    for title, prefix in sections:
        with aws_errors(f"listing logs under {prefix}"):
            files = [
                f for f in storage.list_files(prefix, client=s3)
                if f.rsplit("/", 1)[-1].split(".")[0] in names
            ]
        if bootstrap:
            files = [f for f in files if "/bootstrap-actions/" in f]
        out.write(f"==> {title}\n")
        if not files:
            out.write(f"(no logs yet under {prefix}; EMR copies them about every 5 minutes)\n")
        for uri in files:
            with aws_errors(f"reading {uri}"):
                out.write(f"--- {uri}\n{_text(uri, s3)}")
            out.write("\n")
    return 0
