"""Shared helpers: fixture discovery. Fixtures are made by scripts/make_fixtures.py with transformers
(see tests/fixtures/README.md); the tests themselves need neither torch nor transformers."""

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
