"""The training feed from local disk and from S3 behind 0-100 ms of latency, alone and under real training.

A dataset of random mu-law codes is written to a local folder and uploaded to
a moto S3 server (its own process, on 127.0.0.1); S3 is reached through the
delaying proxy of ``test/helpers/delay_proxy.py`` (its own process too), which adds
0, 20, 50 and 100 ms to every request and reports the requests in flight.

Two tables, each against local disk measured in the same run (before and
after the S3 rows; the reference is their mean):

- *feed*: the window feed alone (``WindowSampler`` + ``Prefetcher``, as the
  local engine drives it), windows/s and samples/s (predicted samples: batch ×
  window per step, as ``metrics.jsonl`` counts them);
- *training* per preset: the local engine's step (``train_on_batch`` on the
  prefetched batches) at the default window and batch, samples/s.

Both have a row for S3 at 50 ms through the shard cache, empty at the start of
the row (shards download in the background while the row runs).

Then the windows/s one GPU would need: an estimate from a GPU's float32
peak (``--gpu``, :data:`waveforms.aws.cost.GPU_FP32_TFLOPS`; no GPU here) times the share of this machine's
own numpy GEMM rate that training reaches here (useful FLOPs: 6 per trainable
parameter per predicted sample), and the reads in flight that rate needs at
50 ms (Little's law: rate × latency).

``--cli-run STEPS`` also trains ``small`` for STEPS steps with ``waveforms
train`` from local disk (before and after), from s3:// behind 50 ms, and from
there with the shard cache (empty at the start), and prints the median
samples/s of each run's metrics.jsonl and the CPU share moto and the proxy took.

``--server-cpus K`` runs moto and the proxy on the last K CPUs and everything
else on the rest: S3's side of each request then stops competing with
training for the same cores, as on a cluster, where S3 is not on the node.

``--hosts`` (root) runs only the ``--cli-run`` rows, on emulated hosts (test/helpers/hosts.py): the
training on a host of its own, the S3 server on another behind a link (see :func:`hosts_run`).

Usage: python bench/bench_feed.py [--presets small,default] [--delays 0,20,50,100] [--steps 40]
       [--feed-seconds 6] [--reads-in-flight 32] [--gpu A10G] [--cli-run 120] [--server-cpus 1]
       python bench/bench_feed.py --hosts [--cli-run 120] [--host-cpu 1.0] [--s3-cpu 0.5] [--rate 1gbit]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "test"))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from waveforms.aws import cost  # noqa: E402
from waveforms.runtime.ports import free_port  # noqa: E402

BUCKET = "bench-feed"


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


class Servers:
    """moto and the delaying proxy, each in its own process on 127.0.0.1."""

    def __init__(self, cpus: set[int] | None = None) -> None:
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        port = free_port("127.0.0.1")
        self.moto_url = f"http://127.0.0.1:{port}"
        self.moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin)
        wait_for(self.moto_url + "/moto-api/")
        self.proxy = subprocess.Popen([sys.executable, str(ROOT / "test" / "helpers" / "delay_proxy.py"), self.moto_url,
                                       "--delay-ms", "0"], stdout=subprocess.PIPE, text=True, preexec_fn=pin)
        self.url = self.proxy.stdout.readline().strip()
        wait_for(self.url + "/__proxy__/stats")

    def cpu_seconds(self) -> float:
        """CPU time moto and the proxy have used so far (user + system, from /proc)."""
        return cpu_seconds([self.moto.pid, self.proxy.pid])

    def control(self, what: str) -> dict:
        method = "POST" if what.startswith("reset") else "GET"
        req = urllib.request.Request(f"{self.url}/__proxy__/{what}", method=method)
        return json.loads(urllib.request.urlopen(req, timeout=10).read())

    def close(self) -> None:
        for proc in (self.proxy, self.moto):
            proc.terminate()
            proc.wait(10)


def make_dataset(root: Path, tracks: int, seconds: float, sample_rate: int = 16000) -> Path:
    from helpers.train import write_dataset

    rng = np.random.default_rng(0)
    n = int(seconds * sample_rate)
    return write_dataset(root, [{"id": f"b{i}", "codes": rng.integers(0, 256, n, dtype=np.uint8),
                                 "split": "val" if i == 0 else "train"} for i in range(tracks)],
                         sample_rate=sample_rate, dataset_id="bench-feed", shard_size=4)


def upload(local: Path, prefix: str) -> None:
    from waveforms import storage

    storage.s3_client().create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.upload_file(path, f"{prefix}/{path.relative_to(local).as_posix()}")


def sampler_for(root: str, receptive_field: int, window: int, batch_size: int, reads_in_flight: int,
                cache_dir: str | None = None):
    from waveforms.dataset import Dataset, regions
    from waveforms.dataset.cache import ShardCache
    from waveforms.train.windows import WindowSampler, shared_reader

    ds = Dataset.open(root)
    train, _, _ = regions(ds, receptive_field + window)
    cache = ShardCache(root, ds.dataset_id, cache_dir, 10**10) if cache_dir else None
    return WindowSampler(ds, train, receptive_field, window, batch_size, seed=0,
                         reader=shared_reader(reads_in_flight), cache=cache)


def source_sampler(name: str, delay, local: Path, remote: str, rf: int, args):
    """The sampler of one row: local disk, or S3 (with a fresh shard cache for the cache row)."""
    if delay is None:
        return sampler_for(str(local), rf, args.window, args.batch_size, args.reads_in_flight)
    cache = tempfile.mkdtemp(prefix="bench-feed-cache-") if "cache" in name else None
    return sampler_for(remote, rf, args.window, args.batch_size, args.reads_in_flight, cache)


def time_feed(sampler, seconds: float) -> tuple[int, float]:
    """(windows, seconds) read by the prefetcher in about ``seconds`` after one warm-up batch."""
    from waveforms.train.windows import Prefetcher

    with Prefetcher(sampler.batch, 0, sampler.prefetch_depth()) as batches:
        next(batches)
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            next(batches)
            n += sampler.batch_size
        return n, time.perf_counter() - t0


def time_training(model, sampler, steps: int, start: int) -> float:
    """Seconds for ``steps`` train_on_batch steps on prefetched batches (after 2 untimed ones)."""
    from waveforms.train.windows import Prefetcher

    with Prefetcher(sampler.batch, start, sampler.prefetch_depth()) as batches:
        for _ in range(2):
            x, y = next(batches)
            model.train_on_batch(x, y)
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = next(batches)
            model.train_on_batch(x, y)
        return time.perf_counter() - t0


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def sources(delays: list[float]) -> list[tuple[str, float | None]]:
    """Local disk first and last (the reference is their mean), the S3 delays in between, then S3 at
    50 ms with the shard cache (an empty one, filled during the row)."""
    return [("local", None), *((f"s3 +{d:g} ms", d) for d in delays), ("s3 +50 ms, shard cache", 50.0),
            ("local (again)", None)]


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def measure(args, servers: Servers, local: Path, remote: str) -> None:
    from waveforms.config import TrainConfig
    from waveforms.model import build
    from waveforms.train.common import compile_model

    results: dict[str, list] = {}
    # the feed alone, with the receptive field of `small` (the window dominates either way)
    rf_small = build("small").receptive_field
    rows = []
    measured = []
    for name, delay in sources(args.delays):
        if delay is not None:
            servers.control(f"reset?delay_ms={delay}")
        s = source_sampler(name, delay, local, remote, rf_small, args)
        n, secs = time_feed(s, args.feed_seconds)
        stats = servers.control("stats") if delay is not None else None
        measured.append((name, n / secs, stats))
    ref = np.mean([w for name, w, _ in measured if name.startswith("local")])
    for name, wps, stats in measured:
        rows.append([name, f"{wps:,.0f}", f"{wps * args.window:,.0f}",
                     f"{stats['mean_in_flight']:.1f} / {stats['max_in_flight']}" if stats else "-",
                     f"{wps / ref:.2f}"])
    table(f"feed alone (window {args.window}, batch {args.batch_size}, reads_in_flight {args.reads_in_flight})",
          ["source", "windows/s", "samples/s", "in flight mean/max", "× local"], rows)
    results["feed"] = measured

    gemm = gemm_gflops()  # measured again after training; the higher of the two counts
    gpu_rows, needs = [], []
    for preset in args.presets:
        cfg = TrainConfig(preset=preset, window=args.window, batch_size=args.batch_size)
        wavenet = build(preset)
        model = compile_model(wavenet.training_model(), cfg)
        params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        rf = wavenet.receptive_field
        measured = []
        start = 0
        for name, delay in sources(args.delays):
            if delay is not None:
                servers.control(f"reset?delay_ms={delay}")
            s = source_sampler(name, delay, local, remote, rf, args)
            secs = time_training(model, s, args.steps, start)
            start += args.steps + 2
            stats = servers.control("stats") if delay is not None else None
            measured.append((name, args.steps * args.batch_size * args.window / secs, stats))
        ref = np.mean([v for name, v, _ in measured if name.startswith("local")])
        rows = [[name, f"{sps:,.0f}", f"{sps / args.window:,.1f}",
                 f"{st['mean_in_flight']:.1f} / {st['max_in_flight']}" if st else "-", f"{sps / ref:.2f}"]
                for name, sps, st in measured]
        table(f"training {preset} ({params:,} parameters, receptive field {rf}, window {args.window}, "
              f"batch {args.batch_size}, {args.steps} steps each)",
              ["source", "samples/s", "windows/s", "in flight mean/max", "× local"], rows)
        needs.append((preset, params, 6 * params * ref / 1e9))  # useful GFLOP/s here
        results[preset] = measured
    gemm = max(gemm, gemm_gflops())
    for preset, params, useful in needs:
        share = useful / gemm
        gpu_wps = cost.gpu_windows_per_s(args.gpu, params, args.window, share)
        gpu_rows.append([preset, f"{useful:,.1f}", f"{gemm:,.0f}", f"{share:.2f}", f"{gpu_wps:,.0f}",
                         f"{gpu_wps * 0.05:,.0f}"])
    table(f"one GPU's need (estimate: an {args.gpu}'s {cost.GPU_FP32_TFLOPS[args.gpu]:g} TFLOP/s float32 peak × this machine's "
          "training share of its own GEMM rate; no GPU measured)",
          ["preset", "useful GFLOP/s here", "numpy GEMM GFLOP/s", "share", "GPU windows/s (est.)",
           "reads in flight at 50 ms"], gpu_rows)


def cli_run(args, servers: Servers, local: Path, remote: str, tmp: Path) -> None:
    """``waveforms train`` for `small` from disk and from s3:// behind 50 ms: metrics.jsonl's samples/s."""
    rows = []
    cache = ("--set", f"shard_cache_dir={tmp / 'shard-cache'}", "--set", "shard_cache_gb=1")
    for name, data, delay, extra in (("local disk", str(local), None, ()), ("s3 +50 ms", remote, 50.0, ()),
                                     ("s3 +50 ms, shard cache", remote, 50.0, cache),
                                     ("local disk (again)", str(local), None, ())):
        if delay is not None:
            servers.control(f"reset?delay_ms={delay}")
        model_dir = tmp / f"model-{len(rows)}"
        cpu0, t0 = servers.cpu_seconds(), time.perf_counter()
        subprocess.run([sys.executable, "-m", "waveforms", "train", "--data", data, "--model-dir", str(model_dir),
                        "--preset", "small", "--steps", str(args.cli_run), "--set", "preview_every=-1",
                        "--set", f"reads_in_flight={args.reads_in_flight}", *extra],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        metrics = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
        sps = [r["samples_per_s"] for r in metrics if "samples_per_s" in r][1:]  # the first interval traces
        server = (servers.cpu_seconds() - cpu0) / ((time.perf_counter() - t0) * len(os.sched_getaffinity(0)))
        stats = servers.control("stats") if delay is not None else None
        rows.append((name, float(np.median(sps)), stats, server))
    ref = float(np.mean([v for n, v, _, _ in rows if n.startswith("local")]))
    table(f"waveforms train --preset small --steps {args.cli_run}: median samples/s of metrics.jsonl rows "
          "(the first left out); the S3 server's CPU (moto and the proxy) as a share of the training CPUs",
          ["data", "samples/s", "in flight mean/max", "S3 server CPU", "× local"],
          [[n, f"{v:,.0f}", f"{s['mean_in_flight']:.1f} / {s['max_in_flight']}" if s else "-", f"{c:.0%}",
            f"{v / ref:.2f}"] for n, v, s, c in rows])


def hosts_run(args) -> None:
    """``waveforms train`` on an emulated host of its own, from its disk and from S3 on another host.

    Host 1 trains (``--host-cpu`` cores); host 0 holds only the S3 server and the delaying proxy
    (``--s3-cpu`` cores), behind a ``--rate`` link: S3 neither shares the training host's cores nor
    its disk, as on a cluster. Each row is a ``--cli-run`` step run of ``small``; the reference is
    the same host reading its own disk (the mean of a run before and one after the S3 rows).
    """
    import shutil

    from helpers import hosts as hostlib

    why = hostlib.check()
    if why:
        print(f"\n## The feed across emulated hosts: not run ({why})")
        return
    period = hostlib.finest_period_us(min(args.host_cpu, args.s3_cpu))
    with hostlib.Cluster(workers=1, cpu=args.host_cpu, head_cpu=args.s3_cpu, rate=args.rate, period_us=period,
                         spark=False) as c:
        head, trainer = c.hosts
        make_dataset(c.shared / "ds", args.tracks, args.seconds)
        shutil.copytree(c.shared / "ds", trainer.tmp / "ds")  # the training host's own disk
        env = {**c.env(head), "PYTHONPATH": str(ROOT)}
        done = head.run([sys.executable, "-m", "waveforms", "aws", "sync", str(c.shared / "ds"),
                         f"s3://{hostlib.BUCKET}/ds"], env)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        proxy_url = f"http://{head.address}:{hostlib.S3_PORT + 1}"
        c.start(head, "proxy", [sys.executable, str(ROOT / "test" / "helpers" / "delay_proxy.py"), c.s3_url,
                                "--delay-ms", str(args.host_delay_ms), "--host", head.address,
                                "--port", str(hostlib.S3_PORT + 1)])
        c.wait_for(lambda: c.answers(f"{proxy_url}/__proxy__/stats"), 60, "the delaying proxy to listen")
        server_pids = [p.pid for p in c.procs[0]]
        remote = f"s3://{hostlib.BUCKET}/ds"
        cache = ("--set", "shard_cache_dir=/tmp/shard-cache", "--set", "shard_cache_gb=1")
        delayed = f"S3 on host 0 +{args.host_delay_ms:g} ms"
        rows = []
        for name, data, endpoint, extra in (("its own disk", "/tmp/ds", c.s3_url, ()),
                                            ("S3 on host 0", remote, c.s3_url, ()),
                                            (delayed, remote, proxy_url, ()),
                                            (f"{delayed}, shard cache", remote, proxy_url, cache),
                                            ("its own disk (again)", "/tmp/ds", c.s3_url, ())):
            model = f"model-{len(rows)}"
            cpu0, head0, t0 = cpu_seconds(server_pids), head.cpu_stat(), time.perf_counter()
            done = trainer.run([sys.executable, "-m", "waveforms", "train", "--data", data, "--model-dir",
                                f"/tmp/{model}", "--preset", "small", "--steps", str(args.cli_run),
                                "--window", str(args.window), "--batch-size", str(args.batch_size),
                                "--set", "preview_every=-1", "--set", f"reads_in_flight={args.reads_in_flight}",
                                *extra], {**c.env(trainer, AWS_ENDPOINT_URL=endpoint), "PYTHONPATH": str(ROOT)},
                               timeout=3600)
            if done.returncode:
                raise SystemExit(f"{name}: training failed:\n{done.stderr[-3000:]}")
            wall = time.perf_counter() - t0
            metrics = [json.loads(line) for line in (trainer.tmp / model / "metrics.jsonl").read_text().splitlines()]
            sps = [r["samples_per_s"] for r in metrics if "samples_per_s" in r][1:]  # the first interval traces
            head1 = head.cpu_stat()
            periods = max(1, head1["nr_periods"] - head0["nr_periods"])  # periods in which host 0 ran
            throttled = (head1["nr_throttled"] - head0["nr_throttled"]) / periods
            rows.append((name, float(np.median(sps)), (cpu_seconds(server_pids) - cpu0) / wall, throttled))
    ref = float(np.mean([v for n, v, _, _ in rows if n.startswith("its own disk")]))
    table(f"Across emulated hosts: waveforms train --preset small --steps {args.cli_run} on host 1 ({args.host_cpu} "
          f"core), S3 on host 0 ({args.s3_cpu} core, moto and the proxy), a {args.rate} link, quota period "
          f"{period / 1000:g} ms: median samples/s of metrics.jsonl rows (the first left out)",
          ["data", "samples/s", "S3 server cores used", "S3 host's periods throttled", "× its own disk"],
          [[n, f"{v:,.0f}", f"{cores:.2f}", f"{th:.0%}", f"{v / ref:.2f}"] for n, v, cores, th in rows])


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the processes ``pids`` have used so far, from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="small,default", type=lambda s: s.split(","))
    parser.add_argument("--delays", default="0,20,50,100", type=lambda s: [float(d) for d in s.split(",")])
    parser.add_argument("--window", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per source")
    parser.add_argument("--feed-seconds", type=float, default=6.0)
    parser.add_argument("--reads-in-flight", type=int, default=32)
    parser.add_argument("--gpu", default="A10G", choices=list(cost.GPU_FP32_TFLOPS),
                        help="the GPU whose float32 peak the estimate uses (waveforms.aws.cost; A10G: g5 instances)")
    parser.add_argument("--tracks", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of audio per track")
    parser.add_argument("--cli-run", type=int, default=0, metavar="STEPS")
    parser.add_argument("--skip-measure", action="store_true", help="only the --cli-run runs")
    parser.add_argument("--server-cpus", type=int, default=0, metavar="K",
                        help="run moto and the proxy on the last K CPUs and the benchmark (and its training "
                             "runs) on the others, as on a cluster, where S3 does not share the node's cores")
    parser.add_argument("--hosts", action="store_true",
                        help="only the --cli-run runs, on an emulated host of its own with S3 on another (root)")
    parser.add_argument("--host-cpu", type=float, default=1.0, help="cores of the training host (--hosts)")
    parser.add_argument("--s3-cpu", type=float, default=0.5, help="cores of the S3 server's host (--hosts)")
    parser.add_argument("--rate", default="1gbit", help="the hosts' link rate, in tc's units (--hosts)")
    parser.add_argument("--host-delay-ms", type=float, default=50.0, help="the proxy's delay per request (--hosts)")
    args = parser.parse_args()
    if args.hosts:
        args.cli_run = args.cli_run or 120
        print(f"# bench_feed --hosts {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
        hosts_run(args)
        return
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = set(cpus[-args.server_cpus:]) if args.server_cpus else None
    if server_cpus and len(server_cpus) >= len(cpus):
        parser.error(f"--server-cpus {args.server_cpus} leaves no CPU for training ({len(cpus)} CPUs)")

    print(f"# bench_feed {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    servers = Servers(server_cpus)
    if server_cpus:
        os.sched_setaffinity(0, set(cpus) - server_cpus)
        print(f"# S3 server on CPUs {sorted(server_cpus)}, the benchmark on {sorted(os.sched_getaffinity(0))}")
    os.environ.update(AWS_ENDPOINT_URL=servers.url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-feed-") as tmp:
            local = make_dataset(Path(tmp) / "ds", args.tracks, args.seconds)
            remote = f"s3://{BUCKET}/ds"
            upload(local, remote)
            if not args.skip_measure:
                measure(args, servers, local, remote)
            if args.cli_run:
                cli_run(args, servers, local, remote, Path(tmp))
    finally:
        servers.close()
    print(f"\n# done, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
