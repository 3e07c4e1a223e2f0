"""The continuous-batching engine behind ``fasttx serve`` (plain Python and fasttx: no web stack).

One engine thread owns a batch session holding the rows of every running request. Between two
decoding steps requests join it and leave it:

- a new request is prefilled alone in a session of its own, as ``model.generate`` would run that
  single prompt, a long prompt in pieces of ``PREFILL_PIECE`` tokens per engine iteration, so the
  running requests wait one piece, not the whole prompt; its first token is chosen from the last
  piece's logits, then its rows join the batch (``NativeSession.join``);
- each decoding step feeds every row's last token in one ``batch.step``; each request's rows then
  go through the same per-step decision as ``generate`` (``search.RowDecisions``: its processors,
  its seeded random streams, its EOS and stop strings and budget); finished and cancelled rows leave
  with ``batch.reorder``.

Each row's logits do not depend on which other rows share the batch, so a request's tokens equal
``model.generate_ids([prompt_ids], **options)``'s. Beam search (the best hypothesis is only known
at the end) and prompt lookup (several positions per step) do not fit a one-token-per-row batch:
those requests run whole, with ``generate``'s own loop, on a worker thread of their own (the native
steps release the GIL, so they do not stall the batch).

Events reach the caller through a thread-safe queue per request: ``RequestHandle`` iterates it in a
thread, or ``RequestHandle.stream`` hands it to an asyncio loop (the engine thread schedules each
event into the loop's queue), without a thread per request.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator, Optional, Sequence, Union

import numpy as np

from ..generation import processors, scores, search
from ..generation.options import GenerationOptions
from ..model import _as_batch, _row_sampler
from ..text import TextAssembler, cut_at_stop

# Prompt tokens prefilled per engine iteration, between two decoding steps of the running batch: a
# few passes of the session's own prefill chunks, enough to keep the products efficient, short
# enough that the running requests are not held up for long by a new long prompt.
PREFILL_PIECE = 256

# OpenAI's bounds for presence_penalty and frequency_penalty.
MAX_PENALTY = 2.0


class QueueFull(Exception):
    """``max_queue`` requests are already waiting (or the engine is closed): try again later."""


@dataclass
class EngineRequest:
    prompt_ids: list[int]  # tokenized, special tokens and chat template as model.generate/chat add them
    options: dict  # generate options with transformers' names
    logprobs: Optional[int] = None  # None: none; k >= 0: each token's logprob and the k best
    presence_penalty: float = 0.0  # OpenAI's additive penalties over the completion's tokens
    frequency_penalty: float = 0.0


@dataclass
class TokenLogprob:
    token: str  # the token as a text piece
    logprob: float
    top: list[tuple[str, float]]  # the k best (piece, logprob), best first


@dataclass
class Token:
    index: int  # which sequence (0..n-1 for num_return_sequences = n)
    token_ids: list[int]  # the new token(s) of this step for this sequence
    text: str  # newly safe text (may be "" while held back; stop strings never shown)
    logprobs: Optional[list[TokenLogprob]] = None  # one per token_ids entry when requested


@dataclass
class Finish:
    index: int
    reason: str  # "stop" (EOS or stop string) or "length" (budget)
    text: str  # the sequence's remaining held-back text
    completion_tokens: int  # tokens generate_ids returns for the sequence (EOS included)


@dataclass
class Failure:
    message: str  # the request failed inside the engine (the engine lives on)


Event = Union[Token, Finish, Failure]

# Ends a handle's event stream (after the last Finish, a Failure, or a cancel).
_END = object()


class RequestHandle:
    """A submitted request: its events, in order, for one consumer (``for event in handle`` in a
    thread, or ``async for event in handle.stream()`` in an asyncio loop). A consumer that stops
    iterating before the end cancels the request."""

    def __init__(self, engine: "Engine", prompt_tokens: int):
        self.prompt_tokens = prompt_tokens
        self._engine = engine
        self._lock = threading.Lock()
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._aqueue: Optional[asyncio.Queue] = None
        self._ended = False  # _END was emitted: later events are dropped
        self.cancelled = False

    def cancel(self) -> None:
        """Thread-safe: the request's rows leave the batch at the next step (a waiting request
        leaves the queue now), and its event stream ends."""
        if self.cancelled:
            return
        self.cancelled = True
        self._engine._cancel(self)
        self._emit(_END)

    def __iter__(self) -> Iterator[Event]:
        complete = False
        try:
            while True:
                event = self._events.get()
                if event is _END:
                    complete = True
                    return
                yield event
        finally:
            if not complete:
                self.cancel()

    async def stream(self) -> AsyncIterator[Event]:
        """The events in the running asyncio loop: from here on the engine thread puts them into
        an ``asyncio.Queue`` of this loop (``call_soon_threadsafe``)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        with self._lock:  # events emitted so far move over first, in order
            while True:
                try:
                    events.put_nowait(self._events.get_nowait())
                except queue.Empty:
                    break
            self._loop, self._aqueue = loop, events
        complete = False
        try:
            while True:
                event = await events.get()
                if event is _END:
                    complete = True
                    return
                yield event
        finally:
            if not complete:
                self.cancel()

    def _emit(self, event) -> None:
        """Called by the engine's threads (and ``cancel``). Takes no other lock."""
        with self._lock:
            if self._ended:
                return
            if event is _END:
                self._ended = True
            if self._loop is None or self._aqueue is None:
                self._events.put(event)
                return
            try:
                self._loop.call_soon_threadsafe(self._aqueue.put_nowait, event)
            except RuntimeError:  # the consumer's loop is closed: nobody listens any more
                self._ended = True
                self.cancelled = True

    def _fail(self, message: str) -> None:
        self._emit(Failure(message))
        self._emit(_END)


