"""get_session reuses a running session only when master and settings match; otherwise it restarts loudly."""
from __future__ import annotations

import logging

import pytest

from waveforms.runtime.spark import get_session


def _stop_running():
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()


@pytest.fixture
def stop_spark():
    """No Spark before the test (another test's session would add a restart warning) and none after it."""
    _stop_running()
    yield
    _stop_running()


def test_another_master_gets_a_new_context_and_a_warning(stop_spark, caplog):
    first = get_session("local[1]", "first")
    assert first.sparkContext.master == "local[1]"
    assert first.sparkContext.defaultParallelism == 1
    with caplog.at_level(logging.WARNING, logger="waveforms.runtime.spark"):
        second = get_session("local[2]", "second")
    sc = second.sparkContext
    assert sc.master == "local[2]"
    assert sc.defaultParallelism == 2  # the new JVM context, not a relabelled old one
    assert sc.parallelize(range(10), 2).map(lambda x: x * x).sum() == 285
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "master local[1]" in warnings[0] and "master local[2]" in warnings[0]


def test_same_master_and_settings_reuse_the_running_context_silently(stop_spark, caplog):
    first = get_session("local[1]", conf={"spark.task.maxFailures": "2"})
    with caplog.at_level(logging.WARNING, logger="waveforms.runtime.spark"):
        again = get_session("local[1]", conf={"spark.task.maxFailures": "2"})
    assert again.sparkContext is first.sparkContext
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_conflicting_setting_restarts_with_the_new_value(stop_spark, caplog):
    first = get_session("local[1]", conf={"spark.task.maxFailures": "2"})
    with caplog.at_level(logging.WARNING, logger="waveforms.runtime.spark"):
        second = get_session("local[1]", conf={"spark.task.maxFailures": "5"})
    assert second.sparkContext is not first.sparkContext
    assert second.sparkContext.getConf().get("spark.task.maxFailures") == "5"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "spark.task.maxFailures='2' != '5'" in warning
