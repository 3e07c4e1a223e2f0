"""Thread scaling: W1 (T5) greedy batch 1 at 1, 2, 4, ... threads, every runtime.

Usage::

    fasttx bench scaling [--threads 4 | --threads-list 1,2,3,4] [--runtimes fasttx,ctranslate2]
                         [--repeats 3] [--out BENCHMARKS-scaling.json]

What it does
------------
For each thread count T (``--threads-list``; default: 1, then doubling, up to ``--threads`` or
the physical core count, which is always included), runs ``fasttx bench t5 --workloads greedy_b1 --threads T``
with the chosen runtimes (default: all of W1's, those not installed are skipped) through the T5
benchmark's own entry point, so everything in ``fasttx.bench.t5`` holds: one worker per runtime,
warm-up, interleaved repeats, correctness checks, and the memory bandwidth measured with T
threads.  Then prints a table (one row per runtime, one column per thread count: median new
tokens/s, and the speedup from the fewest threads to the most), writes the JSON (each thread
count's whole T5 report included under ``runs``) and, when matplotlib is installed, a line chart
next to it (same path, ``.png``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from . import harness, t5

WORKLOAD = "greedy_b1"
RUNTIMES = t5.RUNTIMES
DEFAULT_OUT = "BENCHMARKS-scaling.json"
DEFAULT_REPEATS = 3


def default_thread_list(max_threads: Optional[int] = None) -> list[int]:
    """1, 2, 4, ... below ``max_threads`` (default: the physical cores), then ``max_threads``."""
    top = max(1, max_threads or harness.default_threads())
    out, t = [], 1
    while t < top:
        out.append(t)
        t *= 2
    out.append(top)
    return out


def parse_thread_list(value: str) -> list[int]:
    """``"4,1,2,2"`` -> ``[1, 2, 4]``; ValueError on anything but positive integers."""
    counts = set()
    for part in harness.split_list(value):
        t = int(part)
        if t < 1:
            raise ValueError(f"thread count {t} < 1")
        counts.add(t)
    if not counts:
        raise ValueError("empty thread list")
    return sorted(counts)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="the largest thread count: runs 1, 2, 4, ... up to it, it included "
                        "(default: physical cores)")
    p.add_argument("--threads-list", default=None,
                   help="comma-separated thread counts, instead of --threads' list (e.g. 1,2,3,4)")
    p.add_argument("--runtimes", default=",".join(RUNTIMES),
                   help="comma-separated subset of " + ",".join(RUNTIMES))
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help=f"timed runs per (runtime, thread count) (default {DEFAULT_REPEATS})")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON file for the raw numbers")
    p.add_argument("--model-dir", type=Path, default=Path(t5.DEFAULT_MODEL_DIR).expanduser(),
                   help=f"where the random T5 model is built once (default {t5.DEFAULT_MODEL_DIR})")
    p.add_argument("--new-tokens", type=int, default=t5.NEW_TOKENS,
                   help=f"new tokens (default {t5.NEW_TOKENS}; change only for smoke tests)")
    harness.add_report_arguments(p)


def finish_args(args: argparse.Namespace, p: argparse.ArgumentParser) -> argparse.Namespace:
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.threads is not None and args.threads_list is not None:
        p.error("give --threads (1, 2, 4, ... up to it) or --threads-list, not both")
    if args.threads_list is None:
        args.threads_list = default_thread_list(args.threads)
    elif not isinstance(args.threads_list, list):
        try:
            args.threads_list = parse_thread_list(args.threads_list)
        except ValueError as exc:
            p.error(f"--threads-list: {exc} (expected e.g. 1,2,4)")
    args.model_dir = Path(args.model_dir).expanduser().absolute()
    harness.check_run_arguments(args, p, RUNTIMES)
    return args


def t5_argv(args: argparse.Namespace, threads: int, out: Path) -> list[str]:
    """The ``fasttx bench t5`` arguments of the run at ``threads`` threads."""
    return ["--workloads", WORKLOAD, "--threads", str(threads), "--runtimes", ",".join(args.runtimes),
            "--repeats", str(args.repeats), "--new-tokens", str(args.new_tokens),
            "--model-dir", str(args.model_dir), "--bandwidth-mb", str(args.bandwidth_mb),
            "--out", str(out), "--no-chart"]


def run_t5(argv: Sequence[str]) -> tuple[int, Optional[dict]]:
    """``fasttx bench t5 ARGV`` in this process: (exit status, its JSON report or None)."""
    p = argparse.ArgumentParser(prog="fasttx bench t5")
    t5.add_arguments(p)
    sub = t5.finish_args(p.parse_args(list(argv)), p)
    code = t5.run(sub)
    out = Path(sub.out)
    return code, json.loads(out.read_text()) if out.is_file() else None


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


def collect(runs: dict, runtimes: Sequence[str]) -> dict:
    """From ``{threads: T5 report}`` to the scaling fields: ``tokens_per_s`` (runtime -> threads
    -> median/min/max new tokens/s of greedy_b1) and ``memory_read_gb_per_s`` (threads -> GB/s).
    Thread counts are string keys, as in the JSON."""
    tps: dict = {rt: {} for rt in runtimes}
    bandwidth: dict = {}
    for threads, report in runs.items():
        key = str(threads)
        if report is None:
            continue
        bandwidth[key] = harness.memory_bandwidth_of(report)
        for rt, info in report.get("runtimes", {}).items():
            s = (info.get("workloads", {}).get(WORKLOAD) or {}).get("summary")
            if s:
                tps.setdefault(rt, {})[key] = {
                    "median": s["tokens_per_s_median"], "min": s["tokens_per_s_min"],
                    "max": s["tokens_per_s_max"],
                }
    return {"tokens_per_s": tps, "memory_read_gb_per_s": bandwidth}


def speedup(cells: dict, lo: int, hi: int) -> Optional[float]:
    a, b = cells.get(str(lo)), cells.get(str(hi))
    if not a or not b or not a["median"]:
        return None
    return b["median"] / a["median"]


def scaling_table(report: dict, labels: dict) -> str:
    """Rows = runtimes, columns = thread counts (median new tokens/s of greedy_b1), then the
    speedup from the fewest threads to the most (when there are at least two counts)."""
    counts = [int(t) for t in report["thread_counts"]]
    header = ["runtime"] + [f"{t} thread{'s' if t > 1 else ''}" for t in counts]
    if len(counts) > 1:
        header.append(f"speedup {counts[0]}→{counts[-1]}")
    rows = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for rt, cells in report["tokens_per_s"].items():
        if not cells:
            continue
        row = [labels.get(rt, rt)]
        for t in counts:
            c = cells.get(str(t))
            row.append("–" if not c else f"{c['median']:.1f}")
        if len(counts) > 1:
            x = speedup(cells, counts[0], counts[-1])
            row.append("–" if x is None else f"{x:.2f}×")
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join(rows)


def bandwidth_line(report: dict) -> str:
    bw = report.get("memory_read_gb_per_s") or {}
    parts = [f"{t} thr {v:.1f}" for t, v in bw.items() if v]
    if not parts:
        return "Memory read bandwidth: not measured"
    return "Memory read bandwidth (GB/s) by threads: " + ", ".join(parts)


def write_scaling_chart(report: dict, path) -> tuple[Optional[Path], str]:
    counts = [int(t) for t in report["thread_counts"]]
    series = {rt: {int(t): c["median"] for t, c in cells.items()}
              for rt, cells in report["tokens_per_s"].items()}
    machine = report.get("machine") or {}
    title = (f"fasttx bench scaling, T5 {WORKLOAD}: {machine.get('cpu', '?')}, "
             f"{str(report.get('date', ''))[:10]}")
    return harness.write_line_chart(series, counts, path, title=title, xlabel="threads",
                                    ylabel="new tokens/s (median)", labels=t5.RUNTIME_LABELS)


def run(args: argparse.Namespace) -> int:
    started = time.time()
    counts = list(args.threads_list)
    machine = harness.machine_info(max(counts))
    usable = machine.get("usable_cpus") or machine.get("logical_cpus")
    warnings = []
    if usable and max(counts) > usable:
        warnings.append(f"WARNING: {max(counts)} threads on {usable} usable CPUs: the runtimes "
                        "share cores at the top thread counts")
    runs: dict = {}
    status = 0
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        for t in counts:
            print(f"--- scaling: T5 {WORKLOAD}, {t} thread{'s' if t > 1 else ''} (its report goes "
                  f"into {args.out}, runs[\"{t}\"]) ---", flush=True)
            code, report = run_t5(t5_argv(args, t, Path(tmp) / f"t5-{t}.json"))
            status = status or code
            runs[str(t)] = report
            if report is None:
                warnings.append(f"{t} threads: the T5 run wrote no report")
            else:
                warnings += [f"{t} threads: {w}" for w in report.get("warnings", [])]
            print(flush=True)

    report = {
        "benchmark": "scaling",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": harness.command_line(),
        "machine": machine,
        "workload": f"t5/{WORKLOAD}",
        "thread_counts": counts,
        "runtimes": list(args.runtimes),
        "setup": {"repeats": args.repeats, "new_tokens": args.new_tokens,
                  "model_dir": str(args.model_dir), "bandwidth_mb": args.bandwidth_mb},
        **collect(runs, args.runtimes),
        "skipped": {t: r.get("skipped", {}) for t, r in runs.items() if r},
        "warnings": warnings,
        "runs": runs,
        "wall_s": time.time() - started,
    }
    out = Path(args.out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    if args.no_chart:
        chart, note = None, "skipped (--no-chart)"
    else:
        chart, note = write_scaling_chart(report, harness.chart_path(out))
    report["chart"] = None if chart is None else str(chart)
    out.write_text(json.dumps(report, indent=1) + "\n")

    print(f"Thread scaling, T5 {WORKLOAD} ({args.new_tokens} new tokens, {args.repeats} repeats), "
          f"median new tokens/s: {machine['cpu']}, {machine['physical_cores']} physical cores / "
          f"{machine['logical_cpus']} logical CPUs")
    print()
    print(scaling_table(report, t5.RUNTIME_LABELS))
    print()
    print(bandwidth_line(report))
    for w in warnings:
        print(w)
    print(f"raw numbers: {args.out}  (total {report['wall_s']:.0f} s)")
    print(f"chart: {chart}" if chart is not None else f"chart: not written: {note}")
    return status
