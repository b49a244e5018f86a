"""A stage's command line shows the stage's own lines, not TensorFlow's C++ start-up log."""
import os
import re
import subprocess
import sys

from helpers.train import tone_dataset, train_argv

# TensorFlow's C++ log line ("2026-01-01 12:00:00.123456: I tensorflow/...") and absl's ("E0000 00:00:...").
CPP_LOG = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ )|absl::InitializeLog")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}  # as a user's shell has it
    return subprocess.run([sys.executable, "-m", "waveforms", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_native_start_up_lines_below_the_level_are_dropped_and_everything_else_kept():
    from waveforms.runtime.tflog import kept

    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1796207029.961768    9705 port.cc:153] oneDNN custom operations are on.\n"
            "W0000 00:00:1796207029.961768    9705 gpu.cc:1] a warning\n"
            "E0000 00:00:1796207029.961768    9705 x.cc:9] an error\n"
            "/x.py:3: DeprecationWarning: a Python warning\n")
    assert kept(text, 3) == "/x.py:3: DeprecationWarning: a Python warning\n"
    assert kept(text, 2) == text.split("\n", 3)[3]  # errors and Python's lines
    assert kept(text, 1).splitlines()[0].startswith("W0000") and len(kept(text, 1).splitlines()) == 3
    assert kept(text, 0) == text.replace(text.splitlines(keepends=True)[0], "")  # absl's notice is never the stage's


def test_train_and_generate_print_no_tensorflow_cpp_log_lines(tmp_path):
    data, model = tone_dataset(tmp_path / "ds", n_tracks=2), tmp_path / "model"
    log = tmp_path / "logs" / "train.log"
    log.parent.mkdir()
    train = _cli("--log-file", str(log), *train_argv(data, model, "--steps", "2", "--set", "log_every=1"))
    assert train.returncode == 0, train.stderr
    gen = _cli("generate", "--model", str(model), "--seconds", "0.01", "--output", str(tmp_path / "g.wav"))
    assert gen.returncode == 0, gen.stderr
    for run in (train, gen):
        lines = (run.stdout + run.stderr).splitlines()
        assert lines, "the stage says what it did"
        noisy = [line for line in lines if CPP_LOG.search(line)]
        assert noisy == [], noisy
    assert (tmp_path / "g.wav").stat().st_size == 44 + 2 * 80  # 0.01 s at 8 kHz, 16-bit mono
    # piped, not a terminal: plain lines in a reader's units, no bar redraws, no timestamps or module paths
    assert "\r" not in train.stderr
    assert re.search((r"^step 2/2 · loss \d\.\d{3} · val \d\.\d{3} · lr [\d.e-]+ · [\d.]+k? samples/s"
                      r" · preview previews/step_000002\.wav · 0:00 left$"), train.stderr, re.M), \
        train.stderr
    assert not re.search(r"^\d{4}-\d\d-\d\d|INFO waveforms", train.stderr, re.M)
    # the log file has every line with its time and module, debug included
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO waveforms\.train\.loop: step 2/2 · loss", log.read_text(),
                     re.M), log.read_text()[-2000:]
    assert " DEBUG " in log.read_text()
    bad = _cli("--log-file", str(tmp_path / "no" / "such" / "dir" / "x.log"), "generate", "--model", str(model))
    assert bad.returncode == 2 and "cannot write the log file" in bad.stderr and "Traceback" not in bad.stderr


# The lines the JVM and Spark print on every start (waveforms.runtime.spark.BANNER keeps them out; -v lets them through).
SPARK_BANNER = ("WARNING: Using incubator modules", "Using Spark's default log4j profile", "setLogLevel",
                "NativeCodeLoader")


