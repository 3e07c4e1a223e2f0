"""The ``fasttx`` command line prints what transformers generated for the same prompt."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import FIXTURES, expected

MODEL = "t5_v1_1"


def _flags(options: dict) -> list[str]:
    flags = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags += [flag, str(value).lower()] if key == "early_stopping" else ([flag] if value else [])
        elif isinstance(value, list):
            for v in value:
                flags += [flag, str(v)]
        else:
            flags += [flag, str(value)]
    return flags


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fasttx", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_generate_prints_transformers_text(stream):
    case = expected(MODEL)["text"][0]
    prompt, text = case["prompts"][0], case["texts"][0]
    extra = [] if stream else ["--no-stream"]
    proc = _run("generate", "--model", str(FIXTURES / MODEL), *_flags(case["options"]), *extra, prompt)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == text + "\n"


def test_model_from_environment(monkeypatch):
    case = expected(MODEL)["text"][0]
    monkeypatch.setenv("FASTTX_MODEL", str(FIXTURES / MODEL))
    proc = _run("generate", *_flags(case["options"]), case["prompts"][0])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == case["texts"][0] + "\n"


def test_missing_model_is_a_clear_error():
    proc = _run("generate", "--model", "/nonexistent/model", "hello")
    assert proc.returncode != 0
    assert "no such model" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_option_value_is_a_clear_error():
    proc = _run("generate", "--model", str(FIXTURES / MODEL), "--num-beams", "0", "hello")
    assert proc.returncode != 0
    assert "num_beams" in proc.stderr and "Traceback" not in proc.stderr
