"""Prompt-lookup decoding (transformers' ``prompt_lookup_num_tokens``): greedy or sampling that
checks several tokens per forward pass, with the tokens of plain decoding.

Each row's text so far (for an encoder-decoder model, as in transformers, the decoder's: its
start token and the tokens generated) is searched for an earlier occurrence of its last n-gram; the tokens that
followed it there are the row's *draft* (transformers' ``PromptLookupCandidateGenerator``). One
session step feeds the row's last chosen token and the draft and returns the logits of every
position; the positions are then decided left to right exactly as plain decoding decides its
steps (the same processors over the history as it would be at that point, argmax or one draw of
the row's random stream), and decoding goes on past a position only while the token chosen there
is the draft's next token, i.e. while the next position's logits were computed from the sequence
plain decoding would have. A multi-position step computes each position with the same bits as
one-position steps (the products and attention compute each row alone: chunked prefill relies on
it too), so the tokens are those of plain decoding; the positions of rejected draft tokens are
then taken back from the cache (``NativeSession.rewind``).

Batches (transformers refuses them in assisted generation): rows of one session share one cache
length, so a step verifies every unfinished row's draft, all as long as the shortest, and every
row advances by the number of positions all of them accepted (plus the model's own next token).
A row whose draft ran further redoes the rest at the next step; its tokens are the same either way.

Draft selection follows transformers except that it does not run the logits processors over fake
scores to drop banned draft tokens: a banned token is never chosen, so such a draft is merely
rejected (this only changes how many tokens a step verifies, never which are produced).
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from dataclasses import dataclass
from typing import Collection, Iterator, Optional, Sequence

import numpy as np

from .constraints import RowConstraints
from .options import GenerationOptions
from .search import Prompt, RowSampler, StepEvent, check_temperature, checked_logits, pipeline, sample_tokens

# transformers' PromptLookupCandidateGenerator default (`max_matching_ngram_size or 2`).
DEFAULT_MAX_MATCHING_NGRAM_SIZE = 2


@dataclass
class LookupStats:
    """What prompt lookup did over the generations it was collected for (see ``collect_stats``)."""

    verify_steps: int = 0  # session steps that fed at least one draft token
    drafted: int = 0  # draft tokens fed, over all rows
    accepted: int = 0  # tokens produced from a draft position (the draft's token was chosen)
    tokens: int = 0  # tokens produced, over all rows

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


_STATS: contextvars.ContextVar[Optional[LookupStats]] = contextvars.ContextVar("fasttx_lookup_stats", default=None)


@contextlib.contextmanager
def collect_stats() -> Iterator[LookupStats]:
    """``with collect_stats() as stats:`` counts what prompt-lookup generations inside do (for
    benchmarks and tests; generation is the same without it)."""
    stats = LookupStats()
    token = _STATS.set(stats)
    try:
        yield stats
    finally:
        _STATS.reset(token)


def check_options(opts: GenerationOptions) -> None:
    """Refuses or reports what prompt lookup does not do, before any work, as transformers does:
    beam search ignores it (transformers warns and runs plain beam search), several returned
    sequences are refused (transformers' message)."""
    if opts.prompt_lookup_num_tokens is None:
        return
    if opts.num_beams > 1:
        warnings.warn(
            "prompt_lookup_num_tokens is ignored with num_beams > 1: prompt-lookup (assisted) decoding "
            "works with greedy search and sampling only, as in transformers",
            stacklevel=4,
        )
        return
    if opts.num_return_sequences > 1:
        raise ValueError(
            "num_return_sequences has to be 1 when doing assisted generate (prompt_lookup_num_tokens), "
            f"but is {opts.num_return_sequences}."
        )


def find_draft(seq: Sequence[int], num_tokens: int, max_ngram: int, eos: Collection[int]) -> list[int]:
    """transformers' ``PromptLookupCandidateGenerator.get_candidates`` for one row: for n-gram sizes
    from ``max_ngram`` down to 1, the first earlier occurrence (left to right) of the sequence's
    last n tokens that is followed by at least one token gives up to ``num_tokens`` of those
    following tokens, cut before the first EOS (a draft that starts with EOS is empty)."""
    length = len(seq)
    if length < 2:
        return []
    arr = np.asarray(seq, dtype=np.int64)
    for n in range(min(max_ngram, length - 1), 0, -1):
        tail = arr[length - n :]
        # Starts i with i + n < length: the match is followed by a token (the tail itself is not).
        for i in np.flatnonzero(arr[: length - n] == tail[0]).tolist():
            if n == 1 or np.array_equal(arr[i : i + n], tail):
                draft = arr[i + n : min(i + n + num_tokens, length)].tolist()
                for j, t in enumerate(draft):
                    if t in eos:
                        return draft[:j]
                return draft
    return []


def decode(
    native_model,
    session,
    prompt: Prompt,
    opts: GenerationOptions,
    budget: int,
    sampler: Optional[RowSampler] = None,
    is_stopped=None,
    constraints: Optional[RowConstraints] = None,
) -> Iterator[StepEvent]:
    """``search.sample_or_greedy`` with prompt lookup: the same events (one per produced position,
    one token per unfinished row), several per session step when drafts are accepted.
    ``constraints``: each position is masked after the tokens chosen before it, so a draft token
    the constraint forbids is never chosen (the draft is cut there, as on any other mismatch)."""
    if prompt.copies != 1:  # check_options refuses num_return_sequences > 1
        raise ValueError("prompt lookup decodes one sequence per input")
    stats = _STATS.get()
    num_tokens = opts.prompt_lookup_num_tokens
    if num_tokens is None:
        raise ValueError("prompt lookup decoding needs prompt_lookup_num_tokens")
    max_ngram = opts.max_matching_ngram_size or DEFAULT_MAX_MATCHING_NGRAM_SIZE
    procs = pipeline(opts, prompt.prompt_len, prompt.padding(), prompt.prompt_len + budget, constraints=constraints)
    eos = set(opts.eos_token_id)
    pads = prompt.padding()
    history = prompt.history
    if budget == 0:
        return
    active = list(range(len(history)))  # session row i decodes original row active[i]
    drafts: list[list[int]] = [[] for _ in active]
    # [rows, positions, vocab]: position j's logits follow the row's last token and draft[:j].
    columns = checked_logits(session.step(prompt.first_tokens, prompt.first_mask), 0)[:, None, :]
    generated, step = 0, 0
    while True:
        k = columns.shape[1] - 1
        base = session.length - (k + 1)  # positions before this step's tokens
        live = list(range(len(active)))  # indices into this step's rows still decoding
        accepted = 0
        for j in range(k + 1):
            rows = [active[i] for i in live]
            scores = np.ascontiguousarray(columns[live, j], dtype=np.float32)
            scores = procs.apply(scores, [history[r] for r in rows], rows)
            if sampler is None:
                chosen = np.argmax(scores, axis=-1).tolist()
            else:
                check_temperature(scores, opts.temperature, step)
                chosen = sample_tokens(native_model, scores, opts, sampler, rows)
            if constraints is not None:
                constraints.consume(rows, chosen)
            finished, survivors = [], []
            for i, r, t in zip(live, rows, chosen):
                history[r].append(t)
                if t in eos or (is_stopped is not None and is_stopped(r, t)):
                    finished.append(r)
                else:
                    survivors.append(i)
            yield StepEvent(rows=rows, tokens=chosen, finished=finished, scores=scores)
            generated += 1
            if stats is not None:
                stats.tokens += len(rows)
                stats.accepted += len(rows) if j > 0 else 0
            accepted = j
            last = dict(zip(live, chosen))
            live = survivors
            if not live or generated == budget:
                return
            # Position j + 1 was computed after draft[j]: it counts only where that was chosen.
            if j == k or any(last[i] != drafts[i][j] for i in live):
                break
        # Keep the last token fed before the drafts and the accepted draft tokens.
        if accepted < k:
            session.rewind(base + 1 + accepted)
        if len(live) != len(active):
            session.reorder(live)
        pending = [last[i] for i in live]
        active = [active[i] for i in live]
        # The next step yields up to 1 + draft tokens: within the budget.
        room = budget - generated - 1
        drafts = [
            find_draft(history[r][pads[r] :], min(num_tokens, room), max_ngram, eos) if room > 0 else []
            for r in active
        ]
        k = min(len(d) for d in drafts)
        drafts = [d[:k] for d in drafts]
        step += 1
        tokens = np.asarray([[t, *d] for t, d in zip(pending, drafts)], dtype=np.int64)
        if k == 0:
            columns = checked_logits(session.step(tokens, None), step)[:, None, :]
        else:
            columns = checked_logits(session.step(tokens, None, last_only=False), step)
            if stats is not None:
                stats.verify_steps += 1
                stats.drafted += k * len(active)
