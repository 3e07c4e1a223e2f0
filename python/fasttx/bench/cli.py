"""``fasttx bench`` / ``python -m fasttx.bench``: the parser and the dispatch to each benchmark."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import constrained, decoders, gemm, marian, prompt_lookup, qwen_coder, serve_load, smollm2, t5
from .benchmark import add_report_arguments, add_thread_arguments

# name -> Benchmark (add_arguments, finish_args, run)
BENCHMARKS = {"t5": t5.BENCHMARK, "smollm2": smollm2.BENCHMARK, "qwen2.5-coder": qwen_coder.BENCHMARK,
              "marian": marian.BENCHMARK, "qwen3": decoders.QWEN3, "gemma3": decoders.GEMMA3}
# Not part of `all`, same three entry points: measurements of fasttx alone (a kernel against the
# machine's peak, one feature against plain decoding), and the servers under load (their own
# processes and options: levels of clients, not thread sweeps).
OWN_BENCHMARKS = {"gemm": gemm.BENCHMARK, "prompt-lookup": prompt_lookup.BENCHMARK, "serve": serve_load.BENCHMARK,
                  "constrained": constrained.BENCHMARK}
COMMANDS = {**BENCHMARKS, **OWN_BENCHMARKS}


def _first_line(doc: Optional[str]) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The ``fasttx bench`` parser and its sub-parsers by benchmark name (``"all"`` included)."""
    parser = argparse.ArgumentParser(
        prog="fasttx bench",
        description="Benchmarks of fasttx against reference runtimes, each at every thread count "
                    "from 1 up (see BENCHMARKS.md).",
    )
    sub = parser.add_subparsers(dest="benchmark", metavar="{" + ",".join([*COMMANDS, "all"]) + "}")
    sub.required = True
    subparsers = {}
    for name, bench in COMMANDS.items():
        doc = _first_line(sys.modules[type(bench).__module__].__doc__)
        sp = sub.add_parser(name, help=doc, description=doc)
        bench.add_arguments(sp)
        subparsers[name] = sp
    a = sub.add_parser("all", help="every benchmark, one after the other, with the same threads and repeats",
                       description="Runs " + ", ".join(BENCHMARKS) + " one after the other.")
    add_thread_arguments(a)
    a.add_argument("--repeats", type=int, default=3, help="timed runs per (runtime, workload, thread count)")
    a.add_argument("--out-dir", type=Path, default=Path("."),
                   help="directory for the JSON files (" + ", ".join(f"{n}.json" for n in BENCHMARKS) + ")")
    a.add_argument("--model-dir", type=Path, default=None, help="t5: where the random model is built once")
    a.add_argument("--gguf", default=None, help="smollm2: the GGUF file (default: fasttx's default model)")
    a.add_argument("--llama-cpp-no-repack", action="store_true",
                   help="smollm2, qwen2.5-coder: load llama.cpp with weight repacking off "
                        "(see fasttx bench smollm2 --help)")
    add_report_arguments(a)
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
        return COMMANDS[args.benchmark].finish_args(args, subparsers[args.benchmark])
    if args.bandwidth_mb < 0:
        subparsers["all"].error("--bandwidth-mb must be >= 0")
    args.plan = []
    for name, bench in BENCHMARKS.items():
        # <name>.json in the directory, as the repository keeps them in benchmarks/results/.
        sub_argv = ["--repeats", str(args.repeats), "--out", str(args.out_dir / f"{name}.json"),
                    "--bandwidth-mb", str(args.bandwidth_mb)]
        if args.no_chart:
            sub_argv += ["--no-chart"]
        if args.threads is not None:
            sub_argv += ["--threads", str(args.threads)]
        if args.threads_list is not None:
            sub_argv += ["--threads-list", args.threads_list]
        if name == "t5" and args.model_dir is not None:
            sub_argv += ["--model-dir", str(args.model_dir)]
        if name == "smollm2" and args.gguf is not None:
            sub_argv += ["--gguf", str(args.gguf)]
        if name in ("smollm2", "qwen2.5-coder") and args.llama_cpp_no_repack:
            sub_argv += ["--llama-cpp-no-repack"]
        sub_args = subparsers[name].parse_args(sub_argv)
        args.plan.append((name, bench.finish_args(sub_args, subparsers[name])))
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``fasttx bench ARGS``; returns the exit status."""
    args = parse_args(argv)
    if args.benchmark != "all":
        return COMMANDS[args.benchmark].run(args)
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
