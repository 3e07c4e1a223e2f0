"""Config variants outside the main fixture sets (scripts/make_variant_fixtures.py): logits within
1e-4 of transformers and greedy tokens identical."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fasttx
from conftest import FIXTURES

VARIANTS = sorted(p.name for p in (FIXTURES / "variants").iterdir() if (p / "expected.json").is_file())


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_matches_transformers(name):
    d = FIXTURES / "variants" / name
    exp = json.loads((d / "expected.json").read_text())
    with np.load(d / "logits.npz") as z:
        want = {k: z[k] for k in z.files}
    model = fasttx.load(d, dtype="f32", threads=2)
    for i, case in enumerate(exp["cases"]):
        dec = case.get("decoder_input_ids")
        got = model.logits([case["input_ids"]], decoder_input_ids=[dec] if dec else None)[0]
        np.testing.assert_allclose(got, want[f"row{i}"], rtol=0, atol=1e-4)
        assert model.generate_ids([case["input_ids"]], max_new_tokens=8, min_new_tokens=8) == [case["greedy_8"]]
