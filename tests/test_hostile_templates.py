"""Chat templates come from model files, i.e. from strangers: rendering one is bounded in loop
iterations, range sizes, output size and time, and a template past a bound fails with a
``fasttx.ModelFormatError`` naming the template's source and the limit (issue 11, Found 3 and 7).
Each hostile render runs in a subprocess with a timeout, so that a regression shows as a failure
instead of hanging pytest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fasttx
from fasttx import chat
from fasttx.chat import render_chat

FIXTURES = Path(__file__).parent / "fixtures"
MESSAGES = [{"role": "user", "content": "hi"}]


def _render_in_subprocess(
    *templates: str, max_steps: int | None = None, timeout: float = 20.0, memory_bytes: int | None = None
) -> list[str]:
    """The error line of each template, rendered one after the other in a fresh interpreter (whose
    address space is limited to ``memory_bytes``, if given)."""
    code = textwrap.dedent(
        f"""
        import resource
        import fasttx
        from fasttx import chat
        if {memory_bytes is not None}:
            resource.setrlimit(resource.RLIMIT_AS, ({memory_bytes!r}, {memory_bytes!r}))
        if {max_steps!r} is not None:
            chat.MAX_STEPS = {max_steps!r}
        for template in {list(templates)!r}:
            try:
                chat.render_chat(template, [{{"role": "user", "content": "hi"}}], template_source="evil/tokenizer_config.json")
                print("rendered")
            except fasttx.ModelFormatError as e:
                print("ModelFormatError:", e)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_template_nested_range_loops_stop_at_the_iteration_limit():
    # Found 3: 10**10 iterations used to run forever inside the sandbox.
    template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    [line] = _render_in_subprocess(template)
    assert line.startswith("ModelFormatError: evil/tokenizer_config.json: the chat template runs more than")
    assert "loop iterations" in line


def test_template_huge_range_is_a_format_error():
    # Found 7: Jinja's own range guard raised a bare OverflowError.
    with pytest.raises(fasttx.ModelFormatError, match=r"model\.gguf.*range of 1000000000 items.*100000"):
        render_chat("{% for i in range(10**9) %}x{% endfor %}", MESSAGES, template_source="model.gguf")


def test_template_string_doubling_stops_at_the_output_limit():
    # Repeated concatenation doubles a string without any output until it is too big to hold.
    template = (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
    )
    with pytest.raises(fasttx.ModelFormatError, match="characters"):
        render_chat(template, MESSAGES, template_source="t.jinja")


def test_template_single_huge_operation_is_refused_before_it_runs():
    # Each would allocate gigabytes (or loop 10**10 times) in one operation.
    templates = [
        "{{ 'x' * 10**10 }}",
        "{{ ['x'] * 10**10 }}",
        "{{ 10 ** 1000000000 }}",
        "{{ 'x'.ljust(10**10) }}",
        "{{ 'x'|center(10**10) }}",
        "{{ range(10)|slice(10**10)|list }}",
        "{{ '%1000000000d' % 1 }}",
        "{{ '{:>1000000000}'.format(1) }}",
        "{% set s = 'x' * 10000 %}{{ s|replace('x', s) }}",
        "{% set s = 'x' * 10000 %}{{ s.join(range(10000)|map('string')) }}",
    ]
    lines = _render_in_subprocess(*templates)
    assert len(lines) == len(templates)
    for template, line in zip(templates, lines):
        assert line.startswith("ModelFormatError: evil/tokenizer_config.json: the chat template"), (template, line)


def test_template_output_is_bounded(monkeypatch):
    monkeypatch.setattr(chat, "MAX_OUTPUT_CHARS", 1000)
    template = "{% for i in range(5000) %}x{% endfor %}"
    with pytest.raises(fasttx.ModelFormatError, match="1000 characters"):
        render_chat(template, MESSAGES, template_source="t.jinja")


def test_template_exponential_macro_recursion_stops_at_the_iteration_limit():
    template = (
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    )
    [line] = _render_in_subprocess(template, max_steps=10_000)
    assert line.startswith("ModelFormatError: evil/tokenizer_config.json: the chat template runs more than the limit of 10000 ")


def test_template_infinite_recursion_is_a_format_error():
    template = "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"
    with pytest.raises(fasttx.ModelFormatError, match="t.jinja"):
        render_chat(template, MESSAGES, template_source="t.jinja")


def test_template_wall_time_is_bounded(monkeypatch):
    monkeypatch.setattr(chat, "TIME_LIMIT_S", 0.05)
    # Within the iteration limit, but slow: every iteration formats a long string.
    template = "{% for i in range(100000) %}{% set s = (messages|tojson) * 50 %}{% endfor %}"
    with pytest.raises(fasttx.ModelFormatError, match=r"0\.05 s"):
        render_chat(template, MESSAGES, template_source="t.jinja")


