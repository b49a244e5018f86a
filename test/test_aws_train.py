"""The EMR train step: engine, workers, Spark and YARN resources from the instance types.

The launches go to the moto server on 127.0.0.1; the expected configurations
are written out by hand from the instance types' published sizes (a g5.12xlarge
has 48 vCPUs, 192 GiB and 4 GPUs; an m5.xlarge 4 vCPUs and 16 GiB).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.aws import BUCKET, client, write_config
from waveforms.aws import cli, instances, plan, sizing, train_plan
from waveforms.config import AwsConfig, ConfigError

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = "/opt/waveforms/venv/bin/python"

COMMON_CONF = {
    "spark.pyspark.python": VENV_PYTHON,
    "spark.pyspark.driver.python": VENV_PYTHON,
    "spark.dynamicAllocation.enabled": "false",
    "spark.yarn.am.memory": "512m",
    "spark.yarn.am.cores": "1",
    "spark.scheduler.minRegisteredResourcesRatio": "1.0",
    "spark.scheduler.maxRegisteredResourcesWaitingTime": "600s",
}


def launched_cluster(tmp_path: Path, capsys, body: str = "", *sets: str) -> tuple[dict, list[str], list[str]]:
    """Launch on moto; the cluster description, the train step's args and the bootstrap args, as EMR holds them."""
    client("s3").create_bucket(Bucket=BUCKET)
    cfg = write_config(tmp_path / "emr.toml", body, stages='["train"]')
    argv = ["launch", "--config", str(cfg)]
    for s in sets:
        argv += ["--set", s]
    assert cli.main(argv) == 0, capsys.readouterr().err
    emr = client("emr")
    (summary,) = emr.list_clusters()["Clusters"]
    cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
    (step,) = emr.list_steps(ClusterId=cluster["Id"])["Steps"]
    (action,) = emr.list_bootstrap_actions(ClusterId=cluster["Id"])["BootstrapActions"]
    return cluster, step["Config"]["Args"], action["Args"]


def workers_table(n: int) -> str:
    """TOML setting the key that ``waveforms train --workers`` sets, wherever the train config keeps it."""
    *table, key = train_plan._flag_key("--workers").split(".")
    return f"\n[{'.'.join(['train', *table])}]\n{key} = {n}\n"


def confs(args: list[str]) -> dict[str, str]:
    """The ``--conf key=value`` pairs of a spark-submit command line."""
    pairs = [args[i + 1] for i, a in enumerate(args) if a == "--conf"]
    out = dict(p.split("=", 1) for p in pairs)
    assert len(out) == len(pairs), "a --conf key given twice"
    return out


