"""The decoding loops: greedy/sampling and beam search, driven from Python over a native session.

Each step's heavy work (the forward pass with caches, log-softmax, the top-k over all beams, cache
reordering) runs in Rust with the GIL released; what stays here is bookkeeping on small arrays,
written to follow transformers' ``_sample`` and ``_beam_search`` decision for decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .._native import ModelFormatError
from . import processors
from .constraints import RowConstraints
from .options import GenerationOptions
from .scores import Pipeline, Recording

# transformers marks impossible beams with this score (float32 arithmetic, as there).
BIG_NEG = np.float32(-1.0e9)

# Beam search's token arrays start this many positions past the prompt and double when full, so
# their memory follows the tokens produced, not the (possibly huge) budget.
INITIAL_BEAM_WIDTH = 64


def checked_logits(logits: np.ndarray, step: int, finite: Optional[bool] = None) -> np.ndarray:
    """``logits`` of a session step, refused when any value is NaN or infinite: a model whose
    weights or config produce them would otherwise pick token 0 (argmax of NaN) forever.
    ``finite``: the session's ``logits_finite`` for these logits (True spares the pass over them)."""
    if finite is not True and not np.isfinite(logits).all():
        bad = ~np.isfinite(logits.reshape(logits.shape[0], -1))
        row = int(np.argmax(bad.any(axis=1)))
        kind = "NaN" if np.isnan(logits[row]).any() else "infinite values"
        raise ModelFormatError(
            f"logits of step {step} hold {kind} (row {row}): the model's weights or config produce "
            "non-finite values"
        )
    return logits


def check_temperature(scores: np.ndarray, temperature: float, step: int) -> None:
    """Refuses a temperature so small that dividing this step's finite ``scores`` by it overflows
    float32: the warped scores would be infinities and the draw NaN (transformers fails there too).
    Above 1e-6 that would take scores beyond 3e32, which no model produces: the scan is skipped."""
    if temperature >= 1e-6:
        return
    finite = np.abs(scores[np.isfinite(scores)])
    largest = float(finite.max()) if finite.size else 0.0
    if largest / temperature > float(np.finfo(np.float32).max):
        raise ValueError(
            f"temperature={temperature!r} is too small: at step {step} the scores divided by it "
            "overflow float32; use a larger temperature, or do_sample=False for greedy decoding"
        )


def check_length_penalty(length_penalty: float, budget: int) -> None:
    """Beam search divides a finished hypothesis' score by ``length ** length_penalty`` (float32);
    refuses a penalty for which that divisor is zero or infinite at some length of the budget
    (every finished hypothesis would score -inf or 0, and beam search would return nothing)."""
    for length in (1, max(1, budget)):  # the extremes of a monotonic function of the length
        try:
            divisor = np.float32(float(length) ** length_penalty)
        except OverflowError:
            divisor = np.float32(np.inf)
        if not (np.isfinite(divisor) and divisor > 0):
            raise ValueError(
                f"length_penalty={length_penalty!r} is too large in magnitude for hypotheses of up to "
                f"{budget} tokens: {length} ** length_penalty is not a finite, nonzero float32"
            )


@dataclass
class Prompt:
    """What the generation loop needs to know about the decoder-side prompt of each row."""

    history: list[list[int]]  # per generated row: the ids transformers keeps in `input_ids`
    first_tokens: np.ndarray  # [inputs, n]: fed to the session at the first step, once per input
    first_mask: Optional[np.ndarray]  # [inputs, n] or None
    prompt_len: int  # transformers' (decoder) prompt length, for length budgets and penalties
    copies: int = 1  # generated rows per input (beams, or sampled sequences), made after the first step

    def padding(self) -> list[int]:
        """Left padding of each generated row's prompt (leading zeros of the first mask)."""
        if self.first_mask is None:
            return [0] * len(self.history)
        pads = (self.first_mask != 0).argmax(axis=1).tolist()
        return [p for p in pads for _ in range(self.copies)]