def test_template_limits_name_the_file_of_a_model(tmp_path):
    # Model.chat_prompt passes the file the template came from.
    import shutil

    target = tmp_path / "gpt2"
    shutil.copytree(FIXTURES / "gpt2", target)
    cfg = json.loads((target / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for i in range(10**9) %}{% endfor %}"
    (target / "tokenizer_config.json").write_text(json.dumps(cfg))
    model = fasttx.load(target, threads=1)
    with pytest.raises(fasttx.ModelFormatError, match="tokenizer_config.json"):
        model.chat_prompt(MESSAGES)


def test_template_within_limits_renders_as_before():
    template = (
        "{% for m in messages %}{% for i in range(3) %}{{ m.content * 2 }}{% endfor %}{% endfor %}"
        "{{ (['a'] + ['b'])|join('-') }}{{ 2 ** 10 }}{{ 'x' ~ 'y' }}{{ 'ab'|center(6) }}"
    )
    assert render_chat(template, MESSAGES) == "hihihihihihia-b1024xy  ab  "


def test_template_failing_on_unexpected_message_contents_is_a_format_error_naming_its_file():
    # A template written for string contents, given a list of parts: Python's TypeError used to
    # escape render_chat as it was.
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    with pytest.raises(fasttx.ModelFormatError, match=r"^t\.jinja: the chat template failed: TypeError: can only concatenate list"):
        render_chat("{{ messages[0].content + '!' }}", parts, template_source="t.jinja")
    with pytest.raises(fasttx.ModelFormatError, match=r"^t\.jinja: .*ZeroDivisionError"):
        render_chat("{{ messages|length // 0 }}", MESSAGES, template_source="t.jinja")
    # A template refusing the conversation itself says so, naming the file too.
    with pytest.raises(ValueError, match=r"^t\.jinja: the chat template rejected the conversation: no users"):
        render_chat("{{ raise_exception('no users') }}", MESSAGES, template_source="t.jinja")


def test_template_growing_filters_are_refused_before_they_build():
    """Each would build gigabytes from inputs within the limits, in one filter or method call (over
    a generator, or a list of long strings): refused from the sizes before the call, so that the
    interpreter, limited to 1 GiB of address space, never comes near a MemoryError."""
    big = "{% set s = ['y' * 1000000] * 1000 %}"
    templates = [
        "{% set s = 'x\\n' * 1000000 %}{{ s|indent(100000) }}",
        "{% set s = 'x\\n' * 1000000 %}{{ s|indent('y' * 100000) }}",
        "{% set s = 'x ' * 100000 %}{{ s|wordwrap(1, wrapstring='y' * 100000) }}",
        "{% set s = 'x ' * 4000000 %}{{ s|wordwrap }}",
        "{{ range(100000)|map('string')|join('y' * 100000) }}",
        "{{ ('y' * 100000).join(range(100000)|map('string')) }}",
        big + "{{ s|join }}",
        big + "{{ s }}",
        big + "{{ s|string|length }}",
        big + "{{ s|tojson|length }}",
        big + "{{ s|pprint|length }}",
        big + "{{ 'a' ~ s }}",
        "{{ ('\\t' * 1000000).expandtabs(100000)|length }}",
        "{{ ('{:>999999}' * 10000).format(*range(10000))|length }}",
        "{{ ('%999999d' * 10000) % (range(10000)|list) }}",
        "{{ ('%999999d' * 10000)|format(*range(10000)) }}",
        "{{ ('<' * 10000000)|escape|length }}",
        "{{ ('ß' * 10000000).upper()|length }}",
        "{{ ([['x'] * 10000] * 10000)|sum(start=[])|length }}",
        "{{ ([['x'] * 10] * 1000000)|sum(start=[])|length }}",
    ]
    lines = _render_in_subprocess(*templates, memory_bytes=1 << 30, timeout=60)
    assert len(lines) == len(templates)
    for template, line in zip(templates, lines):
        assert line.startswith("ModelFormatError: evil/tokenizer_config.json: the chat template"), (template, line)
        assert "MemoryError" not in line, (template, line)


def test_template_size_checks_leave_ordinary_renders_alone():
    template = (
        "{{ messages|tojson }}|{{ messages[0] }}|{{ ('a\\nb'|indent(2, first=true)) }}|{{ 'x y z'|wordwrap(3) }}"
        "|{{ range(3)|map('string')|join(',') }}|{{ ','.join(['a', 'b']) }}|{{ '%3d|{:>3}'.format(7) }}|{{ '%-3s|' % 'a' }}"
        "{{ [[1], [2]]|sum(start=[]) }}|{{ 'ß'.upper() }}|{{ '<'|e }}|{{ '\\t'.expandtabs(2) }}|{{ 'abc'|join('-') }}"
    )
    want = (
        '[{"role": "user", "content": "hi"}]|{\'role\': \'user\', \'content\': \'hi\'}|  a\n  b|x y\nz|0,1,2|a,b'
        "|%3d|  7|a  |[1, 2]|SS|&lt;|  |a-b-c"
    )
    assert render_chat(template, MESSAGES) == want

