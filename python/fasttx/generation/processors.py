"""Logits processors with transformers' semantics, applied in transformers' order.

Each processor takes ``scores`` (float32, ``[rows, vocab]``, modified in place), ``history`` (per
row, the token ids transformers would hold in ``input_ids``: the prompt with its padding for
decoder-only models, the decoder start token for encoder-decoder models, then the generated tokens)
and ``rows`` (which generated sequence each row of ``scores`` is, for per-sequence settings).
Greedy and sampling apply them to raw logits; beam search to log-probabilities (as transformers does).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .options import GenerationOptions

Processor = Callable[[np.ndarray, Sequence[Sequence[int]], Sequence[int]], None]

NEG_INF = np.float32(-np.inf)


def repetition_penalty(penalty: float, padding: Sequence[int]) -> Processor:
    """Every token already in the row: ``s * p`` if ``s < 0`` else ``s / p``. The row's left
    padding (``padding[row]`` tokens) does not count, as in transformers 5 (``prompt_ignore_length``)."""
    p = np.float32(penalty)

    def apply(scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        vocab = scores.shape[-1]
        for row, ids, r in zip(scores, history, rows):
            # Ids past the scores (an embedding larger than the head) cannot be generated:
            # transformers clamps them into a spare column it drops.
            idx = np.fromiter((t for t in set(ids[padding[r] :]) if t < vocab), dtype=np.int64)
            s = row[idx]
            row[idx] = np.where(s < 0, s * p, s / p)

    return apply


def no_repeat_ngram(n: int) -> Processor:
    """Bans every token that would complete an n-gram already present in the row."""

    def apply(scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        vocab = scores.shape[-1]
        for row, ids in zip(scores, history):
            if len(ids) < n:
                continue
            prefix = tuple(ids[len(ids) - n + 1 :]) if n > 1 else ()
            banned = {
                ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i : i + n - 1]) == prefix
            }
            banned = [t for t in banned if t < vocab]  # ids past the scores: see repetition_penalty
            if banned:
                row[banned] = NEG_INF

    return apply


def suppress_eos_until(min_len: int, prompt_len: int, eos: Sequence[int]) -> Processor:
    """EOS is impossible while fewer than ``min_len`` tokens follow the ``prompt_len`` prompt tokens."""
    eos_idx = list(eos)

    def apply(scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        for row, ids in zip(scores, history):
            if len(ids) - prompt_len < min_len:
                row[eos_idx] = NEG_INF

    return apply


def temperature(t: float) -> Processor:
    tt = np.float32(t)

    def apply(scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        scores /= tt

    return apply


def top_k(k: int, min_keep: int = 1) -> Processor:
    def apply(scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        kk = min(max(k, min_keep), scores.shape[-1])
        kth = np.partition(scores, -kk, axis=-1)[:, -kk][:, None]
        scores[scores < kth] = NEG_INF

    return apply


def top_p(p: float, min_keep: int = 1) -> Processor:
    """transformers' TopPLogitsWarper: drop the low tail whose cumulative probability is <= 1 - p.

    The running sum is accumulated in float64 and rounded to float32, as torch's CPU ``cumsum``
    does for float32 (a float32 running sum drifts by a few ulps over a large vocabulary, enough to
    move the cut). Equal scores straddling the cut: transformers' order there is whatever torch's
    unstable sort leaves; here lower token ids are kept first (as argmax and min_p prefer them)."""

    def apply(scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        # Ascending, as transformers sorts; among equal scores the higher ids come first (go first).
        order = np.argsort(-scores, axis=-1, kind="stable")[:, ::-1]
        sorted_scores = np.take_along_axis(scores, order, axis=-1)
        probs = _softmax(sorted_scores)
        cum = np.cumsum(probs, axis=-1, dtype=np.float64).astype(np.float32)
        remove = cum <= np.float32(1 - p)
        remove[:, -min_keep:] = False
        rows = np.arange(scores.shape[0])[:, None]
        scores[rows, order] = np.where(remove, NEG_INF, sorted_scores)

    return apply


def min_p(p: float, min_keep: int = 1) -> Processor:
    """transformers' MinPLogitsWarper: drop tokens less likely than ``p`` times the top probability."""

    def apply(scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        probs = _softmax(scores)
        threshold = np.float32(p) * probs.max(axis=-1, keepdims=True)
        remove = probs < threshold
        keep_idx = np.argsort(-scores, axis=-1, kind="stable")[:, :min_keep]
        np.put_along_axis(remove, keep_idx, False, axis=-1)
        scores[remove] = NEG_INF

    return apply


def _softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m, dtype=np.float32)
    return e / e.sum(axis=-1, keepdims=True)


def build(
    opts: GenerationOptions, prompt_len: int, padding: Sequence[int], *, beam: bool, warpers: bool = True
) -> list[Processor]:
    """The processor list transformers' ``_get_logits_processor`` would build for these options;
    ``padding[row]`` is the left padding of each generated sequence's prompt. ``warpers=False``
    leaves out sampling's warpers (greedy/sampling runs them natively with the draw)."""
    procs: list[Processor] = []
    if opts.repetition_penalty != 1.0:
        procs.append(repetition_penalty(opts.repetition_penalty, padding))
    if opts.no_repeat_ngram_size > 0:
        procs.append(no_repeat_ngram(opts.no_repeat_ngram_size))
    if opts.eos_token_id:
        # MinLengthLogitsProcessor counts the whole sequence; MinNewTokensLength only new tokens.
        # Given min_new_tokens, transformers' _prepare_generated_length replaces min_length by
        # min_new_tokens + prompt length (min_new_tokens takes precedence): MinLength is then the
        # same condition as MinNewTokens, and the user's min_length is ignored.
        if opts.min_new_tokens is None and opts.min_length > 0:
            procs.append(suppress_eos_until(opts.min_length, 0, opts.eos_token_id))
        if opts.min_new_tokens:
            procs.append(suppress_eos_until(opts.min_new_tokens, prompt_len, opts.eos_token_id))
    if opts.do_sample and warpers:
        # Beam sampling keeps one token per EOS id plus one in every warper (2 without EOS ids).
        min_keep = (len(opts.eos_token_id) + 1 if opts.eos_token_id else 2) if beam else 1
        if opts.temperature != 1.0:
            procs.append(temperature(opts.temperature))
        if opts.top_k is not None and opts.top_k != 0:
            procs.append(top_k(opts.top_k, min_keep))
        if opts.top_p < 1.0:
            procs.append(top_p(opts.top_p, min_keep))
        if opts.min_p is not None:
            procs.append(min_p(opts.min_p, min_keep))
    return procs


def apply_all(
    procs: Sequence[Processor], scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]
) -> None:
    for p in procs:
        p(scores, history, rows)