@dataclass
class StepEvent:
    """Tokens chosen at one step: ``tokens[i]`` was appended to row ``rows[i]`` (with
    ``keep_finished``, rows finished at an earlier step are listed too, with the pad token)."""

    rows: list[int]
    tokens: list[int]
    finished: list[int]  # rows that are complete after this step
    # The processed scores the tokens were chosen from, row i for rows[i] (before sampling's
    # warpers), and the step's raw logits when asked for (``keep_logits``).
    scores: Optional[np.ndarray] = None
    logits: Optional[np.ndarray] = None


def pipeline(
    opts: GenerationOptions,
    prompt_len: int,
    padding: Sequence[int],
    max_length: Optional[int],
    extra: Sequence[processors.Processor] = (),
    constraints: Optional[RowConstraints] = None,
) -> Pipeline:
    """The score pipeline of a decoding loop (generation/scores.py): transformers' built-in
    processors for ``opts``, then ``extra`` (engine-specific), then the user's
    ``logits_processor``, then the constraint's mask (``constraints``)."""
    builtin = processors.build(opts, prompt_len, padding, max_length)
    builtin.extend(extra)
    return Pipeline(builtin, opts.logits_processor, constraints)


class RowSampler:
    """Per-row random streams, seeded from (seed, the row's prompt, its sequence index), so a row's
    draws do not depend on which other rows share its batch, nor on the thread count."""

    def __init__(self, seed: Optional[int], prompts: Sequence[Sequence[int]], seq_index: Sequence[int]):
        base = seed if seed is not None else int(np.random.SeedSequence().entropy % (1 << 63))
        self.rngs = [
            np.random.default_rng([base, idx, len(p), *(int(t) for t in p)])
            for p, idx in zip(prompts, seq_index)
        ]

    def uniforms(self, rows: Sequence[int]) -> list[float]:
        """One uniform number in [0, 1) per row, from that row's own stream."""
        return [float(self.rngs[r].random()) for r in rows]


def sample_tokens(native_model, scores: np.ndarray, opts: GenerationOptions, sampler: RowSampler, rows) -> list[int]:
    """transformers' sampling warpers (temperature, top-k, top-p, min-p, in that order) and a draw
    per row, natively: the row's uniform number picks a token by cumulative probability."""
    return native_model.sample_rows(
        np.ascontiguousarray(scores, dtype=np.float32),
        sampler.uniforms(rows),
        *processors.warpers(opts, beam=False),
    )