@pytest.mark.parametrize("release", ["emr-spark-8.1.0", "emr-7.13.0"])
def test_a_gpu_cluster_trains_one_barrier_task_per_gpu_with_yarn_gpu_scheduling(aws_env, tmp_path, capsys, release):
    cluster, args, boot = launched_cluster(tmp_path, capsys, "", "core_instance_type=g5.12xlarge",
                                           f"release_label={release}")
    assert cluster["ReleaseLabel"] == release
    # 192 GiB: YARN gets 192 - 19.2 (10 %) GiB, in whole GiB = 172 GiB; one executor fills it less 1 GiB for the AM
    assert confs(args) == {
        **COMMON_CONF,
        "spark.executor.instances": "2",  # one executor per core node
        "spark.executor.cores": "44",  # 4 tasks × (48 - 1) // 4
        "spark.task.cpus": "11",
        "spark.executor.memory": "4096m",
        "spark.executor.memoryOverhead": str(171 * 1024 - 4096) + "m",
        "spark.executor.resource.gpu.amount": "4",
        "spark.task.resource.gpu.amount": "1",
        "spark.executor.resource.gpu.discoveryScript": "/opt/waveforms/bin/gpu-discovery.sh",
        "spark.executorEnv.CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    assert args[args.index("train"):] == [
        "train", "--data", f"s3://{BUCKET}/wf/dataset", "--model-dir", f"s3://{BUCKET}/wf/model", "--master", "yarn",
        "--engine", "allreduce", "--workers", "8",  # 2 nodes × 4 GPUs
        "--set", "shard_cache_gb=32", "--set", "shard_cache_dir=/mnt/waveforms/shards",  # the data volume
    ]
    assert args[args.index("--attempts"):args.index("train")] == ["--attempts", "3", "--retry-wait", "120"]
    yarn_mb = str(172 * 1024)
    assert cluster["Configurations"] == [
        {"Classification": "yarn-site", "Properties": {
            "yarn.nodemanager.resource.memory-mb": yarn_mb,
            "yarn.nodemanager.resource.cpu-vcores": "48",
            "yarn.scheduler.maximum-allocation-mb": yarn_mb,
            "yarn.scheduler.maximum-allocation-vcores": "48",
            "yarn.nodemanager.resource-plugins": "yarn.io/gpu",
            "yarn.resource-types": "yarn.io/gpu",
            "yarn.nodemanager.resource-plugins.gpu.allowed-gpu-devices": "auto",
            "yarn.nodemanager.resource-plugins.gpu.path-to-discovery-executables": "/usr/bin",
            "yarn.nodemanager.container-executor.class":
                "org.apache.hadoop.yarn.server.nodemanager.LinuxContainerExecutor",
            "yarn.nodemanager.linux-container-executor.cgroups.mount": "true",
            "yarn.nodemanager.linux-container-executor.cgroups.mount-path": "/spark-rapids-cgroup",
            "yarn.nodemanager.linux-container-executor.cgroups.hierarchy": "yarn",
        }},
        {"Classification": "container-executor", "Properties": {}, "Configurations": [
            {"Classification": "gpu", "Properties": {"module.enabled": "true"}},
            {"Classification": "cgroups", "Properties": {"root": "/spark-rapids-cgroup", "yarn-hierarchy": "yarn"}},
        ]},
        {"Classification": "capacity-scheduler", "Properties": {
            "yarn.scheduler.capacity.resource-calculator":
                "org.apache.hadoop.yarn.util.resource.DominantResourceCalculator"}},
    ]
    assert boot[boot.index("--gpu"):] == ["--gpu", "auto", "--gpu-discovery", "/opt/waveforms/bin/gpu-discovery.sh",
                                          "--cgroup-root", "/spark-rapids-cgroup"]


def test_a_cpu_cluster_trains_one_barrier_task_per_node(aws_env, tmp_path, capsys):
    cluster, args, boot = launched_cluster(tmp_path, capsys)  # 2 × m5.xlarge, the default
    assert confs(args) == {
        **COMMON_CONF,
        "spark.executor.instances": "2",
        "spark.executor.cores": "3",  # 4 vCPUs less one for the AM and the node's daemons
        "spark.task.cpus": "3",
        "spark.executor.memory": "2048m",  # a quarter of the 11 GiB container
        "spark.executor.memoryOverhead": "9216m",
    }
    assert args[args.index("train"):][-8:-4] == ["--engine", "allreduce", "--workers", "2"]
    assert cluster["Configurations"] == [{"Classification": "yarn-site", "Properties": {
        "yarn.nodemanager.resource.memory-mb": "12288",  # 16 GiB less 4 GiB
        "yarn.nodemanager.resource.cpu-vcores": "4",
        "yarn.scheduler.maximum-allocation-mb": "12288",
        "yarn.scheduler.maximum-allocation-vcores": "4",
    }}]
    assert "--gpu" not in boot


def test_a_config_that_names_the_local_engine_keeps_training_on_the_master(aws_env, tmp_path, capsys):
    """Existing configs with engine = "local" run as before: no engine flags, no executor settings."""
    cluster, args, _ = launched_cluster(tmp_path, capsys, '\n[train]\nengine = "local"\n')
    assert args[args.index("train"):] == [
        "train", "--data", f"s3://{BUCKET}/wf/dataset", "--model-dir", f"s3://{BUCKET}/wf/model", "--master", "yarn"]
    assert confs(args) == {"spark.pyspark.python": VENV_PYTHON, "spark.pyspark.driver.python": VENV_PYTHON}
    assert not cluster.get("Configurations")


