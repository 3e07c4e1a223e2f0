"""A whole benchmark run: every runtime at every thread count, then one report.

Nothing here imports a runtime library (torch, transformers, ctranslate2, llama_cpp, not even
fasttx's native module) at import time: those are imported in the worker subprocesses only, so
the package imports anywhere and a runtime that is not installed is reported as skipped.  The
parent imports fasttx's native module only when a run needs it (the memory bandwidth probe, and
reading a fasttx model's weight bytes per step), and goes on without those figures if it cannot.

For each thread count T of the sweep (1..``--threads``, or ``--threads-list``), one after the
other: the memory bandwidth is probed with T threads, a worker per runtime is started with T
threads (``workers``), the schedule runs (``schedule``: warm-up, interleaved repeats; the
bandwidth probed again after each repeat), and the workers exit, reporting their peak RSS.
Then each runtime's best thread count per workload is chosen (``stats.best_threads``), the
comparisons made (``report.comparisons``), the tables printed and the JSON written with no path
of this machine in it (``report.scrub_paths``), and the charts drawn (``charts``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import bandwidth, charts
from . import report as reports
from .machine import BANDWIDTH_MB, describe, machine_info, measure_memory_bandwidth
from .protocol import changed_files
from .schedule import empty_cell, run_schedule
from .stats import best_threads, summarize
from .workers import available_runtimes, start_workers, worker_command


def run_thread_count(bench, args, threads: int, runtimes: list, pool, log_dir: Path) -> dict:
    """Measure every runtime of ``runtimes`` with ``threads`` threads: one entry of ``runs``."""
    load_before = os.getloadavg()
    skipped: dict = {}
    warnings: list = []
    run: dict = {"threads": threads}

    # The ceiling the batch-1 rates are compared with: measured before any worker exists and
    # again after every repeat (the workers idle then), the median taken, so that a machine
    # whose speed drifts during the run (shared VMs) is compared with what it delivered then.
    megabytes = getattr(args, "bandwidth_mb", BANDWIDTH_MB)
    if megabytes > 0:
        print(f"measuring memory read bandwidth ({megabytes} MB, {threads} threads) ...", flush=True)
    bw, why_not = measure_memory_bandwidth(threads, megabytes)
    probes = [] if bw is None else [bw]
    if bw is None:
        run["memory_bandwidth_skipped"] = why_not
        print(f"  memory bandwidth: {why_not}", flush=True)
    else:
        print(f"  {bw:.1f} GB/s", flush=True)

    def probe_again():
        if probes:
            again, _ = measure_memory_bandwidth(threads, megabytes)
            if again is not None:
                probes.append(again)

    print(f"starting workers ({threads} threads) ...", flush=True)
    workers = start_workers(runtimes, lambda rt: worker_command(bench, rt, args, threads), log_dir, skipped)
    results = {rt: {wl: empty_cell() for wl in args.workloads} for rt in workers}
    checks = bench.check_ready(workers, pool, warnings)
    run_runtimes = {}
    try:
        run_schedule(bench, workers, args.workloads, pool, args.repeats, args.new_tokens,
                     results, warnings, after_repeat=probe_again)
    finally:
        for rt, w in workers.items():
            try:
                rss_kb = w.close()["maxrss_kb"]
            except Exception as exc:  # report what we have even if a worker died
                warnings.append(f"{rt}: could not read peak RSS: {exc}")
                rss_kb = None
            run_runtimes[rt] = {
                "import_s": w.ready["import_s"], "load_s": w.ready["load_s"],
                "peak_rss_mb": None if rss_kb is None else rss_kb / 1024,
                "versions": w.ready["versions"], "native_files": w.ready.get("native_files", {}),
                "decode_weight_bytes": w.ready.get("decode_weight_bytes"), "workloads": {},
            }
    for rt, w in workers.items():
        for path in changed_files(w.ready.get("native_files", {})):
            warnings.append(f"WARNING: {path} changed during the run ({rt} numbers may mix two builds); rerun")
    agreement = bench.check_agreement(results, args.workloads, warnings)
    checks.update(bench.extra_checks(results, args.workloads))
    for rt, cells in results.items():
        for wl, cell in cells.items():
            cell["summary"] = summarize(cell, decode_rate=True)
            run_runtimes[rt]["workloads"][wl] = cell
    run.update({
        "memory_read_gb_per_s": statistics.median(probes) if probes else None,
        "memory_read_gb_per_s_probes": probes,
        "memory_bandwidth_mb": megabytes if probes else None,
        "load_average_before_after": [load_before, os.getloadavg()],
        "runtimes": run_runtimes, "agreement_with_pytorch": agreement, "checks": checks,
        "skipped": skipped, "warnings": warnings,
    })
    return run


def merge_runtimes(bench, args, runs: dict) -> dict:
    """The report's ``runtimes``: per runtime its versions, weight bytes per step, and per
    workload the best thread count and the summary at every count."""
    out: dict = {}
    for run in runs.values():
        for rt, info in run["runtimes"].items():
            entry = out.setdefault(rt, {"versions": info["versions"], "decode_weight_bytes": None, "workloads": {}})
            if entry["decode_weight_bytes"] is None:
                entry["decode_weight_bytes"] = info.get("decode_weight_bytes")
    for rt, entry in out.items():
        for wl in args.workloads:
            by_threads = {t: (run["runtimes"].get(rt, {}).get("workloads", {}).get(wl) or {}).get("summary")
                          for t, run in runs.items()}
            entry["workloads"][wl] = {"best_threads": best_threads(by_threads), "by_threads": by_threads}
    # Weight bytes per batch-1 step: the fasttx workers' own, the others' from their fasttx
    # counterpart (loaded here, after the timing, if it did not run).
    weight_bytes = bandwidth.weight_bytes_per_runtime(
        list(out), {rt: e["decode_weight_bytes"] for rt, e in out.items()},
        bench.fasttx_dtypes, bench.weight_counterparts,
        lambda rt: bandwidth.load_weight_bytes(bench, args, rt),
    )
    for rt, wb in weight_bytes.items():
        out[rt]["decode_weight_bytes"] = wb["bytes"]
        out[rt]["decode_weight_bytes_from"] = wb["from"]
    return out


def command_line(argv=None) -> str:
    """How this run was started, for the report (``fasttx bench ...``, ``python -m fasttx.bench
    ...`` or the script's path relative to the current directory)."""
    argv = list(sys.argv if argv is None else argv)
    first = argv[0] if argv else ""
    if first.endswith("__main__.py") and Path(first).parent.name == "bench":
        head = "python -m fasttx.bench"
    elif os.path.basename(first) == "fasttx":
        head = "fasttx"
    else:
        head = os.path.relpath(first) if first else "?"
    return " ".join([head] + argv[1:])


def run(bench, args) -> int:
    """Run benchmark ``bench`` with parsed ``args`` (thread_counts, repeats, out, runtimes,
    workloads, new_tokens, ...): prepare, measure, compare, print and write the JSON report."""
    started = time.time()
    machine = machine_info()
    load_before = os.getloadavg()
    skipped: dict = {}
    warnings: list = []
    usable = machine.get("usable_cpus") or machine.get("logical_cpus")
    if usable and args.threads > usable:
        warnings.append(f"WARNING: {args.threads} threads on {usable} usable CPUs: the runtimes share cores "
                        "at the top thread counts")
    runtimes = available_runtimes(bench, args.runtimes, skipped)
    runtimes = bench.prepare(args, runtimes, skipped)
    pool = bench.inputs(args)

    log_dir = Path(tempfile.mkdtemp(prefix=f"bench_{bench.name}_logs_"))
    runs: dict = {}
    for t in args.thread_counts:
        print(f"--- {bench.name}: {t} thread{'s' if t > 1 else ''} (thread counts {args.thread_counts}) ---",
              flush=True)
        t_logs = log_dir / f"threads-{t}"
        t_logs.mkdir()
        runs[str(t)] = run_thread_count(bench, args, t, runtimes, pool, t_logs)
        warnings += [f"{t} threads: {w}" for w in runs[str(t)]["warnings"]]
        for rt, reason in runs[str(t)]["skipped"].items():
            skipped.setdefault(rt, f"{t} threads: {reason}")

    report_runtimes = merge_runtimes(bench, args, runs)
    versions = {"python": platform.python_version()}
    for info in report_runtimes.values():
        versions.update(info["versions"])
    fields = bench.report_fields(args, pool)
    report = {
        "benchmark": bench.name,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line(),
        "machine": machine,
        "thread_counts": list(args.thread_counts),
        "load_average_before_after": [load_before, os.getloadavg()],
        "versions": versions,
        "model": fields.get("model", {}),
        "setup": fields.get("setup", {}),
        "workloads": args.workloads,
        "runtimes": report_runtimes,
        "runs": runs,
        "skipped": skipped,
        "warnings": warnings,
    }
    references = [rt for rt, _ in bench.ratio_columns]
    report["comparisons"] = reports.comparisons(report, references)
    report["thread_scaling"] = reports.thread_scaling(report)
    report["percent_of_bandwidth"] = bandwidth.bandwidth_figures(
        report, reports.table_rows(report), bench.batch1_workloads())

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    chart_notes = {}
    for key, suffix, draw in (("chart", "", charts.write_chart), ("threads_chart", "-threads", charts.write_threads_chart)):
        if getattr(args, "no_chart", False):
            path, note = None, "skipped (--no-chart)"
        else:
            path, note = draw(report, charts.chart_path(out, suffix), bench.labels)
        report[key] = None if path is None else path.name  # next to the JSON
        chart_notes[key] = (path, note)
    report["wall_s"] = time.time() - started
    out.write_text(json.dumps(reports.scrub_paths(report), indent=1) + "\n")

    print_report(bench, args, report)
    for key, (path, note) in chart_notes.items():
        print(f"{key.replace('_', ' ')}: {path}" if path is not None else f"{key.replace('_', ' ')}: not written: {note}")
    # The workers' logs only matter when something went wrong.
    if warnings or skipped:
        print(f"worker logs: {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0


def print_report(bench, args, report: dict) -> None:
    """The tables and notes of ``report`` on stdout."""
    counts = report["thread_counts"]
    print()
    print(f"Machine: {describe(report['machine'])}")
    print(f"Threads: each runtime at {', '.join(map(str, counts))}; the table shows each at its best count")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    before, after = report["load_average_before_after"]
    print(f"Load average before / after: {before[0]:.2f} / {after[0]:.2f}")
    header = bench.print_header(args)
    if header:
        print(header + "\n")
    print(bench.table(report))
    print()
    print("vs X best / same thr: this row's tokens/s over X's at X's best thread count / at this row's thread count")
    # Every workload's thread scaling, even for a single count (the table then says which).
    for wl in report["workloads"]:
        print(f"\n{wl}: median new tokens/s by thread count (best in bold)\n")
        print(reports.threads_table(report, bench.labels, wl))
    print()
    for line in bandwidth.bandwidth_lines(report, bench.labels, bench.bandwidth_note):
        print(line)
    print()
    top = report["runs"][str(counts[-1])]
    for key, a in top.get("agreement_with_pytorch", {}).items():
        line = f"agreement with PyTorch {key} at {counts[-1]} threads: {a['identical_sequences']}/{a['of']} sequences identical"
        if "matching_leading_tokens" in a:
            line += " (leading tokens equal: " + ", ".join(
                f"{m}/{n}" for m, n in zip(a["matching_leading_tokens"], a["of_tokens"])) + ")"
        print(line)
    for key, value in top.get("checks", {}).items():
        print(f"{key} at {counts[-1]} threads: {json.dumps(value)}")
    for rt, reason in report["skipped"].items():
        print(f"skipped {rt}: {reason.strip().splitlines()[-1]}")
    for w in report["warnings"]:
        print(w)
    print(f"raw numbers: {args.out}  (total {report['wall_s']:.0f} s)")
