"""f32 matrix products against the machine's sgemm peak (prefill and batches run at this rate).

For each thread count: the peak is numpy's float32 ``a @ b`` (the BLAS sgemm it links: a plain
dense product of large squares, the best of a few sizes), measured in a worker subprocess whose
BLAS thread count is set through the environment; then fasttx's ``y = x · wᵀ`` (the product every
f32 ``Linear`` runs, ``fasttx._native.matmul_rate``, in a pool of that many threads) on model
shapes at m = 1 ... 512 rows, each row printed with its share of the peak; then the peak again, so
that a machine whose speed drifts is compared with what it delivered around the rows (the better
of the two probes is the peak).  Decoding shapes (m = 1..8) are bound by memory, not arithmetic:
their share of the peak is low by nature; the target is m >= 64.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .benchmark import finish_thread_arguments
from .machine import describe, machine_info
from .report import scrub_paths
from .runner import command_line
from .workers import worker_env

# (name, k, n): the weight shapes of the f32 models' Linear layers, and two squares.
SHAPES = (
    ("t5-small/marian d->ff", 512, 2048),
    ("t5-small/marian ff->d", 2048, 512),
    ("smollm2 d->ff", 576, 1536),
    ("smollm2 ff->d", 1536, 576),
    ("qwen2.5-0.5b d->ff", 896, 4864),
    ("qwen2.5-0.5b ff->d", 4864, 896),
    ("square 1024", 1024, 1024),
    ("square 2048", 2048, 2048),
)
ROWS = (1, 4, 8, 64, 128, 512)
# Square sizes the peak is taken over (the best of them).
PEAK_SIZES = (1024, 1536, 2048)
# Seconds of timed runs to aim for per measurement (at least MIN_REPEATS runs).
TARGET_S = 0.25
MIN_REPEATS = 5
# The m from which the target (>= 80% of the peak) applies.
TARGET_ROWS = 64

# Run in a subprocess with the BLAS thread count in its environment (set before numpy loads):
# prints {size: best seconds} as JSON.
_PEAK_WORKER = """
import json, sys, time
import numpy as np
sizes, target, min_reps = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
out = {}
for s in sizes:
    a = rng.standard_normal((s, s), dtype=np.float32)
    b = rng.standard_normal((s, s), dtype=np.float32)
    a @ b
    t = time.perf_counter(); a @ b; once = time.perf_counter() - t
    best = once
    for _ in range(max(min_reps, int(target / max(once, 1e-9)))):
        t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
    out[s] = best
