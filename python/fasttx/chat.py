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
they see is first rebuilt from plain JSON-like values. The sandbox stops a template from reaching
Python, not from running forever or filling memory, so a render is also bounded (see "limits"
below): loop iterations and calls, the size of any range, string or list it builds, its output, and
its wall time. Operations that can build a value far bigger than their inputs (repeating,
padding, indenting, wrapping, joining, formatting, printing a container) have that size bounded
before they run, so a template is refused before it holds more than the limit. A template past a
bound, or failing while it runs (a ``TypeError`` on message contents it did not expect, ...),
fails with ``fasttx.ModelFormatError`` naming its source.
"""

from __future__ import annotations

import collections.abc
import contextvars
import dataclasses
import functools
import json
import re
import time
import types
from datetime import datetime
from functools import lru_cache
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from ._native import ModelFormatError

__all__ = ["render_chat"]

# Older Jinja releases have known sandbox escapes, and templates are untrusted input.
_MIN_JINJA = (3, 1, 6)
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")

# Bounds on one render. Real templates stay far below each: they loop over the messages (and their
# content parts, tools, documents) once or twice, and their output is one prompt, which no model's
# context makes longer than a few million characters.
MAX_RANGE = 100_000  # items in one range(): Jinja's own sandbox bound
MAX_STEPS = 1_000_000  # loop iterations plus calls (macros, methods, globals), all together
MAX_OUTPUT_CHARS = 1 << 24  # the rendered text, and any one string or list built on the way
MAX_INT_BITS = 1 << 16  # an integer built with * or **
MAX_WRAP_CHARS = 1 << 20  # the text of one wordwrap, which holds every word as an object
TIME_LIMIT_S = 5.0


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    template_source: Optional[str] = None,
    **variables: Any,
) -> str:
    """The prompt text of ``messages`` (``[{"role": ..., "content": ...}, ...]``) under ``template``.

    ``variables`` become template variables; pass the model's special tokens here
    (``bos_token="<s>"``, ``eos_token="</s>"``, ...) as transformers does, plus anything a template
    reads (``tools=[...]``, ``documents=[...]``, ``enable_thinking=False``, ...).

    ``template_source`` names where the template came from (the ``.gguf`` file, the
    ``tokenizer_config.json``) in the errors of a template that breaks the limits or fails.

    Raises ``ValueError`` for a missing template, malformed messages, a template that does not
    compile, or one that rejects the conversation (``raise_exception``); ``fasttx.ModelFormatError``
    (a ``ValueError``) for a template that exceeds a limit of this module or fails while running
    (any exception of its own: a ``TypeError`` on a message content it did not expect, ...).
    """
    if not isinstance(template, str) or not template.strip():
        raise ValueError("this model has no chat template (tokenizer.chat_template is missing or empty)")
    chat = _normalize_messages(messages)
    context = {"tools": None, "documents": None, **_plain(variables)}
    context["messages"] = chat
    context["add_generation_prompt"] = bool(add_generation_prompt)

    import jinja2

    compiled = _compile(template)
    where = f"{template_source}: " if template_source else ""
    token = _BUDGET.set(_Budget())
    try:
        return _render_bounded(compiled, context)
    except _LimitExceeded as exc:
        raise ModelFormatError(f"{where}the chat template {exc}") from None
    except RecursionError:
        raise ModelFormatError(f"{where}the chat template recurses without end") from None
    except jinja2.TemplateError as exc:
        # raise_exception() in the template, a sandbox refusal, an undefined value used wrongly...
        raise ValueError(f"{where}the chat template rejected the conversation: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the template's code is the model file's, not ours
        # 1/0, `content + 1` on a list content (TypeError), a missing key, an allocation too big...
        raise ModelFormatError(f"{where}the chat template failed: {type(exc).__name__}: {exc}") from None
    finally:
        _BUDGET.reset(token)


def _render_bounded(compiled, context: dict) -> str:
    """Renders through ``generate()`` so that the output is measured, and the clock read, piece by
    piece as it is produced (the pieces joined are what ``render()`` returns)."""
    pieces = []
    total = 0
    budget = _BUDGET.get()
    for piece in compiled.generate(**context):
        total += len(piece)
        if total > MAX_OUTPUT_CHARS:
            raise _LimitExceeded(f"renders more than the limit of {MAX_OUTPUT_CHARS} characters")
        budget.check_time()
        pieces.append(piece)
    return "".join(pieces)


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


# ----------------------------------------------------------------------------------- limits


class _LimitExceeded(Exception):
    """A template went past a bound; ``render_chat`` names the source and re-raises it as a
    ``ModelFormatError``. Its message completes "the chat template ..."."""


class _Budget:
    """What one render may still spend. Every hook of the environment charges it: each loop
    iteration and each call is a step, and the clock is read every few steps."""

    def __init__(self) -> None:
        self.steps_left = MAX_STEPS
        self.deadline = time.monotonic() + TIME_LIMIT_S

    def step(self) -> None:
        self.steps_left -= 1
        if self.steps_left < 0:
            raise _LimitExceeded(f"runs more than the limit of {MAX_STEPS} loop iterations and calls")
        if self.steps_left % 256 == 0:
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _LimitExceeded(f"runs longer than the limit of {TIME_LIMIT_S:g} s")


class _Unmetered(_Budget):
    """The budget outside a render (Jinja folds constant expressions while compiling): sizes are
    still checked, steps and time are not counted."""

    def step(self) -> None:
        pass

    def check_time(self) -> None:
        pass


# The budget of the render in progress on this thread (or task): compiled templates are cached and
# shared, so the budget cannot live in the environment.
_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("fasttx_chat_budget", default=_Unmetered())


def _check_size(value: Any, what: str) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_OUTPUT_CHARS:
        raise _LimitExceeded(f"builds {what} of {len(value)} items, over the limit of {MAX_OUTPUT_CHARS}")
    return value


def _check_int_args(args: Iterable[Any], what: str) -> None:
    # A width or count argument sizes the result (center, ljust, indent, slice...): refused before
    # the operation allocates it.
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_RANGE:
            raise _LimitExceeded(f"passes {arg} to {what}, over the limit of {MAX_RANGE} for a width or count")


def _check_format(fmt: Any, args: Sequence[Any], what: str) -> None:
    """``fmt % args``, ``fmt.format(*args)`` and ``fmt|format(*args)`` checked before they run.
    The result is at most the format's text, plus every number in it taken as a padding width
    ("%999999d", "{:>999999}"), plus each field filled with the largest argument (a field may
    repeat one: "{0}{0}{0}"), or padded to a width passed as an argument ("%*d", "{:{}}")."""
    if not isinstance(fmt, str):
        return
    _check_int_args((int(w) for w in re.findall(r"\d{7,}", fmt)), what)
    fields = fmt.count("%") + fmt.count("{")
    if not fields:
        return
    widths = sum(int(w) for w in re.findall(r"\d+", fmt))
    largest = max((_text_size(a) for a in _format_args(args)), default=0)
    if "*" in fmt or re.search(r"\{[^{}]*\{", fmt):  # widths taken from the arguments
        largest += MAX_RANGE
    bound = len(fmt) + widths + fields * largest
    if bound > MAX_OUTPUT_CHARS:
        raise _LimitExceeded(f"formats up to {bound} characters with {what}, over the limit of {MAX_OUTPUT_CHARS}")


def _format_args(args: Sequence[Any]) -> Iterator[Any]:
    # `fmt % (a, b)` and `fmt % {"a": a}` fill fields from inside the tuple or dict.
    for arg in args:
        if isinstance(arg, (tuple, list)):
            yield from arg
        elif isinstance(arg, Mapping):
            yield from arg.values()
        else:
            yield arg


def _check_product(seq: Any, times: Any, what: str) -> None:
    if isinstance(times, bool) or not isinstance(times, int) or not isinstance(seq, (str, list, tuple)):
        return
    if len(seq) * max(times, 0) > MAX_OUTPUT_CHARS:
        raise _LimitExceeded(f"builds {what} of {len(seq) * times} items, over the limit of {MAX_OUTPUT_CHARS}")


def _check_growth(name: str, text: Any, args: Sequence[Any]) -> None:
    """String methods whose result can be far bigger than their inputs, checked before they run:
    ``text.format(...)`` pads and repeats (see :func:`_check_format`), ``text.replace(old, new)``
    multiplies, ``text.expandtabs(n)`` pads every tab, ``sep.join(items)`` repeats ``sep`` (the
    items are a list by now: see :func:`_bounded_list`)."""
    if not isinstance(text, str):
        return
    if name in ("format", "format_map"):
        _check_format(text, args, f"'{name}'")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        grows = (text.count(old) if old else len(text) + 1) * max(len(new) - len(old), 0)
        _check_length(len(text) + grows, "a string")
    elif name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else 8
        _check_length(len(text) + text.count("\t") * max(size, 0), "a string")
    elif name in _GROWTH:
        _check_length(_GROWTH[name] * len(text), "a string")
    elif name == "join" and args and isinstance(args[0], list):
        sizes = sum(len(item) if isinstance(item, str) else 0 for item in args[0])
        _check_length(sizes + len(text) * max(len(args[0]) - 1, 0), "a joined string")


def _check_length(length: int, what: str) -> None:
    if length > MAX_OUTPUT_CHARS:
        raise _LimitExceeded(f"builds {what} of up to {length} characters, over the limit of {MAX_OUTPUT_CHARS}")


def _bounded_list(items: Any, what: str) -> list:
    """``list(items)`` for an iterable without a length (a generator of ``map``/``select``), refused
    past MAX_OUTPUT_CHARS items: joining or summing it must first know how much it will build."""
    out = []
    for item in items:
        out.append(item)
        if len(out) > MAX_OUTPUT_CHARS:
            raise _LimitExceeded(f"passes more than {MAX_OUTPUT_CHARS} items to {what}")
    return out


# Line boundaries of str.splitlines (indent's lines): "\r\n" counts twice, an upper bound.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Printable text but for these, which repr and JSON show as two characters each.
_COMMON_ESCAPES = str.maketrans("", "", "\n\r\t")


def _str_size(text: str, quoted: bool) -> int:
    """An upper bound on ``len(text)`` as printed: itself, or (``quoted``: inside a printed list or
    dict, or as JSON) its repr or JSON form, which escape some characters (``\\x00``, ``\\U0001f600``
    at most ten characters for one)."""
    if not quoted:
        return len(text)
    escapes = sum(text.count(c) for c in "\\'\"\n\r\t")
    if text.isprintable() or text.translate(_COMMON_ESCAPES).isprintable():
        return len(text) + escapes + 2
    return 10 * len(text) + 2


def _text_size(value: Any, limit: int = MAX_OUTPUT_CHARS) -> int:
    """An upper bound on the length of ``str(value)``, and of its JSON form, counted without building
    either; the count stops once past ``limit`` (so a list of a million long strings costs no more
    than the items read until then). A container costs its brackets and separators (4 characters
    per item at most) besides its items, printed quoted."""
    total = 0
    pending: list = [iter([(value, False)])]
    while pending and total <= limit:
        item = next(pending[-1], None)
        if item is None:
            pending.pop()
            continue
        v, quoted = item
        if isinstance(v, str):
            total += _str_size(v, quoted)
        elif isinstance(v, bool) or v is None:
            total += 5
        elif isinstance(v, int):
            total += v.bit_length() // 3 + 2  # decimal digits and a sign
        elif isinstance(v, float):
            total += 24
        elif isinstance(v, Mapping):
            total += 2 + 4 * len(v)
            pending.append(((x, True) for kv in v.items() for x in kv))
        elif isinstance(v, (list, tuple, collections.abc.Set, collections.abc.MappingView)):
            total += 2 + 4 * len(v)
            pending.append(((x, True) for x in v))
        elif hasattr(v, "__dict__") and type(v).__name__ == "Namespace":
            total += 16 + 4 * len(vars(v))  # <Namespace {...}>
            pending.append(((x, True) for kv in vars(v).items() for x in kv))
        else:  # a generator, a macro, a loop...: a short repr
            total += len(repr(v))
    return total


def _check_printable(value: Any, what: str) -> Any:
    """``value``, once printing it (``{{ value }}``, ``~``, ``|string``, ``|tojson``) is known to
    stay within the limit: a list of a thousand strings of a million characters is refused before
    its text is built."""
    if not isinstance(value, str):
        size = _text_size(value)
        if size > MAX_OUTPUT_CHARS:
            raise _LimitExceeded(f"prints {what} of more than {MAX_OUTPUT_CHARS} characters")
    return value


def _bounded_range(*args: int) -> range:
    """``range`` for templates: refused past MAX_RANGE items (Jinja's own raises OverflowError)."""
    span = range(*args)
    if len(span) > MAX_RANGE:
        raise _LimitExceeded(f"asks for a range of {len(span)} items, over the limit of {MAX_RANGE}")
    return span


def _counted(iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` loop iterates through this: each item is a step of the budget."""
    budget = _BUDGET.get()
    for item in iterable:
        budget.step()
        yield item


def _joined(parts: Any) -> str:
    """The ``~`` operator (Jinja's ``str_join``), with its result's size checked before it is built."""
    _check_length(sum(_text_size(p) for p in parts), "a string")
    return "".join(str(p) for p in parts)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """``*``, ``**``, ``+`` and ``%`` checked before they run: repeating or adding strings and lists,
    growing integers, padding with ``%``-formats."""
    ints = all(isinstance(x, int) and not isinstance(x, bool) for x in (left, right))
    if operator == "*":
        _check_product(left, right, "a repeated value")
        _check_product(right, left, "a repeated value")
        if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _LimitExceeded(f"multiplies integers past the limit of {MAX_INT_BITS} bits")
    elif operator == "**":
        if ints and right > 0 and abs(left) > 1 and (left.bit_length() - 1) * right > MAX_INT_BITS:
            raise _LimitExceeded(f"raises an integer to a power past the limit of {MAX_INT_BITS} bits")
    elif operator == "+":
        sized = all(isinstance(x, (str, list, tuple)) for x in (left, right))
        if sized and len(left) + len(right) > MAX_OUTPUT_CHARS:
            raise _LimitExceeded(f"builds a value of {len(left) + len(right)} items, over the limit of {MAX_OUTPUT_CHARS}")
    elif operator == "%":
        _check_format(left, [right], "'%'")


def _check_filter(name: str, value: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """The filters whose result can be far bigger than their input, checked before they run
    (``value`` is returned, a generator made a bounded list where the filter needs its length).
    The others build at most their input's size, and their result is checked after."""
    rest = [*args, *kwargs.values()]
    what = f"the filter '{name}'"
    if name == "join":  # items|join(sep, attribute=None): each item printed, sep between them
        items = value if isinstance(value, (list, tuple, str)) else _bounded_list(value, what)
        sep = args[0] if args else kwargs.get("d", "")
        if isinstance(items, str):
            _check_length(len(items), "a joined string")
        elif "attribute" not in kwargs and len(args) < 2:  # (attributes: checked once joined)
            _check_length(sum(_text_size(i) for i in items), "a joined string")
        _check_length(_text_size(sep) * max(len(items) - 1, 0), "a joined string")
        return items
    if name == "sum":  # sequences added one after the other: quadratic copying, then the total
        items = value if isinstance(value, (list, tuple)) else _bounded_list(value, what)
        sized = [len(i) for i in items if isinstance(i, (str, list, tuple))]
        _check_length(sum(sized), "a sum")
        if len(sized) * sum(sized) > 4 * MAX_OUTPUT_CHARS:
            raise _LimitExceeded(f"adds {len(sized)} sequences of {sum(sized)} items in all, too many to copy")
        return items
    text = value if isinstance(value, str) else None
    if name == "indent" and text is not None:  # each line gets the indentation
        width = args[0] if args else kwargs.get("width", 4)
        pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        lines = sum(text.count(c) for c in _LINE_BREAKS) + 2
        _check_length(len(text) + lines * max(pad, 0), "an indented string")
    elif name == "wordwrap" and text is not None:
        # Every character may start a line, and textwrap holds each word as an object of its own.
        if len(text) > MAX_WRAP_CHARS:
            raise _LimitExceeded(f"wraps {len(text)} characters, over the limit of {MAX_WRAP_CHARS}")
        wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring")
        _check_length(len(text) + (len(text) + 1) * (len(wrap) if isinstance(wrap, str) else 1), "a wrapped string")
    elif name == "format":
        _check_format(value, rest, what)
    elif name in ("string", "tojson", "list"):
        _check_printable(value, f"with {what} a value")
    elif name == "pprint":  # repr with line breaks and indentation
        _check_printable(value, f"with {what} a value")
        _check_length(4 * _text_size(value), "a printed value")
    elif text is not None and name in _GROWTH:  # escaping, case changes
        _check_length(_GROWTH[name] * len(text), f"with {what} a string")
    return value


# Filters and string methods whose result is at most this many times their input's length: HTML
# escapes ("&#34;"), percent-encoding (three characters per UTF-8 byte), case changes ("ß" → "SS",
# "ﬃ" → "FFI").
_CASES = ("upper", "lower", "title", "capitalize", "swapcase", "casefold")
_GROWTH = {"escape": 5, "e": 5, "forceescape": 5, "urlencode": 12, **dict.fromkeys(_CASES, 3)}


def _metered_filter(name: str, func):
    """Filter ``func`` as a step of the budget, its arguments checked before the call and its
    result's size after."""
    # Filters marked pass_context/pass_eval_ctx/pass_environment get that object first.
    lead = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps Jinja's pass_* mark
    def filter_(*args, **kwargs):
        _BUDGET.get().step()
        value, rest = (args[lead] if len(args) > lead else None), args[lead + 1 :]
        _check_int_args([*rest, *kwargs.values()], f"the filter '{name}'")
        value = _check_filter(name, value, rest, kwargs)
        args = (*args[:lead], value, *rest) if len(args) > lead else args
        return _check_size(func(*args, **kwargs), f"with the filter '{name}' a value")

    return filter_


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
        import jinja2.runtime
        import jinja2.utils
        import jinja2.visitor
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

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        """transformers' environment, with every call and the operators that can build big values
        charged to the render's budget (see "limits")."""

        intercepted_binops = frozenset(("*", "**", "+", "%"))

        def call_binop(self, context, operator, left, right):
            _check_binop(operator, left, right)
            return _check_size(super().call_binop(context, operator, left, right), "a value")

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
            _BUDGET.get().step()
            if not isinstance(__obj, (jinja2.runtime.Macro, DictBuilder)) and __obj not in (Namespace, _bounded_range):
                # 'x'.ljust(n), lipsum(n)...: a count or width sizes the result.
                _check_int_args([*args, *kwargs.values()], f"'{getattr(__obj, '__name__', 'a function')}'")
                method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
                if isinstance(method, types.BuiltinMethodType):
                    owner = getattr(method, "__self__", None)
                    if method.__name__ == "join" and isinstance(owner, str) and args and not isinstance(args[0], list):
                        args = (_bounded_list(args[0], "'join'"), *args[1:])  # join consumes it anyway
                    _check_growth(method.__name__, owner, args)
            result = ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
            return _check_size(result, "a value")

    class Meter(jinja2.visitor.NodeTransformer):
        """Routes every ``{% for %}`` through the step counter and every ``~`` through the size
        check; everything else compiles as written."""

        def visit_For(self, node):
            node = self.generic_visit(node)
            node.iter = jinja2.nodes.Filter(node.iter, "fasttx_counted", [], [], None, None, lineno=node.lineno)
            return node

        def visit_Concat(self, node):
            node = self.generic_visit(node)
            parts = jinja2.nodes.List(node.nodes, lineno=node.lineno)
            return jinja2.nodes.Filter(parts, "fasttx_joined", [], [], None, None, lineno=node.lineno)

    env = BoundedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationTag, jinja2.ext.loopcontrols],
        finalize=lambda value: _check_printable(value, "a value"),  # {{ value }}, before str(value)
    )
    env.filters["tojson"] = tojson
    env.filters.update({name: _metered_filter(name, func) for name, func in env.filters.items()})
    env.filters["fasttx_counted"] = _counted
    env.filters["fasttx_joined"] = _joined
    env.globals["range"] = _bounded_range
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = DictBuilder()
    env.globals["namespace"] = Namespace
    try:
        tree = Meter().visit(env.parse(template))
        tree.set_environment(env)
        return env.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"the chat template does not compile: {exc} (line {exc.lineno})") from exc
