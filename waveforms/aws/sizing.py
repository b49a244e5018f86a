"""How the train step uses the core nodes: one barrier task per node, or per GPU.

Pure functions from the core instance type and count to the Spark settings of
the train step and the YARN settings (EMR ``Configurations``) of the cluster.

Each core node runs one executor that fills it: ``k`` task slots, where ``k``
is the node's GPU count (1 on CPU types), each task with ``(vCPUs - 1) // k``
cores and, on GPU types, one GPU. The spare vCPU and ``AM_RESERVE_MB`` leave
room beside one executor for the Spark application master (YARN puts it on
some core node) and the node's daemons. YARN gets a fixed share of each node
(``node_memory_mb``), so the executor size is known here rather than taken
from EMR's per-type defaults. The training code runs in the executors' Python
workers, outside the JVM heap, so most of the container is memory overhead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from waveforms.aws.instances import InstanceType

AM_RESERVE_MB = 1024  # spark.yarn.am.memory 512m + 384m overhead, rounded up to YARN's 1 GiB steps
AM_MEMORY = "512m"
MAX_HEAP_MB = 4096  # the executor JVM only schedules tasks and moves small results
DRC = "org.apache.hadoop.yarn.util.resource.DominantResourceCalculator"
CGROUP_ROOT = "/spark-rapids-cgroup"  # EMR 7's documented cgroup v1 mount point for YARN's GPU isolation
GPU_DISCOVERY = "/opt/waveforms/bin/gpu-discovery.sh"  # installed by the bootstrap on GPU nodes


@dataclass(frozen=True)
class Layout:
    """The train step's executors on ``nodes`` core nodes of one type."""

    nodes: int
    tasks_per_node: int
    task_cpus: int
    gpus_per_task: int
    node_memory_mb: int
    node_vcores: int
    executor_memory_mb: int
    executor_overhead_mb: int

    @property
    def workers(self) -> int:
        """Barrier tasks that can run at once: the most ranks the cluster holds."""
        return self.nodes * self.tasks_per_node

    @property
    def gpus_per_node(self) -> int:
        return self.tasks_per_node * self.gpus_per_task


def node_memory_mb(memory_gib: int) -> int:
    """Memory YARN may hand out on a node: all but max(4 GiB, 10 %), in whole GiB."""
    total = memory_gib * 1024
    return (total - max(4096, total // 10)) // 1024 * 1024


def layout(itype: InstanceType, nodes: int) -> Layout:
    """Executor and task sizes for ``nodes`` core nodes of type ``itype``."""
    tasks = max(1, itype.gpus)
    task_cpus = max(1, (itype.vcpus - 1) // tasks)
    yarn_mb = node_memory_mb(itype.memory_gib)
    container = (yarn_mb - AM_RESERVE_MB) // 1024 * 1024
    if container < 2048:
        raise ValueError(f"{itype.name} has too little memory for a training executor ({itype.memory_gib} GiB)")
    heap = min(MAX_HEAP_MB, max(1024, container // 4 // 1024 * 1024))
    return Layout(
        nodes=nodes, tasks_per_node=tasks, task_cpus=task_cpus, gpus_per_task=1 if itype.gpus else 0,
        node_memory_mb=yarn_mb, node_vcores=itype.vcpus,
        executor_memory_mb=heap, executor_overhead_mb=container - heap,
    )


def spark_conf(lay: Layout) -> dict[str, str]:
    """``--conf`` settings of the train step: a fixed set of executors, one task per slot, GPUs per task."""
    conf = {
        "spark.dynamicAllocation.enabled": "false",  # barrier stages refuse dynamic allocation
        "spark.executor.instances": str(lay.nodes),
        "spark.executor.cores": str(lay.tasks_per_node * lay.task_cpus),
        "spark.task.cpus": str(lay.task_cpus),
        "spark.executor.memory": f"{lay.executor_memory_mb}m",
        "spark.executor.memoryOverhead": f"{lay.executor_overhead_mb}m",
        "spark.yarn.am.memory": AM_MEMORY,
        "spark.yarn.am.cores": "1",
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "600s",
    }
    if lay.gpus_per_task:
        conf.update({
            "spark.executor.resource.gpu.amount": str(lay.gpus_per_node),
            "spark.executor.resource.gpu.discoveryScript": GPU_DISCOVERY,
            "spark.task.resource.gpu.amount": str(lay.gpus_per_task),
            # nvidia-smi's indices (what the discovery script reports) are CUDA's device numbers
            "spark.executorEnv.CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        })
    return conf


def yarn_configurations(lay: Layout) -> list[dict[str, Any]]:
    """EMR ``Configurations``: YARN's share of each node, and GPU scheduling on GPU types (EMR 7 form)."""
    site = {
        "yarn.nodemanager.resource.memory-mb": str(lay.node_memory_mb),
        "yarn.nodemanager.resource.cpu-vcores": str(lay.node_vcores),
        "yarn.scheduler.maximum-allocation-mb": str(lay.node_memory_mb),
        "yarn.scheduler.maximum-allocation-vcores": str(lay.node_vcores),
    }
    if not lay.gpus_per_task:
        return [{"Classification": "yarn-site", "Properties": site}]
    site.update({
        "yarn.nodemanager.resource-plugins": "yarn.io/gpu",
        "yarn.resource-types": "yarn.io/gpu",
        "yarn.nodemanager.resource-plugins.gpu.allowed-gpu-devices": "auto",
        "yarn.nodemanager.resource-plugins.gpu.path-to-discovery-executables": "/usr/bin",
        "yarn.nodemanager.container-executor.class":
            "org.apache.hadoop.yarn.server.nodemanager.LinuxContainerExecutor",
        "yarn.nodemanager.linux-container-executor.cgroups.mount": "true",
        "yarn.nodemanager.linux-container-executor.cgroups.mount-path": CGROUP_ROOT,
        "yarn.nodemanager.linux-container-executor.cgroups.hierarchy": "yarn",
    })
    return [
        {"Classification": "yarn-site", "Properties": site},
        {"Classification": "container-executor", "Properties": {}, "Configurations": [
            {"Classification": "gpu", "Properties": {"module.enabled": "true"}},
            {"Classification": "cgroups", "Properties": {"root": CGROUP_ROOT, "yarn-hierarchy": "yarn"}},
        ]},
        {"Classification": "capacity-scheduler", "Properties": {"yarn.scheduler.capacity.resource-calculator": DRC}},
    ]