class RowDecisions:
    """transformers' ``_sample`` decision of each step for one group of rows: the processors, then
    argmax or a draw, then the EOS and stop checks. ``sample_or_greedy`` runs one group per call;
    the serving engine (fasttx.serve.engine) one per request, its rows sharing a batch session with
    other requests' rows, which is why the session's stepping stays outside this class.

    ``active`` lists the rows (indices into ``prompt.history``) still generating, in the order the
    caller feeds their logits; ``extra`` processors run after the built-in ones (the engine's
    OpenAI penalties); ``constraints`` (constrained output, rows indexed like ``history``) masks
    the scores last and follows the chosen tokens.

    ``keep_finished``: finished rows stay in the batch as transformers keeps them, fed the pad
    token (their history, as transformers' ``input_ids``, grows with it), and their scores are
    still computed; ``rows`` then lists every row at every step. fasttx otherwise drops them (their
    tokens cannot change); keeping them is what makes per-step score arrays and the ``input_ids``
    given to custom processors transformers' own. ``keep_logits``: each event carries a copy of
    the step's raw logits."""

    def __init__(
        self,
        native_model,
        prompt: Prompt,
        opts: GenerationOptions,
        budget: int,
        sampler: Optional[RowSampler] = None,
        is_stopped=None,
        extra: Sequence[processors.Processor] = (),
        *,
        keep_finished: bool = False,
        keep_logits: bool = False,
        constraints: Optional[RowConstraints] = None,
    ):
        self.native_model = native_model
        self.constraints = constraints
        self.opts = opts
        self.history = prompt.history
        self.budget = budget
        self.sampler = sampler
        self.is_stopped = is_stopped
        # Sampling's warpers run natively in `sample_tokens`; the rest of the pipeline here.
        self.pipeline = pipeline(
            opts, prompt.prompt_len, prompt.padding(), prompt.prompt_len + budget, extra, constraints
        )
        self.eos = set(opts.eos_token_id)
        self.active = list(range(len(prompt.history)))
        self.keep_finished = keep_finished
        self.keep_logits = keep_logits
        self.fed = list(self.active)  # the rows of the logits `choose` is given
        self.pad = pad_token(opts)
        self.steps = 0

    @property
    def done(self) -> bool:
        """Every row finished, or the new-token budget is spent."""
        return not self.active or self.steps >= self.budget

    def choose(self, logits: np.ndarray) -> tuple[StepEvent, list[int]]:
        """Picks the next token of every row of ``fed`` (the active rows, or with
        ``keep_finished`` every row) from ``logits`` ``[len(fed), vocab]``, which the processors
        change in place (the event's ``scores`` hold the scores the tokens were chosen from, before
        sampling's warpers). Returns the step's event and ``keep``: the positions in ``fed`` of
        the rows that go on (``active`` and ``fed`` are updated)."""
        fed = self.fed
        raw = logits.copy() if self.keep_logits else None
        scores = self.pipeline.apply(logits, [self.history[r] for r in fed], fed)
        if len(fed) == len(self.active):
            choosing = list(range(len(fed)))  # every fed row chooses
            chooser = scores
        else:  # keep_finished: rows finished earlier take the pad token
            unfinished = set(self.active)
            choosing = [i for i, r in enumerate(fed) if r in unfinished]
            chooser = scores[choosing]
        if self.sampler is None:
            picked = np.argmax(chooser, axis=-1).tolist()
        else:
            check_temperature(chooser, self.opts.temperature, self.steps)
            picked = sample_tokens(self.native_model, chooser, self.opts, self.sampler, [fed[i] for i in choosing])
        if self.constraints is not None:
            self.constraints.consume([fed[i] for i in choosing], picked)
        if len(choosing) == len(fed):
            chosen = picked
        else:
            chosen = [self.pad] * len(fed)
            for i, t in zip(choosing, picked):
                chosen[i] = t
        for r, t in zip(fed, chosen):
            self.history[r].append(t)
        finished = []
        going = []
        for i in choosing:
            r, t = fed[i], chosen[i]
            if t in self.eos or (self.is_stopped is not None and self.is_stopped(r, t)):
                finished.append(r)
            else:
                going.append(i)
        self.steps += 1
        if len(going) != len(choosing):
            self.active = [fed[i] for i in going]
        if not self.keep_finished:
            keep = going
        else:
            keep = list(range(len(fed))) if self.active else []
        if len(keep) != len(fed):
            self.fed = [fed[i] for i in keep]
        event = StepEvent(rows=list(fed), tokens=chosen, finished=finished, scores=scores, logits=raw)
        return event, keep


def pad_token(opts: GenerationOptions) -> int:
    """The token transformers feeds finished rows (its pad token, else the first EOS id, which
    ``generate`` then takes as pad; 0 without either)."""
    if opts.pad_token_id is not None:
        return opts.pad_token_id
    return opts.eos_token_id[0] if opts.eos_token_id else 0


def repeat_rows(session, logits: np.ndarray, copies: int) -> np.ndarray:
    """After the first step: every row of ``session`` (and of its ``logits``) repeated ``copies``
    times in place, for the beams or sampled sequences of each input (transformers expands the
    prompt before the first step; one pass per input gives the same logits for less work)."""
    session.reorder(np.repeat(np.arange(logits.shape[0]), copies).tolist())
    return np.repeat(logits, copies, axis=0)