def openai_penalties(presence: float, frequency: float, prompt_len: int) -> processors.Processor:
    """OpenAI's presence and frequency penalties as a processor: ``score[j] -= frequency *
    count[j] + presence * (count[j] > 0)``, counting the completion's tokens so far (not the
    prompt's)."""

    def apply(scores: np.ndarray, history: Sequence[Sequence[int]], rows: Sequence[int]) -> None:
        vocab = scores.shape[-1]
        for row, ids in zip(scores, history):
            if len(ids) <= prompt_len:
                continue
            tokens, counts = np.unique(np.asarray(ids[prompt_len:], dtype=np.int64), return_counts=True)
            inside = tokens < vocab
            row[tokens[inside]] -= (frequency * counts[inside] + presence).astype(np.float32)

    return apply


@dataclass
class _Job:
    """A validated request and the engine's state for it."""

    handle: RequestHandle
    ids: np.ndarray  # [1, prompt length]
    mask: np.ndarray
    opts: GenerationOptions
    budget: int
    logprobs: Optional[int]
    penalties: Optional[processors.Processor]
    separate: bool  # beam search or prompt lookup: run whole on the worker thread
    # Set when the job is admitted to the batch (engine thread only):
    session: Any = None  # its own NativeSession until its rows join the batch
    decisions: Optional[search.RowDecisions] = None
    assemblers: list = field(default_factory=list)
    fed: int = 0  # prompt tokens prefilled so far
    next_tokens: list = field(default_factory=list)  # the last token of each row in the batch
    open_sequences: int = 0  # sequences without their Finish yet

    @property
    def rows(self) -> int:
        return self.opts.num_return_sequences


