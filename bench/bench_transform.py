"""Transform throughput: audio-seconds per wall-second, against ffmpeg alone and the original approach.

Makes HOURS of MP3 (synthetic music: chords of sines with tremolo, noise bursts,
at 128/192/320 kbit/s, 44.1 and 48 kHz, stereo), then measures

  (a) ffmpeg alone decoding + resampling every file to /dev/null, N processes at a time;
  (b) the Spark transform on local[1] and local[2];
  (c) the original approach: pydub export to a temporary WAV, read back, resample in numpy.

and prints a markdown table, with peak memory of the executors' Python workers.
Usage: python bench/bench_transform.py [--hours 5] [--minutes-per-file 10] [--workdir bench/out/transform]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_corpus(folder: Path, hours: float, minutes_per_file: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    n = max(1, int(round(hours * 60 / minutes_per_file)))
    secs = minutes_per_file * 60
    bitrates, rates = ["128k", "192k", "320k"], [44100, 48000]
    files = []
    jobs = []
    for i in range(n):
        out = folder / f"track{i:03d}.mp3"
        files.append(out)
        if out.exists():
            continue
        f0 = 110 * (1 + i % 7)
        src = (f"aevalsrc='0.3*sin(2*PI*{f0}*t)*(0.6+0.4*sin(2*PI*0.5*t))+0.2*sin(2*PI*{f0 * 1.5}*t)"
               f"+0.1*sin(2*PI*{f0 * 2}*t)|0.3*sin(2*PI*{f0 * 1.25}*t)+0.05*random(0)':s={rates[i % 2]}:d={secs}")
        jobs.append(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src,
                     "-b:a", bitrates[i % 3], str(out)])
    with cf.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(lambda cmd: subprocess.run(cmd, check=True), jobs))
    return files


def ffmpeg_alone(files: list[Path], procs: int, rate: int) -> float:
    cmd = lambda f: ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(f), "-ac", "1", "-af",  # noqa
                     f"aresample={rate}:resampler=soxr:precision=20", "-f", "s16le", "-y", "/dev/null"]
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(procs) as pool:
        list(pool.map(lambda f: subprocess.run(cmd(f), check=True), files))
    return time.perf_counter() - start


def transform(folder: Path, out: Path, master: str, rate: int) -> tuple[float, float]:
    """Wall seconds of the transform CLI, and the peak RSS (MiB) of its executors' Python workers."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "waveforms", "transform", "--input", str(folder), "--output",
                          str(out), "--master", master, "--sample-rate", str(rate)], env=env, capture_output=True,
                         text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    return wall, json.loads((out / "dataset.json").read_text())["executor_peak_rss_mib"]


def decode_peak_rss(path: Path, rate: int) -> float:
    """Peak RSS (MiB) of decoding one file in a fresh process (VmHWM, which exec resets)."""
    code = ("import sys; from waveforms.audio import decode_to, AudioSettings;"
            "from waveforms.transform.job import peak_rss_mib;"
            "decode_to(sys.argv[1], AudioSettings.from_config(sample_rate=int(sys.argv[2])), open('/dev/null', 'wb'));"
            "print(peak_rss_mib())")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(rate)], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.split()[-1])


def original_approach(files: list[Path], rate: int) -> float:
    """pydub decodes to a temporary WAV, which is read back and resampled in Python (linear interpolation)."""
    from pydub import AudioSegment

    start = time.perf_counter()
    for f in files:
        seg = AudioSegment.from_mp3(str(f))
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            seg.export(tmp.name, format="wav")
            back = AudioSegment.from_wav(tmp.name)
        x = np.array(back.get_array_of_samples(), dtype=np.float32).reshape(-1, back.channels).mean(axis=1)
        t_out = np.arange(int(len(x) * rate / back.frame_rate)) * (back.frame_rate / rate)
        np.interp(t_out, np.arange(len(x)), x)
    return time.perf_counter() - start


def duration(files: list[Path]) -> float:
    total = 0.0
    for f in files:
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(f)],
                             capture_output=True, text=True, check=True)
        total += float(json.loads(out.stdout)["format"]["duration"])
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=5.0)
    ap.add_argument("--minutes-per-file", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=16000)
    ap.add_argument("--original-hours", type=float, default=0.5, help="audio for (c), which is slow")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "out" / "transform"))
    args = ap.parse_args()
    work = Path(args.workdir)
    t0 = time.perf_counter()
    files = make_corpus(work / "mp3", args.hours, args.minutes_per_file)
    audio_s = duration(files)
    print(f"corpus: {len(files)} files, {audio_s / 3600:.2f} h of MP3, "
          f"{sum(f.stat().st_size for f in files) / 2**20:.0f} MiB (made in {time.perf_counter() - t0:.0f} s)")
    rows = []
    for procs in (1, 2):
        wall = ffmpeg_alone(files, procs, args.rate)
        rows.append((f"(a) ffmpeg alone, {procs} process{'es' if procs > 1 else ''}", wall, audio_s / wall, "-"))
    for master in ("local[1]", "local[2]"):
        wall, rss = transform(work / "mp3", work / f"dataset-{master[6]}", master, args.rate)
        rows.append((f"(b) transform, {master}", wall, audio_s / wall, f"{rss:.0f}"))
    n_orig = max(1, int(round(args.original_hours * 60 / args.minutes_per_file)))
    orig = files[:n_orig]
    wall = original_approach(orig, args.rate)
    rows.append((f"(c) original approach (pydub + temp WAV), {len(orig)} files", wall, duration(orig) / wall, "-"))
    print()
    print("| pipeline | wall s | audio-s per wall-s | peak RSS per executor worker, MiB |")
    print("|---|---|---|---|")
    for name, wall, speed, rss in rows:
        print(f"| {name} | {wall:.1f} | {speed:,.0f} | {rss} |")
    speed = {name: s for name, _, s, _ in rows}
    a2 = speed["(a) ffmpeg alone, 2 processes"]
    b1, b2 = speed["(b) transform, local[1]"], speed["(b) transform, local[2]"]
    one = work / "one"  # a one-file input: the fixed cost of starting the JVM, Spark and the workers
    one.mkdir(exist_ok=True)
    if not (one / files[0].name).exists():
        os.link(files[0], one / files[0].name)
    one_wall, _ = transform(one, work / "dataset-one", "local[2]", args.rate)
    fixed = one_wall - ffmpeg_alone(files[:1], 1, args.rate)
    b2_wall = audio_s / b2
    print()
    print(f"transform local[2] / ffmpeg 2 processes: {b2 / a2:.2f}")
    print(f"fixed start-up cost (one-file transform minus its decode): {fixed:.1f} s; without it, "
          f"transform local[2] / ffmpeg 2 processes: {(audio_s / (b2_wall - fixed)) / a2:.2f}")
    print(f"scaling local[1] -> local[2]: {b2 / b1:.2f}x")
    short = make_corpus(work / "len", 1 / 60, 1)[0]  # a 1-minute file
    long = make_corpus(work / "hour", 1.0, 60)[0]  # a 60-minute file
    print(f"peak RSS decoding one track: 1 min {decode_peak_rss(short, args.rate):.0f} MiB, "
          f"60 min {decode_peak_rss(long, args.rate):.0f} MiB (output codes: {3600 * args.rate / 2**20:.0f} MiB "
          f"written as they are made)")


if __name__ == "__main__":
    main()