def sample_or_greedy(
    native_model,
    session,
    prompt: Prompt,
    opts: GenerationOptions,
    budget: int,
    sampler: Optional[RowSampler] = None,
    is_stopped=None,
    *,
    keep_finished: bool = False,
    keep_logits: bool = False,
    constraints: Optional[RowConstraints] = None,
) -> Iterator[StepEvent]:
    """transformers' ``_sample``: one token per unfinished row per step, argmax or a draw.

    Finished rows are dropped from the session (their results cannot change), which is where a
    batch's cost shrinks as its rows end, unless ``keep_finished`` (see ``RowDecisions``).
    ``is_stopped(row, tokens)`` lets the caller end a row (stop strings)."""
    decisions = RowDecisions(
        native_model,
        prompt,
        opts,
        budget,
        sampler,
        is_stopped,
        keep_finished=keep_finished,
        keep_logits=keep_logits,
        constraints=constraints,
    )
    tokens, mask = prompt.first_tokens, prompt.first_mask
    for step in range(budget):
        logits = session.step(tokens, mask)
        logits = checked_logits(logits, step, session.logits_finite)
        mask = None
        if step == 0 and prompt.copies > 1:
            logits = repeat_rows(session, logits, prompt.copies)
        event, keep = decisions.choose(logits)
        yield event
        if not keep:
            return
        if len(keep) != len(event.rows):
            session.reorder(keep)
        tokens = np.asarray([event.tokens[i] for i in keep], dtype=np.int64)[:, None]


