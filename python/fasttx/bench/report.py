"""A report's tables (Markdown), its comparisons, and the scrubbing of machine paths before it is written.

Each (workload, runtime) row shows the runtime at its best thread count (what its user would
get by tuning ``threads``).  Each "vs X" column holds two ratios: against X at X's best thread
count, and against X at the row's thread count ("same threads").  A second table per workload
gives every runtime's tokens/s at every thread count measured.
"""

from __future__ import annotations

import os
import re
import site
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from .bandwidth import bandwidth_cell
from .stats import format_ratio, ratio


def summary_at(report: dict, runtime: str, workload: str, threads: Optional[str]) -> Optional[dict]:
    """The summary of ``runtime`` on ``workload`` in the run with ``threads`` threads."""
    run = (report.get("runs") or {}).get(threads) or {}
    return ((run.get("runtimes", {}).get(runtime) or {}).get("workloads", {}).get(workload) or {}).get("summary")


def best_of(report: dict, runtime: str, workload: str) -> Optional[str]:
    """The thread count (string key) at which ``runtime`` ran ``workload`` fastest."""
    return ((report.get("runtimes", {}).get(runtime) or {}).get("workloads", {}).get(workload) or {}).get("best_threads")


def table_rows(report: dict) -> dict:
    """``{(runtime, workload): best thread count}`` for every pair with a result, in table order."""
    rows = {}
    for wl in report["workloads"]:
        for rt in report["runtimes"]:
            t = best_of(report, rt, wl)
            if t is not None:
                rows[(rt, wl)] = t
    return rows


def comparisons(report: dict, references: Sequence[str]) -> dict:
    """``{"runtime/workload": {reference: {"best": ratio, "same_threads": ratio, "threads": t,
    "reference_threads": t_ref}}}``: the runtime at its best thread count against each reference
    at the reference's best thread count (``best``) and at the same thread count (``same_threads``)."""
    out: dict = {}
    for (rt, wl), t in table_rows(report).items():
        mine = summary_at(report, rt, wl, t)["tokens_per_s_median"]
        for ref in references:
            ref_best = best_of(report, ref, wl)
            if ref_best is None:
                continue
            same = summary_at(report, ref, wl, t)
            out.setdefault(f"{rt}/{wl}", {})[ref] = {
                "best": ratio(mine, summary_at(report, ref, wl, ref_best)["tokens_per_s_median"]),
                "same_threads": ratio(mine, same and same["tokens_per_s_median"]),
                "threads": int(t), "reference_threads": int(ref_best),
            }
    return out


def markdown_table(report: dict, labels: dict, *, ratio_columns=(("pytorch", "vs PyTorch"),),
                   show_workload: bool = True, agreement_column: Optional[str] = None,
                   bandwidth_workloads: Sequence[str] = ()) -> str:
    """The results table: one row per (workload, runtime), at the runtime's best thread count.

    ``ratio_columns``: (runtime, header) pairs, each a column "<header> best / same thr" for a
    runtime that took part: this row's tokens/s over that runtime's at its best thread count,
    then at this row's thread count ("–" where there is none).  ``agreement_column``: the
    reference runtime; adds a column "tokens = <reference>" with the matching leading tokens
    (same thread count).  ``bandwidth_workloads``: the workloads that get a "% of bandwidth"
    figure; the column is there only when some run measured the bandwidth.
    """
    ratio_columns = [(rt, h) for rt, h in ratio_columns if rt in report["runtimes"]]
    header = ["runtime"] + (["workload"] if show_workload else []) + ["best threads"]
    header += ["new tokens/s median [min–max]"] + [f"{h} best / same thr" for _, h in ratio_columns]
    rows = table_rows(report)
    decode = any((summary_at(report, rt, wl, t) or {}).get("decode_tokens_per_s_median") is not None
                 for (rt, wl), t in rows.items())
    if decode:
        header.append("decode tokens/s")
    bandwidth = any((run or {}).get("memory_read_gb_per_s") for run in (report.get("runs") or {}).values())
    if bandwidth:
        header.append("% of bandwidth")
    header += ["TTFT ms", "load s", "peak RSS MB"]
    if agreement_column:
        header.append(f"tokens = {labels.get(agreement_column, agreement_column)}")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    compared = comparisons(report, [rt for rt, _ in ratio_columns])
    for (rt, wl), t in rows.items():
        s = summary_at(report, rt, wl, t)
        info = report["runs"][t]["runtimes"][rt]
        cells = [labels.get(rt, rt)] + ([wl] if show_workload else []) + [t]
        cells.append(f"{s['tokens_per_s_median']:.1f} [{s['tokens_per_s_min']:.1f}–{s['tokens_per_s_max']:.1f}]")
        for ref, _ in ratio_columns:
            c = compared.get(f"{rt}/{wl}", {}).get(ref)
            cells.append("–" if c is None else f"{format_ratio(c['best'])} / {format_ratio(c['same_threads'])}")
        if decode:
            d = s.get("decode_tokens_per_s_median")
            cells.append("–" if d is None else f"{d:.1f}")
        if bandwidth:
            cells.append(bandwidth_cell(report, rt, wl, t, bandwidth_workloads))
        rss = info.get("peak_rss_mb")
        cells += [f"{s['ttft_ms_median']:.1f}", f"{info['load_s']:.2f}", "–" if rss is None else f"{rss:.0f}"]
        if agreement_column:
            cells.append(agreement_cell(report["runs"][t].get("agreement_with_pytorch", {}), rt, wl, agreement_column))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def agreement_cell(agreement: dict, runtime: str, workload: str, reference: str) -> str:
    if runtime == reference:
        return "(reference)"
    a = agreement.get(f"{runtime}/{workload}")
    if a is None:
        return "–"
    if "matching_leading_tokens" in a:
        return ", ".join(f"{m}/{n}" for m, n in zip(a["matching_leading_tokens"], a["of_tokens"]))
    return f"{a['identical_sequences']}/{a['of']} sequences"


