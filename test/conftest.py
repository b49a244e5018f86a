"""Shared test setup and the suite's fixtures.

The environment: loopback only, quiet TensorFlow, executors on this interpreter.

Fixtures (any test module can ask for them by name; nothing imports them):

- ``spark``: the one local[2] SparkSession of the test session, built with
  :func:`waveforms.runtime.spark.get_session` (the stages' own ``get_session("local[2]")``
  calls reuse it).
- ``standalone``: ``standalone(spark_home=None) -> master URL``, a standalone cluster of
  two one-core workers on 127.0.0.1 for each Spark home (None: the venv's PySpark),
  started when a test first asks for it and shared by the rest of the session.
- ``moto_url`` / ``aws_env``: one moto S3 server on 127.0.0.1 for the session;
  ``aws_env`` resets it and points boto3 at it with dummy credentials, per test.
  Tests that use it are marked ``slow`` here, so no module has to.
- ``sine_mp3``: makes a sine-tone MP3 with ffmpeg; ``tones``: six 1-second tones
  at different pitches, made once per session.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from waveforms.train.elephas import env as elephas_env

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

SPARK_MASTER = "local[2]"

# test/elephas_engine needs elephas, which lives in an environment of its own (.elephas, made by make setup):
# test_elephas_env.py runs that folder with .elephas's interpreter; the main environment does not collect it.
collect_ignore = [] if elephas_env.here() else ["elephas_engine"]


# The files that take longest in a whole run (CI's at 901dfa1, in docs/benchmarks.md), longest first. They run
# first: with ``--dist loadfile`` a worker takes the next file in collection order, and a run that reached the
# emulated hosts last (25 minutes of one worker) ended on them alone.
LONGEST_FIRST = ("test_hosts.py", "test_train_allreduce.py", "test_s3_cut_matrix.py", "test_spark35.py",
                 "test_train_cluster.py", "test_elephas_env.py", "test_aws_step.py", "test_train_resume.py",
                 "test_s3_outputs.py", "test_s3_outage.py", "test_s3_faults.py", "test_index.py")


def pytest_collection_modifyitems(config, items):
    """Every test on the moto server is ``slow`` (a server, many HTTP round trips), wherever it lives; the
    files of ``LONGEST_FIRST`` go first, in its order (each file's tests keep theirs)."""
    for item in items:
        if "moto_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


# --- Spark -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def spark_session():
    """Starts the session's local[2] SparkSession once and stops whatever is running at the end."""
    from waveforms.runtime.spark import get_session

    session = get_session(SPARK_MASTER, "waveforms-tests")
    yield session
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()


@pytest.fixture
def spark(spark_session):
    """The session-wide local[2] SparkSession.

    Asking ``get_session`` again costs nothing while it runs (same master and
    settings: the running one is handed back), and starts it afresh if a test
    of other masters stopped it in between, so no test depends on the order.
    """
    from waveforms.runtime.spark import get_session

    session = get_session(SPARK_MASTER, "waveforms-tests")
    assert session.sparkContext.master == SPARK_MASTER
    return session


@pytest.fixture(scope="session")
def standalone(tmp_path_factory):
    """``standalone(spark_home=None) -> master URL``: one cluster per Spark home for the session (see above)."""
    from contextlib import ExitStack

    from helpers.spark_cluster import standalone_cluster

    urls: dict[str | None, str] = {}
    with ExitStack() as stack:
        def get(spark_home: str | None = None) -> str:
            if spark_home not in urls:
                root = tmp_path_factory.mktemp("cluster")
                urls[spark_home] = stack.enter_context(standalone_cluster(root, workers=2, spark_home=spark_home))
            return urls[spark_home]

        yield get


# --- S3 on moto --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def moto_url():
    """One moto server on 127.0.0.1 (an OS-chosen port) for the whole session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_url, monkeypatch, tmp_path):
    """Dummy credentials and the moto endpoint in the environment; an empty server for each test.

    moto keeps its state per process, not per server: the reset before the test
    (and after it) means no test sees another's buckets.
    """
    import requests

    from helpers.aws import REGION, SECRET

    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWAVEFORMSTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield moto_url
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()


# --- audio -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def sine_mp3():
    """``sine_mp3(path, freq=440.0, seconds=1.0, rate=22050, channels=1) -> path``: a sine tone as MP3."""
    from helpers.tones import sine_mp3 as make

    def sine(out, freq: float = 440.0, seconds: float = 1.0, rate: int = 22050, channels: int = 1) -> Path:
        return make(Path(out), freq, seconds, rate=rate, channels=channels)

    return sine


@pytest.fixture(scope="session")
def tones(sine_mp3, tmp_path_factory) -> list[Path]:
    """Six 1-second sine MP3s at 220, 440, ... 1320 Hz (made once per session)."""
    d = tmp_path_factory.mktemp("tones")
    return [sine_mp3(d / f"tone{i}.mp3", 220.0 * (i + 1), 1.0) for i in range(6)]


@pytest.fixture(scope="session")
def music_dataset(tmp_path_factory) -> Path:
    """A dataset of eight 20-second hyperrogue-music excerpts transformed on local[2] (hr3-jungle is ``val``)."""
    from helpers.evaluate import MUSIC_DIR, music_input, transform

    if not MUSIC_DIR.is_dir():
        pytest.fail(f"{MUSIC_DIR} not installed (Debian's hyperrogue-music): run make setup", pytrace=False)
    root = tmp_path_factory.mktemp("music")
    return transform(music_input(root / "raw"), root / "dataset", val_fraction=0.3)
