"""The EMR releases the launcher knows: the Spark and default Python each ships (EMR's Release Guide).

A label not listed here still launches; the dry run then says its Spark is unknown.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    label: str
    spark: str
    python: str  # the default Python for PySpark on the nodes
    note: str


RELEASES = {r.label: r for r in (
    Release("emr-spark-8.1.0", "4.1.1", "3.11", "September 2026, long-term support to September 2029"),
    Release("emr-spark-8.0.0", "4.0.2", "3.11", "May 2026"),
    Release("emr-7.13.0", "3.5.6", "3.11", "the last 7.x release"),
)}


def describe(label: str) -> dict[str, str]:
    """What the dry run shows of a release: its label, Spark and Python."""
    known = RELEASES.get(label)
    if known is None:
        return {"label": label, "spark": "unknown to the launcher (see EMR's Release Guide)", "python": "unknown"}
    return {"label": label, "spark": known.spark, "python": known.python, "note": known.note}
