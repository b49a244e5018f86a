"""The cost model's arithmetic against figures worked out by hand from the price list."""
from __future__ import annotations

from pathlib import Path

import pytest

from waveforms.aws import cost

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_one_hour_of_one_gpu_node_by_hand():
    # 1 master m5.xlarge (0.192 + 0.048) and 1 core g5.xlarge (1.006 + 0.2515); a 100 GB dataset, 25 GB cached,
    # 1,000 windows/s: 3.6 M windows an hour, 3/4 of them GETs = 2.7 M at $0.0004 per 1,000 = $1.08
    h = cost.hour_cost("g5.xlarge", 1, 1000.0, dataset_gb=100, cache_gb=25, volume_gb=64)
    assert h.ec2 == pytest.approx(1.198) and h.emr == pytest.approx(0.2995)
    assert h.gets_per_h == pytest.approx(2.7e6)
    assert h.s3_requests == pytest.approx(1.08)
    assert h.ebs == pytest.approx(64 * 0.08 / 730)  # 0.0070 a node
    assert h.s3_storage == pytest.approx(100 * 0.023 / 730)
    assert h.total == pytest.approx(1.198 + 0.2995 + 0.0070137 + 1.08 + 0.0031507, abs=1e-6)
    assert h.request_share == pytest.approx(1.08 / 1.4975)
    blocks = cost.hour_cost("g5.xlarge", 1, 1000.0, dataset_gb=100, cache_gb=25, volume_gb=64, windows_per_get=16)
    assert blocks.gets_per_h == pytest.approx(2.7e6 / 16)


def test_eight_nodes_and_a_cache_that_holds_the_dataset():
    h = cost.hour_cost("g5.12xlarge", 8, 500.0, dataset_gb=100, cache_gb=100, volume_gb=134)
    assert h.gpus == 32 and h.gets_per_h == 0 and h.s3_requests == 0
    assert h.ec2 == pytest.approx(0.192 + 8 * 5.672) and h.emr == pytest.approx(0.048 + 8 * 1.418)
    assert h.ebs == pytest.approx(8 * 134 * 0.08 / 730)
    # every GPU reads: 32 GPUs × 500 windows/s × 3600 s, none cached
    assert cost.hour_cost("g5.12xlarge", 8, 500.0, dataset_gb=100, cache_gb=0, volume_gb=0).gets_per_h == 57.6e6


def test_requests_per_step_and_the_cache():
    assert cost.requests_per_step(8, cache_gb=0, dataset_gb=460) == 8
    assert cost.requests_per_step(8, cache_gb=115, dataset_gb=460) == pytest.approx(6.0)
    assert cost.requests_per_step(8, cache_gb=500, dataset_gb=460) == 0
    assert cost.volume_for_cache(460.8) == 615  # the cache may take 3/4 of the volume
    with pytest.raises(ValueError, match="dataset_gb"):
        cost.miss_fraction(1, 0)


def test_gpu_throughput_and_hours_from_the_stated_peak():
    # A10G: 31.2 TFLOP/s × 0.4 = 12.48e12 useful FLOP/s; default's 253,696 parameters: 6 × that FLOPs a sample
    sps = cost.gpu_samples_per_s("A10G", 253_696)
    assert sps == pytest.approx(12.48e12 / (6 * 253_696))
    assert cost.gpu_windows_per_s("A10G", 253_696, 2000) == pytest.approx(sps / 2000)
    assert cost.gpu_hours("T4", 8.1e12 * 0.4 * 3600) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no float32 peak for GPU 'V100'"):
        cost.gpu_samples_per_s("V100", 1)


def test_gpu_hour_prices_come_from_the_cheapest_listed_type():
    assert cost.gpu_hour_usd("A10G") == (pytest.approx(1.2575), "g5.xlarge")
    assert cost.gpu_hour_usd("T4") == (pytest.approx(0.6575), "g4dn.xlarge")
    price, name = cost.gpu_hour_usd("A100")  # no EMR charge known for p4d: EC2 alone, said so
    assert price == pytest.approx(32.7726 / 8) and name == "p4d.24xlarge, EC2 only"
    assert cost.core_hour_usd("m5.xlarge") == pytest.approx(0.06)


def test_breakeven_rate_where_requests_reach_a_tenth_of_the_node():
    # g5.xlarge: 10% of $1.2575 an hour, at $0.0004 per 1,000 GETs = 314,375 GETs an hour
    assert cost.breakeven_windows_per_s("g5.xlarge") == pytest.approx(314_375 / 3600)


def test_fma_full_is_460_gb_of_codes():
    assert cost.FMA_FULL.gb == pytest.approx(460.8)


def test_the_docs_fma_full_tables_are_the_models():
    page = (DOCS / "cluster.md").read_text()
    wps = cost.gpu_windows_per_s("A10G", 253_696, 2000)
    for cache, volume in ((32, 64), (cost.FMA_FULL.gb, cost.volume_for_cache(cost.FMA_FULL.gb))):
        assert cost.run_table("g5.xlarge", wps, cost.FMA_FULL, cache_gb=cache, volume_gb=volume) in page
