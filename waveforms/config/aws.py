"""``[aws]``: an EMR run of the pipeline stages."""
from __future__ import annotations

from dataclasses import dataclass

from waveforms.config.metadata import opt
from waveforms.stages import EMR_STEPS

PIPELINE = EMR_STEPS  # the stages an EMR cluster may run as steps, in pipeline order


@dataclass
class AwsConfig:
    """An EMR run: where artefacts go, the cluster, and which stages run as steps.

    Empty locations default to ``s3://BUCKET/PREFIX/{raw,dataset,model,generated}``;
    the stage tables of the same file configure the stages themselves.
    """

    region: str = opt("us-east-1", help="AWS region of the cluster and bucket")
    bucket: str = opt("", help="an S3 bucket you own (required)")
    prefix: str = opt("waveforms", help="key prefix in the bucket")
    cluster_name: str = opt("waveforms", help="EMR cluster name")
    release_label: str = opt("emr-spark-8.1.0", help="EMR release: emr-spark-8.1.0 runs Spark 4.1.1 on Python 3.11 "
                                                    "(long-term support to 2029); emr-7.13.0 runs Spark 3.5.6")
    master_instance_type: str = opt("m5.xlarge", help="EC2 type of the master node")
    core_instance_type: str = opt("m5.xlarge", help="EC2 type of the core nodes")
    core_instance_count: int = opt(2, min=0, unit="nodes", help="core nodes")
    core_vcpus: int = opt(0, min=0, help="vCPUs of a core node; 0 = from the launcher's instance table")
    core_memory_gib: int = opt(0, min=0, unit="GiB", help="memory of a core node; 0 = from the instance table")
    core_gpus: int = opt(-1, min=-1, help="GPUs of a core node; -1 = from the instance table")
    core_volume_gb: int = opt(64, min=0, max=16384, unit="GB",
                              help="a gp3 EBS data volume on each core node (EMR mounts it at /mnt) for YARN's "
                                   "scratch and the train step's shard cache (half of the volume unless [train] "
                                   "sets shard_cache_gb); 0 = EMR's default storage, and no shard cache by default")
    use_spot: bool = opt(False, help="core nodes on the spot market (the master stays on-demand)")
    log_uri: str = opt("", help="EMR logs; empty = s3://BUCKET/PREFIX/logs/")
    service_role: str = opt("EMR_DefaultRole", help="EMR service role")
    job_flow_role: str = opt("EMR_EC2_DefaultRole", help="EC2 instance profile of the nodes")
    auto_terminate: bool = opt(True, help="terminate after the last step (and on a failed step)")
    idle_timeout_s: int = opt(3600, min=60, max=7 * 24 * 3600, unit="s", help="EMR auto-termination when idle")
    stages: list[str] = opt(["transform", "train"], choices=PIPELINE, help="stages run as EMR steps, in order")
    input: str = opt("", help="raw MP3s (scrape output, transform input); empty = PREFIX/raw")
    data: str = opt("", help="transformed dataset; empty = PREFIX/dataset")
    model_dir: str = opt("", help="trained model; empty = PREFIX/model")
    output: str = opt("", help="generated WAV; empty = PREFIX/generated/generated.wav")
    python: str = opt("python3.11", help="interpreter the bootstrap builds the venv from")
    ffmpeg_url: str = opt("https://johnvansickle.com/ffmpeg/releases/ffmpeg-release-amd64-static.tar.xz",
                          help="static ffmpeg build for Amazon Linux")
    ffmpeg_sha256: str = opt("", help="checked against the ffmpeg download when set")
    spark_conf: dict[str, str] = opt({}, help="extra --conf for every step (over the launcher's own)")
    train_attempts: int = opt(3, min=1, max=20, help="runs of the train stage within its step; each retry "
                                                     "resumes from the last checkpoint")
    train_retry_wait_s: int = opt(120, min=0, max=3600, unit="s",
                                  help="wait before a retry (time for lost core nodes to be replaced)")
    wheel: str = opt("", help="a prebuilt wheel; empty = build one from this checkout")
    ec2_key_name: str = opt("", help="EC2 key pair for SSH to the nodes")
    subnet_id: str = opt("", help="VPC subnet of the cluster")