def test_spark_conf_and_the_train_table_override_the_launchers_choices(aws_env, tmp_path, capsys):
    _, args, _ = launched_cluster(
        tmp_path, capsys, '\n[train]\nbatch_size = 6\n' + workers_table(3).replace("[train]\n", ""),
        "core_instance_type=g5.xlarge", "core_instance_count=4", 'spark_conf={"spark.executor.memoryOverhead": "6g"}')
    assert args[-8:-4] == ["--engine", "allreduce", "--workers", "3"]  # fewer ranks than the 4 slots: allowed
    conf = confs(args)
    assert conf["spark.executor.memoryOverhead"] == "6g" and conf["spark.executor.resource.gpu.amount"] == "1"


def test_the_dry_run_shows_the_train_step_and_its_spark_configuration(aws_env, tmp_path, capsys):
    cfg = write_config(tmp_path / "emr.toml", stages='["train"]')
    assert cli.main(["launch", "--config", str(cfg), "--dry-run", "--set", "core_instance_type=g5.xlarge",
                     "--set", "core_instance_count=4", "--set", "use_spot=true"]) == 0
    shown = json.loads(capsys.readouterr().out.partition("\n\n# ")[0])
    assert (shown["release"]["label"], shown["release"]["spark"]) == ("emr-spark-8.1.0", "4.1.1")
    train = shown["train_step"]
    assert (train["engine"], train["workers"], train["per_task"]) == ("allreduce", 4, {"cpus": 3, "gpus": 1})
    (args,) = [s["HadoopJarStep"]["Args"] for s in shown["emr_run_job_flow"]["Steps"]]
    assert train["spark_conf"] == confs(args)  # the summary is what the step sends
    assert shown["on_demand_usd_per_hour"] == pytest.approx(0.192 + 0.048 + 4 * (1.006 + 0.2515))
    assert client("emr").list_clusters()["Clusters"] == []


def test_the_shard_cache_goes_on_a_data_volume_of_each_core_node_unless_the_train_table_sets_one(tmp_path):
    request = plan.run_job_flow_request(AwsConfig(bucket="b", core_volume_gb=200), *request_args())
    (core,) = [g for g in request["Instances"]["InstanceGroups"] if g["InstanceRole"] == "CORE"]
    assert core["EbsConfiguration"] == {"EbsBlockDeviceConfigs": [
        {"VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": 200}, "VolumesPerInstance": 1}]}
    assert "EbsConfiguration" not in request["Instances"]["InstanceGroups"][0]  # the master keeps EMR's default
    assert train_plan.plan(AwsConfig(bucket="b", core_volume_gb=201)).flags[4:] == [  # half the data volume
        "--set", "shard_cache_gb=100.5", "--set", "shard_cache_dir=/mnt/waveforms/shards"]
    assert train_plan.plan(AwsConfig(bucket="b", core_volume_gb=0)).flags[4:] == []
    own = tmp_path / "own.toml"
    own.write_text('[train]\nshard_cache_gb = 0\n')
    assert train_plan.plan(AwsConfig(bucket="b"), own).flags[4:] == []  # off: the one key says so
    own.write_text('[train]\nshard_cache_gb = 5\n')
    assert train_plan.plan(AwsConfig(bucket="b"), own).flags[4:] == []  # the file's [train] value reaches the step
    own.write_text('[train]\nshard_cache_dir = "/mnt1/cache"\n')
    assert train_plan.plan(AwsConfig(bucket="b"), own).flags[4:] == ["--set", "shard_cache_gb=32"]
    no_volume = plan.run_job_flow_request(AwsConfig(bucket="b", core_volume_gb=0), *request_args())
    assert all("EbsConfiguration" not in g for g in no_volume["Instances"]["InstanceGroups"])


