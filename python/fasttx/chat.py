"""Chat templates, rendered as transformers' ``apply_chat_template(..., tokenize=False)`` renders them.

A chat template is a Jinja program shipped with the model (``tokenizer.chat_template`` in a GGUF,
``chat_template`` in ``tokenizer_config.json``). Templates are written against transformers'
rendering environment, so the same text needs the same environment: a sandboxed, immutable Jinja
environment with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, the
``{% generation %}`` tag, the helpers ``raise_exception``, ``strftime_now``, ``dict`` and a
``namespace`` that refuses private names, a ``tojson`` filter that does not HTML-escape, and the
variables ``messages``, ``tools``, ``documents``, ``add_generation_prompt`` and the special
tokens (``bos_token``, ``eos_token``, ...).

Templates come from model files, i.e. from strangers: they run in Jinja's sandbox, and everything
they see is first rebuilt from plain JSON-like values.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

__all__ = ["render_chat"]

# Older Jinja releases have known sandbox escapes, and templates are untrusted input.
_MIN_JINJA = (3, 1, 6)
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    **variables: Any,
) -> str:
    """The prompt text of ``messages`` (``[{"role": ..., "content": ...}, ...]``) under ``template``.

    ``variables`` become template variables; pass the model's special tokens here
    (``bos_token="<s>"``, ``eos_token="</s>"``, ...) as transformers does, plus anything a template
    reads (``tools=[...]``, ``documents=[...]``, ``enable_thinking=False``, ...).

    Raises ``ValueError`` for a missing template, malformed messages, a template that does not
    compile, or one that rejects the conversation (``raise_exception``).
    """
    if not isinstance(template, str) or not template.strip():
        raise ValueError("this model has no chat template (tokenizer.chat_template is missing or empty)")
    chat = _normalize_messages(messages)
    context = {"tools": None, "documents": None, **_plain(variables)}
    context["messages"] = chat
    context["add_generation_prompt"] = bool(add_generation_prompt)

    import jinja2

    compiled = _compile(template)
    try:
        return compiled.render(**context)
    except jinja2.TemplateError as exc:
        # raise_exception() in the template, a sandbox refusal, an undefined value used wrongly...
        raise ValueError(f"the chat template rejected the conversation: {exc}") from exc


# ----------------------------------------------------------------------------------- messages


def _normalize_messages(messages: Any) -> list[dict]:
    """Checks the conversation and turns it into plain data, as transformers does before
    rendering: message objects (dataclasses, pydantic models) become dicts, keys whose value is
    ``None`` are dropped (many templates print "None" otherwise), and reasoning fields are aliased."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    if len(messages) == 0:
        raise ValueError("cannot apply a chat template to an empty conversation: give at least one message")
    chat = []
    for index, message in enumerate(messages):
        message = _as_mapping(message)
        if message is None:
            raise ValueError(
                f"messages[{index}] must be a dict with 'role' and 'content', got {type(messages[index]).__name__}"
            )
        role = message.get("role")
        if not isinstance(role, str):
            raise ValueError(f"messages[{index}] has no 'role' string (keys: {sorted(map(str, message))})")
        chat.append({key: value for key, value in message.items() if value is not None})
    return [_alias_reasoning(m) for m in _plain(chat)]


def _as_mapping(message: Any):
    if isinstance(message, Mapping):
        return message
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        return {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    if callable(getattr(message, "model_dump", None)):  # pydantic models (e.g. OpenAI SDK messages)
        dumped = message.model_dump()
        return dumped if isinstance(dumped, Mapping) else None
    return None


def _alias_reasoning(message: dict) -> dict:
    # Templates read a message's reasoning as `reasoning_content` (the standard name) or `thinking`
    # (gpt-oss); callers use either, or `reasoning`.
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def _plain(value: Any) -> Any:
    """Rebuilds ``value`` from JSON-like types only. Rich objects have methods the sandbox does not
    know to be dangerous; templates only test media for presence, so a placeholder naming the
    type renders the same."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):  # subclasses (enums...) carry extra methods
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return _plain(value.item())  # numpy scalars (np.bool_(False) must stay falsy), without importing numpy
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


# ----------------------------------------------------------------------------------- environment


def _jinja_version(text: str) -> tuple:
    return tuple(int(m.group()) if (m := re.match(r"\d+", part)) else 0 for part in text.split(".")[:3])


@lru_cache(maxsize=32)
def _compile(template: str):
    """Compiles a template in transformers' environment (cached: a chat compiles it once)."""
    try:
        import jinja2
        import jinja2.ext
        import jinja2.nodes
        import jinja2.utils
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:  # pragma: no cover - jinja2 is a dependency
        raise ImportError("chat templates need jinja2>=3.1.6: pip install -U jinja2") from exc
    if _jinja_version(jinja2.__version__) < _MIN_JINJA:
        raise ImportError(
            f"chat templates need jinja2>=3.1.6 (older releases have sandbox escapes); found {jinja2.__version__}: "
            "pip install -U jinja2"
        )

    class GenerationTag(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks;
        for rendering, the block is its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """``namespace()`` that refuses underscore names: no way to reach Python internals."""

        def __init__(*args, **kwargs):  # signature as Jinja's, so `namespace(self=...)` works
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot set underscore attributes on a namespace ({name!r})"
                )

    class DictBuilder:
        """``dict(...)`` and ``dict.fromkeys(...)`` without exposing the ``dict`` type itself."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson HTML-escapes (<, >, &, '), which would change the prompt.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = DictBuilder()
    env.globals["namespace"] = Namespace
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"the chat template does not compile: {exc} (line {exc.lineno})") from exc
