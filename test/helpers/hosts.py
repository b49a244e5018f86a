"""A cluster of emulated hosts on one machine, for the slow tests and ``bench/bench_scaling.py --hosts``.

Each host is a network namespace with one interface on a shared bridge (the bridge sits in a
namespace of its own) and an address in a private /24 that exists only on those interfaces:
nothing in the root namespace can reach the hosts, nor they it. Each host also has

- a CPU quota: a cgroup of its own (v1 ``cpu.cfs_quota_us``, v2 ``cpu.max``), joined before the
  process enters the namespace (``ip netns exec`` remounts /sys), under a parent group of the largest
  CPU weight, so that a host gets its quota however busy the machine is (as a real host would);
- a link rate, shaped both ways with ``tc tbf`` (this kernel has no ``sch_netem``);
- its own ``/tmp``: every process it runs gets a private mount namespace with a folder of the host's
  bind-mounted over /tmp, so a path that works only because all hosts share one disk fails here.
  A checkout under /tmp (its code and environments) stays visible at its path.

Host 0 holds the S3 server (moto), the Spark master and the driver; hosts 1..N a Spark worker each
(one task slot). Files pass between the test and the hosts through ``shared`` (outside /tmp, seen by
all) and S3. On exit every process of every host is killed and the namespaces, cgroups and folders
are removed. Without root, ``ip`` or a writable cgroup, :func:`check` says why and the tests skip.
"""
from __future__ import annotations

import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

from helpers import waiting

ROOT = Path(__file__).resolve().parents[2]
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
MIN_QUOTA_US = 1000  # the kernel's smallest CFS quota (and period)
CPU_SHARES_V1, CPU_WEIGHT_V2 = 262_144, 10_000  # the kernel's largest CPU weights (v1, v2)
# A lost executor is noticed within NETWORK_TIMEOUT_S by the driver and a lost worker within WORKER_TIMEOUT_S by
# the master (Spark's defaults, 120 s and 60 s, are for clusters whose hosts come back less often than a test's).
NETWORK_TIMEOUT_S = 30
WORKER_TIMEOUT_S = 15
S3_PORT = 9000
MASTER_PORT = 7077
BUCKET = "cluster"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAHOSTSTEST", "AWS_SECRET_ACCESS_KEY": "hosts-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}
# Enter a host: join its cgroup, then its network namespace, then a private mount namespace with its /tmp.
# KEEP, a folder under /tmp (the checkout, when it lies there), is bound into the host's /tmp at its path first.
ENTER = ('procs=$1; ns=$2; tmp=$3; keep=$4; shift 4; echo $$ > "$procs" && exec ip netns exec "$ns" '
         'unshare --mount --propagation private sh -c \'tmp=$0; keep=$1; shift; '
         'if [ -n "$keep" ]; then mkdir -p "$tmp${keep#/tmp}" && mount --bind "$keep" "$tmp${keep#/tmp}"; fi; '
         'mount --rbind "$tmp" /tmp && exec "$@"\' "$tmp" "$keep" "$@"')
KEEP = str(ROOT) if ROOT.is_relative_to("/tmp") else ""


def finest_period_us(cpu: float) -> int:
    """The shortest quota period that gives ``cpu`` cores a quota the kernel accepts (1 ms at least)."""
    return max(MIN_QUOTA_US, math.ceil(MIN_QUOTA_US / cpu))


def check() -> str:
    """Why emulated hosts cannot run here ("" when they can)."""
    if os.geteuid() != 0:
        return "emulated hosts need root (network namespaces, cgroups, tc)"
    for tool in ("ip", "tc", "unshare"):
        if shutil.which(tool) is None:
            return f"emulated hosts need {tool} (iproute2, util-linux)"
    if not (CGROUP_V1 / "cpu.cfs_quota_us").exists() and not (CGROUP_V2 / "cgroup.controllers").exists():
        return "emulated hosts need a cgroup cpu controller (v1 cpu.cfs_quota_us or v2 cpu.max)"
    return ""


