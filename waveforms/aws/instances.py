"""EC2 instance types the launcher sizes Spark for: vCPUs, memory, GPUs and approximate prices.

Prices are us-east-1 on-demand list prices (Linux) as AWS published them in
2024-2025, in USD per hour: the EC2 price and EMR's per-instance charge on top
(``None`` where this table does not know it). They only feed the dry run's
cost estimate and the docs' cost table; check the EC2 and EMR pricing pages
before relying on them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: int
    gpus: int = 0
    gpu_model: str = ""
    ec2_usd_h: float | None = None
    emr_usd_h: float | None = None

    @property
    def usd_h(self) -> float | None:
        """EC2 plus EMR per hour; ``None`` when either part is unknown."""
        if self.ec2_usd_h is None or self.emr_usd_h is None:
            return None
        return round(self.ec2_usd_h + self.emr_usd_h, 4)


def _t(name: str, vcpus: int, memory_gib: int, gpus: int = 0, gpu_model: str = "",
       ec2: float | None = None, emr: float | None = None) -> InstanceType:
    return InstanceType(name, vcpus, memory_gib, gpus, gpu_model, ec2, emr)


TYPES: dict[str, InstanceType] = {t.name: t for t in (
    # general purpose, compute and memory optimised (CPU only)
    _t("m5.xlarge", 4, 16, ec2=0.192, emr=0.048),
    _t("m5.2xlarge", 8, 32, ec2=0.384, emr=0.096),
    _t("m5.4xlarge", 16, 64, ec2=0.768, emr=0.192),
    _t("c5.2xlarge", 8, 16, ec2=0.340, emr=0.085),
    _t("c5.4xlarge", 16, 32, ec2=0.680, emr=0.170),
    _t("r5.2xlarge", 8, 64, ec2=0.504, emr=0.126),
    # NVIDIA T4 (16 GB)
    _t("g4dn.xlarge", 4, 16, 1, "T4", ec2=0.526, emr=0.1315),
    _t("g4dn.2xlarge", 8, 32, 1, "T4", ec2=0.752, emr=0.188),
    _t("g4dn.12xlarge", 48, 192, 4, "T4", ec2=3.912, emr=0.978),
    # NVIDIA A10G (24 GB)
    _t("g5.xlarge", 4, 16, 1, "A10G", ec2=1.006, emr=0.2515),
    _t("g5.2xlarge", 8, 32, 1, "A10G", ec2=1.212, emr=0.303),
    _t("g5.4xlarge", 16, 64, 1, "A10G", ec2=1.624, emr=0.406),
    _t("g5.8xlarge", 32, 128, 1, "A10G", ec2=2.448, emr=0.612),
    _t("g5.12xlarge", 48, 192, 4, "A10G", ec2=5.672, emr=1.418),
    _t("g5.24xlarge", 96, 384, 4, "A10G", ec2=8.144, emr=2.036),
    _t("g5.48xlarge", 192, 768, 8, "A10G", ec2=16.288, emr=4.072),
    # NVIDIA L4 (24 GB)
    _t("g6.xlarge", 4, 16, 1, "L4", ec2=0.8048, emr=0.2012),
    _t("g6.2xlarge", 8, 32, 1, "L4", ec2=0.9776, emr=0.2444),
    _t("g6.4xlarge", 16, 64, 1, "L4", ec2=1.3232, emr=0.3308),
    _t("g6.12xlarge", 48, 192, 4, "L4", ec2=4.6016, emr=1.1504),
    _t("g6.48xlarge", 192, 768, 8, "L4", ec2=13.3504, emr=3.3376),
    # NVIDIA A100 (40 GB)
    _t("p4d.24xlarge", 96, 1152, 8, "A100", ec2=32.7726, emr=None),
)}


def known() -> list[str]:
    return sorted(TYPES)


def lookup(name: str) -> InstanceType | None:
    return TYPES.get(name)


def cost_table() -> str:
    """The docs' cost table (Markdown), one row per type."""
    def money(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}".rstrip("0").rstrip(".")

    rows = ["| instance | vCPUs | GiB | GPUs | EC2 $/h | EMR $/h | total $/h per node |",
            "|---|---|---|---|---|---|---|"]
    for t in TYPES.values():
        gpus = f"{t.gpus} × {t.gpu_model}" if t.gpus else "-"
        rows.append(f"| {t.name} | {t.vcpus} | {t.memory_gib} | {gpus} | {money(t.ec2_usd_h)} | "
                    f"{money(t.emr_usd_h)} | {money(t.usd_h)} |")
    return "\n".join(rows) + "\n"
