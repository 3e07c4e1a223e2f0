"""From timings to figures: medians over the repeats, each runtime's best thread count, ratios,
and the agreement of the generated tokens with the reference runtime's."""

from __future__ import annotations

import statistics
from typing import Optional, Sequence


def summarize(cell: dict, decode_rate: bool = False) -> Optional[dict]:
    """Median / min / max of the repeats of one (runtime, workload).

    tokens/s of each repeat = tokens / seconds; TTFT in ms.  With ``decode_rate``: also the decode
    rate (n - f) / (t_n - t_1) of each repeat, from the n-token call and the 1-token call (f
    tokens: one per row) of the same repeat, i.e. tokens/s with the prompt processing (and the
    encoder, for T5) taken out.
    """
    if not cell.get("seconds"):
        return None
    tps = [n / s for n, s in zip(cell["tokens"], cell["seconds"])]
    out = {
        "tokens_per_s_median": statistics.median(tps),
        "tokens_per_s_min": min(tps),
        "tokens_per_s_max": max(tps),
        "ttft_ms_median": 1000 * statistics.median(cell["ttft_s"]),
        "ttft_ms_min": 1000 * min(cell["ttft_s"]),
        "ttft_ms_max": 1000 * max(cell["ttft_s"]),
    }
    if decode_rate:
        firsts = cell.get("first_tokens") or [1] * len(cell["tokens"])
        rates = [
            (n - f) / (s - t)
            for n, f, s, t in zip(cell["tokens"], firsts, cell["seconds"], cell["ttft_s"])
            if n > f and s > t
        ]
        out["decode_tokens_per_s_median"] = statistics.median(rates) if rates else None
    return out


def best_threads(by_threads: dict) -> Optional[str]:
    """The thread count (a string key, as in the JSON) with the highest median tokens/s among
    ``{threads: summary or None}``; the fewest threads on a tie; None when nothing ran."""
    ran = [(t, s["tokens_per_s_median"]) for t, s in by_threads.items() if s]
    if not ran:
        return None
    return max(ran, key=lambda ts: (ts[1], -int(ts[0])))[0]


def ratio(value: Optional[float], ref: Optional[float]) -> Optional[float]:
    """``value / ref``; None when either is missing (or ``ref`` is 0)."""
    if value is None or not ref:
        return None
    return value / ref


def format_ratio(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f}×"


def leading_matches(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens at the start of ``a`` and ``b`` are equal."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def check_agreement(results: dict, workloads, warnings: list, *, reference: str = "pytorch",
                    must_match: str = "fasttx/greedy_b1", leading: bool = False) -> dict:
    """Compare each runtime's warm-up tokens with the reference runtime's (same thread count).

    ``must_match`` ("runtime/workload") must reproduce the reference exactly: a WARNING line is
    added otherwise.  ``leading``: also count the matching leading tokens of each sequence.
    """
    agreement = {}
    ref = results.get(reference, {})
    for rt, cells in results.items():
        if rt == reference:
            continue
        for wl in workloads:
            a, b = cells.get(wl, {}).get("sequences"), ref.get(wl, {}).get("sequences")
            if a is None or b is None:
                continue
            entry = {"identical_sequences": sum(x == y for x, y in zip(a, b)), "of": len(b)}
            if leading:
                entry["matching_leading_tokens"] = [leading_matches(x, y) for x, y in zip(a, b)]
                entry["of_tokens"] = [len(y) for y in b]
            agreement[f"{rt}/{wl}"] = entry
    label = "transformers'" if reference == "pytorch" else reference + "'s"
    what = must_match.replace("/", " ")
    if must_match in agreement:
        ok = agreement[must_match]
        if ok["identical_sequences"] != ok["of"]:
            warnings.append(f"WARNING: {what} tokens differ from {label}")
    elif must_match.split("/")[0] in results and reference in results:
        warnings.append(f"WARNING: {what} vs {label} check could not run")
    return agreement
