"""Prompt-lookup decoding on SmolLM2-135M-Instruct Q4_1: new tokens/s with and without it.

Usage::

    fasttx bench prompt-lookup [--threads N | --threads-list 1,2] [--repeats 5] [--lookup-tokens 10,3]
                               [--out BENCHMARKS-prompt-lookup.json] [--gguf PATH]

What it does
------------
1. Model: the Q4_1 GGUF ``fasttx generate`` uses by default (``fasttx.hub.default_model_path()``),
   or ``--gguf PATH``, loaded with ``dtype="auto"`` (Q4_1 runs natively), once per thread count.
2. Workloads, each the model's chat template over one user message, 128 new tokens, greedy,
   batch 1 (``min_new_tokens = max_new_tokens``: EOS is suppressed, so every run produces the
   same number of tokens, as in ``fasttx bench smollm2``):
   - ``edit``: input-grounded: "Rewrite the following paragraph correcting the spelling:" and a
     paragraph of about 200 tokens with misspellings: most of the answer copies the input, where
     prompt lookup's drafts come from;
   - ``open``: open-ended: ``fasttx bench smollm2``'s "Write a short news report about artificial
     intelligence.": drafts come only from the model repeating itself.
3. Variants: plain greedy, and ``prompt_lookup_num_tokens=N`` for each N of ``--lookup-tokens``
   (10, as transformers' documentation suggests, and 3), ``max_matching_ngram_size`` at
   transformers' default 2.
4. Timing: one process; per (thread count, workload) a warm-up call of each variant, then
   ``--repeats`` rounds that run every variant once, interleaved (A B C A B C ...), with a
   one-token call (the prompt's prefill and first token, which prompt lookup does not change)
   in each round, so that noise from other work on the machine falls on all of them alike; the
   median of each variant's seconds per call. Reported: new tokens/s over the whole call, the
   decode rate (the tokens after the first, over the call's time less the one-token call's
   median), the decode speed-up over plain greedy, the acceptance rate (draft tokens accepted /
   draft tokens verified) and tokens per forward pass.
5. Check: every variant's tokens must equal plain greedy's (an ERROR line and exit status 1
   otherwise): prompt lookup changes speed, never tokens.
6. JSON (``--out``): the command, the machine, every call's seconds and the lookup counters.
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

NEW_TOKENS = 128
DEFAULT_OUT = "BENCHMARKS-prompt-lookup.json"
PARAGRAPH = (
    "Last sumer, our town desided to restore the old railway staton that had been closed for "
    "almost thirty yeers. The building was in a terible state: the roof leaked, the windows were "
    "broken, and the walls were covred in graffiti. A group of voluntears, most of them retired "
    "teachers and enginers, spent every weekend cleaning the platforms, repairing the benchs and "
    "painting the ticket office in its orignal green and cream colours. The local councel gave a "
    "small grant, and a bakery next door offerred free coffee to anyone who helped. By the end of "
    "Augst the station looked beautifull again, and the town held a festival with music, food "
    "stalls and a steam train that carried childrn along the restored track. Everyone agreed it "
    "was the best sumer the town had seen in a long time, and the voluntears are now planing to "
    "open a small musuem about the history of the railway."
)
WORKLOADS = {
    "edit": "Rewrite the following paragraph correcting the spelling:\n\n" + PARAGRAPH,
    "open": "Write a short news report about artificial intelligence.",
}


class PromptLookupBenchmark:
    """``fasttx bench prompt-lookup``: the interface of ``fasttx.bench.cli.BENCHMARKS``."""

    name = "prompt-lookup"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_thread_arguments(p)
        p.add_argument("--repeats", type=int, default=5, help="interleaved rounds per (thread count, workload)")
        p.add_argument("--lookup-tokens", default="10,3", help="prompt_lookup_num_tokens values to time (default 10,3)")
        p.add_argument("--workloads", default=",".join(WORKLOADS),
                       help="comma-separated subset of " + ",".join(WORKLOADS))
        p.add_argument("--new-tokens", type=int, default=NEW_TOKENS,
                       help=f"new tokens per call (default {NEW_TOKENS}; change only for smoke tests)")
        p.add_argument("--gguf", default=None, help="the GGUF file (default: fasttx's default model)")
        p.add_argument("--out", default=DEFAULT_OUT, help="JSON file for the raw numbers")

    def finish_args(self, args: argparse.Namespace, p: argparse.ArgumentParser) -> argparse.Namespace:
        args.benchmark = self.name
        finish_thread_arguments(args, p)
        if args.repeats < 1 or args.new_tokens < 1:
            p.error("--repeats and --new-tokens must be >= 1")
        try:
            args.lookup_tokens = sorted({int(x) for x in args.lookup_tokens.split(",") if x}, reverse=True)
        except ValueError:
            p.error("--lookup-tokens: comma-separated integers, e.g. 10,3")
        if not args.lookup_tokens or min(args.lookup_tokens) < 1:
            p.error("--lookup-tokens: integers >= 1")
        args.workloads = [w for w in args.workloads.split(",") if w]
        unknown = [w for w in args.workloads if w not in WORKLOADS]
        if unknown or not args.workloads:
            p.error(f"--workloads: choose from {','.join(WORKLOADS)}")
        return args

    def run(self, args: argparse.Namespace) -> int:
        import fasttx
        from fasttx.generation import prompt_lookup

        gguf = args.gguf
        if gguf is None:
            from fasttx.hub import default_model_path

            gguf = str(default_model_path(progress=True))
        variants = {"plain": {}, **{f"lookup{n}": {"prompt_lookup_num_tokens": n} for n in args.lookup_tokens}}
        machine = machine_info()
        print(f"fasttx bench prompt-lookup: {Path(gguf).name}, Q4_1 native, {args.new_tokens} new tokens, "
              f"greedy, batch 1\n{describe(machine)}", flush=True)
        results, errors = [], []
        for threads in args.thread_counts:
            model = fasttx.load(gguf, dtype="auto", threads=threads)
            for workload in args.workloads:
                prompt = model.chat_prompt([{"role": "user", "content": WORKLOADS[workload]}])
                ids = model.tokenizer.encode(prompt, add_special_tokens=False).ids
                n = args.new_tokens
                cell = {"threads": threads, "workload": workload, "prompt_tokens": len(ids), "variants": {}}

                def call(options: dict, new: int = n):
                    with prompt_lookup.collect_stats() as stats:
                        start = time.perf_counter()
                        tokens = model.generate_ids([ids], max_new_tokens=new, min_new_tokens=new, **options)[0]
                        seconds = time.perf_counter() - start
                    return seconds, tokens, stats

                reference = None
                for name, options in variants.items():  # warm-up, and the tokens each must give
                    _, tokens, _ = call(options)
                    reference = tokens if reference is None else reference
                    if tokens != reference:
                        errors.append(f"ERROR: {workload}, {threads} threads: {name}'s tokens differ "
                                      "from plain greedy's")
                    cell["variants"][name] = {"options": options, "seconds": [], "stats": None}
                first = []
                for _ in range(args.repeats):
                    first.append(call({}, 1)[0])
                    for name, options in variants.items():
                        seconds, _, stats = call(options)
                        v = cell["variants"][name]
                        v["seconds"].append(seconds)
                        v["stats"] = {"verify_steps": stats.verify_steps, "drafted": stats.drafted,
                                      "accepted": stats.accepted, "tokens": stats.tokens}
                cell["first_token_seconds"] = first
                ttft = statistics.median(first)
                plain = statistics.median(cell["variants"]["plain"]["seconds"]) - ttft
                for name, v in cell["variants"].items():
                    v["median_seconds"] = statistics.median(v["seconds"])
                    v["tokens_per_s"] = n / v["median_seconds"]
                    decode = v["median_seconds"] - ttft
                    v["decode_tokens_per_s"] = (n - 1) / decode if decode > 0 and n > 1 else None
                    v["decode_speedup"] = plain / decode if decode > 0 and n > 1 else None
                    s = v["stats"]
                    if s["tokens"]:
                        v["acceptance_rate"] = s["accepted"] / s["drafted"] if s["drafted"] else 0.0
                        # Steps after the prompt's: plain ones (no draft) plus verifications.
                        passes = s["tokens"] - s["accepted"]
                        v["tokens_per_forward"] = s["tokens"] / passes
                results.append(cell)
                print(_rows([cell]), flush=True)
        report = {
            "benchmark": self.name,
            "command": "fasttx bench prompt-lookup " + " ".join(sys.argv[sys.argv.index("prompt-lookup") + 1:])
            if "prompt-lookup" in sys.argv else "fasttx bench prompt-lookup",
            "model": Path(gguf).name,
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "machine": machine,
            "workloads": {w: WORKLOADS[w] for w in args.workloads},
            "results": results,
            "errors": errors,
        }
        Path(args.out).write_text(json.dumps(scrub_paths(report), indent=2) + "\n")
        print("\n" + markdown(report))
        for e in errors:
            print(e, file=sys.stderr)
        print(f"raw numbers: {args.out}")
        return 1 if errors else 0


def _rows(results: list) -> str:
    lines = []
    for cell in results:
        for name, v in cell["variants"].items():
            rate, up = v["decode_tokens_per_s"], v["decode_speedup"]
            decode = "-" if rate is None else f"{rate:.1f}"
            speedup = "-" if up is None else f"{up:.2f}x"
            if name == "plain":
                lookup = "- | 1.00"
            else:
                lookup = f"{v['acceptance_rate']:.0%} | {v['tokens_per_forward']:.2f}"
            lines.append(f"| {cell['workload']} | {cell['threads']} | {name} | {v['tokens_per_s']:.1f} | {decode} "
                         f"| {speedup} | {lookup} |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """The table of a report: one row per (workload, threads, variant)."""
    head = ("| workload | threads | variant | new tokens/s (call) | decode tokens/s | decode vs plain "
            "| drafts accepted | tokens per forward |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |")
    return head + "\n" + _rows(report["results"])


BENCHMARK = PromptLookupBenchmark()
