"""Shared helpers: fixture discovery, loading, and the checks every parity suite makes. Fixtures are
made by scripts/make_fixtures.py with transformers (see tests/fixtures/README.md); the tests
themselves need neither torch nor transformers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_models(prefix: str = "") -> list[str]:
    return sorted(
        p.name for p in FIXTURES.iterdir() if p.is_dir() and p.name.startswith(prefix) and (p / "expected.json").is_file()
    )


def expected(name: str) -> dict:
    return json.loads((FIXTURES / name / "expected.json").read_text())


def expected_logits(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name / "logits.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def load_fixture_model():
    """Loads each fixture model once per test session (threads=2: exercises the parallel paths)."""
    import fasttx

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = fasttx.load(FIXTURES / name, threads=2)
        return cache[name]

    return get


def fixture_model_path(name: str, gguf_models=()) -> Path:
    """What fasttx.load takes for fixture `name`: its model.gguf when it is one of `gguf_models`,
    else its directory."""
    return FIXTURES / name / "model.gguf" if name in gguf_models else FIXTURES / name


def assert_fixtures_present(models: list[str], gguf_models=()) -> None:
    """A parity suite's fixtures must all be there: a missing one fails, it is not skipped."""
    for name in models:
        assert (FIXTURES / name / "expected.json").is_file(), name
        assert fixture_model_path(name, gguf_models).exists(), name


def cached_loader(gguf_models=()):
    """`get(name, dtype="f32")`: the fixture model `name` (see `fixture_model_path`), loaded once
    per dtype (threads=2: the parallel paths). Parity suites load with dtype="f32": transformers'
    reference ran in float32 (GGUF weights dequantized to float32)."""
    import fasttx

    cache: dict = {}

    def get(name: str, dtype: str = "f32"):
        key = (name, dtype)
        if key not in cache:
            cache[key] = fasttx.load(fixture_model_path(name, gguf_models), dtype=dtype, threads=2)
        return cache[key]

    return get


def parity_cases(models: list[str], kind: str, batched_only: bool = False) -> list:
    """pytest params `(model, case)` of the `kind` cases ("logits", "generate", "text") in each
    model's expected.json; `batched_only`: those of several rows. A model without expected.json
    has none (its suite's test_fixtures_present fails instead of the collection)."""
    return [
        pytest.param(model, case, id=f"{model}-{case['name']}")
        for model in models
        if (FIXTURES / model / "expected.json").is_file()
        for case in expected(model)[kind]
        if not batched_only or len(case.get("input_ids", case.get("prompts"))) > 1
    ]


def assert_each_row_alone_matches_its_batch(model, case: dict) -> None:
    """Batch company (left padding included) must not change results: every prompt of a batched
    "generate" case generated alone gives the transformers result recorded for it in the batch."""
    n = case["options"].get("num_return_sequences", 1)
    for i, ids in enumerate(case["input_ids"]):
        assert model.generate_ids([ids], **case["options"]) == case["sequences"][i * n : (i + 1) * n]


def assert_stream_concatenates_to_texts(model, case: dict) -> None:
    """Every prompt of a "text" case streamed: non-empty pieces that join to the recorded text."""
    for prompt, text in zip(case["prompts"], case["texts"]):
        pieces = list(model.stream(prompt, **case["options"]))
        assert "".join(pieces) == text
        assert all(pieces)
