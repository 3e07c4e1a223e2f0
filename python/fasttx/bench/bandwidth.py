"""The "% of bandwidth" figure: how close a batch-1 rate comes to streaming the weights from memory.

    % of bandwidth = tokens/s x weight bytes per step / memory read bandwidth x 100

At batch 1 a decoding step reads every decoder weight and the LM head once, so 100% is a runtime
doing nothing but read its weights from DRAM.  That is a ceiling only when the weights do not
fit in the last-level cache: when they do (``machine.last_level_cache``), a step may read them
from the cache and the figure says nothing about memory; the table cell says so instead of
showing a percentage (the JSON keeps the number, flagged ``weights_fit_in_llc``).

The bandwidth is measured in the parent with the thread count of the run it belongs to (before
the workers of that count start, and after each repeat; the median is used).  Weight bytes per
step: fasttx workers report their own (``decode_weight_bytes``); another runtime takes the
figure of the fasttx runtime that stores its weights the same way (``weight_counterparts``).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from .machine import format_bytes


def decode_weight_bytes(model) -> Optional[int]:
    """``model._native.decode_weight_bytes`` of a loaded fasttx model (None if this build lacks
    it); fasttx runtimes return it from ``ready_info``."""
    nbytes = getattr(getattr(model, "_native", None), "decode_weight_bytes", None)
    return None if nbytes is None else int(nbytes)


def load_weight_bytes(bench, args, runtime: str) -> Optional[int]:
    """``decode_weight_bytes`` of fasttx runtime ``runtime``, loading fasttx in this process
    (None when fasttx or the property is not available)."""
    try:
        import fasttx

        print(f"  loading {runtime} to read its weight bytes per step ...", flush=True)
        model = fasttx.load(bench.model_path(args), dtype=bench.fasttx_dtypes[runtime], threads=1)
        nbytes = decode_weight_bytes(model)
        del model
    except Exception as exc:
        print(f"  could not read {runtime}'s weight bytes per step: {exc!r}", flush=True)
        return None
    return nbytes


def weight_bytes_per_runtime(runtimes: Sequence[str], measured: dict, fasttx_runtimes,
                             counterparts: dict, load: Callable[[str], Optional[int]]) -> dict:
    """Weight bytes of one batch-1 step for each runtime of ``runtimes``.

    ``measured``: fasttx runtime -> ``decode_weight_bytes`` its worker reported (None if not).
    A fasttx runtime (in ``fasttx_runtimes``) has its own figure.  Another runtime gets the figure
    of its counterpart in ``counterparts``: the one measured in this run, else ``load(counterpart)``
    (fasttx loaded in the parent just to read the number; called at most once per counterpart).
    Returns runtime -> ``{"bytes": int or None, "from": the fasttx runtime it comes from or None}``.
    """
    loaded: dict = {}
    out = {}
    for rt in runtimes:
        if rt in fasttx_runtimes:
            out[rt] = {"bytes": measured.get(rt), "from": rt}
            continue
        source = counterparts.get(rt)
        if source is None:
            out[rt] = {"bytes": None, "from": None}
            continue
        nbytes = measured.get(source)
        if nbytes is None:
            if source not in loaded:
                loaded[source] = load(source)
            nbytes = loaded[source]
        out[rt] = {"bytes": nbytes, "from": source}
    return out


def bandwidth_of_run(run: Optional[dict]) -> Optional[float]:
    """The memory read bandwidth (GB/s) measured in one thread count's run; None if not measured."""
    return (run or {}).get("memory_read_gb_per_s") or None


def rate_for_bandwidth(summary: dict) -> Optional[float]:
    """The tokens/s the figure uses: the decode rate when the summary has one (prefill taken
    out), else the whole call's tokens/s."""
    d = summary.get("decode_tokens_per_s_median")
    return d if d is not None else summary.get("tokens_per_s_median")


def weights_fit_in_llc(report: dict, runtime: str) -> Optional[bool]:
    """Whether ``runtime``'s weight bytes per step fit in the machine's last-level cache (None
    when either size is unknown)."""
    llc = ((report.get("machine") or {}).get("last_level_cache") or {}).get("size_bytes")
    nbytes = (report.get("runtimes", {}).get(runtime) or {}).get("decode_weight_bytes")
    if not llc or not nbytes:
        return None
    return nbytes <= llc