def beam_search(
    native_model,
    session,
    prompt: Prompt,
    opts: GenerationOptions,
    budget: int,
    stop_hit: Optional[Callable[[list[int]], bool]] = None,
    sampler: Optional[RowSampler] = None,
    record: Optional[Recording] = None,
    constraints: Optional[RowConstraints] = None,
) -> list[list[int]]:
    """transformers' ``_beam_search`` (vectorised form, 4.50+): returns, for each input, its
    ``num_return_sequences`` best hypotheses (new tokens only), best first.

    ``stop_hit(new_tokens)`` (stop strings) ends a candidate as EOS does: it joins the finished
    hypotheses with its score and stops growing. With ``opts.do_sample`` (beam sampling), the
    candidates of each step are drawn without replacement from the softmax of the (warped)
    accumulated scores instead of taken as the top ones, with ``sampler``'s stream of each input.

    ``constraints`` (one row per beam, not strict: a beam without continuation just scores
    -inf) masks each beam's processed log-probabilities; a beam's state follows it when the beams
    are reordered.

    ``record`` (``return_dict_in_generate``) receives each step's processed log-probabilities
    and/or raw logits for all ``batch * num_beams`` running beams, the returned hypotheses'
    ``sequences_scores`` and their ``finish_reasons`` (``"stop"``: EOS or a stop string,
    ``"length"``: cut at the budget)."""
    K = opts.num_beams
    batch = len(prompt.history) // K
    eos = np.asarray(opts.eos_token_id, dtype=np.int64)
    keep = max(2, 1 + len(eos)) * K
    p0 = prompt.prompt_len
    max_length = p0 + budget
    lp = opts.length_penalty
    es = opts.early_stopping
    procs = pipeline(opts, p0, prompt.padding(), max_length, constraints=constraints)
    warpers = processors.warpers(opts, beam=True) if opts.do_sample else None

    if budget == 0:
        if record is not None:
            record.sequences_scores = np.zeros(batch * opts.num_return_sequences, dtype=np.float32)
            record.finish_reasons = ["length"] * (batch * opts.num_return_sequences)
        return [[] for _ in range(batch * opts.num_return_sequences)]
    check_length_penalty(lp, budget)

    fill = opts.pad_token_id if opts.pad_token_id is not None else (int(eos[0]) if len(eos) else 0)
    # Token arrays hold the positions produced so far (grown by `_widen`); transformers sizes them
    # by max_length up front, which only differs in memory.
    running = np.full((batch, K, min(max_length, p0 + INITIAL_BEAM_WIDTH)), fill, dtype=np.int64)
    for b in range(batch):
        running[b, :, :p0] = prompt.history[b * K]
    sequences = running.copy()
    running_scores = np.zeros((batch, K), dtype=np.float32)
    running_scores[:, 1:] = BIG_NEG
    beam_scores = np.full((batch, K), BIG_NEG, dtype=np.float32)
    lengths = np.full((batch, K), p0, dtype=np.int64)  # length of each finished hypothesis
    stopped = np.zeros((batch, K), dtype=bool)  # it ended by EOS or a stop string, not the budget
    finished = np.zeros((batch, K), dtype=bool)
    improvable = np.ones((batch, 1), dtype=bool)
    top_mask = np.arange(keep) < K
    batch_offset = (np.arange(batch) * K)[:, None]
    cur_len = p0

    # The first step runs once per input; its rows are then copied into the beams.
    step = 0
    log_probs = _beam_step(native_model, session, prompt.first_tokens, prompt.first_mask, step, record)
    log_probs = repeat_rows(session, log_probs, K)
    if record is not None and record.logits is not None:
        record.logits[-1] = np.repeat(record.logits[-1], K, axis=0)
    vocab = log_probs.shape[-1]

    while True:
        if cur_len >= running.shape[2]:
            width = min(max_length, 2 * running.shape[2])
            running, sequences = _widen(running, width, fill), _widen(sequences, width, fill)
        flat = running.reshape(batch * K, running.shape[2])
        if procs:
            log_probs = procs.apply(log_probs, [row[:cur_len].tolist() for row in flat], range(batch * K))
        if warpers is not None:
            # Beam sampling warps each beam's processed log-probabilities, before the beam's
            # running score is added.
            check_temperature(log_probs, opts.temperature, step)
            log_probs = native_model.warp_rows(np.ascontiguousarray(log_probs, dtype=np.float32), *warpers)
        if opts.renormalize_logits:
            log_probs = processors.renormalize(log_probs)
        if record is not None and record.scores is not None:
            record.scores.append(np.array(log_probs, dtype=np.float32))
        scores = (log_probs.reshape(batch, K, vocab) + running_scores[:, :, None]).reshape(batch, K * vocab)
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        if opts.do_sample:
            top_values, top_indices = _sample_candidates(native_model, scores, keep, sampler)
        else:
            top_values, top_indices = native_model.topk_rows(scores, keep)
        src_beam = top_indices // vocab
        tokens = top_indices % vocab
        cand = np.take_along_axis(running, src_beam[:, :, None], axis=1)
        cand[:, :, cur_len] = tokens
        hits = np.isin(tokens, eos) if len(eos) else np.zeros_like(tokens, dtype=bool)
        if stop_hit is not None:
            for b, j in zip(*np.nonzero(~hits)):
                hits[b, j] = stop_hit(cand[b, j, p0 : cur_len + 1].tolist())
        real_hits = hits.copy()
        if cur_len + 1 >= max_length:
            hits[:] = True

        # Running beams for the next step: the best K candidates that did not just finish.
        run_scores = top_values + hits.astype(np.float32) * BIG_NEG
        nxt = _top(run_scores, K)
        running = np.take_along_axis(cand, nxt[:, :, None], axis=1)
        running_scores = np.take_along_axis(run_scores, nxt, axis=1)
        running_src = np.take_along_axis(src_beam, nxt, axis=1)

        # Finished pool: candidates among the top K that hit a stop, scored with the length penalty.
        just = hits & top_mask[None, :]
        fin_scores = top_values / np.float32((cur_len + 1 - p0) ** lp)
        full = finished.all(axis=-1, keepdims=True) & (es is True)
        fin_scores = fin_scores + full.astype(np.float32) * BIG_NEG
        fin_scores = fin_scores + (~improvable).astype(np.float32) * BIG_NEG
        fin_scores = fin_scores + (~just).astype(np.float32) * BIG_NEG
        merged_scores = np.concatenate([beam_scores, fin_scores], axis=1)
        order = _top(merged_scores, K)
        sequences = np.take_along_axis(np.concatenate([sequences, cand], axis=1), order[:, :, None], axis=1)
        beam_scores = np.take_along_axis(merged_scores, order, axis=1)
        finished = np.take_along_axis(np.concatenate([finished, just], axis=1), order, axis=1)
        new_lengths = np.full((batch, keep), cur_len + 1, dtype=np.int64)
        lengths = np.take_along_axis(np.concatenate([lengths, new_lengths], axis=1), order, axis=1)
        stopped = np.take_along_axis(np.concatenate([stopped, real_hits], axis=1), order, axis=1)

        cur_len += 1
        if es == "never" and lp > 0.0:
            best_len = max_length - p0
        else:
            best_len = cur_len - p0
        best_running = running_scores[:, :1] / np.float32(best_len**lp)
        worst_finished = np.where(finished, beam_scores.min(axis=1, keepdims=True), BIG_NEG)
        improvable = improvable & np.any(best_running > worst_finished, axis=-1, keepdims=True)
        go_on = bool(improvable.any()) and not (bool(finished.all()) and es is True) and not bool(hits.all())
        if not go_on:
            break
        session.reorder((batch_offset + running_src).reshape(-1).tolist())
        if constraints is not None:
            constraints.reorder((batch_offset + running_src).reshape(-1).tolist())
            # Running beams may hold a just-finished candidate's token (when fewer than K went
            # on): such a beam is out of the race, its constraint need not accept it.
            constraints.consume(range(batch * K), running[:, :, cur_len - 1].reshape(-1).tolist(), strict=False)
        step += 1
        log_probs = _beam_step(native_model, session, running[:, :, cur_len - 1].reshape(batch * K, 1), None, step, record)

    _check_best_finished(finished, opts)
    n = opts.num_return_sequences
    out = []
    for b in range(batch):
        for i in range(n):
            out.append(sequences[b, i, p0 : lengths[b, i]].tolist())
    if record is not None:
        # transformers returns sequences_scores only with output_scores.
        if record.scores is not None:
            record.sequences_scores = beam_scores[:, :n].reshape(-1).astype(np.float32)
        record.finish_reasons = ["stop" if x else "length" for x in stopped[:, :n].reshape(-1).tolist()]
    return out


