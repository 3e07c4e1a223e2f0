"""Stop strings against transformers' ``stop_strings`` (scripts/make_stop_fixtures.py): greedy and
beam search end a sequence (a beam candidate) at the token that completes a stop string, even when
the string spans several tokens; the text APIs return the text before it."""

from __future__ import annotations

import pytest

from conftest import FIXTURES, expected

CASES = expected("stop_strings")["cases"]


def _id(case: dict) -> str:
    return f"{case['model']}-{case['mode']}-{case['stop'][0]}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_token_sequence_equals_transformers(case, load_fixture_model):
    model = load_fixture_model(case["model"])
    got = model.generate_ids([case["input_ids"]], stop=case["stop"], **case["options"])
    assert got == [case["sequence"]]


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_text_ends_before_the_stop_string(case, load_fixture_model):
    model = load_fixture_model(case["model"])
    full = case["text"]
    stop = case["stop"][0]
    want = full[: full.index(stop)] if stop in full else full
    assert model.generate(case["prompt"], stop=case["stop"], **case["options"]) == want
    assert "".join(model.stream(case["prompt"], stop=case["stop"], **case["options"])) == want


def test_cases_cover_what_they_claim():
    """The recorded cases include stops that shortened greedy and beam outputs (the strings were
    picked across token boundaries by the fixture script)."""
    shortened = {(c["model"], c["mode"]) for c in CASES if len(c["sequence"]) < len(c["unstopped"])}
    assert {("t5_v1_1", "greedy"), ("t5_v1_1", "beam3"), ("llama_gqa", "greedy"), ("llama_gqa", "beam3")} <= shortened