print(json.dumps(out))
"""

BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                         "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def gflops(m: int, k: int, n: int, seconds: float) -> float:
    return 2.0 * m * k * n / seconds / 1e9


def measure_peak(threads: int) -> dict:
    """numpy's float32 ``a @ b`` on ``PEAK_SIZES`` squares with ``threads`` BLAS threads:
    ``{"gflops": best, "by_size": {size: GFLOP/s}}``."""
    sizes = PEAK_SIZES
    env = worker_env()
    for var in BLAS_THREAD_VARIABLES:
        env[var] = str(threads)
    cmd = [sys.executable, "-c", _PEAK_WORKER, json.dumps([list(sizes), TARGET_S, MIN_REPEATS])]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the sgemm peak worker failed: {done.stderr.strip()[-2000:]}")
    best_s = {int(s): t for s, t in json.loads(done.stdout).items()}
    by_size = {s: gflops(s, s, s, t) for s, t in best_s.items()}
    return {"gflops": max(by_size.values()), "by_size": by_size}


def numpy_blas() -> str:
    """The BLAS numpy links (for the report), or ``"?"``."""
    try:
        import numpy as np
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"numpy {np.__version__}, {blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:
        return "?"


def measure_rows(threads: int, shapes, rows, native) -> list[dict]:
    """fasttx ``matmul_rate`` at every (shape, m): one dict each."""
    out = []
    for name, k, n in shapes:
        for m in rows:
            # One untimed run tells how many repeats fill about TARGET_S.
            once, _ = native.matmul_rate(m, k, n, threads, 1)
            repeats = max(MIN_REPEATS, min(2000, int(TARGET_S / max(once, 1e-9))))
            best, median = native.matmul_rate(m, k, n, threads, repeats)
            out.append({"shape": name, "m": m, "k": k, "n": n, "threads": threads, "repeats": repeats,
                        "best_s": best, "median_s": median,
                        "gflops": gflops(m, k, n, best), "gflops_median": gflops(m, k, n, median)})
    return out


def run_threads(threads: int, args, native) -> dict:
    """Peak, rows, peak again with ``threads`` threads."""
    print(f"--- gemm: {threads} thread{'s' if threads > 1 else ''} ---", flush=True)
    before = measure_peak(threads)
    print(f"  sgemm peak (numpy a @ b): {before['gflops']:.1f} GFLOP/s", flush=True)
    rows = measure_rows(threads, args.shapes, args.rows, native)
    after = measure_peak(threads)
    print(f"  sgemm peak again: {after['gflops']:.1f} GFLOP/s", flush=True)
    peak = max(before["gflops"], after["gflops"])
    for r in rows:
        r["percent_of_peak"] = 100.0 * r["gflops"] / peak
    return {"threads": threads, "peak_gflops": peak, "peak_probes": [before, after], "rows": rows,
            "load_average_after": os.getloadavg()}


def summary(runs: dict) -> dict:
    """Per thread count, the lowest and the median % of the peak over the rows with m >= TARGET_ROWS."""
    out = {}
    for t, run in runs.items():
        shares = [r["percent_of_peak"] for r in run["rows"] if r["m"] >= TARGET_ROWS]
        if shares:
            out[t] = {"rows": f"m >= {TARGET_ROWS}", "min_percent_of_peak": min(shares),
                      "median_percent_of_peak": statistics.median(shares)}
    return out


def table(run: dict) -> str:
    header = ["shape", "k", "n", "m", "GFLOP/s (best)", "GFLOP/s (median)", "% of peak"]
    body = [[r["shape"], str(r["k"]), str(r["n"]), str(r["m"]), f"{r['gflops']:.1f}",
             f"{r['gflops_median']:.1f}", f"{r['percent_of_peak']:.0f}%"] for r in run["rows"]]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [[c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
             for row in [header, *body]]
    lines.insert(1, ["-" * w for w in widths])
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)


class GemmBenchmark:
    """``fasttx bench gemm``: the same three entry points as a ``benchmark.Benchmark``."""

    name = "gemm"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=int, default=None,
                       help="measure at 1, 2, ... up to this many threads (default: physical cores)")
        p.add_argument("--threads-list", default=None, help="comma-separated thread counts instead (e.g. 1,2)")
        p.add_argument("--rows", default=",".join(map(str, ROWS)),
                       help="comma-separated row counts m (default: %(default)s)")
        p.add_argument("--shapes", default=None,
                       help="comma-separated subset of the shape names (default: all: "
                            + "; ".join(name for name, _, _ in SHAPES) + ")")
        p.add_argument("--out", default="gemm.json", help="JSON file for the raw numbers")

    def finish_args(self, args: argparse.Namespace, p: argparse.ArgumentParser) -> argparse.Namespace:
        args.benchmark = self.name
        finish_thread_arguments(args, p)
        try:
            args.rows = sorted({int(v) for v in args.rows.split(",") if v})
        except ValueError:
            p.error(f"--rows: expected comma-separated integers, got {args.rows!r}")
        if not args.rows or min(args.rows) < 1:
            p.error("--rows: give positive row counts")
        if args.shapes is None:
            args.shapes = list(SHAPES)
        else:
            wanted = [s.strip() for s in args.shapes.split(",") if s.strip()]
            known = {name: (name, k, n) for name, k, n in SHAPES}
            unknown = [s for s in wanted if s not in known]
            if unknown or not wanted:
                p.error(f"--shapes: unknown {unknown}; choose from {list(known)}")
            args.shapes = [known[s] for s in wanted]
        return args

    def run(self, args: argparse.Namespace) -> int:
        from fasttx import _native

        started = time.time()
        machine = machine_info()
        runs = {str(t): run_threads(t, args, _native) for t in args.thread_counts}
        report = {
            "benchmark": self.name,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command_line(),
            "machine": machine,
            "instruction_set": _native.instruction_set(),
            "peak_method": f"numpy float32 a @ b on {'/'.join(map(str, PEAK_SIZES))} squares, best time of each, "
                           "the best size; measured before and after the rows, the better taken",
            "numpy_blas": numpy_blas(),
            "thread_counts": list(args.thread_counts),
            "runs": runs,
            "summary": summary(runs),
        }
        report["wall_s"] = time.time() - started
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(scrub_paths(report), indent=1) + "\n")

        print()
        print(f"Machine: {describe(machine)}; fasttx kernels: {report['instruction_set']}; peak: {report['numpy_blas']}")
        for t, run in runs.items():
            print(f"\n{t} thread{'s' if int(t) > 1 else ''}: sgemm peak {run['peak_gflops']:.1f} GFLOP/s\n")
            print(table(run))
        for t, s in report["summary"].items():
            print(f"\n{t} thread{'s' if int(t) > 1 else ''}, {s['rows']}: lowest {s['min_percent_of_peak']:.0f}% of the peak, "
                  f"median {s['median_percent_of_peak']:.0f}%")
        print(f"raw numbers: {out}  (total {report['wall_s']:.0f} s)")
        return 0


BENCHMARK = GemmBenchmark()