def thread_scaling(report: dict) -> dict:
    """``{workload: {runtime: {"tokens_per_s": {threads: median}, "ttft_ms": {threads: median}}}}``
    for every thread count measured (the figures of ``threads_table``, for the JSON report)."""
    out: dict = {}
    for wl in report["workloads"]:
        for rt in report["runtimes"]:
            cells = {t: summary_at(report, rt, wl, str(t)) for t in report["thread_counts"]}
            cells = {str(t): s for t, s in cells.items() if s is not None}
            if cells:
                out.setdefault(wl, {})[rt] = {
                    "tokens_per_s": {t: s["tokens_per_s_median"] for t, s in cells.items()},
                    "ttft_ms": {t: s["ttft_ms_median"] for t, s in cells.items()},
                }
    return out


def threads_table(report: dict, labels: dict, workload: str) -> str:
    """Median new tokens/s of ``workload`` for each runtime (rows) at each thread count
    (columns), the best in bold."""
    counts = [str(t) for t in report["thread_counts"]]
    header = ["runtime"] + [f"{t} thread{'s' if int(t) > 1 else ''}" for t in counts]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for rt in report["runtimes"]:
        best = best_of(report, rt, workload)
        if best is None:
            continue
        cells = [labels.get(rt, rt)]
        for t in counts:
            s = summary_at(report, rt, workload, t)
            value = "–" if s is None else f"{s['tokens_per_s_median']:.1f}"
            cells.append(f"**{value}**" if t == best else value)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# No paths of this machine in what is written
# ---------------------------------------------------------------------------


def path_replacements() -> list[tuple[str, str]]:
    """(prefix, stand-in) pairs, longest prefix first: the directories of this machine that
    show up in a report (the interpreter's, site-packages, the source tree, the temp and home
    directories, the current directory)."""
    here = Path(__file__).resolve().parent.parent.parent  # the directory holding the fasttx package
    pairs = {str(here): "<fasttx-src>", tempfile.gettempdir(): "<tmp>", os.path.expanduser("~"): "~"}
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix):
        pairs[prefix] = "<python>"
    for sp in [*site.getsitepackages(), site.getusersitepackages()]:
        pairs[sp] = "<site-packages>"
    cwd = os.getcwd()
    if cwd not in (os.sep, os.path.expanduser("~")):
        pairs[cwd] = "."
    return sorted(((p, s) for p, s in pairs.items() if p and p != os.sep), key=lambda ps: -len(ps[0]))


def scrub_paths(value, replacements: Optional[list] = None):
    """``value`` (any JSON value) with every machine path prefix of ``path_replacements`` in its
    strings (keys included) replaced by its stand-in: ``<site-packages>/fasttx/_native.so``,
    ``~/.cache/...``, ``./benchmarks/results/t5.json``; so is any directory up to a
    ``site-packages`` / ``dist-packages``."""
    reps = path_replacements() if replacements is None else replacements
    if isinstance(value, str):
        for prefix, stand_in in reps:
            # Only whole path components: /home/a must not turn /home/ab into ~b.
            value = re.sub(re.escape(prefix) + r"(?![^/\s\"',:;)\]])", stand_in, value)
        # Packages installed elsewhere (another environment on sys.path, e.g. through a .pth file).
        return re.sub(r"/[^\s\"',:;<>]*?/(?:site|dist)-packages(?=/)", "<site-packages>", value)
    if isinstance(value, dict):
        return {scrub_paths(k, reps): scrub_paths(v, reps) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_paths(v, reps) for v in value]
    return value
