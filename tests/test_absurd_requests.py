"""Absurd requests (issue 11): beams, sequences, prompts, new tokens or threads beyond what the model
or the machine can hold give a ValueError naming the limit before anything of that size is
allocated; beam search's memory follows the tokens produced; non-finite logits and options that push
the scores out of float32's range are errors, not silent wrong tokens.

Requests that used to abort the interpreter run in a subprocess, so that a regression fails the
test instead of killing pytest."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import fasttx
from fasttx.generation import search

from conftest import FIXTURES

DECODER = "llama_gqa"  # 128 positions, vocabulary 352
T5 = "t5_v1_0"  # relative positions: no position limit


def _run_isolated(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs ``code`` (with ``fasttx`` imported and ``F`` the fixtures folder) in a fresh interpreter."""
    prelude = f"import fasttx\nfrom pathlib import Path\nF = Path({str(FIXTURES)!r})\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=timeout
    )


def _model_copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


# ---------------------------------------------------------------- rows beyond the machine's memory


def test_num_beams_beyond_memory_is_a_value_error_not_an_abort():
    proc = _run_isolated(
        "m = fasttx.load(F / 'llama_gqa', threads=1)\n"
        "try:\n    m.generate_ids([[1, 2, 3]], num_beams=10**8)\n"
        "except ValueError as e:\n    print('ValueError:', e)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "ValueError:" in proc.stdout and "memory" in proc.stdout, proc.stdout


def test_num_beams_in_generation_config_beyond_memory_is_a_value_error(tmp_path):
    path = _model_copy(tmp_path, DECODER)
    cfg = json.loads((path / "generation_config.json").read_text())
    cfg["num_beams"] = 10**8
    (path / "generation_config.json").write_text(json.dumps(cfg))
    proc = _run_isolated(
        f"m = fasttx.load({str(path)!r}, threads=1)\n"
        "try:\n    m.generate_ids([[1, 2, 3]])\n"
        "except ValueError as e:\n    print('ValueError:', e)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "ValueError:" in proc.stdout and "100000000 beams" in proc.stdout, proc.stdout


def test_num_beams_two_to_the_64_is_refused_at_once(load_fixture_model):
    model = load_fixture_model(DECODER)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="GiB of memory"):
        model.generate_ids([[1, 2, 3]], num_beams=2**64)
    assert time.perf_counter() - start < 1.0


def test_sampled_sequences_beyond_memory_are_a_value_error(load_fixture_model):
    model = load_fixture_model(DECODER)
    with pytest.raises(ValueError, match="sequences"):
        model.generate_ids([[1, 2, 3]], do_sample=True, num_return_sequences=10**9, seed=0)
    with pytest.raises(ValueError, match="GiB of memory"):
        next(iter(model.stream("hello", num_beams=10**9)))
    with pytest.raises(ValueError, match="GiB of memory"):
        model.generate(["hello"] * 3, batch_size=10**9, num_beams=10**8)


def test_new_tokens_beyond_memory_on_a_model_without_position_limit_are_a_value_error(load_fixture_model):
    model = load_fixture_model(T5)
    assert model.max_positions is None
    with pytest.raises(ValueError, match="positions need"):
        model.generate_ids([[5, 6, 7]], num_beams=2, max_new_tokens=10**15)


# ---------------------------------------------------------------- prompts beyond the positions


def test_prompt_longer_than_the_positions_is_a_value_error_not_an_abort(load_fixture_model):
    model = load_fixture_model(DECODER)
    limit = model.max_positions
    too_long = [[5] * (limit + 1)]
    with pytest.raises(ValueError, match=f"{limit + 1} tokens is longer than the {limit} positions"):
        model.generate_ids(too_long, max_new_tokens=1)
    with pytest.raises(ValueError, match=f"{limit} positions"):
        model.generate_ids(too_long, num_beams=2, max_new_tokens=1)
    with pytest.raises(ValueError, match=f"{limit} positions"):
        model.logits(too_long)
    with pytest.raises(ValueError, match=f"{limit} positions"):
        model.generate("word " * 4 * limit, max_new_tokens=1)
    # Exactly at the limit is a valid prompt.
    assert model.logits([[5] * limit]).shape == (1, limit, model.vocab_size)


def test_long_text_prompt_is_refused_not_an_abort():
    # 200 KB of text, ~120k tokens (the fixture's tokenizer is nearly per character): the size of
    # prompt that aborted on SmolLM2 (8192 positions), scaled to the fixture's 128.
    proc = _run_isolated(
        "m = fasttx.load(F / 'llama_gqa', threads=1)\n"
        "try:\n    m.generate('word ' * 40_000)\n"
        "except ValueError as e:\n    print('ValueError:', e)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "ValueError:" in proc.stdout and "positions" in proc.stdout, proc.stdout


def test_new_tokens_beyond_learned_positions_are_refused_before_generating(load_fixture_model):
    model = load_fixture_model("gpt2")
    limit = model.max_positions
    with pytest.raises(ValueError, match=f"exceed the {limit} positions.*at most {limit - 3}"):
        model.generate_ids([[1, 2, 3]], max_new_tokens=limit)
    with pytest.raises(ValueError, match=f"{limit} positions"):
        model.generate_ids([[1, 2, 3]], num_beams=2, max_new_tokens=10**9)
    # Up to the last position is fine (EOS switched off so that it runs to the budget).
    assert len(model.generate_ids([[1, 2, 3]], max_new_tokens=limit - 3, eos_token_id=None)[0]) == limit - 3


# ---------------------------------------------------------------- memory grows with tokens produced


def test_beam_search_memory_follows_tokens_produced_not_max_new_tokens(load_fixture_model):
    model = load_fixture_model(T5)
    expected = model.generate_ids([[5, 6, 7]], num_beams=2, max_new_tokens=200)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        got = model.generate_ids([[5, 6, 7]], num_beams=2, max_new_tokens=10**6)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == expected
    assert len(got[0]) < 200  # it ended on EOS, well before the budget
    assert peak < 20 * 2**20, f"beam search took {peak / 2**20:.0f} MiB for {len(got[0])} tokens"
    assert elapsed < 2.0


@pytest.mark.parametrize(
    "options",
    [
        dict(num_beams=3, max_new_tokens=40, eos_token_id=None),
        dict(num_beams=3, num_return_sequences=2, max_new_tokens=30, early_stopping="never", length_penalty=2.0),
        dict(num_beams=2, max_new_tokens=25, early_stopping=True, length_penalty=-0.5, no_repeat_ngram_size=2),
        dict(num_beams=2, max_new_tokens=25, do_sample=True, seed=3, temperature=0.8),
    ],
)
def test_growing_beam_arrays_give_the_same_hypotheses(load_fixture_model, monkeypatch, options):
    model = load_fixture_model(DECODER)
    prompts = [[1, 5, 9], [1, 7]]
    expected = model.generate_ids(prompts, **options)
    monkeypatch.setattr(search, "INITIAL_BEAM_WIDTH", 1)  # widen at nearly every step
    assert model.generate_ids(prompts, **options) == expected


# ---------------------------------------------------------------- threads beyond the machine


def test_threads_beyond_the_machine_are_refused_before_any_thread_starts():
    # In a subprocess: before the fix, threads=10**6 started threads until the OS refused.
    proc = _run_isolated(
        "import os, time, threading\n"
        "from fasttx._native import NativeModel\n"
        "t = time.perf_counter()\n"
        "for threads in (10**6, 3000):\n"
        "    try:\n        fasttx.load(F / 'llama_gqa', threads=threads)\n"
        "    except ValueError as e:\n        print('ValueError:', e)\n"
        "os.environ['FASTTX_NUM_THREADS'] = '3000'\n"
        "try:\n    fasttx.load(F / 'llama_gqa')\n"
        "except ValueError as e:\n    print('ValueError:', e)\n"
        "del os.environ['FASTTX_NUM_THREADS']\n"
        "d = F / 'llama_gqa'\n"
        "try:\n"
        "    NativeModel('llama', (d / 'config.json').read_text(), [str(d / 'model.safetensors')], 'auto', 10**6)\n"
        "except ValueError as e:\n    print('ValueError:', e)\n"
        "print('seconds', time.perf_counter() - t, 'threads', threading.active_count())\n",
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum("threads must be at most" in line for line in lines) == 3, proc.stdout
    assert any("FASTTX_NUM_THREADS must be at most" in line for line in lines), proc.stdout
    seconds = float(lines[-1].split()[1])
    assert seconds < 1.0, proc.stdout


# ---------------------------------------------------------------- non-finite scores


def _nan_model(tmp_path: Path) -> Path:
    """The decoder fixture with NaN in its final norm's weights."""
    path = _model_copy(tmp_path, DECODER)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    start, end = json.loads(data[8 : 8 + header_len])["model.norm.weight"]["data_offsets"]
    base = 8 + header_len
    data[base + start : base + end] = np.full((end - start) // 4, np.nan, dtype="<f4").tobytes()
    weights.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "options",
    [dict(), dict(do_sample=True, seed=1), dict(num_beams=2), dict(num_beams=2, do_sample=True, seed=1)],
)
def test_nan_logits_raise_naming_the_step(tmp_path, options):
    model = fasttx.load(_nan_model(tmp_path), threads=1)
    with pytest.raises(fasttx.ModelFormatError, match=r"logits of step 0 hold NaN \(row 0\)"):
        model.generate_ids([[1, 2, 3]], max_new_tokens=5, **options)


def _marian_with_logits_bias(tmp_path: Path, column: int, value: float) -> Path:
    """The Marian fixture with ``value`` in one column of ``final_logits_bias``: the BART family
    learns whether the logits are finite on its bias pass, not by another look at them."""
    path = _model_copy(tmp_path, "marian")
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    start, _ = json.loads(data[8 : 8 + header_len])["final_logits_bias"]["data_offsets"]
    at = 8 + header_len + start + 4 * column
    data[at : at + 4] = np.float32(value).tobytes()
    weights.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "infinite values"), (-np.inf, "infinite values")])
