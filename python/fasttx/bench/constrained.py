"""Constrained output: time per token with a JSON-schema constraint against unconstrained decoding.

Usage::

    fasttx bench constrained [--threads N | --threads-list 1,2] [--repeats 5] [--new-tokens 96]
                             [--out BENCHMARKS-constrained.json] [--gguf PATH] [--qwen PATH]

What it does
------------
1. Models: the Q4_1 SmolLM2 GGUF ``fasttx generate`` uses by default (``--gguf PATH`` to change),
   and, when the file exists, Qwen2.5-Coder-0.5B-Instruct Q4_K_M (``--qwen PATH``, default
   ``~/.cache/fasttx/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf``): a 151k-token vocabulary, where a
   mask costs the most. Loaded with ``dtype="auto"``, once per thread count.
2. Workload: the chat template over "List the people in this text as JSON: ..." (six people),
   greedy, batch 1, at most ``--new-tokens`` tokens; constrained by ``SCHEMA`` (an object with an
   array of {name, age, city} objects), or not.
3. Timing, in one process, interleaved: per round a one-token call (the prompt's prefill and first
   token), the unconstrained call and the constrained one; ``--repeats`` rounds after a warm-up.
   Per variant: decode seconds per token = (median call - median one-token call) / (tokens - 1)
   (the two variants need not produce the same number of tokens).
4. Mask cost alone: the constrained call's tokens replayed through a fresh matcher, timing the
   per-step mask of one row of scores plus consuming the token (what the decoding loop adds per
   token), median over the tokens.
5. Compile: the vocabulary index (once per model and EOS set) and the schema's compilation
   (median of ``--repeats``), both in milliseconds.
6. Check: the constrained output must parse as JSON (an ERROR line and exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from .benchmark import add_thread_arguments, finish_thread_arguments
from .machine import describe, machine_info
from .report import scrub_paths

NEW_TOKENS = 96
DEFAULT_OUT = "BENCHMARKS-constrained.json"
QWEN_DEFAULT = Path.home() / ".cache" / "fasttx" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
TEXT = (
    "List the people in this text as JSON: Alice (31) lives in Paris. Bob, 45, moved to Berlin. "
    "Carol is 27 and works in Madrid. Dan (52) retired to Lisbon. Eve, 38, lives in Rome. "
    "Frank is 23 and studies in Vienna."
)
SCHEMA = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": "integer"},
                    "city": {"type": "string"},
                },
                "required": ["name", "age", "city"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["people"],
    "additionalProperties": False,
}


class ConstrainedBenchmark:
    """``fasttx bench constrained``: the interface of ``fasttx.bench.cli.BENCHMARKS``."""

    name = "constrained"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_thread_arguments(p)
        p.add_argument("--repeats", type=int, default=5, help="interleaved rounds per (model, thread count)")
        p.add_argument("--new-tokens", type=int, default=NEW_TOKENS,
                       help=f"most new tokens per call (default {NEW_TOKENS})")
        p.add_argument("--gguf", default=None, help="SmolLM2's GGUF file (default: fasttx's default model)")
        p.add_argument("--qwen", default=str(QWEN_DEFAULT),
                       help="a 150k-vocabulary model (Qwen2.5-Coder-0.5B Q4_K_M); skipped when missing")
        p.add_argument("--out", default=DEFAULT_OUT, help="JSON file for the raw numbers")

    def finish_args(self, args: argparse.Namespace, p: argparse.ArgumentParser) -> argparse.Namespace:
        args.benchmark = self.name
        finish_thread_arguments(args, p)
        if args.repeats < 1 or args.new_tokens < 2:
            p.error("--repeats must be >= 1 and --new-tokens >= 2")
        return args

    def run(self, args: argparse.Namespace) -> int:
        gguf = args.gguf
        if gguf is None:
            from fasttx.hub import default_model_path

            gguf = str(default_model_path(progress=True))
        models = [gguf] + ([args.qwen] if args.qwen and Path(args.qwen).is_file() else [])
        machine = machine_info()
        print(f"fasttx bench constrained: {', '.join(Path(m).name for m in models)}; greedy, batch 1, "
              f"at most {args.new_tokens} new tokens\n{describe(machine)}", flush=True)
        results, errors = [], []
        for path in models:
            for threads in args.thread_counts:
                cell = measure(path, threads, args.new_tokens, args.repeats, errors)
                results.append(cell)
                print(_rows([cell]), flush=True)
        report = {
            "benchmark": self.name,
            "command": "fasttx bench constrained " + " ".join(sys.argv[sys.argv.index("constrained") + 1:])
            if "constrained" in sys.argv else "fasttx bench constrained",
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "machine": machine,
            "schema": SCHEMA,
            "prompt": TEXT,
            "results": results,
            "errors": errors,
        }
        Path(args.out).write_text(json.dumps(scrub_paths(report), indent=2) + "\n")
        print("\n" + markdown(report))
        for e in errors:
            print(e, file=sys.stderr)
        print(f"raw numbers: {args.out}")
        return 1 if errors else 0


def measure(path: str, threads: int, new_tokens: int, repeats: int, errors: list) -> dict:
    """One (model, thread count) cell: call timings, mask cost, compile times."""
    import numpy as np

    import fasttx
    from fasttx.generation import constraints

    model = fasttx.load(path, dtype="auto", threads=threads)
    ids = model.tokenizer.encode(model.chat_prompt([{"role": "user", "content": TEXT}]), add_special_tokens=False).ids
    eos = model._options({}).eos_token_id

    start = time.perf_counter()
    compiler = constraints.ConstraintCompiler(model.tokenizer, model.vocab_size)
    env = compiler.env(eos)
    index_ms = (time.perf_counter() - start) * 1e3
    schema_text = json.dumps(SCHEMA)
    compile_ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        compiled = env.compile("json_schema", schema_text)
        compile_ms.append((time.perf_counter() - start) * 1e3)

    def call(options: dict, new: int = new_tokens):
        start = time.perf_counter()
        tokens = model.generate_ids([ids], max_new_tokens=new, **options)[0]
        return time.perf_counter() - start, tokens

    variants = {"unconstrained": {}, "json_schema": {"json_schema": SCHEMA}}
    cell = {"model": Path(path).name, "vocab": model.vocab_size, "threads": threads, "prompt_tokens": len(ids),
            "index_ms": index_ms, "compile_ms": compile_ms, "variants": {}}
    for name, options in variants.items():  # warm-up (and the constraint's compiled form cached)
        _, tokens = call(options)
        cell["variants"][name] = {"seconds": [], "tokens": len(tokens)}
        if name == "json_schema":
            text = model._decode(tokens)
            try:
                json.loads(text)
            except ValueError:
                if len(tokens) < new_tokens or tokens[-1] in eos:
                    errors.append(f"ERROR: {cell['model']}: the constrained output does not parse: {text!r}")
            constrained_tokens = tokens
    first = []
    for _ in range(repeats):
        first.append(call({}, 1)[0])
        for name, options in variants.items():
            cell["variants"][name]["seconds"].append(call(options)[0])
    cell["first_token_seconds"] = first
    ttft = statistics.median(first)
    for v in cell["variants"].values():
        v["median_seconds"] = statistics.median(v["seconds"])
        v["ms_per_token"] = (v["median_seconds"] - ttft) / max(1, v["tokens"] - 1) * 1e3
    cell["ratio"] = cell["variants"]["json_schema"]["ms_per_token"] / cell["variants"]["unconstrained"]["ms_per_token"]

    # The mask and the consume of each step, alone, along the constrained output.
    rows = constraints.RowConstraints([compiled], model._native)
    scores = np.zeros((1, model.vocab_size), dtype=np.float32)
    per_token = []
    for t in constrained_tokens:
        scores[...] = 0.0
        start = time.perf_counter()
        rows.mask(scores, [0], 0)
        rows.consume([0], [t])
        per_token.append(time.perf_counter() - start)
    cell["mask_us_per_token"] = statistics.median(per_token) * 1e6
    cell["mask_us_max"] = max(per_token) * 1e6
    return cell


def _rows(results: list) -> str:
    lines = []
    for c in results:
        u, j = c["variants"]["unconstrained"], c["variants"]["json_schema"]
        lines.append(
            f"| {c['model']} | {c['vocab']} | {c['threads']} | {u['ms_per_token']:.2f} | {j['ms_per_token']:.2f} "
            f"| {c['ratio']:.2f}x | {c['mask_us_per_token']:.0f} ({c['mask_us_max']:.0f}) "
            f"| {statistics.median(c['compile_ms']):.1f} | {c['index_ms']:.0f} |"
        )
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """The table of a report: one row per (model, threads)."""
    head = ("| model | vocab | threads | ms/token unconstrained | ms/token json_schema | ratio "
            "| mask+consume µs/token median (max) | schema compile ms | vocabulary index ms |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    return head + "\n" + _rows(report["results"])


BENCHMARK = ConstrainedBenchmark()
