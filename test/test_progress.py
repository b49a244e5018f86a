"""Progress a person reads: units, plain lines off a terminal, a live line on one (a pseudo-terminal)."""
import io
import os
import pty
import re
import select
import subprocess
import sys
import time

from helpers.train import tone_dataset, train_argv
from waveforms.runtime import progress
from waveforms.train import status


def test_units_a_person_reads():
    assert [progress.human(x) for x in (950, 86_400, 1_234_567, 2.5e9)] == ["950", "86.4k", "1.23M", "2.5G"]
    assert [progress.clock(s) for s in (0, 63, 240, 3723.4, -5)] == ["0:00", "1:03", "4:00", "1:02:03", "0:00"]
    row = {"step": 300, "loss": 3.2101, "val_loss": 3.3, "lr": 0.0019812, "samples_per_s": 86_123.0}
    assert status.line(row, 1517, "1:03 left") == \
        "step 300/1,517 · loss 3.210 · val 3.300 · lr 0.00198 · 86.1k samples/s · 1:03 left"
    assert status.line({"step": 5}, None, "") == "step 5"
    assert status.time_left(300, 1517, 177.0, 4.0, None) == "4:00 budget, 1:03 left"
    assert status.time_left(300, 1500, 10.0, 0.0, 0.5) == "10:00 left"
    assert status.total_steps(1_000_000, 4.0, None) is None  # a budget not yet fitted: no made-up total
    assert status.total_steps(1_000_000, 4.0, 1517) == 1517
    assert status.total_steps(200, 0.0, None) == 200


def test_plain_lines_off_a_terminal():
    out = io.StringIO()
    with progress.Progress("transform", 4, "tracks", every_s=0, stream=out) as p:
        assert not p.live
        for done in range(1, 5):
            p.update(done)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("transform: 1/4 tracks · 0:0") and lines[0].endswith(" left")
    assert lines[-1] == "transform: 4/4 tracks"  # the last line once, with nothing left to estimate
    quiet = io.StringIO()
    with progress.Progress("transform", 4, "tracks", every_s=3600, stream=quiet) as p:
        p.update(1)
        p.update(2)
    assert re.fullmatch(r"transform: 2/4 tracks · 0:00 left\n", quiet.getvalue())  # within every_s: the end only


def on_a_terminal(argv: list[str], timeout_s: float = 240) -> str:
    """Everything ``argv`` writes to a pseudo-terminal (stdout and stderr), as a user's shell would see it."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    proc = subprocess.Popen(argv, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks, deadline = [], time.time() + timeout_s
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal closed: the process is gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    finally:
        proc.kill()
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_a_budget_run_on_a_terminal_shows_the_fitted_total_and_the_time_left(tmp_path):
    data = tone_dataset(tmp_path / "ds", n_tracks=2)
    text = on_a_terminal([sys.executable, "-m", "waveforms", *train_argv(
        data, tmp_path / "model", "--steps", "1000000", "--set", "max_minutes=0.25", "--set", "warmup_steps=5",
        "--set", "log_every=20", "--set", "val_every=1000000", "--set", "preview_every=-1")])
    assert "\r" in text  # a live line, redrawn in place
    fitted = int(re.search(r"schedule fitted to the 0\.2-minute budget: (\d+) steps", text).group(1))
    totals = {int(t.replace(",", "")) for t in re.findall(r"step \d+/([\d,]+)", text)}
    assert fitted in totals and 1_000_000 not in totals, totals
    assert re.search(r"0:15 budget, 0:\d\d left", text)
    assert re.search(r"train: \d+/[\d,]+ steps", text)  # the live line's own count


def test_transform_on_a_terminal_counts_tracks(tmp_path, sine_mp3):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(3):
        sine_mp3(raw / f"tone{i}.mp3", 220.0 * (i + 1), 1.0)
    text = on_a_terminal([sys.executable, "-m", "waveforms", "transform", "--input", str(raw), "--output",
                          str(tmp_path / "ds"), "--master", "local[1]", "--set", "sample_rate=8000"])
    assert re.search(r"\rtransform: 3/3 tracks █+", text), text[-2000:]
    assert "dataset: " in text


def test_a_stage_log_holds_no_matplotlib_chatter_on_its_first_run(tmp_path):
    code = ("import logging; from waveforms.runtime import progress; progress.setup_logging(); "
            "import matplotlib.font_manager; logging.getLogger('waveforms.stage').info('the stage line')")
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}  # no font cache yet: matplotlib builds one
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "mpl").glob("fontlist-*.json"))  # the cache was built in this run
    assert proc.stderr == "the stage line\n"


def test_generate_off_a_terminal_prints_plain_lines(tmp_path):
    data = tone_dataset(tmp_path / "ds", n_tracks=2)
    model = tmp_path / "model"
    train = subprocess.run([sys.executable, "-m", "waveforms", *train_argv(data, model, "--steps", "2")],
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "waveforms", "generate", "--model", str(model), "--seconds", "0.25",
                          "--output", str(tmp_path / "g.wav")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "\r" not in out.stdout + out.stderr
    assert "generate: 2000/2000 samples" in out.stderr.splitlines()  # 0.25 s at the tone dataset's 8 kHz