def test_a_spark_stage_prints_no_spark_banner_unless_verbose(tmp_path, sine_mp3):
    raw = tmp_path / "raw"
    raw.mkdir()
    sine_mp3(raw / "tone.mp3", 440.0, 1.0)
    args = ["transform", "--input", str(raw), "--master", "local[1]", "--set", "sample_rate=8000"]
    quiet = _cli(*args, "--output", str(tmp_path / "ds"))
    assert quiet.returncode == 0, quiet.stderr
    out = quiet.stdout + quiet.stderr
    assert f"dataset: {tmp_path / 'ds'} (1 tracks, 1.0 s, 0 set aside)" in out
    assert [line for line in out.splitlines() if any(b in line for b in SPARK_BANNER)] == []
    assert "transform: 1/1 tracks" in out.splitlines() and "\r" not in out  # piped: the plain closing line
    # -v shows what the quiet run kept out, so the lines above are the ones Spark really prints
    loud = _cli("-v", *args, "--output", str(tmp_path / "ds-v"))
    assert loud.returncode == 0, loud.stderr
    assert "WARNING: Using incubator modules" in loud.stderr and "NativeCodeLoader" in loud.stderr


def test_spark_35s_shutdown_race_is_dropped_and_other_errors_pass():
    """The shutdown races' records (SPARK-47121's, and a message to the removed scheduler endpoint: each
    log line, exception and stack) are dropped; the lines around it, an
    ordinary error record with its stack and a final log line with nothing after it are passed on in order."""
    from waveforms.runtime.spark import shown

    race = [b"26/12/03 14:55:01 ERROR TransportRequestHandler: Error while invoking RpcHandler#receive()\n",
            b"java.util.concurrent.RejectedExecutionException: Task java.util.concurrent.ScheduledThreadPoolExecutor"
            b"$ScheduledFutureTask@2a0ee126[Not completed, task = java.util.concurrent.Executors$RunnableAdapter@41f6f"
            b"[Wrapped task = org.apache.spark.scheduler.cluster.StandaloneSchedulerBackend$StandaloneDriverEndpoint"
            b"$$anon$2@40a3e59b]] rejected from java.util.concurrent.ScheduledThreadPoolExecutor@2520f454[Terminated]\n",
            b"\tat java.base/java.util.concurrent.ThreadPoolExecutor$AbortPolicy.rejectedExecution(ThreadPoolExecutor"
            b".java:2065)\n",
            b"\tat java.base/java.lang.Thread.run(Thread.java:840)\n",
            b"26/12/03 14:55:01 ERROR TransportRequestHandler: Error while invoking RpcHandler#receive() on RPC id 6\n",
            b"org.apache.spark.SparkException: Could not find CoarseGrainedScheduler.\n",
            b"\tat org.apache.spark.rpc.netty.Dispatcher.postMessage(Dispatcher.scala:178)\n"]
    other = [b"26/12/03 14:55:02 ERROR Executor: Exception in task 0.0 in stage 1.0 (TID 1)\n",
             b"java.io.IOException: No space left on device\n",
             b"\tat java.base/java.io.FileOutputStream.writeBytes(Native Method)\n",
             b"Caused by: java.io.IOException: disk full\n"]
    lines = [b"transform: 2/2 tracks\n", b"WARNING: Using incubator modules: jdk.incubator.vector\n", *race,
             *other, b"transform: done\n", b"26/12/03 14:55:03 ERROR SparkContext: last words\n"]
    assert list(shown(lines)) == [b"transform: 2/2 tracks\n", *other, b"transform: done\n",
                                  b"26/12/03 14:55:03 ERROR SparkContext: last words\n"]


IMPORT_PROBE = r"""
import json, os, sys
def state():
    return {"fd2": list(os.fstat(2))[:3] + [os.readlink("/proc/self/fd/2")],
            "meta_path": [repr(f) for f in sys.meta_path], "env": dict(os.environ),
            "umask": [line for line in open("/proc/self/status") if line.startswith("Umask")]}
before = state()
import waveforms, waveforms.cli, waveforms.storage, waveforms.audio.mulaw
print(json.dumps({"before": before, "after": state(), "tf": "tensorflow" in sys.modules}))
"""


def test_importing_the_library_leaves_the_host_process_as_it_was():
    """fd 2, the import system, the environment and the umask stay the host's: only the CLI's run quiets
    TensorFlow (the test above), not an import of the package or of the CLI's module."""
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert not seen["tf"]  # these modules load no TensorFlow
    assert seen["after"] == seen["before"]
