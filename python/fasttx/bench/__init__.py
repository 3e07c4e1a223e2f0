"""``fasttx bench``: fasttx against the usual CPU runtimes, on fixed workloads.

    fasttx bench t5      [--threads T] [--repeats N] [--out FILE] [...]    # W1: T5 (t5-small shape)
    fasttx bench smollm2 [--threads T] [--repeats N] [--out FILE] [...]    # W2: SmolLM2-135M-Instruct
    fasttx bench scaling [--threads T] [--repeats N] [--out FILE]          # W1 greedy b1 at 1, 2, 4 ... T threads
    fasttx bench all     [--threads T] [--repeats N] [--out-dir DIR]       # all three, one after the other

Each writes a JSON report and, when matplotlib is installed, a PNG chart next to it.

``python -m fasttx.bench ...`` is the same.  What is measured and how is in BENCHMARKS.md and in
the docstrings of ``fasttx.bench.t5``, ``fasttx.bench.smollm2`` and ``fasttx.bench.harness``.
This package imports no runtime library (torch, transformers, ctranslate2, llama_cpp): those are
imported in the worker subprocesses only, and a runtime that is not installed is reported as
skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import harness, scaling, smollm2, t5

__all__ = ["BENCHMARKS", "build_parser", "parse_args", "main"]

# name -> module with add_arguments(parser), finish_args(args, parser), run(args), DEFAULT_OUT
BENCHMARKS = {"t5": t5, "smollm2": smollm2, "scaling": scaling}


def _first_line(doc: Optional[str]) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The ``fasttx bench`` parser and its sub-parsers by benchmark name (``"all"`` included)."""
    parser = argparse.ArgumentParser(
        prog="fasttx bench",
        description="Benchmarks of fasttx against reference runtimes (see BENCHMARKS.md).",
    )
    sub = parser.add_subparsers(dest="benchmark", metavar="{" + ",".join([*BENCHMARKS, "all"]) + "}")
    sub.required = True
    subparsers = {}
    for name, mod in BENCHMARKS.items():
        sp = sub.add_parser(name, help=_first_line(mod.__doc__), description=_first_line(mod.__doc__))
        mod.add_arguments(sp)
        subparsers[name] = sp
    a = sub.add_parser("all", help="every benchmark, one after the other, with the same threads and repeats",
                       description="Runs " + ", ".join(BENCHMARKS) + " one after the other.")
    a.add_argument("--threads", type=int, default=None,
                   help="compute threads for every runtime (default: physical cores); scaling "
                        "goes from 1 up to this many")
    a.add_argument("--repeats", type=int, default=5, help="timed runs per (runtime, workload)")
    a.add_argument("--out-dir", type=Path, default=Path("."),
                   help="directory for the JSON files (" + ", ".join(f"{n}.json" for n in BENCHMARKS) + ")")
    a.add_argument("--model-dir", type=Path, default=None, help="t5: where the random model is built once")
    a.add_argument("--gguf", default=None, help="smollm2: the GGUF file (default: fasttx's default model)")
    a.add_argument("--llama-cpp-no-repack", action="store_true",
                   help="smollm2: load llama.cpp with weight repacking off (see fasttx bench smollm2 --help)")
    harness.add_report_arguments(a)
    subparsers["all"] = a
    return parser, subparsers


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parsed ``fasttx bench`` arguments.

    For one benchmark: its own options (checked and normalised), ``benchmark`` its name.  For
    ``all``: ``plan``, a list of ``(name, options)`` with each benchmark's parsed options.
    """
    parser, subparsers = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.benchmark != "all":
        return BENCHMARKS[args.benchmark].finish_args(args, subparsers[args.benchmark])
    harness.check_report_arguments(args, subparsers["all"])
    args.plan = []
    for name, mod in BENCHMARKS.items():
        # <name>.json in the directory, as the repository keeps them in benchmarks/results/.
        sub_argv = ["--repeats", str(args.repeats), "--out", str(args.out_dir / f"{name}.json"),
                    "--bandwidth-mb", str(args.bandwidth_mb)]
        if args.no_chart:
            sub_argv += ["--no-chart"]
        if args.threads:  # scaling: from 1 up to it
            sub_argv += ["--threads", str(args.threads)]
        if name in ("t5", "scaling") and args.model_dir is not None:
            sub_argv += ["--model-dir", str(args.model_dir)]
        if name == "smollm2" and args.gguf is not None:
            sub_argv += ["--gguf", str(args.gguf)]
        if name == "smollm2" and args.llama_cpp_no_repack:
            sub_argv += ["--llama-cpp-no-repack"]
        sub_args = subparsers[name].parse_args(sub_argv)
        sub_args.benchmark = name
        args.plan.append((name, mod.finish_args(sub_args, subparsers[name])))
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``fasttx bench ARGS``; returns the exit status."""
    args = parse_args(argv)
    if args.benchmark != "all":
        return BENCHMARKS[args.benchmark].run(args)
    status = 0
    for name, sub_args in args.plan:
        print(f"=== fasttx bench {name} ===", flush=True)
        try:
            code = BENCHMARKS[name].run(sub_args)
        except SystemExit as exc:  # e.g. a missing model: report it, go on with the next one
            if exc.code not in (None, 0):
                print(exc.code if isinstance(exc.code, str) else f"{name}: exit status {exc.code}",
                      file=sys.stderr, flush=True)
                code = 1
            else:
                code = 0
        status = status or code
        print(flush=True)
    return status