def percent_of_bandwidth(report: dict, runtime: str, workload: str, threads: str,
                         bandwidth_workloads: Sequence[str]) -> Optional[float]:
    """tokens/s x weight bytes per step / bandwidth, in percent, for ``runtime`` on ``workload``
    at ``threads`` threads (against the bandwidth measured with as many threads).

    Only for ``bandwidth_workloads`` (batch 1: at larger batches the same bytes serve several
    rows and the figure would mean something else), and only when the bandwidth, the runtime's
    weight bytes and a summary are all known; else None.
    """
    if workload not in bandwidth_workloads:
        return None
    run = (report.get("runs") or {}).get(threads)
    bw = bandwidth_of_run(run)
    nbytes = (report.get("runtimes", {}).get(runtime) or {}).get("decode_weight_bytes")
    info = (run or {}).get("runtimes", {}).get(runtime) or {}
    summary = (info.get("workloads", {}).get(workload) or {}).get("summary")
    if not bw or not nbytes or not summary:
        return None
    rate = rate_for_bandwidth(summary)
    return None if rate is None else rate * nbytes / (bw * 1e9) * 100


def bandwidth_cell(report: dict, runtime: str, workload: str, threads: str,
                   bandwidth_workloads: Sequence[str]) -> str:
    """The table cell: ``"81%"``, ``"–"`` (no figure), or, when the weights fit in the LLC,
    ``"n/a: 41 MB fit in L3 (480 MiB)"`` (the DRAM figure is no ceiling then)."""
    pct = percent_of_bandwidth(report, runtime, workload, threads, bandwidth_workloads)
    if pct is None:
        return "–"
    if weights_fit_in_llc(report, runtime):
        llc = report["machine"]["last_level_cache"]
        nbytes = report["runtimes"][runtime]["decode_weight_bytes"]
        return f"n/a: {nbytes / 1e6:.0f} MB fit in {llc['name']} ({format_bytes(llc['size_bytes'])})"
    return f"{pct:.0f}%"


def bandwidth_figures(report: dict, rows: dict, bandwidth_workloads: Sequence[str]) -> dict:
    """``{"runtime/workload": {"percent", "threads", "weights_fit_in_llc"}}`` for each row of
    ``rows`` (``{(runtime, workload): threads}``) that has a figure."""
    out = {}
    for (rt, wl), threads in rows.items():
        pct = percent_of_bandwidth(report, rt, wl, threads, bandwidth_workloads)
        if pct is not None:
            out[f"{rt}/{wl}"] = {"percent": pct, "threads": int(threads),
                                 "weights_fit_in_llc": weights_fit_in_llc(report, rt)}
    return out


def bandwidth_lines(report: dict, labels: dict, note: str = "") -> list[str]:
    """What is printed under the table: the bandwidth measured at each thread count, each
    runtime's weight bytes per step against the LLC, and what the column measures."""
    lines = []
    runs = report.get("runs") or {}
    measured = {t: bandwidth_of_run(run) for t, run in runs.items()}
    if any(measured.values()):
        parts = []
        for t, bw in measured.items():
            if bw:
                probes = runs[t].get("memory_read_gb_per_s_probes") or []
                spread = f" (median of {len(probes)}: {', '.join(f'{p:.1f}' for p in probes)})" if len(probes) > 1 else ""
                parts.append(f"{t} thread{'s' if int(t) > 1 else ''} {bw:.1f} GB/s{spread}")
        mb = next((r.get("memory_bandwidth_mb") for r in runs.values() if r.get("memory_bandwidth_mb")), None)
        lines.append(f"Memory read bandwidth ({mb} MB buffer, best of several reads; probed before each "
                     "thread count's run and after each repeat): " + "; ".join(parts))
    else:
        why = next((r.get("memory_bandwidth_skipped") for r in runs.values() if r.get("memory_bandwidth_skipped")),
                   "not measured")
        lines.append(f"Memory read bandwidth: {why}; no % of bandwidth column")
    llc = (report.get("machine") or {}).get("last_level_cache")
    parts = []
    for rt, info in report.get("runtimes", {}).items():
        nbytes = info.get("decode_weight_bytes")
        label = labels.get(rt, rt)
        if nbytes is None:
            parts.append(f"{label} unknown")
            continue
        source = info.get("decode_weight_bytes_from")
        via = f" (as {labels.get(source, source)})" if source and source != rt else ""
        fits = " (fits in the LLC)" if llc and nbytes <= llc["size_bytes"] else ""
        parts.append(f"{label} {nbytes / 1e6:.1f} MB{via}{fits}")
    if parts:
        llc_text = f"; last-level cache {llc['name']} {format_bytes(llc['size_bytes'])}" if llc else \
            "; last-level cache size unknown"
        lines.append("Weights read per batch-1 step: " + ", ".join(parts) + llc_text)
    if any(measured.values()):
        lines.append("% of bandwidth = tokens/s x weight bytes per step / DRAM read bandwidth at the row's "
                     "thread count, batch-1 workloads only; \"n/a\" where the weights fit in the last-level "
                     "cache (then DRAM bandwidth is no ceiling)" + (f"; {note}" if note else ""))
    return lines
