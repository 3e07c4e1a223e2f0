#!/usr/bin/env python3
"""T5 generation benchmark: fasttx vs PyTorch transformers vs CTranslate2 on CPU.

Usage::

    python benchmarks/bench_t5.py [--threads 2] [--repeats 5] [--out BENCHMARKS-t5.json]

A thin wrapper kept for existing commands: it is ``fasttx bench t5`` with the same options
(--threads --repeats --out --model-dir --runtimes --workloads --new-tokens).  The benchmark
itself (model recipe, workloads, worker processes, schedule, metrics, checks, report) lives in
the fasttx package: ``fasttx.bench.t5`` and ``fasttx.bench.harness``; see BENCHMARKS.md.
"""

import sys
from pathlib import Path

try:
    import fasttx.bench
except ImportError:
    # Not installed: use the source tree (fasttx's native module must still be built there,
    # e.g. by `maturin develop`).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import fasttx.bench

if __name__ == "__main__":
    sys.exit(fasttx.bench.main(["t5", *sys.argv[1:]]))