# The paths that check raw logits (Marian's default beam search checks log-probabilities).
@pytest.mark.parametrize(
    "options",
    [
        dict(num_beams=1),
        dict(num_beams=1, do_sample=True, seed=1),
        dict(num_beams=2, output_logits=True, return_dict_in_generate=True),
    ],
)
def test_non_finite_logits_of_a_marian_step_raise(tmp_path, value, kind, options):
    model = fasttx.load(_marian_with_logits_bias(tmp_path, 7, value), threads=2)
    session = model._native.start(np.asarray([[1, 2, 3]] * 9, dtype=np.int64), None)
    session.step(np.zeros((9, 1), dtype=np.int64))
    assert session.logits_finite is False
    with pytest.raises(fasttx.ModelFormatError, match=rf"logits of step 0 hold {kind} \(row 0\)"):
        model.generate_ids([[1, 2, 3]], max_new_tokens=3, **options)


def test_a_marian_step_reports_finite_logits(load_fixture_model):
    model = load_fixture_model("marian")
    session = model._native.start(np.asarray([[1, 2, 3]], dtype=np.int64), None)
    assert session.logits_finite is None  # no step yet
    session.step(np.zeros((1, 1), dtype=np.int64))
    assert session.logits_finite is True
    session.step(np.zeros((1, 1), dtype=np.int64), log_softmax=True)
    assert session.logits_finite is None  # log-probabilities: not what the bias pass saw