def _beam_step(native_model, session, tokens, mask, step: int, record: Optional[Recording]) -> np.ndarray:
    """A beam-search step's log-probabilities; the raw logits go to ``record`` when it asks for
    them (the session then returns logits and the same native log-softmax runs on them)."""
    if record is None or record.logits is None:
        return checked_logits(session.step(tokens, mask, log_softmax=True), step)
    logits = session.step(tokens, mask)
    logits = checked_logits(logits, step, session.logits_finite)
    record.logits.append(logits.copy())
    return native_model.log_softmax_rows(logits)


def _check_best_finished(finished: np.ndarray, opts: GenerationOptions) -> None:
    """Every input's best slot must hold a finished hypothesis. It stays a placeholder (scored
    BIG_NEG, transformers' mark for impossible beams) only when every hypothesis scored below that
    mark, i.e. the options pushed the float32 scores out of range; transformers then returns the
    placeholder's padding, fasttx would return nothing: both are refused here."""
    lost = np.flatnonzero(~finished[:, 0])
    if lost.size:
        culprits = [f"length_penalty={opts.length_penalty!r}"]
        if opts.do_sample:
            culprits.insert(0, f"temperature={opts.temperature!r}")
        raise ValueError(
            f"beam search found no hypothesis for input {int(lost[0])} scoring above {float(BIG_NEG):g} "
            f"(the mark of impossible beams): {' or '.join(culprits)} pushes the scores out of "
            "float32's useful range"
        )


def _sample_candidates(native_model, scores: np.ndarray, keep: int, sampler: RowSampler):
    """``keep`` candidates per row of ``scores`` drawn without replacement from its softmax
    (transformers' ``torch.multinomial(softmax(scores), keep)``), best score first. Drawn with
    the Gumbel-top-k trick: the top ``keep`` of ``scores + Gumbel noise`` are such a draw."""
    noise = np.stack([sampler.rngs[b].gumbel(size=scores.shape[1]) for b in range(scores.shape[0])])
    _, picked = native_model.topk_rows(np.ascontiguousarray(scores + noise.astype(np.float32)), keep)
    values = np.take_along_axis(scores, picked, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(picked, order, axis=1)


def _widen(tokens: np.ndarray, width: int, fill: int) -> np.ndarray:
    """``tokens`` ``[batch, beams, w]`` extended to ``width`` positions with ``fill``."""
    wider = np.full(tokens.shape[:2] + (width,), fill, dtype=tokens.dtype)
    wider[:, :, : tokens.shape[2]] = tokens
    return wider


def _top(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest per row, largest first, ties in index order (like a stable topk)."""
    return np.argsort(-x, axis=-1, kind="stable")[:, :k]
