"""`waveforms aws launch|status|logs|terminate` against a moto server on 127.0.0.1."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers.aws import BUCKET, SECRET, client, keys, write_config
from waveforms.aws import cli
from waveforms.aws.launch import STEP_SCRIPT, bootstrap_script, build_wheel

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP_SCRIPT = ROOT / "waveforms" / "aws" / "bootstrap.sh"

STAGE_TABLES = """
[transform]
sample_rate = 8000

[train]
preset = "tiny"
steps = 3
"""


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def only_cluster() -> dict:
    emr = client("emr")
    clusters = emr.list_clusters()["Clusters"]
    assert len(clusters) == 1
    return emr.describe_cluster(ClusterId=clusters[0]["Id"])["Cluster"]


def test_launch_uploads_artifacts_and_creates_the_configured_cluster(aws_env, tmp_path, capsys):
    client("s3").create_bucket(Bucket=BUCKET)
    cfg = write_config(tmp_path / "emr.toml", STAGE_TABLES)
    code, out, err = run_cli(capsys, "launch", "--config", str(cfg))
    assert code == 0, err

    cluster = only_cluster()
    cluster_id = cluster["Id"]
    assert cluster_id in out
    uploaded = keys()
    run_ids = {k.split("/")[2] for k in uploaded}
    assert len(run_ids) == 1
    code_prefix = f"wf/runs/{run_ids.pop()}"
    wheel_key = f"{code_prefix}/code/waveforms-0.1.0-py3-none-any.whl"
    assert uploaded == sorted([
        wheel_key,
        f"{code_prefix}/code/bootstrap.sh",
        f"{code_prefix}/code/step.py",
        f"{code_prefix}/config/emr.toml",
    ])
    s3 = client("s3")
    body = lambda key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()  # noqa: E731
    assert body(f"{code_prefix}/code/bootstrap.sh") == BOOTSTRAP_SCRIPT.read_bytes()
    assert body(f"{code_prefix}/code/step.py") == STEP_SCRIPT.read_bytes()
    assert body(f"{code_prefix}/config/emr.toml") == cfg.read_bytes()
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(body(wheel_key))
    names = zipfile.ZipFile(wheel).namelist()
    assert "waveforms/aws/step.py" in names and "waveforms/cli.py" in names
    metadata = zipfile.ZipFile(wheel).read("waveforms-0.1.0.dist-info/METADATA").decode()
    assert "Requires-Dist: numpy==2.4.6" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert not [r for r in requires if "elephas" in r or "flask" in r.lower()], requires  # elephas's pins: its venv

    base = f"s3://{BUCKET}/{code_prefix}"
    emr = client("emr")
    assert cluster["ReleaseLabel"] == "emr-spark-8.1.0"
    assert [a["Name"] for a in cluster["Applications"]] == ["Spark"]
    actions = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert len(actions) == 1
    assert actions[0]["ScriptPath"] == f"{base}/code/bootstrap.sh"
    assert actions[0]["Args"][:2] == ["--wheel", f"s3://{BUCKET}/{wheel_key}"]

    steps = list(reversed(emr.list_steps(ClusterId=cluster_id)["Steps"]))
    assert [s["Name"] for s in steps] == ["waveforms transform", "waveforms train"]
    transform_args = steps[0]["Config"]["Args"]
    assert steps[0]["Config"]["Jar"] == "command-runner.jar"
    assert transform_args[0] == "spark-submit"
    tail = transform_args[transform_args.index(f"{base}/code/step.py"):]
    assert tail == [
        f"{base}/code/step.py", "--config", f"{base}/config/emr.toml", "transform",
        "--input", f"s3://{BUCKET}/wf/raw", "--output", f"s3://{BUCKET}/wf/dataset", "--master", "yarn",
    ]
    train_args = steps[1]["Config"]["Args"]
    assert train_args[train_args.index("train"):] == [
        "train", "--data", f"s3://{BUCKET}/wf/dataset", "--model-dir", f"s3://{BUCKET}/wf/model", "--master", "yarn",
        "--engine", "allreduce", "--workers", "2",  # the core nodes train: one barrier task on each of the 2
        "--set", "shard_cache_gb=32", "--set", "shard_cache_dir=/mnt/waveforms/shards",  # on each node's data volume
    ]
    everything = json.dumps([steps, actions], default=str) + out + err
    assert SECRET not in everything
    for key in uploaded:
        assert SECRET.encode() not in body(key)


def test_status_logs_and_terminate(aws_env, tmp_path, capsys):
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    emr = client("emr")
    cluster_id = emr.run_job_flow(
        Name="waveforms test",
        LogUri=f"s3://{BUCKET}/wf/logs/",
        ReleaseLabel="emr-7.5.0",
        Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
        Steps=[{"Name": "waveforms transform", "ActionOnFailure": "CONTINUE",
                "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", "x.py"]}}],
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]
    step_id = emr.list_steps(ClusterId=cluster_id)["Steps"][0]["Id"]

    code, out, err = run_cli(capsys, "status", cluster_id)
    assert code == 0, err
    state = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
    assert f"state   {state}" in out
    assert step_id in out and "waveforms transform" in out

    code, out, _ = run_cli(capsys, "logs", cluster_id)
    assert code == 0 and "no logs yet" in out
    s3.put_object(Bucket=BUCKET, Key=f"wf/logs/{cluster_id}/steps/{step_id}/stderr.gz",
                  Body=gzip.compress(b"transform: 2 tracks written\n"))
    s3.put_object(Bucket=BUCKET, Key=f"wf/logs/{cluster_id}/steps/{step_id}/syslog.gz",
                  Body=gzip.compress(b"not asked for\n"))
    code, out, _ = run_cli(capsys, "logs", cluster_id, "--step", step_id)
    assert code == 0
    assert "transform: 2 tracks written" in out and "not asked for" not in out

    code, out, err = run_cli(capsys, "terminate", cluster_id)
    assert code == 0, err
    assert emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] in ("TERMINATING", "TERMINATED")
    assert cluster_id in out

    code, _, err = run_cli(capsys, "status", "j-DOESNOTEXIST")
    assert code == 1 and "j-DOESNOTEXIST" in err


def assert_nothing_created(bucket: str = BUCKET) -> None:
    assert client("emr").list_clusters()["Clusters"] == []
    assert keys(bucket) == []


def test_missing_bucket_fails_before_anything_is_created(aws_env, tmp_path, capsys):
    cfg = write_config(tmp_path / "emr.toml", bucket="no-such-bucket")
    code, _, err = run_cli(capsys, "launch", "--config", str(cfg))
    assert code == 1
    assert "bucket 'no-such-bucket' does not exist" in err
    assert_nothing_created("no-such-bucket")
    assert client("s3").list_buckets()["Buckets"] == []


def test_missing_credentials_fail_before_anything_is_created(aws_env, tmp_path, capsys, monkeypatch):
    client("s3").create_bucket(Bucket=BUCKET)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cfg = write_config(tmp_path / "emr.toml")
    code, _, err = run_cli(capsys, "launch", "--config", str(cfg))
    assert code == 1
    assert "no AWS credentials found" in err
    code, _, err = run_cli(capsys, "status", "j-ANY")
    assert code == 1 and "no AWS credentials found" in err
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWAVEFORMSTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert_nothing_created()


@pytest.mark.parametrize(
    "body, stages, message",
    [
        ("", '["transform", "mix"]', "stages = ['transform', 'mix'] is not allowed; one of scrape, transform, train, generate"),
        ("", '["train", "transform"]', "pipeline order"),
        ("\n[train]\nprest = 'tiny'\n", '["train"]', "unknown key 'prest'"),
        ("\n[mixer]\nx = 1\n", '["train"]', "unknown table(s) ['mixer']"),
    ],
)
def test_invalid_config_fails_before_anything_is_created(aws_env, tmp_path, capsys, body, stages, message):
    client("s3").create_bucket(Bucket=BUCKET)
    cfg = write_config(tmp_path / "emr.toml", body, stages=stages)
    code, _, err = run_cli(capsys, "launch", "--config", str(cfg))
    assert code == 2
    assert message in err
    assert_nothing_created()


def test_invalid_aws_keys_and_values(aws_env, tmp_path, capsys):
    client("s3").create_bucket(Bucket=BUCKET)
    cfg = write_config(tmp_path / "emr.toml")
    for override, message in [
        ("core_instance_count=-1", "core_instance_count = -1 is not allowed; allowed: >= 0"),
        ("bucket=", "bucket is empty"),
        ("instances=3", "unknown key 'instances'"),
        ("input=/local/raw", "input must be an s3:// URI"),
        ("idle_timeout_s=5", "idle_timeout_s = 5 is not allowed; allowed: 60..604800"),
        (f"wheel={tmp_path}/missing.whl", "wheel must be an existing .whl file"),
    ]:
        code, _, err = run_cli(capsys, "launch", "--config", str(cfg), "--set", override)
        assert code == 2, override
        assert message in err, (override, err)
    assert_nothing_created()


def test_spot_keep_alive_and_a_prebuilt_wheel_reach_the_cluster(aws_env, tmp_path, capsys):
    client("s3").create_bucket(Bucket=BUCKET)
    wheel = build_wheel(tmp_path / "built")
    cfg = write_config(tmp_path / "emr.toml", stages='["transform"]')
    code, _, err = run_cli(capsys, "launch", "--config", str(cfg), "--set", f"wheel={wheel}", "--set", "use_spot=true",
                           "--set", "auto_terminate=false", "--set", "core_instance_type=r5.2xlarge",
                           "--set", "core_instance_count=3")
    assert code == 0, err
    cluster = only_cluster()
    assert cluster["AutoTerminate"] is False
    groups = {g["InstanceGroupType"]: g for g in client("emr").list_instance_groups(ClusterId=cluster["Id"])["InstanceGroups"]}
    assert (groups["MASTER"]["Market"], groups["MASTER"]["InstanceType"], groups["MASTER"]["RequestedInstanceCount"]) == ("ON_DEMAND", "m5.xlarge", 1)
    assert (groups["CORE"]["Market"], groups["CORE"]["InstanceType"], groups["CORE"]["RequestedInstanceCount"]) == ("SPOT", "r5.2xlarge", 3)
    steps = client("emr").list_steps(ClusterId=cluster["Id"])["Steps"]
    assert [s["ActionOnFailure"] for s in steps] == ["CANCEL_AND_WAIT"]
    (wheel_key,) = [k for k in keys() if k.endswith(".whl")]
    assert client("s3").get_object(Bucket=BUCKET, Key=wheel_key)["Body"].read() == wheel.read_bytes()


def test_default_cluster_terminates_itself(aws_env, tmp_path, capsys):
    client("s3").create_bucket(Bucket=BUCKET)
    cfg = write_config(tmp_path / "emr.toml", stages='["train"]')
    code, _, err = run_cli(capsys, "launch", "--config", str(cfg))
    assert code == 0, err
    cluster = only_cluster()
    assert cluster["AutoTerminate"] is True
    steps = client("emr").list_steps(ClusterId=cluster["Id"])["Steps"]
    assert [s["ActionOnFailure"] for s in steps] == ["TERMINATE_CLUSTER"]


def test_dry_run_prints_the_requests_and_calls_nothing(aws_env, tmp_path, capsys, monkeypatch):
    client("s3").create_bucket(Bucket=BUCKET)
    cfg = write_config(tmp_path / "emr.toml", STAGE_TABLES, stages='["transform", "train", "generate"]')
    code, out, err = run_cli(capsys, "launch", "--config", str(cfg), "--dry-run")
    assert code == 0, err
    assert SECRET not in out + err
    text, _, script = out.partition("\n\n# ")
    shown = json.loads(text)
    assert shown["release"] == {"label": "emr-spark-8.1.0", "spark": "4.1.1", "python": "3.11",
                                "note": "September 2026, long-term support to September 2029"}
    request = shown["emr_run_job_flow"]
    assert request["ReleaseLabel"] == "emr-spark-8.1.0"
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert [s["Name"] for s in request["Steps"]] == ["waveforms transform", "waveforms train", "waveforms generate"]
    assert [u["to"].rsplit("/", 1)[-1] for u in shown["s3_uploads"]] == [
        "waveforms-0.1.0-py3-none-any.whl", "bootstrap.sh", "step.py", "emr.toml"]
    assert BOOTSTRAP_SCRIPT.read_text() in script
    assert_nothing_created()

    # A dry run needs no credentials at all.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, out2, err = run_cli(capsys, "launch", "--config", str(cfg), "--dry-run")
    assert code == 0, err
    assert json.loads(out2.partition("\n\n# ")[0])["emr_run_job_flow"]["Steps"][0]["Name"] == "waveforms transform"


def test_launch_from_an_installed_wheel_uploads_the_bootstrap_script_inside_it(aws_env, tmp_path):
    """No checkout: the package comes from its wheel, installed into a folder of its own."""
    built = tmp_path / "built"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(built), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = built.glob("waveforms-*.whl")
    shipped = zipfile.ZipFile(wheel).read("waveforms/aws/bootstrap.sh")
    assert shipped == BOOTSTRAP_SCRIPT.read_bytes() and shipped.startswith(b"#!/usr/bin/env bash")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    client("s3").create_bucket(Bucket=BUCKET)
    cfg = write_config(tmp_path / "emr.toml", stages='["train"]')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    program = ("import sys, waveforms; print('package', waveforms.__file__); from waveforms.aws import cli; "
               "sys.exit(cli.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", program, "launch", "--config", str(cfg), "--set", f"wheel={wheel}"],
                          cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"package {site / 'waveforms' / '__init__.py'}" in done.stdout  # not this checkout
    (key,) = [k for k in keys() if k.endswith("/code/bootstrap.sh")]
    assert client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read() == shipped
    (action,) = client("emr").list_bootstrap_actions(ClusterId=only_cluster()["Id"])["BootstrapActions"]
    assert action["ScriptPath"] == f"s3://{BUCKET}/{key}"


def test_the_packaged_bootstrap_script_is_the_one_launch_reads():
    assert bootstrap_script().read_bytes() == BOOTSTRAP_SCRIPT.read_bytes()
    assert not (ROOT / "aws" / "bootstrap.sh").exists()  # one copy only, inside the package
