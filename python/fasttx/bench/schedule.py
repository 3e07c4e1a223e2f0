"""The measurement schedule of one thread count: warm-up, then interleaved, repeated timed calls.

All workers are alive at once; the parent drives them round-robin: warm-up of every (workload,
runtime), then for each repeat, for each workload, each runtime in turn (the starting runtime
rotates per repeat).  Only one worker computes at any time; the others block on a pipe.
Interleaving spreads machine noise (other jobs, thermal drift) evenly over the runtimes instead
of penalising whichever ran during a noisy minute.

Every timed call is made twice: with the workload's number of new tokens (tokens/s) and with one
new token (the time-to-first-token proxy: prompt processing plus one step).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from .protocol import WorkerError

# Pause after each timed call: idle OpenMP / rayon threads of the worker that just ran spin for
# a short while before sleeping; the pause keeps them off the next runtime's cores.
SETTLE_S = 0.25


def empty_cell() -> dict:
    """What the schedule fills for one (runtime, workload)."""
    return {"seconds": [], "tokens": [], "ttft_s": [], "first_tokens": []}


def rotated(runtimes: Sequence[str], repeat: int) -> list[str]:
    """The runtime order of repeat ``repeat``: the start rotates so none is always first."""
    runtimes = list(runtimes)
    if not runtimes:
        return []
    k = repeat % len(runtimes)
    return runtimes[k:] + runtimes[:k]


def length_problems(seqs, expected_rows: int, new_tokens: int) -> list[str]:
    problems = []
    if len(seqs) != expected_rows:
        problems.append(f"{len(seqs)} sequences instead of {expected_rows}")
    lengths = sorted({len(s) for s in seqs})
    if lengths != [new_tokens]:
        problems.append(f"sequence lengths {lengths} instead of {new_tokens}")
    return problems


def run_schedule(bench, workers: dict, workloads, pool, repeats: int, new_tokens: int,
                 results: dict, warnings: list, after_repeat: Optional[Callable[[], None]] = None):
    """Warm up, then time all (workload, runtime) pairs round-robin for each repeat, into
    ``results[runtime][workload]`` (``empty_cell`` each); ``after_repeat()`` runs after each
    repeat (the bandwidth probe, while the workers idle)."""
    runtimes = list(workers)

    def measure(rt, wl, n):
        try:
            msg = workers[rt].generate(bench.workload_inputs(wl, pool), bench.options(wl, n))
            if "error" in msg:
                raise WorkerError(msg["error"])
        except WorkerError as exc:
            results[rt][wl]["error"] = str(exc)
            print(f"  {rt} {wl} failed: {exc}", flush=True)
            warnings.append(f"{rt} {wl}: generate failed: {str(exc).strip().splitlines()[0]}")
            return None
        msg["tokens"] = sum(len(s) for s in msg["sequences"])
        time.sleep(SETTLE_S)
        return msg

    def active(rt, wl):
        return "error" not in results[rt][wl] and not workers[rt].dead

    def measure_both(rt, wl):
        """The full call and the one-token call (time to first token), or None if either failed."""
        full = measure(rt, wl, new_tokens)
        first = measure(rt, wl, 1) if full else None
        return (full, first) if full and first else None

    print("warm-up ...", flush=True)
    for wl in workloads:
        for rt in runtimes:
            both = measure_both(rt, wl) if active(rt, wl) else None
            if both:
                full, first = both
                cell = results[rt][wl]
                cell["warmup_s"] = full["seconds"]
                cell["sequences"] = full["sequences"]
                for n, msg in ((new_tokens, full), (1, first)):
                    for p in length_problems(msg["sequences"], bench.expected_rows(wl), n):
                        warnings.append(f"{rt} {wl} (max_new_tokens={n}): {p}")

    for r in range(repeats):
        for wl in workloads:
            for rt in rotated(runtimes, r):
                both = measure_both(rt, wl) if active(rt, wl) else None
                if both:
                    full, first = both
                    cell = results[rt][wl]
                    cell["seconds"].append(full["seconds"])
                    cell["tokens"].append(full["tokens"])
                    cell["ttft_s"].append(first["seconds"])
                    cell["first_tokens"].append(first["tokens"])
        if after_repeat is not None:
            after_repeat()
        print(f"repeat {r + 1}/{repeats} done", flush=True)
