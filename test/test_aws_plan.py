"""The EMR requests built from a config, without AWS."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from waveforms import cli as top_cli
from waveforms.aws import plan
from waveforms.config import AwsConfig, ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "aws" / "emr.toml"


def loc_for(cfg: AwsConfig) -> plan.Locations:
    return plan.locations(cfg, "RUN", "waveforms-9.9-py3-none-any.whl", "emr.toml")


def test_default_locations_live_under_the_prefix():
    loc = loc_for(AwsConfig(bucket="b", prefix="/p/q/"))
    assert (loc.raw, loc.dataset, loc.model, loc.logs) == (
        "s3://b/p/q/raw", "s3://b/p/q/dataset", "s3://b/p/q/model", "s3://b/p/q/logs/")
    assert loc.wheel == "s3://b/p/q/runs/RUN/code/waveforms-9.9-py3-none-any.whl"
    assert loc.config == "s3://b/p/q/runs/RUN/config/emr.toml"
    assert loc_for(AwsConfig(bucket="b", prefix="")).raw == "s3://b/raw"


def test_configured_locations_and_spark_conf_reach_the_steps():
    cfg = AwsConfig(bucket="b", input="s3://in/mp3", data="s3://d/set", model_dir="s3://m/wavenet",
                    log_uri="s3://logs/emr/", stages=["scrape", "transform", "train", "generate"],
                    spark_conf={"spark.executor.memory": "6g"}, ec2_key_name="me", subnet_id="subnet-1",
                    core_instance_count=0)
    loc = loc_for(cfg)
    request = plan.run_job_flow_request(cfg, loc, "RUN")
    assert request["LogUri"] == "s3://logs/emr/"
    assert [g["InstanceRole"] for g in request["Instances"]["InstanceGroups"]] == ["MASTER"]
    assert request["Instances"]["Ec2KeyName"] == "me" and request["Instances"]["Ec2SubnetId"] == "subnet-1"
    args = {s["Name"].split()[1]: s["HadoopJarStep"]["Args"] for s in request["Steps"]}
    assert args["scrape"][-2:] == ["--out", "s3://in/mp3"]
    assert args["transform"][-6:] == ["--input", "s3://in/mp3", "--output", "s3://d/set", "--master", "yarn"]
    assert args["train"][-6:-2] == ["--data", "s3://d/set", "--model-dir", "s3://m/wavenet"]
    assert args["generate"][-4:] == ["--model", "s3://m/wavenet", "--output", "s3://b/waveforms/generated/generated.wav"]
    for a in args.values():
        i = a.index("spark.executor.memory=6g")
        assert a[i - 1] == "--conf" and i < a.index(loc.step)


@pytest.mark.parametrize("changes, message", [
    ({"bucket": "Bad_Bucket"}, "not a valid S3 bucket name"),
    ({"release_label": "7.5.0"}, "release_label"),
    ({"stages": []}, "stages is empty"),
    ({"stages": ["train", "train"]}, "distinct"),
    ({"log_uri": "/var/log"}, "log_uri must be an s3:// URI"),
    ({"service_role": ""}, "service_role is empty"),
])
def test_validate_rejects(changes, message):
    cfg = AwsConfig(bucket="bucket-ok")
    for k, v in changes.items():
        setattr(cfg, k, v)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        plan.validate(cfg)


def test_example_config_is_valid_and_the_top_level_cli_dispatches(capsys):
    assert top_cli.main(["aws", "launch", "--config", str(EXAMPLE), "--dry-run"]) == 0
    request = json.loads(capsys.readouterr().out.partition("\n\n# ")[0])["emr_run_job_flow"]
    assert [s["Name"] for s in request["Steps"]] == ["waveforms transform", "waveforms train"]
    groups = request["Instances"]["InstanceGroups"]
    assert [(g["InstanceType"], g["InstanceCount"]) for g in groups] == [("m5.xlarge", 1), ("m5.xlarge", 2)]


def test_an_aws_shard_cache_gb_is_refused_with_where_the_key_went(tmp_path, capsys):
    old = tmp_path / "emr.toml"
    old.write_text('[aws]\nbucket = "b"\nshard_cache_gb = 32\n')
    assert top_cli.main(["aws", "launch", "--config", str(old), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "shard_cache_gb" in err and "move it to the [train] table" in err and "Traceback" not in err
