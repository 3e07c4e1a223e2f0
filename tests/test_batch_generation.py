"""Text generation over many prompts: batches sorted by length, results in input order and equal
to transformers' text for each prompt, a progress bar on request, and the CLI's file mode."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FIXTURES, expected

# (model, text case): every prompt of the case with transformers' text for it.
MODELS = ["t5_v1_1", "llama_gqa"]


def _cases(name: str) -> list[tuple[str, dict, str]]:
    return [(p, c["options"], t) for c in expected(name)["text"] for p, t in zip(c["prompts"], c["texts"])]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch_size", [1, 2, 32])
def test_batches_return_transformers_text_in_input_order(name, batch_size, load_fixture_model):
    model = load_fixture_model(name)
    for options in {json.dumps(o, sort_keys=True) for _, o, _ in _cases(name)}:
        opts = json.loads(options)
        rows = [(p, t) for p, o, t in _cases(name) if o == opts]
        # Repeat and reverse so that batches mix lengths and the sort has work to do.
        prompts = [p for p, _ in rows] + [p for p, _ in reversed(rows)]
        want = [t for _, t in rows] + [t for _, t in reversed(rows)]
        assert model.generate(prompts, batch_size=batch_size, progress=False, **opts) == want


def test_num_return_sequences_groups_per_prompt(load_fixture_model):
    model = load_fixture_model("t5_v1_1")
    case = next(c for c in expected("t5_v1_1")["text"] if c["options"].get("num_beams", 1) > 1)
    opts = dict(case["options"], num_return_sequences=2)
    together = model.generate(case["prompts"], batch_size=2, progress=False, **opts)
    alone = [model.generate(p, **opts) for p in case["prompts"]]
    assert together == alone
    assert all(len(group) == 2 for group in together)
    # The best hypothesis is transformers' text.
    assert [g[0] for g in together] == case["texts"]


def test_progress_bar_on_request(load_fixture_model, capsys):
    model = load_fixture_model("t5_v1_1")
    prompts = ["hello world", "Question: What is the capital of France?", "a"]
    model.generate(prompts, batch_size=1, progress=True, max_new_tokens=2)
    err = capsys.readouterr().err
    assert "3/3" in err and "prompt" in err
    model.generate(prompts, batch_size=1, progress=False, max_new_tokens=2)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_batch_size_is_a_clear_error(bad, load_fixture_model):
    model = load_fixture_model("t5_v1_1")
    with pytest.raises(ValueError, match="batch_size"):
        model.generate(["a", "b"], batch_size=bad)


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fasttx", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        input=stdin,
    )


@pytest.mark.parametrize("fmt", ["lines", "jsonl", "stdin"])
def test_cli_file_of_prompts_writes_jsonl(fmt, tmp_path):
    case = expected("t5_v1_1")["text"][0]
    prompts, texts = case["prompts"], case["texts"]
    flags = [f"--max-new-tokens={case['options']['max_new_tokens']}", "--batch-size", "1"]
    out = tmp_path / "out.jsonl"
    if fmt == "lines":
        src = tmp_path / "prompts.txt"
        src.write_text("\n".join(prompts) + "\n\n", encoding="utf-8")
        proc = _run("generate", "--model", str(FIXTURES / "t5_v1_1"), *flags, "--input", str(src), "--output", str(out))
    elif fmt == "jsonl":
        src = tmp_path / "prompts.jsonl"
        src.write_text("\n".join(json.dumps({"prompt": p, "id": i}) for i, p in enumerate(prompts)), encoding="utf-8")
        proc = _run("generate", "--model", str(FIXTURES / "t5_v1_1"), *flags, "--input", str(src), "--output", str(out))
    else:
        proc = _run("generate", "--model", str(FIXTURES / "t5_v1_1"), *flags, "--input", "-", stdin="\n".join(prompts))
        out.write_text(proc.stdout, encoding="utf-8")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"prompt": p, "output": t} for p, t in zip(prompts, texts)]


def test_cli_bad_prompt_file_is_a_clear_error(tmp_path):
    src = tmp_path / "prompts.jsonl"
    src.write_text('{"prompt": "ok"}\n{"text": 3}\n', encoding="utf-8")
    proc = _run("generate", "--model", str(FIXTURES / "t5_v1_1"), "--input", str(src))
    assert proc.returncode == 2
    assert "prompts.jsonl:2" in proc.stderr
    proc = _run("generate", "--model", str(FIXTURES / "t5_v1_1"), "--input", str(src), "also a prompt")
    assert proc.returncode == 2 and "either a prompt or --input" in proc.stderr