def sh(*args: str, check_rc: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check_rc and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done


@dataclass
class Host:
    """One emulated host: its namespace, address, cgroup and /tmp folder."""

    index: int
    ns: str
    address: str
    cgroup: Path
    tmp: Path
    bridge_ns: str
    bridge_port: str  # its veth's end on the bridge

    def argv(self, cmd: list[str], env: dict[str, str]) -> list[str]:
        """``cmd`` as a command line that runs on this host with exactly ``env``."""
        return ["sh", "-c", ENTER, "enter-host", str(self.cgroup / "cgroup.procs"), self.ns, str(self.tmp), KEEP,
                "env", "-i", *[f"{k}={v}" for k, v in env.items()], *cmd]

    def popen(self, cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            return subprocess.Popen(self.argv(cmd, env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, cmd: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(cmd, env), capture_output=True, text=True, timeout=timeout)

    def pids(self) -> list[int]:
        path = self.cgroup / "cgroup.procs"
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def kill(self) -> int:
        """SIGKILL every process of this host (as a lost machine stops); returns how many there were."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def cpu_stat(self) -> dict[str, int]:
        """The host's cgroup ``cpu.stat`` (``nr_periods``, ``nr_throttled``, ...): how often its quota ran out."""
        lines = (self.cgroup / "cpu.stat").read_text().split("\n")
        return {k: int(v) for k, v in (line.split() for line in lines if line.strip())}

    def link(self, up: bool) -> None:
        """Connect or cut this host's link (its port on the bridge)."""
        sh("ip", "-n", self.bridge_ns, "link", "set", self.bridge_port, "up" if up else "down")


@dataclass
class Cluster:
    """``workers`` worker hosts plus host 0, each with ``cpu`` cores and a ``rate`` link (tc's units)."""

    workers: int
    cpu: float = 0.3
    rate: str = "1gbit"
    head_cpu: float = 0.4  # host 0: the S3 server, the Spark master and the driver
    period_us: int = PERIOD_US  # the CPU quota's accounting period
    worker_memory: str = "2g"
    spark: bool = True  # a Spark master on host 0 and a worker on each other host; False: S3 only
    tag: str = field(default_factory=lambda: f"wf{os.getpid() % 10000}x{random.randrange(100)}")
    hosts: list[Host] = field(default_factory=list)
    procs: dict[int, list[subprocess.Popen]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for cpu in (self.cpu, self.head_cpu):  # the kernel refuses a smaller quota, and a larger one gives more
            if int(cpu * self.period_us) < MIN_QUOTA_US:
                raise ValueError(f"{cpu} core over a {self.period_us} us period is a quota under the kernel's "
                                 f"{MIN_QUOTA_US} us: use a period of at least {finest_period_us(cpu)} us")
        self.base = Path("/var/tmp") / f"waveforms-hosts-{self.tag}"
        self.shared = self.base / "shared"
        self.logs = self.shared / "logs"
        self.subnet = f"10.{77 + random.randrange(100)}.{random.randrange(250)}"
        self.bridge_ns = f"{self.tag}-br"
        v2 = not (CGROUP_V1 / "cpu.cfs_quota_us").exists()
        self._cgroup_root = (CGROUP_V2 if v2 else CGROUP_V1) / f"waveforms-{self.tag}"
        self._v2 = v2

    # --- addresses ---------------------------------------------------------------------------------------
    @property
    def head(self) -> Host:
        return self.hosts[0]

    @property
    def s3_url(self) -> str:
        return f"http://{self.head.address}:{S3_PORT}"

    @property
    def master_url(self) -> str:
        return f"spark://{self.head.address}:{MASTER_PORT}"

    def env(self, host: Host, **extra: str) -> dict[str, str]:
        """What a process on ``host`` sees: the venv, Spark bound to the host's address, S3 on host 0."""
        python = sys.executable
        return {"PATH": f"{Path(python).parent}:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/tmp", "LANG": "C.UTF-8",
                "SPARK_LOCAL_IP": host.address, "SPARK_HOME": os.path.dirname(pyspark.__file__),
                "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python, "TF_CPP_MIN_LOG_LEVEL": "3",
                **({"JAVA_HOME": os.environ["JAVA_HOME"]} if os.environ.get("JAVA_HOME") else {}),
                "AWS_ENDPOINT_URL": self.s3_url, "SPARK_CONF_DIR": str(self.shared / "conf"),
                "SPARK_MASTER_OPTS": f"-Dspark.worker.timeout={WORKER_TIMEOUT_S}",
                "NO_PROXY": "*", "no_proxy": "*", **CREDENTIALS, **extra}

    # --- the network and the cgroups -------------------------------------------------------------------
    def _add_host(self, i: int, cpu: float) -> Host:
        ns, port = f"{self.tag}-h{i}", f"{self.tag}b{i}"
        inner = f"{self.tag}h{i}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", inner, "type", "veth", "peer", "name", port)
        sh("ip", "link", "set", inner, "netns", ns)
        sh("ip", "link", "set", port, "netns", self.bridge_ns)
        sh("ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0")
        sh("ip", "-n", self.bridge_ns, "link", "set", port, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", inner, "name", "eth0")
        address = f"{self.subnet}.{i + 1}"
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        for where, dev in ((ns, "eth0"), (self.bridge_ns, port)):  # both directions of the link
            sh("ip", "netns", "exec", where, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", self.rate,
               "burst", "256kb", "latency", "50ms")
        cgroup = self._cgroup_root / f"h{i}"
        cgroup.mkdir(parents=True, exist_ok=True)
        quota = int(cpu * self.period_us)
        if self._v2:
            (cgroup / "cpu.max").write_text(f"{quota} {self.period_us}")
        else:
            (cgroup / "cpu.cfs_period_us").write_text(str(self.period_us))
            (cgroup / "cpu.cfs_quota_us").write_text(str(quota))
        tmp = self.base / f"h{i}-tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return Host(i, ns, address, cgroup, tmp, self.bridge_ns, port)

    def start_network(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.shared / "conf").mkdir()
        (self.shared / "conf" / "spark-defaults.conf").write_text(
            f"spark.network.timeout {NETWORK_TIMEOUT_S}s\nspark.network.timeoutInterval 10s\n"
            "spark.executor.heartbeatInterval 3s\n")
        os.chmod(self.base, 0o755)
        if self._v2:
            (CGROUP_V2 / "cgroup.subtree_control").write_text("+cpu")
        self._cgroup_root.mkdir()
        # A quota caps a host's CPU but does not promise it: on a busy machine the hosts' group, weighted like one
        # process, got a fraction of its quota, and a worker starved past WORKER_TIMEOUT_S was dropped as lost. The
        # largest weight makes the hosts get their quotas first, as real hosts would; the quotas still bound them.
        if self._v2:
            (self._cgroup_root / "cpu.weight").write_text(str(CPU_WEIGHT_V2))
            (self._cgroup_root / "cgroup.subtree_control").write_text("+cpu")  # the hosts' cpu.max below it
        else:
            (self._cgroup_root / "cpu.shares").write_text(str(CPU_SHARES_V1))
        sh("ip", "netns", "add", self.bridge_ns)
        sh("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        self.hosts = [self._add_host(i, self.head_cpu if i == 0 else self.cpu) for i in range(self.workers + 1)]

    # --- services ----------------------------------------------------------------------------------------
    def start(self, host: Host, name: str, cmd: list[str], **env: str) -> subprocess.Popen:
        proc = host.popen(cmd, self.env(host, **env), self.logs / f"{name}.log")
        self.procs.setdefault(host.index, []).append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        waiting.wait_for(predicate, timeout, what, detail=lambda: f"logs in {self.logs}")

    def start_worker(self, i: int) -> None:
        host = self.hosts[i]
        spark_class = str(Path(os.path.dirname(pyspark.__file__)) / "bin" / "spark-class")
        name = f"worker{i}-{len(self.procs.get(i, []))}"
        self.start(host, name, [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", host.address,
                                "--cores", "1", "--memory", self.worker_memory, "--webui-port", "0",
                                "--work-dir", "/tmp/spark-work", self.master_url])
        self.wait_for(lambda: "Successfully registered with master" in self.log(name), 120, f"worker {i} to register")

    def start_services(self) -> None:
        head = self.head
        self.start(head, "s3", [sys.executable, "-m", "moto.server", "-H", head.address, "-p", str(S3_PORT)])
        spark_class = str(Path(os.path.dirname(pyspark.__file__)) / "bin" / "spark-class")
        if self.spark:
            self.start(head, "master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", head.address,
                                        "--port", str(MASTER_PORT), "--webui-port", "0"])
            self.wait_for(lambda: re.search(r"Running Spark version|Starting Spark master", self.log("master")), 90,
                          "the Spark master to start")
        self.wait_for(lambda: "Running on" in self.log("s3") or "Serving" in self.log("s3")
                      or self.answers(self.s3_url), 60, "the S3 server to listen")
        done = self.on_head(["-c", f"import boto3; boto3.client('s3').create_bucket(Bucket={BUCKET!r})"])
        if done.returncode != 0:
            raise RuntimeError(f"cannot create the bucket: {done.stderr[-2000:]}")
        for i in range(1, self.workers + 1 if self.spark else 1):
            self.start_worker(i)

    def answers(self, url: str) -> bool:
        """Whether ``url`` (on a host's address) answers an HTTP request made from host 0."""
        return self.on_head(["-c", f"import urllib.request as u; u.urlopen({url!r}, timeout=2)"]).returncode == 0

    def on_head(self, args: list[str], timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
        """``python ARGS`` on host 0 (the driver's host), from this checkout."""
        return self.head.run([sys.executable, *args], {**self.env(self.head, **env), "PYTHONPATH": str(ROOT)},
                             timeout)

    # --- lifetime ----------------------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        try:
            self.start_network()
            self.start_services()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for host in self.hosts:
            host.kill()
        for procs in self.procs.values():
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        deadline = time.monotonic() + 10
        for host in self.hosts:
            while host.pids() and time.monotonic() < deadline:
                host.kill()
                time.sleep(0.1)
            sh("ip", "netns", "del", host.ns, check_rc=False)
            if host.cgroup.exists():
                host.cgroup.rmdir()
        sh("ip", "netns", "del", self.bridge_ns, check_rc=False)
        if self._cgroup_root.exists():
            self._cgroup_root.rmdir()
        shutil.rmtree(self.base, ignore_errors=True)
