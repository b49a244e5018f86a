"""How long until music: validation loss against compute, fitted, held out and projected to 2.2, 2.0 and 1.8 nats.

Trains each run of ``--only`` (default: ``small`` at budgets of 2.5, 5, 10, 20
and 40 minutes, ``default`` at 5, 10 and 20; about two hours in all) the way
``bench/bench_train_budget.py`` trains its rows (its ``train`` and ``score``:
the hyperrogue soundtrack, ``max_minutes`` with the schedule fitted to the
budget, the final model scored on the whole validation split in nats per
sample), with ``precision = "auto"`` where the config has that key.

Each finished run appends one JSON line to ``--results`` (default
``bench/out/compute-curve.jsonl``); a rerun skips the runs already there for the
same dataset, so the runs can be split across sessions
(``--only small:2.5,small:5`` now, ``--only small:40`` later). ``--report`` only
reads the file.

Compute per run: FLOPs = 6 × trainable parameters × predicted samples (steps ×
batch × window, the convention of ``bench_train.py``), and core-seconds = the
run's wall time × the machine's cores (the whole machine, whether or not
something else used part of it). For each preset with at least 3 runs the
report fits ``L(C) = L_inf + a·(C/c_ref)^-b`` in both units
(``bench/compute_curve.py``); with 4 or more it fits again without the run of
the largest compute and predicts it (the held-out error), and projects the
compute to reach 2.2, 2.0 and 1.8 nats as a range: the target reached that
error sooner or later. GPU-hours use a stated throughput (float32 peak × the
share of ``waveforms.aws.cost``; no GPU measured), dollars the instance table
of ``docs/cluster.md``. ``--plot FILE`` writes the curve as a PNG.

``--fit-gap`` trains nothing: it scores each kept model of ``--only`` on
windows of the training split (evenly spaced, as many as the validation split
has) and on the whole validation split, so that a floor set by the data (the
model learning its tracks by heart) shows as a gap that grows with compute.

``--cost`` prints, instead, what an hour of training on ``fma_full`` costs for
1, 8 and 32 GPU nodes, S3 requests included (``waveforms.aws.cost``, the
tables of ``docs/cluster.md``).

Usage: python bench/bench_compute_curve.py [--only small:2.5,default:5] [--results FILE] [--report]
       [--plot docs/compute-curve.png] [--data DATASET]
       python bench/bench_compute_curve.py --cost
       python bench/bench_compute_curve.py --fit-gap --only small:5,small:10,small:20
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bench_train_budget as budget
import compute_curve as cc
import numpy as np

from waveforms.runtime.progress import bits

ROOT = Path(__file__).resolve().parents[1]
RESULTS = budget.OUT / "compute-curve.jsonl"
DEFAULT_RUNS = "small:2.5,small:5,small:10,small:20,small:40,default:5,default:10,default:20"
TARGETS = (2.2, 2.0, 1.8)
GPUS = ("T4", "A10G", "L4", "A100")
CPU_TYPE = "m5.xlarge"  # core-hours priced per vCPU of the default cluster's type


def parse_runs(text: str) -> list[tuple[str, float]]:
    """``small:2.5,default:5`` as [("small", 2.5), ("default", 5.0)]."""
    runs = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        preset, sep, minutes = item.partition(":")
        try:
            value = float(minutes)
        except ValueError:
            value = 0.0
        if not sep or not preset or value <= 0:
            raise SystemExit(f"--only: {item!r} is not PRESET:MINUTES with MINUTES > 0")
        runs.append((preset, value))
    return runs


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise SystemExit(f"{path}:{n} is not a JSON line; fix or remove it") from None
    return rows


def append_result(path: Path, row: dict) -> None:
    """One whole line per run, written with one call and flushed (a kill leaves earlier lines whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def pending(wanted: list[tuple[str, float]], rows: list[dict], dataset_id: str) -> list[tuple[str, float]]:
    """The runs of ``wanted`` not yet in ``rows`` for this dataset, in order, each once."""
    done = {(r["preset"], float(r["minutes"])) for r in rows if r["dataset_id"] == dataset_id}
    out: list[tuple[str, float]] = []
    for run in wanted:
        if run not in done and run not in out:
            out.append(run)
    return out


def precision_overrides() -> list[str]:
    from waveforms.config import TrainConfig

    return ["precision=auto"] if "precision" in TrainConfig.__dataclass_fields__ else []


def resolved(precision: str) -> str:
    """``auto`` with what it picks on this machine (the training run does not record it)."""
    from waveforms.train import precision as prec

    if precision != "auto" or not hasattr(prec, "effective"):
        return precision
    return f"auto: {prec.effective(precision)}"


def trainable_params(preset: str) -> int:
    from waveforms.model import build

    return int(sum(int(np.prod(w.shape)) for w in build(preset).keras_model.trainable_weights))


def run_one(preset: str, minutes: float, data: Path, dataset_id: str, env: dict[str, str], work: Path) -> dict:
    """Train one budget with bench_train_budget's ``train`` and describe it as one results row."""
    from waveforms.aws import cost

    args = argparse.Namespace(preset=preset, minutes=minutes, val_batches=16, val_every=250, window=0,
                              batch_size=0, windows_per_worker=96)
    model_dir = work / f"{preset}-{minutes:g}"
    shutil.rmtree(model_dir, ignore_errors=True)  # a run killed earlier: start it over
    load0 = os.getloadavg()[0]
    r = budget.train(args, data, str(model_dir), precision_overrides(), budget.ENGINES["local"], 100_000_000, env)
    cfg = json.loads((model_dir / "config.json").read_text())["config"]
    params = trainable_params(preset)
    samples = r["steps"] * cfg["batch_size"] * cfg["window"]
    cores = os.cpu_count() or 1
    return {
        "preset": preset, "minutes": minutes, "dataset_id": dataset_id, "steps": r["steps"],
        "wall_s": r["wall"], "val_nats": r["val"], "run_val_nats": r["run_val"],
        "params": params, "batch_size": cfg["batch_size"], "window": cfg["window"],
        "predicted_samples": samples, "flops": cost.flops_per_sample(params) * samples, "cores": cores,
        "core_s": r["wall"] * cores, "precision": resolved(cfg.get("precision", "float32 (no precision key)")),
        "sample_rate": cfg.get("sample_rate", 16000), "load": [load0, os.getloadavg()[0]],
        "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, check=False).stdout.strip(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def sig(v: float) -> str:
    """Three significant figures, thousands separated: 0.0123, 1.23, 123, 12,300."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    digits = max(0, 2 - math.floor(math.log10(abs(v))))
    return f"{round(v, digits):,.{digits}f}"


def fmt_range(p: cc.Projection, scale: float) -> str:
    """``low-high (mid)`` in the given unit; an unbounded side says so."""
    def num(v: float) -> str:
        return "never" if math.isinf(v) else sig(v * scale)
    if math.isinf(p.mid):
        return "never (floor above it)"
    return f"{num(p.low)}-{num(p.high)} ({num(p.mid)})"


def fits_for(rows: list[dict], unit: str) -> tuple[cc.Fit | None, cc.HeldOut | None]:
    c, y = [r[unit] for r in rows], [r["val_nats"] for r in rows]
    f = cc.fit(c, y) if len(rows) >= 3 else None
    h = cc.held_out(c, y) if len(rows) >= 4 else None
    return f, h


def runs_table(rows: list[dict]) -> list[str]:
    out = ["| preset | budget min | steps | wall s | FLOPs | core-s | val split nats | bits/sample | bits/s "
           "| precision | load before/after | date, commit |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["preset"], r["minutes"])):
        out.append(f"| {r['preset']} | {r['minutes']:g} | {r['steps']:,} | {r['wall_s']:.0f} | {r['flops']:.3g} "
                   f"| {r['core_s']:,.0f} | {r['val_nats']:.3f} | {bits(r['val_nats']):.3f} "
                   f"| {cc.bits_per_second(r['val_nats'], r['sample_rate']):,.0f} | {r['precision']} "
                   f"| {r['load'][0]:.1f} / {r['load'][1]:.1f} | {r['date']}, {r['commit']} |")
    return out


def projection_tables(preset: str, rows: list[dict]) -> list[str]:
    from waveforms.aws import cost

    out: list[str] = []
    fit_f, held_f = fits_for(rows, "flops")
    fit_c, held_c = fits_for(rows, "core_s")
    if fit_f is None or fit_c is None:
        return [f"\n{preset}: {len(rows)} run(s); a fit needs 3, a held-out check 4."]
    for unit, f, h in (("FLOPs", fit_f, held_f), ("core-seconds", fit_c, held_c)):
        held = (f"held out the largest run ({h.compute:.3g}): predicted {h.predicted:.3f}, measured "
                f"{h.observed:.3f}, error {h.error:+.3f} nats") if h else "no held-out check (4 runs needed)"
        out.append(f"\n{preset}, fit in {unit} over {f.points} runs: L_inf {f.l_inf:.3f}, a {f.a:.3f} at "
                   f"c_ref {f.c_ref:.3g}, b {f.b:.3f}; {held}")
    if held_f is None or held_c is None:
        return out + [f"{preset}: no projection without a held-out error."]
    max_f, max_c = max(r["flops"] for r in rows), max(r["core_s"] for r in rows)
    usd_core = cost.core_hour_usd(CPU_TYPE)
    out += [f"\n{preset}: compute to reach each target, as low-high (fit): the target reached "
            f"{abs(held_f.error):.3f} nats (FLOPs) / {abs(held_c.error):.3f} nats (core-s) sooner or later",
            "| target nats | bits/s | FLOPs (fit) | × largest run | core-hours | $ at "
            f"{CPU_TYPE} per vCPU (${usd_core:.3f}) |", "|---:|---:|---:|---:|---:|---:|"]
    for t in TARGETS:
        pf, pc = cc.project(fit_f, t, held_f.error, max_f), cc.project(fit_c, t, held_c.error, max_c)
        flops = f"{pf.mid:.3g} | {pf.beyond:,.0f}×" if math.isfinite(pf.mid) else "never (below L_inf) | -"
        out.append(f"| {t} | {cc.bits_per_second(t, rows[0]['sample_rate']):,.0f} | {flops} "
                   f"| {fmt_range(pc, 1 / 3600)} | {fmt_range(pc, usd_core / 3600)} |")
    header = " | ".join(f"{g} GPU-h | {g} $ ({cost.gpu_hour_usd(g)[1]})" for g in GPUS)
    out += [f"\nGPU-hours at {cost.TRAINING_SHARE:g} of float32 peak "
            f"({', '.join(f'{g} {cost.GPU_FP32_TFLOPS[g]:g}' for g in GPUS)} TFLOP/s; a stated throughput, "
            "no GPU measured), one GPU per node, priced per GPU-hour from the instance table:",
            f"| target nats | {header} |", "|---:|" + "---:|" * (2 * len(GPUS))]
    for t in TARGETS:
        p = cc.project(fit_f, t, held_f.error, max_f)
        cells = []
        for g in GPUS:
            hours = cost.gpu_hours(g, 1.0)  # hours per FLOP
            cells += [fmt_range(p, hours), fmt_range(p, hours * cost.gpu_hour_usd(g)[0])]
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    reached = [p.beyond for t in TARGETS if math.isfinite((p := cc.project(fit_f, t, held_f.error, max_f)).mid)]
    measured = f"\nMeasured: {min(r['flops'] for r in rows):.3g} to {max_f:.3g} FLOPs."
    if not reached:
        out.append(f"{measured} The FLOPs fit's floor ({fit_f.l_inf:.3f} nats) lies above every target.")
    else:
        beyond = max(reached)
        out.append(f"{measured} Every projection above is an extrapolation of the fit, up to {beyond:,.0f}× past "
                   "the largest run" + (" (more than 1,000×: an order of magnitude at best)." if beyond > 1000 else
                                        "."))
    return out


def plot(rows_by_preset: dict[str, list[dict]], path: Path, title: str) -> None:
    """Loss against FLOPs per preset, each fit drawn on past the largest run to the compute of 1.8 nats."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for preset, rows in rows_by_preset.items():
        c, y = np.array([r["flops"] for r in rows]), np.array([r["val_nats"] for r in rows])
        points = ax.plot(c, y, "o", label=f"{preset} (measured)")[0]
        if len(rows) >= 3:
            f = cc.fit(c, y)
            end = f.compute_for(TARGETS[-1])
            end = c.max() * 1e4 if math.isinf(end) else max(end, c.max()) * 1.5
            xs = np.geomspace(c.min(), c.max(), 50)
            ax.plot(xs, f.loss(xs), "-", color=points.get_color(), label=f"{preset} fit")
            xe = np.geomspace(c.max(), end, 50)
            ax.plot(xe, f.loss(xe), "--", color=points.get_color(), label=f"{preset} extrapolated")
    for t in TARGETS:
        ax.axhline(t, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs: 6 × parameters × predicted samples)")
    ax.set_ylabel("validation split NLL (nats/sample)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".partial")
    fig.savefig(tmp, format="png", dpi=110)
    tmp.replace(path)


def report(rows: list[dict], plot_path: str, title: str = "Loss against compute") -> None:
    print("\n".join(runs_table(rows)))
    by_preset: dict[str, list[dict]] = {}
    for r in rows:
        by_preset.setdefault(r["preset"], []).append(r)
    for preset, prow in by_preset.items():
        print("\n".join(projection_tables(preset, prow)))
    if plot_path:
        plot(by_preset, Path(plot_path), title)
        print(f"\nplot: {plot_path}")


def split_losses(model_dir: Path, ds) -> tuple[float, float]:
    """A kept model's mean NLL (nats) on evenly spaced windows of the training split, as many as the whole
    validation split has, and on the whole validation split; both cut by ``region_windows``."""
    from waveforms.dataset import regions
    from waveforms.evaluate.likelihood import region_windows, windows_nll
    from waveforms.model import load

    wavenet = load(str(model_dir))
    train_regions, val_regions, _ = regions(ds, budget.SCORE_WINDOW)
    val = region_windows(val_regions, budget.SCORE_WINDOW, wavenet.receptive_field)
    train = region_windows(train_regions, budget.SCORE_WINDOW, wavenet.receptive_field)
    train = train[::max(1, len(train) // len(val))][:len(val)]
    (t_sum, t_n), (v_sum, v_n) = (windows_nll(wavenet, ds, w, batch_size=8) for w in (train, val))
    return t_sum / t_n, v_sum / v_n


def fit_gap(runs: list[tuple[str, float]], rows: list[dict], ds, work: Path) -> None:
    """Training against validation loss of each kept model of ``runs``: a model that learns its data by heart
    shows the training split's loss falling below validation's, further with each budget."""
    steps = {(r["preset"], float(r["minutes"])): r["steps"] for r in rows}
    print("| run | steps | training split nats | val split nats | val - training |")
    print("|---|---:|---:|---:|---:|")
    for preset, minutes in runs:
        model_dir = work / f"{preset}-{minutes:g}"
        if not (model_dir / "model.json").exists():
            print(f"{preset} {minutes:g} min: no kept model at {model_dir}, skipped", file=sys.stderr)
            continue
        train, val = split_losses(model_dir, ds)
        print(f"| {preset} {minutes:g} min | {steps.get((preset, minutes), '-')} | {train:.3f} | {val:.3f} "
              f"| {val - train:+.3f} |", flush=True)


def fma_full_cost(preset: str = "default", gpu: str = "A10G", core: str = "g5.xlarge") -> None:
    """An hour of training on fma_full for 1, 8 and 32 GPU nodes, by part, at the stated GPU throughput."""
    from waveforms.aws import cost
    from waveforms.config import TrainConfig

    window, batch = TrainConfig().window, TrainConfig().batch_size
    wps = cost.gpu_windows_per_s(gpu, trainable_params(preset), window)
    full = cost.FMA_FULL
    print(f"{full.name}: {full.gb:.1f} GB of codes; {preset} at {cost.TRAINING_SHARE:g} of the {gpu}'s float32 peak: "
          f"{wps:,.0f} windows/s per GPU; {batch} windows a step; {cost.PRICES.as_of}")
    for label, cache, volume in (("default cache (32 GB of a 64 GB volume)", 32.0, 64),
                                 ("a cache that holds the dataset", full.gb, cost.volume_for_cache(full.gb))):
        print(f"\n{label}: {cost.requests_per_step(batch, cache, full.gb):.2f} GETs a step")
        print(cost.run_table(core, wps, full, cache_gb=cache, volume_gb=volume))
    print(f"GETs reach 10% of a {core} at {cost.breakeven_windows_per_s(core):,.0f} windows/s per GPU.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=DEFAULT_RUNS, help="runs as PRESET:MINUTES,... (default: the whole curve)")
    ap.add_argument("--results", default=str(RESULTS), help="JSON lines, one per finished run (appended)")
    ap.add_argument("--data", default="", help="a transformed dataset (default: the hyperrogue soundtrack)")
    ap.add_argument("--report", action="store_true", help="train nothing; report the results file")
    ap.add_argument("--plot", default="", help="write the curve as a PNG here")
    ap.add_argument("--cost", action="store_true", help="print the fma_full cluster cost tables and stop")
    ap.add_argument("--fit-gap", action="store_true",
                    help="train nothing; score the kept models of --only on the training and validation splits")
    args = ap.parse_args()
    if args.cost:
        fma_full_cost()
        return
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "3"}
    data = Path(args.data) if args.data else budget.build_dataset(env)
    if not (data / "manifest.jsonl").exists():
        raise SystemExit(f"no dataset at {data}")
    from waveforms.dataset import Dataset

    ds = Dataset.open(str(data))
    dataset_id = ds.dataset_id
    results = Path(args.results)
    wanted = parse_runs(args.only)
    if args.fit_gap:
        rows = [r for r in read_results(results) if r["dataset_id"] == dataset_id]
        fit_gap(wanted, rows, ds, budget.OUT / "compute-curve-models")
        return
    if not args.report:
        todo = pending(wanted, read_results(results), dataset_id)
        for preset, minutes in wanted:
            if (preset, minutes) not in todo:
                print(f"{preset} {minutes:g} min: already in {results}, skipped", file=sys.stderr)
        for preset, minutes in todo:
            row = run_one(preset, minutes, data, dataset_id, env, budget.OUT / "compute-curve-models")
            append_result(results, row)
            print(f"{preset} {minutes:g} min: {json.dumps(row)}", file=sys.stderr, flush=True)
    rows = [r for r in read_results(results) if r["dataset_id"] == dataset_id]
    print(f"\n{len(rows)} run(s) of {results} on dataset {dataset_id[:12]}, {os.cpu_count()} cores "
          "(core-seconds count the whole machine)\n")
    report(rows, args.plot, f"Loss against compute: {data.name}, whole validation split")


if __name__ == "__main__":
    main()