class Engine:
    """Continuous batching over ``model`` (a decoder-only ``fasttx.Model``): at most ``max_batch``
    rows decoding at once (a request of ``n`` sequences takes ``n``), at most ``max_queue``
    requests waiting for room; ``prefill_piece``: prompt tokens prefilled per engine iteration."""

    def __init__(self, model, *, max_batch: int = 16, max_queue: int = 64, prefill_piece: int = PREFILL_PIECE):
        if model.is_encoder_decoder:
            raise ValueError(
                f"fasttx serve runs decoder-only models; {model.arch} is an encoder-decoder model "
                "(use model.generate for it)"
            )
        limits = (("max_batch", max_batch, 1), ("max_queue", max_queue, 0), ("prefill_piece", prefill_piece, 1))
        for name, value, least in limits:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        self._model = model
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._prefill_piece = prefill_piece
        self._decode = model._decode if model.tokenizer is not None else (lambda ids: "")
        # An empty session: its cache size per position sizes requests against the machine's memory.
        self._probe = model._native.start(np.zeros((1, 1), dtype=np.int64))

        self._cond = threading.Condition()  # guards everything below up to the engine-thread state
        self._waiting: collections.deque[_Job] = collections.deque()  # for the batch
        self._separate_waiting: collections.deque[_Job] = collections.deque()
        self._rows = 0  # rows admitted: prefilling or in the batch
        self._separate_current: Optional[_Job] = None
        self._closing = False
        self._threads: list[threading.Thread] = []

        # Engine-thread state.
        self._prefilling: collections.deque[_Job] = collections.deque()
        self._running: list[_Job] = []  # in the batch's row order
        self._batch: Any = None  # the NativeSession of the running requests' rows

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Starts the engine thread and the worker thread (idempotent)."""
        with self._cond:
            if self._threads or self._closing:
                return
            self._threads = [
                threading.Thread(target=self._run, name="fasttx-serve-engine", daemon=True),
                threading.Thread(target=self._run_separate, name="fasttx-serve-separate", daemon=True),
            ]
            for t in self._threads:
                t.start()

    def close(self) -> None:
        """Stops the threads; every request not finished gets a ``Failure``."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            threads = list(self._threads)
            left = list(self._waiting) + list(self._separate_waiting)
            self._waiting.clear()
            self._separate_waiting.clear()
            current = self._separate_current
            self._cond.notify_all()
        for job in left:
            job.handle._fail("the server is shutting down")
        if current is not None:  # a beam search runs to its end on the worker; nobody waits for it
            current.handle._fail("the server is shutting down")
        engine_thread = threads[0] if threads else None
        if engine_thread is not None:
            engine_thread.join()

    def submit(self, request: EngineRequest) -> RequestHandle:
        """Queues ``request`` (thread-safe). Invalid options raise ``ValueError`` now; a full queue
        (or a closed engine) raises ``QueueFull``."""
        job = self._validate(request)
        with self._cond:
            if self._closing:
                raise QueueFull("the server is shutting down")
            (self._separate_waiting if job.separate else self._waiting).append(job)
            waiting = self._waiting_count()
            if waiting > self._max_queue:  # this request would wait, and the queue is full
                (self._separate_waiting if job.separate else self._waiting).pop()
                raise QueueFull(f"{waiting - 1} requests are already waiting (the queue holds {self._max_queue})")
            self._cond.notify_all()
        self.start()
        return job.handle

    @property
    def stats(self) -> dict:
        """``running``: rows decoding or being prefilled in the batch; ``waiting``: queued
        requests; ``separate``: beam-search or prompt-lookup requests running on the worker."""
        with self._cond:
            return {
                "running": self._rows,
                "waiting": self._waiting_count(),
                "separate": int(self._separate_current is not None),
            }

    def _waiting_count(self) -> int:
        """Queued requests that cannot start at once (under the lock): those for which the
        batch has no free rows yet (the engine thread admits the others at its next iteration),
        and the worker's queue but the one an idle worker is about to take."""
        free = self._max_batch - self._rows
        starting = 0
        for job in self._waiting:
            if job.rows > free:
                break
            free -= job.rows
            starting += 1
        separate = len(self._separate_waiting) - (self._separate_current is None and bool(self._separate_waiting))
        return len(self._waiting) - starting + separate

    # ------------------------------------------------------------------ submission

    def _validate(self, request: EngineRequest) -> _Job:
        """The request's checks, all before it is queued: the model's option rules, the prompt's
        tokens and length, the budget against the positions and the machine's memory."""
        model = self._model
        if not isinstance(request, EngineRequest):
            raise ValueError(f"submit takes an EngineRequest, got {type(request).__name__}")
        ids, mask = _as_batch([request.prompt_ids], None, "prompt_ids", pad_left=True)
        largest = int(ids.max())
        if largest >= model.vocab_size:
            raise ValueError(f"prompt_ids holds token id {largest}, outside the vocabulary of {model.vocab_size}")
        if not isinstance(request.options, dict):
            raise ValueError(f"options must be a dict of generation options, got {type(request.options).__name__}")
        opts = model._options(request.options)
        separate = opts.num_beams > 1 or opts.prompt_lookup_num_tokens is not None
        k = scores.check_logprobs(request.logprobs, model.vocab_size)
        presence = _penalty("presence_penalty", request.presence_penalty)
        frequency = _penalty("frequency_penalty", request.frequency_penalty)
        if separate and (k is not None or presence or frequency):
            what = "num_beams > 1" if opts.num_beams > 1 else "prompt_lookup_num_tokens"
            raise ValueError(f"logprobs, presence_penalty and frequency_penalty are not available with {what}")
        rows = opts.num_beams if opts.num_beams > 1 else opts.num_return_sequences
        if not separate and rows > self._max_batch:
            raise ValueError(
                f"num_return_sequences={rows} is more than the {self._max_batch} rows this server "
                "decodes at once (--max-batch)"
            )
        budget = model._checked_budget(ids, mask, opts)
        model._check_memory(self._probe, 1, rows, ids.shape[1], budget, opts)
        if opts.num_beams > 1 and budget > 0:
            search.check_length_penalty(opts.length_penalty, budget)
        model._stop_hit(opts)  # stop strings need the tokenizer
        penalties = openai_penalties(presence, frequency, ids.shape[1]) if presence or frequency else None
        handle = RequestHandle(self, ids.shape[1])
        return _Job(handle, ids, mask, opts, budget, k, penalties, separate)

    def _cancel(self, handle: RequestHandle) -> None:
        """A waiting request leaves its queue now; an admitted one at the engine's next step."""
        with self._cond:
            for waiting in (self._waiting, self._separate_waiting):
                for job in waiting:
                    if job.handle is handle:
                        waiting.remove(job)
                        return
            self._cond.notify_all()

    # ------------------------------------------------------------------ engine thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not (self._waiting or self._prefilling or self._running):
                    self._cond.wait()
                if self._closing:
                    break
                self._admit()
            try:
                self._drop_cancelled()
                self._prefill()
                if self._running:
                    self._decode_step()
            except Exception as e:  # a fault of the engine itself: its requests fail, it lives on
                self._fail_admitted(_message(e))
            self._count_rows()
        self._fail_admitted("the server is shutting down")

    def _admit(self) -> None:
        """Moves waiting requests into the prefill queue while their rows fit (under the lock)."""
        while self._waiting and self._rows + self._waiting[0].rows <= self._max_batch:
            job = self._waiting.popleft()
            self._rows += job.rows
            self._prefilling.append(job)

    def _count_rows(self) -> None:
        with self._cond:
            self._rows = sum(j.rows for j in self._prefilling) + sum(len(j.next_tokens) for j in self._running)

    def _prefill(self) -> None:
        """Feeds up to ``prefill_piece`` prompt tokens of the requests waiting for their prefill
        (several short prompts, or a piece of a long one); a request whose prompt is all in gets
        its first token and joins the batch."""
        left = self._prefill_piece
        while self._prefilling and left > 0:
            job = self._prefilling[0]
            try:
                if job.budget == 0:  # generate_ids returns no token: nothing to prefill
                    self._prefilling.popleft()
                    for i in range(job.rows):
                        job.handle._emit(Finish(i, "length", "", 0))
                    job.handle._emit(_END)
                    continue
                if job.decisions is None:
                    self._open(job)
                width = job.ids.shape[1]
                take = min(left, width - job.fed)
                piece = slice(job.fed, job.fed + take)
                logits = job.session.step(job.ids[:, piece], job.mask[:, piece])
                job.fed += take
                left -= take
                if job.fed < width:
                    return  # the rest at the next iteration, after a decoding step
                self._prefilling.popleft()
                if job.rows > 1:
                    logits = search.repeat_rows(job.session, logits, job.rows)
                keep = self._decide(job, logits)
                if keep:
                    if len(keep) != job.session.rows:
                        job.session.reorder(keep)
                    self._join(job)
            except Exception as e:
                if self._prefilling and self._prefilling[0] is job:
                    self._prefilling.popleft()
                job.session = None
                job.handle._fail(_message(e))

    def _open(self, job: _Job) -> None:
        """The request's own session, decisions and text assemblers, as ``generate`` sets them up
        for this single prompt."""
        model, n = self._model, job.rows
        job.session, prompt, _ = model._open_session(job.ids, job.mask, job.opts, copies=n)
        sampler = _row_sampler(job.ids, job.mask, job.opts, None, n) if job.opts.do_sample else None
        extra = [job.penalties] if job.penalties is not None else []
        job.decisions = search.RowDecisions(
            model._native,
            prompt,
            job.opts,
            job.budget,
            sampler,
            model._stopper(prompt, job.opts),
            extra,
            constraints=model._row_constraints(job.opts, [0], n),
        )
        job.assemblers = [TextAssembler(self._decode, job.opts.stop) for _ in range(n)]
        job.open_sequences = n

    def _join(self, job: _Job) -> None:
        """The request's rows (already prefilled) join the batch, after the rows already there."""
        if self._batch is None:
            self._batch = job.session
        else:
            self._batch.join(job.session)
        job.session = None
        self._running.append(job)

    def _decode_step(self) -> None:
        """One token for every row of the batch, then each request's decision for its rows."""
        tokens = np.asarray([t for job in self._running for t in job.next_tokens], dtype=np.int64)[:, None]
        try:
            logits = self._batch.step(tokens)
        except MemoryError as e:
            # The newest request is the one that grew the batch past what fits: it leaves, the
            # others go on.
            newest = self._running[-1]
            newest.handle._fail(f"out of memory while decoding the batch ({_message(e)})")
            self._keep([job is not newest for job in self._running])
            return
        keep: list[int] = []
        still: list[_Job] = []
        offset = 0
        for job in self._running:
            rows = len(job.next_tokens)
            try:
                kept = self._decide(job, logits[offset : offset + rows])
            except Exception as e:
                job.handle._fail(_message(e))
                kept = []
            keep.extend(offset + i for i in kept)
            if kept:
                still.append(job)
            offset += rows
        self._reorder(keep, still)

    def _drop_cancelled(self) -> None:
        if any(job.handle.cancelled for job in self._prefilling):
            self._prefilling = collections.deque(j for j in self._prefilling if not j.handle.cancelled)
        if any(job.handle.cancelled for job in self._running):
            self._keep([not job.handle.cancelled for job in self._running])

    def _keep(self, which: list[bool]) -> None:
        """Keeps the rows of the running requests marked True, in order."""
        keep: list[int] = []
        still: list[_Job] = []
        offset = 0
        for job, kept in zip(self._running, which):
            rows = len(job.next_tokens)
            if kept:
                keep.extend(range(offset, offset + rows))
                still.append(job)
            offset += rows
        self._reorder(keep, still)

    def _reorder(self, keep: list[int], still: list[_Job]) -> None:
        if not keep:
            self._batch = None
        elif len(keep) != self._batch.rows:
            self._batch.reorder(keep)
        self._running = still

    def _decide(self, job: _Job, logits: np.ndarray) -> list[int]:
        """The request's step decision over ``logits`` (its rows): tokens, text, logprobs and
        finishes emitted; returns the positions of its rows that go on (none when it ended)."""
        decisions = job.decisions
        assert decisions is not None  # set when the job was admitted
        logits = search.checked_logits(logits, decisions.steps)
        event, keep = decisions.choose(logits)
        logprobs = self._logprobs(job, event.scores, event.tokens) if job.logprobs is not None else None
        for i, (seq, token) in enumerate(zip(event.rows, event.tokens)):
            assembler = job.assemblers[seq]
            assembler.extend([token])
            text = assembler.take(final=False)
            job.handle._emit(Token(seq, [token], text, [logprobs[i]] if logprobs else None))
        for seq in event.finished:
            self._finish(job, seq, "stop")
        if decisions.done:
            for seq in decisions.active:  # the budget is spent
                self._finish(job, seq, "length")
            keep = []
        job.next_tokens = [event.tokens[i] for i in keep]
        return keep

    def _finish(self, job: _Job, seq: int, reason: str) -> None:
        assert job.decisions is not None
        tail = job.assemblers[seq].take(final=True)
        completion = len(job.decisions.history[seq]) - job.ids.shape[1]
        job.handle._emit(Finish(seq, reason, tail, completion))
        job.open_sequences -= 1
        if job.open_sequences == 0:
            job.handle._emit(_END)

    def _logprobs(self, job: _Job, chosen_from: np.ndarray, tokens: list[int]) -> list[TokenLogprob]:
        """Each chosen token's logprob and the k best, by the text API's rule
        (``scores.token_logprobs``: the log-softmax of the scores it was chosen from)."""
        k = job.logprobs
        assert k is not None
        temperature = job.opts.temperature if job.opts.do_sample else None
        chosen, values, ids = scores.token_logprobs(self._model._native, chosen_from, tokens, k, temperature)
        piece = self._model._piece
        return [
            TokenLogprob(piece(token), float(chosen[r]), [(piece(int(t)), float(v)) for t, v in zip(ids[r], values[r])])
            for r, token in enumerate(tokens)
        ]

    def _fail_admitted(self, message: str) -> None:
        """Every request prefilling or in the batch fails; the batch is dropped."""
        for job in list(self._prefilling) + self._running:
            job.handle._fail(message)
        self._prefilling.clear()
        self._running = []
        self._batch = None
        self._count_rows()

    # ------------------------------------------------------------------ worker thread

    def _run_separate(self) -> None:
        """Beam search and prompt lookup requests, one at a time, with ``generate``'s own loop."""
        model = self._model
        while True:
            with self._cond:
                while not self._closing and not self._separate_waiting:
                    self._cond.wait()
                if self._closing:
                    return
                job = self._separate_waiting.popleft()
                self._separate_current = job
            try:
                sequences = model._generate(job.ids, job.mask, job.opts)
                stop_hit = model._stop_hit(job.opts)
                eos = set(job.opts.eos_token_id)
                for i, seq in enumerate(sequences):
                    if seq:
                        text = cut_at_stop(self._decode(seq), job.opts.stop)
                        job.handle._emit(Token(i, list(seq), text))
                    stopped = bool(seq) and (seq[-1] in eos or (stop_hit is not None and stop_hit(seq)))
                    job.handle._emit(Finish(i, "stop" if stopped else "length", "", len(seq)))
                job.handle._emit(_END)
            except Exception as e:
                job.handle._fail(_message(e))
            finally:
                with self._cond:
                    self._separate_current = None


def _penalty(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -MAX_PENALTY <= value <= MAX_PENALTY:
        raise ValueError(f"{name} must be a number in [-{MAX_PENALTY:g}, {MAX_PENALTY:g}], got {value!r}")
    return float(value)


def _message(e: BaseException) -> str:
    return str(e) or type(e).__name__