def test_tiny_temperature_in_beam_sampling_is_a_value_error(load_fixture_model):
    model = load_fixture_model(DECODER)
    with pytest.raises(ValueError, match="temperature"):
        model.generate_ids([[1, 2, 3]], num_beams=2, do_sample=True, temperature=1e-45, seed=1)
    with pytest.raises(ValueError, match="temperature=1e-12"):
        model.generate_ids([[1, 2, 3]], num_beams=2, do_sample=True, temperature=1e-12, seed=1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate_ids([[1, 2, 3]], do_sample=True, temperature=1e-45, seed=1)


def test_infinite_or_overflowing_length_penalty_is_a_value_error(load_fixture_model):
    model = load_fixture_model(DECODER)
    with pytest.raises(ValueError, match="length_penalty must be a finite number"):
        model.generate_ids([[1, 2, 3]], num_beams=2, length_penalty=float("-inf"))
    with pytest.raises(ValueError, match="length_penalty=-1000.0"):
        model.generate_ids([[1, 2, 3]], num_beams=2, length_penalty=-1000.0)
    with pytest.raises(ValueError, match="length_penalty=-20.0"):
        model.generate_ids([[1, 2, 3]], num_beams=2, length_penalty=-20.0)
    # Ordinary penalties still give hypotheses.
    assert model.generate_ids([[1, 2, 3]], num_beams=2, length_penalty=-2.0)[0]