def request_args() -> tuple:
    """Locations and run id for :func:`plan.run_job_flow_request`."""
    return plan.locations(AwsConfig(bucket="b"), "run-1", "waveforms.whl", "emr.toml"), "run-1"


@pytest.mark.parametrize("changes, body, message", [
    ({"core_volume_gb": 32}, "\n[train]\nshard_cache_gb = 30\n",
     "[train] shard_cache_gb = 30 leaves too little of [aws] core_volume_gb = 32 GB"),
    ({"core_instance_count": 2}, workers_table(3),
     "workers = 3, but 2 × m5.xlarge hold 2 barrier task(s)"),
    ({"core_instance_count": 3}, "", "batch_size = 8 does not split across 3 workers"),
    ({"core_instance_count": 0}, '\n[train]\nengine = "allreduce"\n', "set [aws] core_instance_count >= 1"),
    ({"core_instance_type": "x9.huge"}, "", "'x9.huge' is not in the launcher's instance table"),
    ({"core_instance_type": "g5.xlarge", "release_label": "emr-6.15.0"}, "", "need an emr-spark-8.x or emr-7.x release_label"),
])
def test_a_train_step_that_cannot_run_is_refused_before_anything_is_created(tmp_path, changes, body, message):
    cfg = AwsConfig(bucket="bucket-ok", stages=["train"], **changes)
    path = tmp_path / "emr.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        plan.validate(cfg, path)


def test_an_unlisted_type_is_sized_from_the_core_keys():
    cfg = AwsConfig(bucket="b", core_instance_type="x9.huge", core_vcpus=16, core_memory_gib=64, core_gpus=2)
    tp = train_plan.plan(cfg)
    assert (tp.workers, tp.layout.task_cpus, tp.layout.gpus_per_node) == (4, 7, 2)  # 2 nodes × 2 GPUs, (16-1)//2


@pytest.mark.parametrize("name", instances.known())
def test_every_listed_type_leaves_room_for_the_application_master_and_the_node(name):
    itype = instances.TYPES[name]
    lay = sizing.layout(itype, 1)
    container = lay.executor_memory_mb + lay.executor_overhead_mb
    assert container + 1024 <= lay.node_memory_mb <= itype.memory_gib * 1024 - 4096
    assert lay.tasks_per_node * lay.task_cpus + 1 <= itype.vcpus
    assert lay.gpus_per_node == itype.gpus and lay.workers == max(1, itype.gpus)


def test_the_docs_cost_table_is_the_instance_table():
    page = (ROOT / "docs" / "gpu-cluster.md").read_text()
    assert instances.cost_table() in page


@pytest.mark.parametrize("release", ["emr-spark-8.1.0", "emr-7.13.0"])
def test_an_elephas_train_step_runs_in_elephas_own_venv_which_only_it_gets(aws_env, tmp_path, capsys, release):
    cluster, args, boot = launched_cluster(tmp_path, capsys, '\n[train]\nengine = "elephas"\n',
                                           f"release_label={release}")
    assert cluster["ReleaseLabel"] == release
    elephas_python = "/opt/waveforms/elephas/bin/python"
    conf = confs(args)
    assert (conf["spark.pyspark.python"], conf["spark.pyspark.driver.python"]) == (elephas_python, elephas_python)
    assert args[args.index("train"):][-8:-4] == ["--engine", "elephas", "--workers", "2"]
    assert boot[boot.index("--elephas-venv"):boot.index("--elephas-venv") + 2] == ["--elephas-venv",
                                                                                  "/opt/waveforms/elephas"]
    allreduce_boot = plan.bootstrap_actions(AwsConfig(bucket="b"), request_args()[0],
                                            train_plan.plan(AwsConfig(bucket="b")))
    assert "--elephas-venv" not in allreduce_boot[0]["ScriptBootstrapAction"]["Args"]
