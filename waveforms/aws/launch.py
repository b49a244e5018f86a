"""``waveforms aws launch``: build the wheel, upload the artefacts, start the EMR cluster.

Order matters for "nothing half-created": the config is validated, then
credentials and the bucket are checked, then the wheel is built, and only then
are objects uploaded and the cluster requested.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TextIO

import waveforms
from waveforms import storage
from waveforms.aws import plan, releases
from waveforms.aws.session import AwsError, aws_errors, require_bucket, require_credentials, session
from waveforms.aws.train_plan import TrainPlan
from waveforms.config import AwsConfig
from waveforms.storage import runs

PACKAGE_DIR = Path(waveforms.__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
STEP_SCRIPT = PACKAGE_DIR / "aws" / plan.STEP_NAME


def bootstrap_script() -> Traversable:
    """The bootstrap action, shipped as package data (works from a checkout and from an installed wheel)."""
    return resources.files("waveforms.aws").joinpath(plan.BOOTSTRAP_NAME)


@dataclass
class Launch:
    run_id: str
    locations: plan.Locations
    request: dict[str, Any]
    uploads: list[tuple[str, str]]
    train: TrainPlan | None = None


def project_version() -> str:
    pyproject = PROJECT_ROOT / "pyproject.toml"
    if pyproject.exists():
        return tomllib.loads(pyproject.read_text())["project"]["version"]
    return waveforms.__version__


def default_wheel_name() -> str:
    return f"waveforms-{project_version()}-py3-none-any.whl"


def build_wheel(out_dir: Path) -> Path:
    """Build the package's wheel from this checkout into ``out_dir`` (dependencies stay pinned in it)."""
    if not (PROJECT_ROOT / "pyproject.toml").exists():
        raise AwsError(f"no pyproject.toml in {PROJECT_ROOT}: set [aws] wheel to a built wheel")
    src = out_dir / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        if (PROJECT_ROOT / name).exists():
            shutil.copy2(PROJECT_ROOT / name, src / name)
    shutil.copytree(PACKAGE_DIR, src / "waveforms", ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out_dir), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(out_dir.glob("waveforms-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise AwsError(f"building the wheel failed:\n{proc.stderr[-2000:]}")
    return wheels[0]


def prepare(cfg: AwsConfig, config_file: str, run_id: str, wheel: str | None = None,
            bootstrap: str | None = None) -> Launch:
    """Everything ``launch`` will do, computed without AWS (``bootstrap``: the script's local path)."""
    plan.validate(cfg, config_file)
    wheel_path = wheel or cfg.wheel
    wheel_name = Path(wheel_path).name if wheel_path else default_wheel_name()
    loc = plan.locations(cfg, run_id, wheel_name, Path(config_file).name)
    uploads = plan.uploads(
        loc,
        wheel=wheel_path or f"(built from {PROJECT_ROOT} at launch)",
        bootstrap=bootstrap or str(bootstrap_script()),
        step=str(STEP_SCRIPT),
        config_file=str(config_file),
    )
    train = plan.train_step_plan(cfg, config_file)
    return Launch(run_id, loc, plan.run_job_flow_request(cfg, loc, run_id, train), uploads, train)


def train_summary(launch: Launch, cfg: AwsConfig) -> dict[str, Any] | None:
    """The train step at a glance: engine, workers, each task's resources, the Spark settings sent."""
    train = launch.train
    if train is None:
        return None
    out: dict[str, Any] = {"engine": train.engine}
    if train.layout is None:
        out["runs_on"] = "the master node (one process)"
    else:
        lay = train.layout
        out.update({
            "workers": train.workers,
            "runs_on": f"{lay.nodes} × {cfg.core_instance_type}: {lay.tasks_per_node} barrier task(s) per node",
            "per_task": {"cpus": lay.task_cpus, "gpus": lay.gpus_per_task},
            "per_executor_mb": {"heap": lay.executor_memory_mb, "overhead": lay.executor_overhead_mb},
        })
    out["attempts"] = cfg.train_attempts
    out["spark_conf"] = plan.spark_settings(cfg, "train", train)
    return out


def describe(launch: Launch, cfg: AwsConfig) -> str:
    """The dry-run text: the exact requests as JSON, then the bootstrap script."""
    requests = {
        "region": cfg.region,
        "release": releases.describe(cfg.release_label),
        "s3_uploads": [{"from": src, "to": dst} for src, dst in launch.uploads],
        "emr_run_job_flow": launch.request,
        "train_step": train_summary(launch, cfg),
        "on_demand_usd_per_hour": plan.cost_per_hour(cfg),
    }
    return (
        json.dumps(requests, indent=2)
        + f"\n\n# {launch.locations.bootstrap} (bootstrap action, runs on every node):\n"
        + bootstrap_script().read_text()
    )


def launch(cfg: AwsConfig, config_file: str, dry_run: bool = False, out: TextIO | None = None) -> str | None:
    """Start the cluster and return its id (``None`` for a dry run)."""
    out = out or sys.stdout
    run_id = runs.run_id()  # two launches never share artefacts
    if dry_run:
        out.write(describe(prepare(cfg, config_file, run_id), cfg))
        return None
    plan.validate(cfg, config_file)
    sess = session(cfg.region)
    require_credentials(sess)
    s3 = sess.client("s3")
    require_bucket(s3, cfg.bucket)
    with (
        tempfile.TemporaryDirectory(prefix="waveforms-wheel-") as tmp,
        resources.as_file(bootstrap_script()) as script,
    ):
        wheel = cfg.wheel or str(build_wheel(Path(tmp)))
        job = prepare(cfg, config_file, run_id, wheel, str(script))
        for local, uri in job.uploads:
            with aws_errors(f"uploading {local} to {uri}"):
                storage.upload_file(local, uri, s3)
    with aws_errors("creating the EMR cluster"):
        response = sess.client("emr").run_job_flow(**job.request)
    cluster_id = response["JobFlowId"]
    out.write(
        f"cluster {cluster_id} starting ({len(job.request['Steps'])} steps, run {run_id})\n"
        f"watch: waveforms aws status {cluster_id} --region {cfg.region}\n"
        f"stop:  waveforms aws terminate {cluster_id} --region {cfg.region}\n"
    )
    return cluster_id
