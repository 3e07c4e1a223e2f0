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
its wall time. A template past a bound fails with ``fasttx.ModelFormatError`` naming its source
and the limit.
"""

from __future__ import annotations

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
    ``tokenizer_config.json``) in the errors of a template that breaks the limits.

    Raises ``ValueError`` for a missing template, malformed messages, a template that does not
    compile, or one that rejects the conversation (``raise_exception``); ``fasttx.ModelFormatError``
    (a ``ValueError``) for a template that exceeds a limit of this module or fails while running.
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
        raise ValueError(f"the chat template rejected the conversation: {exc}") from exc
    except (ArithmeticError, MemoryError) as exc:  # 1/0, float overflow, an allocation too big
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


def _check_format_widths(fmt: Any, what: str) -> None:
    # "%999999999d" and "{:>999999999}" pad to the width they name.
    if isinstance(fmt, str):
        _check_int_args((int(w) for w in re.findall(r"\d{7,}", fmt)), what)


def _check_product(seq: Any, times: Any, what: str) -> None:
    if isinstance(times, bool) or not isinstance(times, int) or not isinstance(seq, (str, list, tuple)):
        return
    if len(seq) * max(times, 0) > MAX_OUTPUT_CHARS:
        raise _LimitExceeded(f"builds {what} of {len(seq) * times} items, over the limit of {MAX_OUTPUT_CHARS}")


def _check_growth(name: str, text: Any, args: Sequence[Any]) -> None:
    """String operations whose result can be far bigger than their inputs, checked before they
    run: ``text.format(...)``/``text|format`` pads to the widths ``text`` names,
    ``text.replace(old, new)`` multiplies, ``sep.join(items)`` repeats ``sep``."""
    if not isinstance(text, str):
        return
    if name in ("format", "format_map"):
        _check_format_widths(text, f"'{name}'")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        grows = (text.count(old) if old else len(text) + 1) * max(len(new) - len(old), 0)
        if len(text) + grows > MAX_OUTPUT_CHARS:
            raise _LimitExceeded(f"builds a string of {len(text) + grows} characters, over the limit of {MAX_OUTPUT_CHARS}")
    elif name == "join" and args and hasattr(args[0], "__len__"):
        _check_product(text, max(len(args[0]) - 1, 0), "a joined string")


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
    texts = [str(p) for p in parts]
    total = sum(map(len, texts))
    if total > MAX_OUTPUT_CHARS:
        raise _LimitExceeded(f"builds a string of {total} characters, over the limit of {MAX_OUTPUT_CHARS}")
    return "".join(texts)


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
        _check_format_widths(left, "'%'")


def _metered_filter(name: str, func):
    """Filter ``func`` as a step of the budget, its arguments checked before the call and its
    result's size after."""
    # Filters marked pass_context/pass_eval_ctx/pass_environment get that object first.
    lead = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps Jinja's pass_* mark
    def filter_(*args, **kwargs):
        _BUDGET.get().step()
        value, rest = (args[lead] if len(args) > lead else None), [*args[lead + 1 :], *kwargs.values()]
        _check_int_args(rest, f"the filter '{name}'")
        if name == "join":  # items|join(sep)
            _check_growth("join", rest[0] if rest else "", [value])
        else:
            _check_growth(name, value, rest)
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
                    _check_growth(method.__name__, getattr(method, "__self__", None), args)
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
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
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
