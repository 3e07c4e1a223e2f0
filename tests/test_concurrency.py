"""Models used from several Python threads at once (the GIL is released around native work): the
results equal the transformers fixtures, whether threads share one model or use their own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import fasttx
from conftest import FIXTURES, expected


def _cases(name: str):
    return [c for c in expected(name)["generate"] if c["options"].get("num_beams", 1) <= 3][:6]


def test_one_model_many_threads():
    model = fasttx.load(FIXTURES / "t5_v1_1", threads=2)
    cases = _cases("t5_v1_1") * 3
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda c: model.generate_ids(c["input_ids"], **c["options"]), cases))
    assert got == [c["sequences"] for c in cases]


def test_several_models_in_parallel_threads():
    names = ["t5_v1_0", "llama_gqa", "gpt2"]
    models = {n: fasttx.load(FIXTURES / n, threads=1) for n in names}
    jobs = [(n, c) for n in names for c in _cases(n)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda j: models[j[0]].generate_ids(j[1]["input_ids"], **j[1]["options"]), jobs))
    assert got == [c["sequences"] for _, c in jobs]
