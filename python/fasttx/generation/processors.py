"""Logits processors with transformers' semantics, applied in transformers' order.

Each processor takes ``scores`` (float32, ``[rows, vocab]``, modified in place), ``history`` (per
row, the token ids transformers would hold in ``input_ids``: the prompt with its padding for
decoder-only models, the decoder start token for encoder-decoder models, then the generated tokens)
and ``rows`` (which generated sequence each row of ``scores`` is, for per-sequence settings).
Greedy and sampling apply them to raw logits; beam search to log-probabilities (as transformers does).
Sampling's warpers come after them and run natively (``warpers`` names their settings).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

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


def bad_words(bad_words_ids: Sequence[Sequence[int]], eos: Sequence[int]) -> Processor:
    """transformers' ``NoBadWordsLogitsProcessor``: a one-token ban is always -inf; a longer one
    bans its last token when the row's history ends with the rest of it. Single-token bans of an
    EOS id are dropped (min/max length rules own EOS), as are empty ones; duplicates count once."""
    single: set[int] = set()
    # prefix length -> {prefix: last tokens banned after it}
    by_prefix: dict[int, dict[tuple[int, ...], list[int]]] = {}
    for seq in bad_words_ids:
        if len(seq) == 1:
            if seq[0] not in eos:
                single.add(seq[0])
        elif seq:  # an empty sequence bans nothing (transformers accepts and skips it)
            last = by_prefix.setdefault(len(seq) - 1, {}).setdefault(tuple(seq[:-1]), [])
            if seq[-1] not in last:
                last.append(seq[-1])
    always = np.fromiter(sorted(single), dtype=np.int64)

    def apply(scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        for row, ids in zip(scores, history):
            row[always] = NEG_INF
            for n, table in by_prefix.items():
                if n <= len(ids):  # transformers skips prefixes longer than the history
                    banned = table.get(tuple(ids[len(ids) - n :]))
                    if banned:
                        row[banned] = NEG_INF

    return apply


def force_token_at(length: int, tokens: Sequence[int]) -> Processor:
    """Rows whose history holds ``length`` tokens may only continue with ``tokens``: every other
    score becomes -inf and theirs 0 (transformers' ``ForcedBOSTokenLogitsProcessor`` with
    ``length`` 1, and ``ForcedEOSTokenLogitsProcessor`` with ``max_length - 1``). The length is
    the whole history (decoder start token, or the padded prompt), as transformers counts it."""
    idx = list(tokens)

    def apply(scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        for row, ids in zip(scores, history):
            if len(ids) == length:
                row[:] = NEG_INF
                row[idx] = 0.0

    return apply


def build(
    opts: GenerationOptions, prompt_len: int, padding: Sequence[int], max_length: Optional[int] = None
) -> list[Processor]:
    """The processor list transformers' ``_get_logits_processor`` would build for these options,
    up to sampling's warpers (see ``warpers``); ``padding[row]`` is the left padding of each
    generated sequence's prompt; ``max_length`` (prompt plus new-token budget: transformers'
    final ``generation_config.max_length``) places the forced EOS."""
    procs: list[Processor] = []
    if opts.repetition_penalty != 1.0:
        procs.append(repetition_penalty(opts.repetition_penalty, padding))
    if opts.no_repeat_ngram_size > 0:
        procs.append(no_repeat_ngram(opts.no_repeat_ngram_size))
    if opts.bad_words_ids is not None:
        procs.append(bad_words(opts.bad_words_ids, opts.eos_token_id))
    if opts.eos_token_id:
        # MinLengthLogitsProcessor counts the whole sequence; MinNewTokensLength only new tokens.
        # Given min_new_tokens, transformers' _prepare_generated_length replaces min_length by
        # min_new_tokens + prompt length (min_new_tokens takes precedence): MinLength is then the
        # same condition as MinNewTokens, and the user's min_length is ignored.
        if opts.min_new_tokens is None and opts.min_length > 0:
            procs.append(suppress_eos_until(opts.min_length, 0, opts.eos_token_id))
        if opts.min_new_tokens:
            procs.append(suppress_eos_until(opts.min_new_tokens, prompt_len, opts.eos_token_id))
    if opts.forced_bos_token_id is not None:
        procs.append(force_token_at(1, [opts.forced_bos_token_id]))
    if opts.forced_eos_token_id is not None:
        if max_length is None:
            raise ValueError("forced_eos_token_id needs the generation's max_length")
        procs.append(force_token_at(max_length - 1, opts.forced_eos_token_id))
    return procs


def renormalize(scores: np.ndarray) -> np.ndarray:
    """transformers' ``LogitNormalization`` (``renormalize_logits=True``, the last processor): a
    float32 log-softmax of each row. Only beam search needs it: it changes the scores hypotheses
    accumulate, while greedy's argmax and sampling's draw are the same without it."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # banned tokens (-inf) stay -inf
        return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32, copy=False)


class Warpers(NamedTuple):
    """Sampling's warpers (transformers' ``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
    ``TopPLogitsWarper``, ``MinPLogitsWarper``, in that order), which run natively: the trailing
    arguments of ``NativeModel.sample_rows`` and ``NativeModel.warp_rows`` (rust/core/src/sampling.rs)."""

    temperature: float
    top_k: int  # 0: off
    top_p: float  # 1.0: off
    min_p: Optional[float]  # None: off
    min_keep: int  # tokens every warper keeps at least


def warpers(opts: GenerationOptions, *, beam: bool) -> Warpers:
    """The warpers transformers' ``_get_logits_processor`` appends for ``do_sample`` (after the
    processors of ``build``)."""
    # Beam sampling keeps one token per EOS id plus one in every warper (2 without EOS ids).
    min_keep = (len(opts.eos_token_id) + 1 if opts.eos_token_id else 2) if beam else 1
    return Warpers(opts.temperature, opts.top_k or 0, opts.top_p, opts.min_p, min_keep)


def apply_all(
    procs: Sequence[Processor], scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]
) -> None:
    for p in procs:
        p(scores, history, rows)
