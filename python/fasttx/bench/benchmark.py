"""What a workload module (``t5``, ``smollm2``) defines, and the command line every one shares.

A benchmark is a ``Benchmark`` subclass: its runtimes, workloads and model; the harness
(``runner``) does the rest.  ``add_arguments`` / ``finish_args`` / ``run`` are the same for every
benchmark; a subclass adds its model options in ``add_model_arguments``.
"""

from __future__ import annotations

import argparse

from . import protocol
from .machine import BANDWIDTH_MB, default_threads
from .report import markdown_table
from .stats import check_agreement


def split_list(value) -> list[str]:
    """``"a,b,,c"`` -> ``["a", "b", "c"]`` (a list is returned as is)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [x for x in value.split(",") if x]


def parse_thread_list(value: str) -> list[int]:
    """``"4,1,2,2"`` -> ``[1, 2, 4]``; ValueError on anything but positive integers."""
    counts = set()
    for part in split_list(value):
        t = int(part)
        if t < 1:
            raise ValueError(f"thread count {t} < 1")
        counts.add(t)
    if not counts:
        raise ValueError("empty thread list")
    return sorted(counts)


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """``--bandwidth-mb`` and ``--no-chart``."""
    p.add_argument("--bandwidth-mb", type=int, default=BANDWIDTH_MB,
                   help=f"buffer size for the memory bandwidth measurement in MB (default "
                        f"{BANDWIDTH_MB}, larger than the caches); 0 skips it and the "
                        "%% of bandwidth column")
    p.add_argument("--no-chart", action="store_true", help="do not write the PNG charts next to the JSON file")


def add_thread_arguments(p: argparse.ArgumentParser) -> None:
    """``--threads`` (the largest count of the sweep) and ``--threads-list``."""
    p.add_argument("--threads", type=int, default=None,
                   help="every runtime runs at 1, 2, ... up to this many threads, and is compared at its "
                        "best count (default: physical cores)")
    p.add_argument("--threads-list", default=None,
                   help="comma-separated thread counts to run instead of 1..--threads (e.g. 1,2,4,8 on a "
                        "large machine)")


def finish_thread_arguments(args, p) -> None:
    """``args.thread_counts`` from ``--threads`` / ``--threads-list`` (``p.error`` on a bad one)."""
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.threads is not None and args.threads_list is not None:
        p.error("give --threads (1 up to it) or --threads-list, not both")
    if args.threads_list is None:
        args.thread_counts = list(range(1, (args.threads or default_threads()) + 1))
    else:
        try:
            args.thread_counts = parse_thread_list(args.threads_list)
        except ValueError as exc:
            p.error(f"--threads-list: {exc} (expected e.g. 1,2,4)")
    args.threads = max(args.thread_counts)


class Benchmark:
    """A workload module's definition.

    Class attributes:
      name: the ``fasttx bench NAME`` word and the JSON ``benchmark`` field.
      runtimes: runtime names in their default order; labels: runtime -> display name.
      requires: runtime -> top-level modules it needs (checked with ``find_spec`` before a
        worker is started, so a runtime that is not installed is skipped with that reason).
      packages: runtime -> top-level packages whose native libraries identify its build.
      needs_fasttx: runtimes whose worker must import the real ``fasttx`` package.
      workloads: workload name -> dict (at least ``batch``).
      new_tokens: new tokens per sequence; default_out: the JSON file when ``--out`` is not given.
      reference: the runtime the others' tokens are compared with; must_match: the
        "runtime/workload" that must reproduce its tokens exactly; leading_tokens: count the
        matching leading tokens too.
      ratio_columns: (runtime, header) pairs: a speed ratio column each.
      show_workload: whether the table has a workload column.
      fasttx_dtypes: fasttx runtime -> the ``dtype`` it loads with.
      weight_counterparts: other runtime -> the fasttx runtime with the same weight storage,
        whose bytes per step stand for its own in the "% of bandwidth" column.
      bandwidth_note: said under the table about the rate the "% of bandwidth" column uses.
    """

    name = ""
    runtimes: tuple = ()
    labels: dict = {}
    requires: dict = {}
    packages: dict = {}
    needs_fasttx: tuple = ()
    workloads: dict = {}
    new_tokens = 64
    default_out = "BENCHMARKS.json"
    reference = "pytorch"
    must_match = "fasttx/greedy_b1"
    leading_tokens = False
    ratio_columns: tuple = (("pytorch", "vs PyTorch"),)
    show_workload = True
    fasttx_dtypes: dict = {}
    weight_counterparts: dict = {}
    bandwidth_note = "uses the decode tokens/s (prompt processing taken out)"

    # --- command line (the same for every benchmark) ---------------------

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_thread_arguments(p)
        p.add_argument("--repeats", type=int, default=3, help="timed runs per (runtime, workload, thread count)")
        p.add_argument("--out", default=self.default_out, help="JSON file for the raw numbers")
        self.add_model_arguments(p)
        p.add_argument("--runtimes", default=",".join(self.runtimes),
                       help="comma-separated subset of " + ",".join(self.runtimes))
        p.add_argument("--workloads", default=",".join(self.workloads),
                       help="comma-separated subset of " + ",".join(self.workloads))
        p.add_argument("--new-tokens", type=int, default=self.new_tokens,
                       help=f"new tokens per sequence (default {self.new_tokens}; change only for smoke tests)")
        add_report_arguments(p)
        p.add_argument("--worker", choices=self.runtimes, help=argparse.SUPPRESS)

    def add_model_arguments(self, p: argparse.ArgumentParser) -> None:
        """Where the model is (``--model-dir``, ``--gguf``, ...)."""

    def finish_args(self, args: argparse.Namespace, p: argparse.ArgumentParser) -> argparse.Namespace:
        """Normalise and check parsed arguments (``p.error`` on a bad one).  In a worker
        (``--worker``), ``--threads`` is its one thread count."""
        args.benchmark = self.name
        if not args.worker:
            finish_thread_arguments(args, p)
        args.workloads = split_list(args.workloads)
        for w in args.workloads:
            if w not in self.workloads:
                p.error(f"unknown workload {w!r} (choose from {', '.join(self.workloads)})")
        args.runtimes = split_list(args.runtimes)
        for r in args.runtimes:
            if r not in self.runtimes:
                p.error(f"unknown runtime {r!r} (choose from {', '.join(self.runtimes)})")
        if args.repeats < 0:
            p.error("--repeats must be >= 0")
        if args.new_tokens < 1:
            p.error("--new-tokens must be >= 1")
        if args.bandwidth_mb < 0:
            p.error("--bandwidth-mb must be >= 0")
        return args

    def run(self, args: argparse.Namespace) -> int:
        """A worker's life (``--worker``), or the whole benchmark."""
        if args.worker:
            protocol.serve(self, args.worker, args)
            return 0
        from .runner import run

        return run(self, args)

    # --- parent side -----------------------------------------------------

    def prepare(self, args, runtimes: list, skipped: dict) -> list:
        """Build or locate the model files; returns the runtimes that can run."""
        return runtimes

    def worker_args(self, args) -> list:
        """Command-line flags that tell a worker where the model is (``--threads`` is added)."""
        return []

    def inputs(self, args) -> object:
        """Input ids shared by all workloads (passed back to ``workload_inputs``)."""
        raise NotImplementedError

    def workload_inputs(self, workload: str, pool) -> list:
        raise NotImplementedError

    def options(self, workload: str, new_tokens: int) -> dict:
        raise NotImplementedError

    def expected_rows(self, workload: str) -> int:
        return self.workloads[workload]["batch"]

    def check_agreement(self, results: dict, workloads, warnings: list) -> dict:
        return check_agreement(results, workloads, warnings, reference=self.reference,
                               must_match=self.must_match, leading=self.leading_tokens)

    def check_ready(self, workers: dict, pool, warnings: list) -> dict:
        """Extra checks on the workers' ready messages; returned dict goes into the report."""
        return {}

    def extra_checks(self, results: dict, workloads) -> dict:
        """Further comparisons of the warm-up outputs, saved under ``checks`` and printed."""
        return {}

    def report_fields(self, args, pool) -> dict:
        """``model`` and ``setup`` entries of the JSON report (no machine paths: model names)."""
        return {}

    def print_header(self, args) -> str:
        return ""

    def model_path(self, args) -> str:
        """What ``fasttx.load`` opens (for ``decode_weight_bytes`` read in the parent)."""
        raise NotImplementedError

    def batch1_workloads(self) -> list:
        """Workloads with one input row: the weights are read once per step for that row (beam
        search included: its beams share each read), so they get a "% of bandwidth" figure."""
        return [wl for wl, d in self.workloads.items() if d.get("batch") == 1]

    def table(self, report: dict) -> str:
        """The Markdown results table of ``report`` (see ``report.markdown_table``)."""
        return markdown_table(report, self.labels, ratio_columns=self.ratio_columns, show_workload=self.show_workload,
                              agreement_column=self.reference if self.leading_tokens else None,
                              bandwidth_workloads=self.batch1_workloads())

    # --- worker side -----------------------------------------------------

    def runtime_class(self, runtime: str):
        raise NotImplementedError

    def make_runtime(self, runtime: str, args):
        raise NotImplementedError
