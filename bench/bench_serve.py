"""Studio load benchmark on 127.0.0.1: 200 API reads, then 16 concurrent 10-second generations of a tiny model.

Prints p50/p95 latencies, time to the first audio byte, 5xx count, and the server's threads and
memory before and after (a separate `waveforms serve` process). References measured in the same run:
the reads against GET /api/status (the cheapest route: the HTTP round trip itself), the generations'
audio per second against one in-process ``generate()`` of the same model and length.
Bounded: fixed request counts, timeouts.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from helpers.serve import free_socket, make_dataset, train_model  # noqa: E402

READS, GENERATIONS, SECONDS = 200, 16, 10.0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def in_process_seconds_per_s(model_dir: Path) -> float:
    """Seconds of audio per second from one ``generate()`` of SECONDS in this process (after a warm-up)."""
    from waveforms.model import load
    from waveforms.model.sampling import generate

    wavenet = load(str(model_dir))
    n = int(SECONDS * wavenet.sample_rate)
    generate(wavenet, 100, seed=0)
    t = time.perf_counter()
    generate(wavenet, n, seed=1)
    return SECONDS / (time.perf_counter() - t)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    train_model(make_dataset(tmp / "dataset"), tmp / "model", steps=20)
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen([sys.executable, "-m", "waveforms", "serve", "--root", str(tmp), "--port", str(port),
                               "--max-generations", str(GENERATIONS)], stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(base + "/api/status", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "server did not start"
                time.sleep(0.2)
        proc = psutil.Process(server.pid)
        model = requests.get(base + "/api/models", timeout=30).json()[0]["id"]
        ds = requests.get(base + "/api/datasets", timeout=30).json()[0]["id"]
        requests.get(f"{base}/api/models/{model}/generate.wav?seconds=0.1&seed=999", timeout=60)  # load the model
        threads0, rss0 = proc.num_threads(), proc.memory_info().rss
        paths = ["/api/datasets", f"/api/datasets/{ds}", "/api/models", f"/api/models/{model}",
                 f"/api/models/{model}/metrics", f"/api/datasets/{ds}/tracks/t1/audio.wav?seconds=1"]
        ref = []
        for _ in range(50):
            t = time.perf_counter()
            requests.get(base + "/api/status", timeout=30)
            ref.append(time.perf_counter() - t)
        codes, lat = [], []
        for i in range(READS):
            t = time.perf_counter()
            codes.append(requests.get(base + paths[i % len(paths)], timeout=30).status_code)
            lat.append(time.perf_counter() - t)

        def one(seed: int) -> tuple[int, float, float, int]:
            t = time.perf_counter()
            with requests.get(f"{base}/api/models/{model}/generate.wav?seconds={SECONDS}&seed={seed}",
                              stream=True, timeout=300) as r:
                first, size = None, 0
                for chunk in r.iter_content(chunk_size=4096):
                    first = first or time.perf_counter() - t
                    size += len(chunk)
                return r.status_code, first or 0.0, time.perf_counter() - t, size

        with cf.ThreadPoolExecutor(GENERATIONS) as pool:
            started = time.perf_counter()
            gens = list(pool.map(one, range(GENERATIONS)))
            wall = time.perf_counter() - started
        time.sleep(1.0)  # worker threads stay in the server's pool (anyio: at most 40), not one per request
        threads1, rss1 = proc.num_threads(), proc.memory_info().rss
        five = sum(c >= 500 for c in codes) + sum(g[0] >= 500 for g in gens)
        ttfb = [g[1] for g in gens]
        one = in_process_seconds_per_s(tmp / "model")
        rows = [
            ("API reads", f"{READS}, statuses {sorted(set(codes))}", ""),
            ("  p50 / p95 ms", f"{1000 * pct(lat, 0.5):.1f} / {1000 * pct(lat, 0.95):.1f}",
             f"{pct(lat, 0.5) / pct(ref, 0.5):.1f}x / {pct(lat, 0.95) / pct(ref, 0.95):.1f}x GET /api/status "
             f"({1000 * pct(ref, 0.5):.1f} / {1000 * pct(ref, 0.95):.1f} ms)"),
            ("generations", f"{GENERATIONS} x {SECONDS:g} s at once, statuses {sorted({g[0] for g in gens})}", ""),
            ("  first audio byte p50 / p95 ms", f"{1000 * pct(ttfb, 0.5):.0f} / {1000 * pct(ttfb, 0.95):.0f}", ""),
            ("  all done", f"{wall:.1f} s, {GENERATIONS * SECONDS / wall:.1f} s of audio per s",
             f"{GENERATIONS * SECONDS / wall / one:.2f}x one in-process generate() ({one:.1f} s/s)"),
            ("5xx responses", str(five), ""),
            ("server threads", f"{threads0} -> {threads1}", ""),
            ("server RSS MiB", f"{rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f}", ""),
        ]
        print(f"| {'measure':32} | {'value':44} | against the in-run reference |")
        print(f"|{'-' * 34}|{'-' * 46}|{'-' * 30}|")
        for name, value, ratio in rows:
            print(f"| {name:32} | {value:44} | {ratio} |")
        return 1 if five else 0
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
