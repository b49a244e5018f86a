"""Conversions between the units the project reports in."""
from __future__ import annotations

import math


def bits(nats: float) -> float:
    """Nats (natural-log cross-entropy) in bits."""
    return nats / math.log(2)
