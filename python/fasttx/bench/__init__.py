"""``fasttx bench``: fasttx against the usual CPU runtimes, each at its best thread count.

    fasttx bench t5      [--threads N | --threads-list 1,2,4] [--repeats R] [--out FILE] [...]   # T5 (t5-small shape)
    fasttx bench smollm2 [--threads N | --threads-list 1,2,4] [--repeats R] [--out FILE] [...]   # SmolLM2-135M-Instruct
    fasttx bench qwen2.5-coder [...]                                   # Qwen2.5-Coder-0.5B-Instruct Q4_K_M
    fasttx bench marian [...]                                          # Marian (opus-mt-en-de shape)
    fasttx bench qwen3 [...] / fasttx bench gemma3 [...]               # decoder shapes in float32
    fasttx bench all     [--threads N] [--repeats R] [--out-dir DIR]                             # all, one after the other

Every runtime (fasttx and the references: PyTorch, CTranslate2, llama.cpp) runs at every thread
count from 1 to N; the table compares each at its best count, and gives the same-thread ratio
beside it.  Each run writes a JSON report (no paths of the machine in it) and, when matplotlib
is installed, two PNG charts next to it.  ``python -m fasttx.bench ...`` is the same.

Why this lives in the package and not in ``benchmarks/``: it is the user-facing comparison,
installed with fasttx so that anyone can rerun the published figures on their own machine.
``benchmarks/`` holds the developer's profiling scripts (one decoding step, memory by stage,
logits-processing cost), which reach into fasttx's internals.

The modules, one concern each:

- ``cli``: the parser and the dispatch; ``benchmark``: what a benchmark defines, and the options
  every one shares; ``t5``, ``smollm2``: the benchmarks (model, workloads, runtimes),
  ``qwen_coder`` the SmolLM2 one on the real Qwen2.5-Coder Q4_K_M file; ``marian`` the T5 one on
  the opus-mt-en-de shape; ``decoders`` the Qwen3 and Gemma 3 shapes; ``random_model``: building
  (and converting for CTranslate2) the random-weight models these benchmarks of a shape use;
  ``runtimes``: the fasttx and PyTorch runtime wrappers both use.
- ``runner``: a whole run (the thread sweep, then the report); ``workers``: starting the worker
  processes; ``protocol``: the JSON-lines protocol, both ends; ``schedule``: warm-up and
  interleaved repeats of one thread count.
- ``stats``: medians, best thread counts, ratios, token agreement; ``machine``: CPU model,
  caches, memory bandwidth probe; ``bandwidth``: the "% of bandwidth" figure; ``report``: the
  Markdown tables and path scrubbing; ``charts``: the PNGs.

This package imports no runtime library (torch, transformers, ctranslate2, llama_cpp): those are
imported in the worker subprocesses only, and a runtime that is not installed is reported as
skipped.
"""

from __future__ import annotations

from .cli import BENCHMARKS, build_parser, main, parse_args

__all__ = ["BENCHMARKS", "build_parser", "parse_args", "main"]
