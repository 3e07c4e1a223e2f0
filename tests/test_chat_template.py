"""fasttx.chat.render_chat against transformers' apply_chat_template(..., tokenize=False).

Expectations recorded by scripts/make_smollm2_fixtures.py: SmolLM2-135M-Instruct's template (with
and without a system message, multi-turn, with and without the generation prompt) and templates
that use the rendering environment's extras (tojson, namespace, loop controls, raise_exception,
dict, the generation tag, reasoning-field aliases, sandbox refusals).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import datetime
from pathlib import Path

import pytest

from fasttx.chat import render_chat

CASES = json.loads((Path(__file__).parent / "fixtures" / "smollm2" / "chat_cases.json").read_text(encoding="utf-8"))
SMOL = CASES["smollm2"]
EXTRA = CASES["extra"]


@pytest.mark.parametrize(
    "case", SMOL["cases"], ids=[f"{c['name']}-{'gen' if c['add_generation_prompt'] else 'nogen'}" for c in SMOL["cases"]]
)
def test_smollm2_template_matches_transformers(case):
    text = render_chat(SMOL["template"], case["messages"], add_generation_prompt=case["add_generation_prompt"], **SMOL["special_tokens"])
    assert text == case["text"]


def test_generation_prompt_is_added_by_default():
    case = next(c for c in SMOL["cases"] if c["name"] == "user_only" and c["add_generation_prompt"])
    assert render_chat(SMOL["template"], case["messages"], **SMOL["special_tokens"]) == case["text"]
    assert case["text"].endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "case",
    EXTRA["cases"],
    ids=[f"{c['template']}-{c['messages']}-{c['kwargs']}-{'gen' if c['add_generation_prompt'] else 'nogen'}" for c in EXTRA["cases"]],
)
def test_environment_matches_transformers(case):
    template = EXTRA["templates"][case["template"]]
    messages = EXTRA["conversations"][case["messages"]]
    variables = {**EXTRA["special_tokens"], **EXTRA["kwargs"][case["kwargs"]]}
    before = copy.deepcopy(messages)
    if "error" in case:
        with pytest.raises(ValueError) as info:
            render_chat(template, messages, add_generation_prompt=case["add_generation_prompt"], **variables)
        if case["error"]["type"] == "TemplateError":  # raise_exception(): the template's own words reach the user
            assert case["error"]["message"] in str(info.value)
    else:
        text = render_chat(template, messages, add_generation_prompt=case["add_generation_prompt"], **variables)
        assert text == case["text"]
    assert messages == before  # the caller's messages are never modified


def test_strftime_now_and_raise_exception_available():
    template = "{{ strftime_now('%Y-%m') }}{% if messages | length > 1 %}{{ raise_exception('one message only') }}{% endif %}"
    assert render_chat(template, [{"role": "user", "content": "x"}]) == datetime.now().strftime("%Y-%m")
    with pytest.raises(ValueError, match="one message only"):
        render_chat(template, [{"role": "user", "content": "x"}] * 2)


def test_message_objects_and_tuples_are_accepted():
    @dataclasses.dataclass
    class Message:
        role: str
        content: str
        name: object = None  # None values are dropped, as transformers does

    template = "{% for m in messages %}{{ m.role }}={{ m.content }}{{ m | length }};{% endfor %}"
    assert render_chat(template, (Message("user", "hi"), {"role": "assistant", "content": "yo"})) == "user=hi2;assistant=yo2;"


@pytest.mark.parametrize("template", [None, "", "   \n"])
def test_missing_template_is_a_value_error(template):
    with pytest.raises(ValueError, match="no chat template"):
        render_chat(template, [{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "messages,match",
    [
        ([], "empty conversation"),
        ("hello", "must be a list"),
        (None, "must be a list"),
        ({"role": "user", "content": "hi"}, "must be a list"),
        (["hello"], r"messages\[0\] must be a dict"),
        ([{"role": "user", "content": "a"}, 3], r"messages\[1\] must be a dict"),
        ([{"content": "no role"}], r"messages\[0\] has no 'role'"),
        ([{"role": None, "content": "x"}], r"messages\[0\] has no 'role'"),
    ],
)
def test_malformed_messages_are_value_errors(messages, match):
    with pytest.raises(ValueError, match=match):
        render_chat(SMOL["template"], messages, **SMOL["special_tokens"])


def test_template_syntax_error_is_a_value_error():
    with pytest.raises(ValueError, match="does not compile"):
        render_chat("{% for m in messages %}{{ m.content }", [{"role": "user", "content": "hi"}])


def test_sandbox_blocks_python_internals():
    # Templates come from model files: reaching Python's internals is refused, as a ValueError.
    with pytest.raises(ValueError, match="unsafe"):
        render_chat("{{ messages.__class__.__mro__ }}", [{"role": "user", "content": "x"}])
