"""PNG charts next to a JSON report (optional: matplotlib; a chart never fails a benchmark).

``<out>.png``: median new tokens/s per workload (groups) and runtime (bars) at each runtime's
best thread count, min–max over the repeats as error bars.  ``<out>-threads.png``: tokens/s
against the thread count, one panel per workload, one line per runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .report import best_of, summary_at


def chart_path(out, suffix: str = "") -> Path:
    """The PNG next to a JSON report: same path, ``<suffix>.png`` instead of ``.json``."""
    out = Path(out)
    return out.with_name(out.stem + suffix + ".png")


def _figure(width: float = 10, height: float = 5.5):
    """A matplotlib Figure drawn by the Agg backend (no pyplot: no global backend, no display);
    ImportError when matplotlib is not installed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def chart_title(report: dict) -> str:
    machine = report.get("machine") or {}
    counts = report.get("thread_counts") or []
    threads = f"best of {counts[0]}–{counts[-1]} threads" if len(counts) > 1 else \
        f"{counts[0] if counts else '?'} threads"
    what = f"fasttx bench {report.get('benchmark', '')}".strip()
    return f"{what}: {machine.get('cpu', '?')}, {threads}, {str(report.get('date', ''))[:10]}"


def _drawn_workloads(report: dict) -> tuple[list, list]:
    runtimes = report.get("runtimes", {})
    workloads = [wl for wl in report.get("workloads", []) if any(best_of(report, rt, wl) for rt in runtimes)]
    names = [rt for rt in runtimes if any(best_of(report, rt, wl) for wl in workloads)]
    return workloads, names


def write_chart(report: dict, path, labels: dict) -> tuple[Optional[Path], str]:
    """The bar chart (see the module docstring) as PNG at ``path``: ``(path, "")`` when written,
    ``(None, why not)`` otherwise (matplotlib missing, nothing to draw, or any failure)."""
    try:
        fig = _figure()
    except ImportError as exc:
        return None, f"matplotlib is not installed ({exc})"
    try:
        workloads, names = _drawn_workloads(report)
        if not workloads or not names:
            return None, "no results to draw"
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / len(names)
        for i, rt in enumerate(names):
            xs, heights, lo, hi = [], [], [], []
            for j, wl in enumerate(workloads):
                s = summary_at(report, rt, wl, best_of(report, rt, wl))
                if not s:
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                heights.append(s["tokens_per_s_median"])
                lo.append(s["tokens_per_s_median"] - s["tokens_per_s_min"])
                hi.append(s["tokens_per_s_max"] - s["tokens_per_s_median"])
            bars = ax.bar(xs, heights, width, yerr=[lo, hi], capsize=3, label=labels.get(rt, rt))
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels(workloads)
        ax.set_ylabel("new tokens/s (median, min–max)")
        ax.set_title(chart_title(report), fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(Path(path), format="png")
    except Exception as exc:
        return None, f"chart failed: {exc!r}"
    return Path(path), ""


def write_threads_chart(report: dict, path, labels: dict) -> tuple[Optional[Path], str]:
    """The thread-count chart (see the module docstring); returns as ``write_chart``."""
    counts = [int(t) for t in report.get("thread_counts") or []]
    if len(counts) < 2:
        return None, "one thread count: nothing to draw against threads"
    try:
        workloads, names = _drawn_workloads(report)
        if not workloads:
            return None, "no results to draw"
        fig = _figure(width=max(5.0, 4.5 * len(workloads)), height=4.5)
    except ImportError as exc:
        return None, f"matplotlib is not installed ({exc})"
    try:
        for j, wl in enumerate(workloads):
            ax = fig.add_subplot(1, len(workloads), j + 1)
            for rt in names:
                pts = [(t, summary_at(report, rt, wl, str(t))) for t in counts]
                pts = [(t, s["tokens_per_s_median"]) for t, s in pts if s]
                if pts:
                    ax.plot([t for t, _ in pts], [y for _, y in pts], marker="o", label=labels.get(rt, rt))
            ax.set_xticks(counts)
            ax.set_ylim(bottom=0)
            ax.set_xlabel("threads")
            ax.set_ylabel("new tokens/s (median)")
            ax.set_title(wl, fontsize=9)
            ax.grid(alpha=0.3)
        fig.axes[0].legend(fontsize=7)
        fig.suptitle(chart_title(report), fontsize=10)
        fig.tight_layout()
        fig.savefig(Path(path), format="png")
    except Exception as exc:
        return None, f"chart failed: {exc!r}"
    return Path(path), ""
